"""Build Slurm batch scripts from validated, typed values only.

Users never write any part of a job script: the ``#SBATCH`` lines come from a
:class:`~shopfloor.resources.ResourceRequest`, the command and paths from the site/admin, and
every value is checked again here (no newlines, no control characters) and shell-quoted, so
even a bug upstream cannot smuggle in a line.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from shopfloor.resources import ResourceRequest
from shopfloor.timeutil import slurm_time

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class JobScriptError(ValueError):
    """A value that must never reach a job script (a bug upstream, not user input)."""


def _safe(value: str, what: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise JobScriptError(f"{what} contains a control character")
    return value


@dataclass(frozen=True)
class JobSpec:
    """Everything that goes into one batch script."""

    name: str
    request: ResourceRequest
    command: Sequence[str]
    output: str
    workdir: str
    env: Mapping[str, str] = field(default_factory=dict)
    setup: Sequence[str] = ()  #: admin-provided shell lines (site file), run before command


def session_job_name(user: str, server: str) -> str:
    """The Slurm job name of ``user``'s JupyterLab session ``server`` (``""``: the default);
    the hub names the job so and a session's panel finds the job's end time by it."""
    return f"shopfloor-{user}-{server or 'default'}"[:120]


def sbatch_lines(name: str, req: ResourceRequest, output: str, workdir: str) -> list[str]:
    """The ``#SBATCH`` header for a request."""
    if not _JOB_NAME.match(name):
        raise JobScriptError(f"job name {name!r} is not allowed")
    lines = [
        f"#SBATCH --job-name={name}",
        f"#SBATCH --partition={req.partition}",
        f"#SBATCH --nodes={req.nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --cpus-per-task={req.cpus}",
        f"#SBATCH --mem={req.memory_mb}M",
        f"#SBATCH --time={slurm_time(req.walltime_minutes)}",
        f"#SBATCH --output={_sbatch_path(output, 'output')}",
        f"#SBATCH --chdir={_sbatch_path(workdir, 'workdir')}",
    ]
    if req.gpus:
        lines.append(f"#SBATCH --gres=gpu:{req.gpus}")
    for key in ("account", "qos", "reservation"):
        value = getattr(req, key)
        if value:
            lines.append(f"#SBATCH --{key}={_safe(value, key)}")
    return [_safe(line, "#SBATCH line") for line in lines]


def _sbatch_path(path: str, what: str) -> str:
    _safe(path, what)
    if " " in path or not path.startswith("/"):
        raise JobScriptError(f"{what} must be an absolute path without spaces: {path!r}")
    return path


def build_script(spec: JobSpec) -> str:
    """A complete, self-contained batch script for ``spec``."""
    lines = ["#!/bin/bash", *sbatch_lines(spec.name, spec.request, spec.output, spec.workdir)]
    lines += ["", "set -eu"]
    for key, value in sorted(spec.env.items()):
        if not _ENV_NAME.match(key):
            raise JobScriptError(f"environment variable name {key!r} is not allowed")
        lines.append(f"export {key}={shlex.quote(_safe(value, key))}")
    # sbatch is called with --export=<names> (see Slurm.sbatch): steps started with srun get
    # the script's whole environment again. srun does not inherit --cpus-per-task since 22.05.
    lines.append("export SLURM_EXPORT_ENV=ALL")
    lines.append("export SRUN_CPUS_PER_TASK=\"${SLURM_CPUS_PER_TASK:-1}\"")
    lines += [_safe(line, "setup line") for line in spec.setup]
    lines.append("exec " + shlex.join(_safe(arg, "command") for arg in spec.command))
    return "\n".join(lines) + "\n"
