"""Run a notebook as a Slurm batch job, headless, and follow it: plain objects for code.

::

    from shopfloor.session.batch import BatchRun
    run = BatchRun.submit("train.ipynb", partition="cpu", cpus=2, walltime="30",
                          parameters={"epochs": 3})
    run.status()          # RunStatus(state='running', cell=2, cells=7, ...)
    run.wait()            # until it completed, failed or was cancelled
    run.output_path       # the executed notebook
    run.cancel()

Resources are checked by the hub (:meth:`shopfloor.session.hubapi.Hub.validate`, the site's one
model); the job script comes from :mod:`shopfloor.slurm.jobscript`, is submitted through
:class:`shopfloor.slurm.seam.SlurmSync` as the calling user, and runs
:mod:`shopfloor.session.notebookrun`.
Each run lives in its own folder, ``~/shopfloor-batch/<id>/`` by default: the notebook snapshot,
``progress.json``, ``output.ipynb`` and the job's log ``job.log``. (Not a hidden folder:
JupyterLab does not open files in hidden folders, and users should be able to open results.)
"""

from __future__ import annotations

import ast
import json
import keyword
import os
import pwd
import secrets
import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import nbformat

from shopfloor.errors import ShopfloorError
from shopfloor.resources import ResourceRequest
from shopfloor.session.hubapi import Hub
from shopfloor.session.notebookrun import (
    INPUT_FILE,
    OUTPUT_FILE,
    PROGRESS_FILE,
    RUN_FILE,
    write_json,
)
from shopfloor.slurm.jobscript import JobSpec, build_script
from shopfloor.slurm.seam import JobInfo, SlurmError, SlurmSync

DEFAULT_RUNS_DIR = "~/shopfloor-batch"
LOG_FILE = "job.log"
FINAL_STATES = ("completed", "failed", "cancelled")
_PARAMETER_TYPES = (str, int, float, bool, type(None), list, dict, tuple)


class BatchError(ShopfloorError, RuntimeError):
    """A batch run cannot be submitted or followed; the message says what to do."""


# -- parameters --------------------------------------------------------------------------


def check_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """Parameters as the first cell will set them: identifiers → literal values."""
    for name, value in parameters.items():
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise BatchError(f"parameter name {name!r} is not a Python variable name")
        if not isinstance(value, _PARAMETER_TYPES):
            raise BatchError(
                f"parameter {name}: {type(value).__name__} values cannot be passed; use "
                "numbers, text, True/False/None, lists or dicts"
            )
        try:
            ast.literal_eval(repr(value))
        except (ValueError, SyntaxError):
            raise BatchError(f"parameter {name}: {value!r} is not a plain literal") from None
    return dict(parameters)


def parse_parameters(text: str) -> dict[str, Any]:
    """``name = value`` lines (values are Python literals: ``3``, ``'abc'``, ``[1, 2]``)."""
    parameters: dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise BatchError(f"parameters line {number}: write name = value, e.g. epochs = 3")
        try:
            parameters[name.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            raise BatchError(
                f"parameters line {number}: {value.strip()!r} is not a value; write a number, "
                "quoted text ('abc'), True/False/None or a list"
            ) from None
    return check_parameters(parameters)


# -- status ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunStatus:
    """Where a run stands. ``state``: queued, running, completed, failed, cancelled, unknown."""

    state: str
    cell: int = 0
    cells: int = 0
    message: str = ""
    node: str = ""

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def progress_text(self) -> str:
        return f"cell {self.cell} of {self.cells}" if self.cells else ""


def run_status(
    job: JobInfo | None, progress: dict[str, Any] | None, cancel_requested: bool
) -> RunStatus:
    """Combine Slurm's view of the job with the progress file the job writes."""
    progress = progress or {}
    cell, cells = int(progress.get("cell", 0)), int(progress.get("cells", 0))
    reported = progress.get("state")
    if reported == "completed":
        return RunStatus("completed", cell, cells)
    # Before "failed": cancelling kills the kernel, and the job may report that first.
    if cancel_requested or (job is not None and job.state == "CANCELLED"):
        return RunStatus("cancelled", cell, cells, "cancelled on request")
    if reported == "failed":
        return RunStatus("failed", cell, cells, str(progress.get("error", "")))
    if job is not None and job.is_pending:
        return RunStatus("queued", message=f"waiting in the queue ({job.reason})")
    if job is not None and job.is_running:
        return RunStatus("running", cell, cells, node=job.batch_host)
    if job is not None and job.state == "TIMEOUT":
        return RunStatus("failed", cell, cells, "it ran out of walltime; ask for more time")
    if job is not None and job.state in {"OUT_OF_MEMORY", "NODE_FAIL", "FAILED", "PREEMPTED"}:
        return RunStatus("failed", cell, cells, f"Slurm ended the job ({job.state.lower()})")
    if job is None and not progress:
        return RunStatus("unknown", message="Slurm no longer knows this job and it left no "
                         "progress; see job.log in the run folder")
    return RunStatus("failed", cell, cells, "the job ended before the notebook finished; "
                     "see job.log in the run folder")


# -- runs --------------------------------------------------------------------------------


def _new_run_id() -> str:
    return f"{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def _runs_dir(runs_dir: str | Path | None) -> Path:
    return Path(runs_dir or DEFAULT_RUNS_DIR).expanduser()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class BatchRun:
    """One notebook run as a Slurm job, backed by its run folder (see module docstring)."""

    def __init__(self, directory: str | Path, slurm: SlurmSync | None = None) -> None:
        self.directory = Path(directory)
        spec = _read_json(self.directory / RUN_FILE)
        if spec is None:
            raise BatchError(f"{self.directory} is not a batch run folder (no {RUN_FILE})")
        self.spec = spec
        self.slurm = slurm or SlurmSync()

    def __repr__(self) -> str:
        return f"BatchRun({self.id!r}, notebook={self.notebook!r}, job={self.job_id!r})"

    @property
    def id(self) -> str:
        return self.directory.name

    @property
    def notebook(self) -> str:
        return str(self.spec["notebook"])

    @property
    def job_id(self) -> str:
        return str(self.spec["job_id"])

    @property
    def request(self) -> ResourceRequest:
        return ResourceRequest.model_validate(self.spec["request"])

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self.spec.get("parameters") or {})

    @property
    def output_path(self) -> Path:
        return self.directory / OUTPUT_FILE

    @property
    def log_path(self) -> Path:
        return self.directory / LOG_FILE

    # -- submit ---------------------------------------------------------------------------

    @classmethod
    def submit(
        cls,
        notebook: str | Path,
        *,
        parameters: dict[str, Any] | None = None,
        hub: Hub | None = None,
        slurm: SlurmSync | None = None,
        runs_dir: str | Path | None = None,
        python: str | None = None,
        **resources: Any,
    ) -> BatchRun:
        """Submit ``notebook`` to run on ``resources`` (partition, cpus, memory_gb, gpus,
        walltime, ...), checked by the hub first.

        ``parameters`` become the first cell (``name = value``). Raises
        :class:`~shopfloor.resources.RequestError` for resources the site does not allow and
        :class:`BatchError` for anything else that stops the submit.
        """
        source = Path(notebook).expanduser().resolve()
        _check_notebook(source)
        parameters = check_parameters(parameters or {})
        request = (hub or Hub()).validate(resources)
        slurm = slurm or SlurmSync()
        directory = _runs_dir(runs_dir) / _new_run_id()
        try:
            directory.mkdir(parents=True, mode=0o700)
            shutil.copyfile(source, directory / INPUT_FILE)
        except OSError as exc:
            raise BatchError(f"Cannot create the run folder {directory}: {exc.strerror}") from None
        spec: dict[str, Any] = {
            "notebook": str(source), "workdir": str(source.parent), "parameters": parameters,
            "request": request.model_dump(), "submitted": datetime.now().isoformat("T", "seconds"),
        }
        write_json(directory / RUN_FILE, spec)
        script = build_script(_job_spec(directory, request, python or sys.executable))
        try:
            job_id = slurm.sbatch(script)
        except SlurmError as exc:
            shutil.rmtree(directory, ignore_errors=True)
            raise BatchError(f"Slurm refused the job: {exc.slurm_message}") from None
        spec["job_id"] = job_id
        write_json(directory / RUN_FILE, spec)
        return cls(directory, slurm)

    # -- follow ---------------------------------------------------------------------------

    def progress(self) -> dict[str, Any] | None:
        """What the job last wrote to ``progress.json`` (``None`` before it started)."""
        return _read_json(self.directory / PROGRESS_FILE)

    def status(self) -> RunStatus:
        """Where the run stands (asks Slurm, reads the progress file)."""
        return statuses([self])[self.id]

    def status_with(self, job: JobInfo | None) -> RunStatus:
        """The status given Slurm's answer about the job (``None``: Slurm forgot it)."""
        return run_status(job, self.progress(), bool(self.spec.get("cancel_requested")))

    def cancel(self) -> None:
        """Cancel the job (queued or running). The run folder stays."""
        self.spec["cancel_requested"] = True
        write_json(self.directory / RUN_FILE, self.spec)
        try:
            self.slurm.scancel(self.job_id)
        except SlurmError as exc:
            raise BatchError(f"Slurm could not cancel job {self.job_id}: "
                             f"{exc.slurm_message}") from None

    def wait(self, timeout: float = 1800, interval: float = 2.0) -> RunStatus:
        """Block until the run completed, failed or was cancelled; the final status."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if status.finished or time.monotonic() > deadline:
                return status
            time.sleep(interval)

    def output(self) -> nbformat.NotebookNode:
        """The executed notebook (also after a failure, up to the failing cell)."""
        if not self.output_path.exists():
            raise BatchError(f"Run {self.id} has no executed notebook yet.")
        import nbformat  # here, not at the top: see _check_notebook

        return nbformat.read(self.output_path, as_version=4)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "".join(self.log_path.read_text(errors="replace").splitlines(True)[-lines:])
        except OSError:
            return ""

    # -- all runs -------------------------------------------------------------------------

    @classmethod
    def list(cls, runs_dir: str | Path | None = None, slurm: SlurmSync | None = None
             ) -> list[BatchRun]:
        """The user's runs, newest first (folders that are not runs are skipped)."""
        root = _runs_dir(runs_dir)
        runs = []
        for directory in sorted(root.glob("*/"), reverse=True) if root.is_dir() else []:
            spec = _read_json(directory / RUN_FILE)
            if spec and spec.get("job_id"):
                runs.append(cls(directory, slurm))
        return runs

    @classmethod
    def load(cls, run_id: str, runs_dir: str | Path | None = None) -> BatchRun:
        if "/" in run_id or run_id in {"", ".", ".."}:
            raise BatchError(f"{run_id!r} is not a run id")
        return cls(_runs_dir(runs_dir) / run_id)


def statuses(runs: Iterable[BatchRun], slurm: SlurmSync | None = None) -> dict[str, RunStatus]:
    """Status of many runs with a single ``squeue`` call, by run id."""
    runs = list(runs)
    if not runs:
        return {}
    slurm = slurm or runs[0].slurm
    try:
        jobs = slurm.squeue([r.job_id for r in runs])
    except SlurmError as exc:
        raise BatchError(f"Cannot ask Slurm about your runs: {exc.slurm_message}") from None
    return {r.id: r.status_with(jobs.get(r.job_id)) for r in runs}


def _check_notebook(path: Path) -> None:
    if path.suffix != ".ipynb":
        raise BatchError(f"{path.name} is not a notebook (.ipynb)")
    # Imported when used: nbformat pulls in jsonschema's format checkers, whose rfc3987_syntax
    # compiles its grammars at import (1-4 s), and every panel imports this module.
    import nbformat

    try:
        nbformat.read(path, as_version=4)
    except FileNotFoundError:
        raise BatchError(f"There is no notebook at {path}") from None
    except OSError as exc:
        raise BatchError(f"Cannot read {path}: {exc.strerror}") from None
    except (ValueError, nbformat.ValidationError) as exc:
        raise BatchError(f"{path.name} is not a valid notebook: {exc}") from None


def _job_spec(directory: Path, request: ResourceRequest, python: str) -> JobSpec:
    home = str(Path.home())
    user = pwd.getpwuid(os.getuid()).pw_name
    return JobSpec(
        name=f"shopfloor-run-{directory.name}",
        request=request,
        command=[python, "-m", "shopfloor.session.notebookrun", str(directory)],
        output=str(directory / LOG_FILE),
        workdir=str(directory),
        env={
            "HOME": home, "USER": user, "LOGNAME": user, "LANG": "C.UTF-8",
            "PATH": f"{Path(python).parent}:/usr/local/bin:/usr/bin:/bin",
        },
    )


__all__ = [
    "BatchError",
    "BatchRun",
    "RunStatus",
    "check_parameters",
    "parse_parameters",
    "run_status",
    "statuses",
]
