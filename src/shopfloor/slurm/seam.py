"""The one seam between Shopfloor and the Slurm command-line tools.

Every scheduler command (``sbatch``, ``squeue``, ``scancel``, ``sinfo``, ``scontrol``) goes
through :meth:`Slurm.run`, which logs the command line and raises :class:`SlurmError` carrying
the command, exit code and Slurm's own words. Tests that need a fake scheduler replace this
class and nothing else; everything else is tested against the real local cluster.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from shopfloor.timeutil import parse_walltime

log = logging.getLogger(__name__)

#: squeue fields we read, in order. ``%B`` is the batch host (first node of the allocation).
_SQUEUE_FORMAT = "%i|%T|%r|%B|%N|%S|%u|%P|%j|%Q"
_SQUEUE_KEYS = (
    "job_id", "state", "reason", "batch_host", "nodes", "start", "user", "partition", "name",
    "priority",
)
#: sinfo fields per partition: name, availability, time limit, nodes A/I/O/T, CPUs A/I/O/T,
#: memory per node (MB), generic resources, node count, node names (a hostlist); the default
#: flag is the trailing ``*`` on the name.
_SINFO_FORMAT = "%P|%a|%l|%F|%C|%m|%G|%D|%N"
#: What Slurm's tools print when slurmctld cannot be reached (as opposed to refusing a job).
_UNREACHABLE = (
    "unable to contact slurm controller", "socket timed out", "connection refused",
    "zero bytes were transmitted", "slurm_persist_conn_open", "communication connection failure",
)


class SlurmError(RuntimeError):
    """A Slurm command failed. Carries what an admin needs to see, and Slurm's own words."""

    def __init__(self, cmd: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.cmd = list(cmd)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr.strip()
        super().__init__(
            f"{shlex.join(self.cmd)} exited with {returncode}: {self.stderr or stdout.strip()}"
        )

    @property
    def slurm_message(self) -> str:
        """Slurm's own message, without the ``sbatch: error:`` prefix, for users."""
        lines = [ln.split("error:", 1)[-1].strip() for ln in self.stderr.splitlines()]
        return "; ".join(ln for ln in lines if ln) or f"exit code {self.returncode}"

    @property
    def unreachable(self) -> bool:
        """True when slurmctld did not answer (worth retrying), not when it refused."""
        text = self.stderr.lower()
        return self.returncode == -1 or any(words in text for words in _UNREACHABLE)


@dataclass(frozen=True)
class JobInfo:
    """One job as ``squeue`` reports it."""

    job_id: str
    state: str
    reason: str
    batch_host: str
    nodes: str
    start: datetime | None
    user: str
    partition: str
    name: str
    priority: int = 0

    @property
    def is_pending(self) -> bool:
        return self.state in {"PENDING", "CONFIGURING", "REQUEUED", "RESIZING"}

    @property
    def is_running(self) -> bool:
        return self.state in {"RUNNING", "COMPLETING"}

    @property
    def is_finished(self) -> bool:
        return not (self.is_pending or self.is_running or self.state == "SUSPENDED")


@dataclass(frozen=True)
class PartitionInfo:
    """Live state of one partition, from ``sinfo``."""

    name: str
    default: bool
    up: bool
    max_time_minutes: int | None
    nodes_allocated: int
    nodes_idle: int
    nodes_other: int
    nodes_total: int
    cpus_allocated: int
    cpus_idle: int
    cpus_other: int
    cpus_total: int
    memory_per_node_mb: int
    gpus_per_node: int
    gres: str
    extra: dict[str, str] = field(default_factory=dict)
    #: Names of the partition's nodes (``sinfo``'s hostlist, expanded).
    node_names: frozenset[str] = frozenset()


def parse_slurm_time(value: str) -> datetime | None:
    """Parse Slurm's ``YYYY-MM-DDTHH:MM:SS``; ``N/A``, ``Unknown`` and blanks are ``None``."""
    value = value.strip()
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def parse_time_limit(value: str) -> int | None:
    """Slurm time limits (``30:00``, ``4:00:00``, ``1-00:00:00``, ``infinite``) in minutes.

    The same grammar as every walltime users write (:func:`~shopfloor.timeutil.parse_walltime`).
    """
    value = value.strip()
    if value in {"infinite", "UNLIMITED", "NONE", "n/a", ""}:
        return None
    try:
        return parse_walltime(value)
    except ValueError:
        return None


_HOSTLIST_ITEM = re.compile(r"([^,\[]+)(?:\[([^\]]+)\])?([^,]*)")


def expand_hostlist(hostlist: str) -> frozenset[str]:
    """Node names in a Slurm hostlist: ``node[1-3,5],gpu1`` -> node1, node2, node3, node5, gpu1.

    Zero-padded ranges keep their width (``n[01-02]`` -> n01, n02); ``(null)`` is empty.
    """
    names: set[str] = set()
    if hostlist.strip() in {"", "(null)"}:
        return frozenset()
    for prefix, ranges, suffix in _HOSTLIST_ITEM.findall(hostlist.strip()):
        if not ranges:
            names.add(prefix + suffix)
            continue
        for part in ranges.split(","):
            low, _, high = part.partition("-")
            width = len(low)
            for number in range(int(low), int(high or low) + 1):
                names.add(f"{prefix}{number:0{width}d}{suffix}")
    return frozenset(names)


def gpus_in_gres(gres: str) -> int:
    """Count GPUs in a GRES string such as ``gpu:2``, ``gpu:a100:4(S:0-1)`` or ``(null)``."""
    total = 0
    for item in gres.split(","):
        item = item.split("(", 1)[0]
        parts = item.split(":")
        if parts[0] == "gpu" and len(parts) >= 2 and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def parse_squeue(text: str) -> dict[str, JobInfo]:
    """Parse ``squeue -h -o`` output in :data:`_SQUEUE_FORMAT`, keyed by job id."""
    jobs: dict[str, JobInfo] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) != len(_SQUEUE_KEYS):
            continue
        raw = dict(zip(_SQUEUE_KEYS, parts, strict=True))
        jobs[raw["job_id"]] = JobInfo(
            job_id=raw["job_id"],
            state=raw["state"],
            reason=raw["reason"],
            batch_host=raw["batch_host"],
            nodes=raw["nodes"],
            start=parse_slurm_time(raw["start"]),
            user=raw["user"],
            partition=raw["partition"],
            name=raw["name"],
            priority=int(raw["priority"]) if raw["priority"].isdigit() else 0,
        )
    return jobs


def parse_sinfo(text: str) -> list[PartitionInfo]:
    """Parse ``sinfo -h -o`` output in :data:`_SINFO_FORMAT` (one line per partition)."""
    merged: dict[str, PartitionInfo] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) != 9:
            continue
        name, avail, limit, nodes, cpus, mem, gres, _count, node_names = parts
        default = name.endswith("*")
        name = name.rstrip("*")
        na, ni, no, nt = (int(x) for x in nodes.split("/"))
        ca, ci, co, ct = (int(x) for x in cpus.split("/"))
        memory = int(mem.rstrip("+")) if mem.rstrip("+").isdigit() else 0
        info = PartitionInfo(
            name=name, default=default, up=avail == "up",
            max_time_minutes=parse_time_limit(limit),
            nodes_allocated=na, nodes_idle=ni, nodes_other=no, nodes_total=nt,
            cpus_allocated=ca, cpus_idle=ci, cpus_other=co, cpus_total=ct,
            memory_per_node_mb=memory, gpus_per_node=gpus_in_gres(gres), gres=gres,
            node_names=expand_hostlist(node_names)
            | (merged[name].node_names if name in merged else frozenset()),
        )
        merged[name] = info
    return list(merged.values())


def parse_scontrol_nodes(text: str) -> dict[str, dict[str, str]]:
    """Parse ``scontrol -o show node`` (one node per line of ``Key=Value`` pairs)."""
    nodes: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        fields: dict[str, str] = {}
        for token in line.split():
            if "=" in token:
                key, value = token.split("=", 1)
                fields[key] = value
        if "NodeName" in fields:
            nodes[fields["NodeName"]] = fields
    return nodes


class Slurm:
    """Async access to the Slurm commands, as the hub (root) or as a user.

    ``user_prefix`` is how a command is run as another Unix user: by default
    ``sudo -n -u {user} --``, which keeps job submission under the user's own identity.
    """

    def __init__(
        self,
        *,
        bin_dir: str = "",
        user_prefix: Sequence[str] = ("sudo", "-n", "-u", "{user}", "--"),
        env: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.bin_dir = bin_dir
        self.user_prefix = tuple(user_prefix)
        self.env = dict(env) if env is not None else None
        self.timeout = timeout
        self.calls: dict[str, int] = {}

    def command(
        self, args: Sequence[str], user: str | None = None, keep_env: Sequence[str] = ()
    ) -> list[str]:
        """The full command line for ``args`` (``args[0]`` is the Slurm tool's name).

        ``keep_env`` names variables that must reach the command through ``sudo``: they are
        passed by name (``--preserve-env``), so their values never appear in a command line.
        """
        tool = os.path.join(self.bin_dir, args[0]) if self.bin_dir else args[0]
        cmd = [tool, *args[1:]]
        if user is not None:
            prefix = [p.replace("{user}", user) for p in self.user_prefix]
            if keep_env and prefix and os.path.basename(prefix[0]) == "sudo":
                prefix.insert(1, "--preserve-env=" + ",".join(keep_env))
            cmd = [*prefix, *cmd]
        return cmd

    def _environ(self, extra: Mapping[str, str] | None = None) -> dict[str, str] | None:
        if self.env is None and not extra:
            return None
        return {**os.environ, **(self.env or {}), **(extra or {})}

    async def run(
        self,
        args: Sequence[str],
        *,
        user: str | None = None,
        stdin: str | None = None,
        secret_env: Mapping[str, str] | None = None,
        umask: int = -1,
    ) -> str:
        """Run one Slurm command; return its stdout or raise :class:`SlurmError`.

        ``secret_env`` is added to the command's environment (never to its arguments or logs).
        ``umask`` (if not -1) is the command's umask; ``sudo`` keeps a stricter one.
        """
        cmd = self.command(args, user, keep_env=tuple(secret_env or ()))
        self.calls[args[0]] = self.calls.get(args[0], 0) + 1
        log.debug("slurm: %s", shlex.join(cmd))
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._environ(secret_env),
                start_new_session=True,
                umask=umask,
            )
        except FileNotFoundError as exc:
            raise SlurmError(cmd, 127, "", f"{cmd[0]} not found: is Slurm installed?") from exc
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(stdin.encode() if stdin is not None else None), self.timeout
            )
        except TimeoutError as exc:
            proc.kill()
            await proc.wait()
            raise SlurmError(cmd, -1, "", f"timed out after {self.timeout:.0f} s") from exc
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        if proc.returncode != 0:
            raise SlurmError(cmd, proc.returncode or 0, stdout, stderr)
        return stdout

    def run_sync(self, args: Sequence[str], *, user: str | None = None) -> str:
        """Blocking :meth:`run`, for the command line and setup code."""
        cmd = self.command(args, user)
        self.calls[args[0]] = self.calls.get(args[0], 0) + 1
        log.debug("slurm: %s", shlex.join(cmd))
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=self._environ(), timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise SlurmError(cmd, 127, "", f"{cmd[0]} not found: is Slurm installed?") from exc
        except subprocess.TimeoutExpired as exc:
            raise SlurmError(cmd, -1, "", f"timed out after {self.timeout:.0f} s") from exc
        if proc.returncode != 0:
            raise SlurmError(cmd, proc.returncode, proc.stdout, proc.stderr)
        return proc.stdout

    # -- typed helpers ------------------------------------------------------------------

    async def sbatch(
        self,
        script: str,
        *,
        user: str | None = None,
        secret_env: Mapping[str, str] | None = None,
    ) -> str:
        """Submit ``script`` (given on stdin) and return the job id.

        The job gets only the environment its script sets, plus ``secret_env``, which travels
        by name (``--export=NAME``), never in the script or on a command line.
        sbatch runs with umask 077: Slurm gives the job the submitter's umask, so the job's
        output file (which Slurm creates) and what the job writes are private to the user.
        """
        names = sorted(secret_env or {})
        export = "--export=" + (",".join(names) if names else "NONE")
        out = await self.run(
            ["sbatch", "--parsable", export], user=user, stdin=script, secret_env=secret_env,
            umask=0o077,
        )
        job_id = out.strip().split(";", 1)[0]
        if not job_id.isdigit():
            raise SlurmError(["sbatch", "--parsable"], 0, out, "sbatch printed no job id")
        return job_id

    async def squeue(
        self, job_ids: Sequence[str] | None = None, *, user: str | None = None
    ) -> dict[str, JobInfo]:
        """All jobs Slurm still knows (every state), optionally restricted to ``job_ids``."""
        args = ["squeue", "-h", "--states=all", "-o", _SQUEUE_FORMAT]
        if job_ids:
            args += ["-j", ",".join(job_ids)]
        if user:
            args += ["-u", user]
        try:
            return parse_squeue(await self.run(args))
        except SlurmError as exc:
            # squeue -j fails when every listed job has left Slurm's memory.
            if job_ids and "Invalid job id" in exc.stderr:
                return {}
            raise

    async def scancel(self, job_id: str, *, user: str | None = None) -> None:
        await self.run(["scancel", job_id], user=user)

    async def partitions(self) -> list[PartitionInfo]:
        return parse_sinfo(await self.run(["sinfo", "-h", "-o", _SINFO_FORMAT]))

    async def pending_jobs(self) -> dict[str, list[str]]:
        """Pending job ids per partition, highest priority first (queue order)."""
        out = await self.run(["squeue", "-h", "--states=PENDING", "--sort=-p,i", "-o", "%P|%i"])
        queues: dict[str, list[str]] = {}
        for line in out.split():
            parts, _, job_id = line.partition("|")
            for part in parts.split(","):
                queues.setdefault(part, []).append(job_id)
        return queues

    async def nodes(self) -> dict[str, dict[str, str]]:
        return parse_scontrol_nodes(await self.run(["scontrol", "-o", "show", "node"]))

    async def node_address(self, node: str) -> str:
        """The address to connect to for ``node`` (its ``NodeAddr``; the name if unknown)."""
        out = await self.run(["scontrol", "-o", "show", "node", node])
        return parse_scontrol_nodes(out).get(node, {}).get("NodeAddr", node)
