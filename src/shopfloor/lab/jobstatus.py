"""What this session's Slurm job is: partition, node, end time, memory use against its limit.

The facts Slurm gives every job step in its environment (``SLURM_JOB_ID``,
``SLURM_JOB_PARTITION``, ``SLURMD_NODENAME``, ``SLURM_MEM_PER_NODE``...) are read once; the
end time and the log path come from the job's own record (``scontrol show job``), read through
a :class:`JobRecordSource` (by default Shopfloor's Slurm seam) at most every few minutes.
Memory use is the resident memory of this server and every process below it (its kernels and
terminals): the demo's Slurm counts no cgroups, and ``sstat`` needs accounting.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

#: Reads ``scontrol -o show job <id>`` for a job id; raises on failure.
JobRecordSource = Callable[[str], Awaitable[str]]


async def scontrol_job_record(job_id: str) -> str:
    """The job's one-line record, through Shopfloor's one Slurm seam (logged, typed errors)."""
    from shopfloor.slurm.seam import Slurm

    return await Slurm(timeout=15).run(["scontrol", "-o", "show", "job", job_id])


def parse_job_record(text: str) -> dict[str, str]:
    """``Key=Value`` pairs of ``scontrol -o show job`` (a value may contain spaces)."""
    fields: dict[str, str] = {}
    key = ""
    for token in text.strip().split(" "):
        name, sep, value = token.partition("=")
        if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9_:/]*", name):
            key = name
            fields[key] = value
        elif key:
            fields[key] += " " + token
    return fields


def slurm_datetime_epoch(value: str) -> float | None:
    """Slurm's local ``YYYY-MM-DDTHH:MM:SS`` as epoch seconds; ``Unknown``/``None`` → None."""
    try:
        return datetime.fromisoformat(value.strip()).timestamp()
    except ValueError:
        return None


def memory_limit_bytes(env: Mapping[str, str]) -> int | None:
    """The job's memory on this node from Slurm's environment (``--mem`` or ``--mem-per-cpu``)."""
    per_node = env.get("SLURM_MEM_PER_NODE", "")
    if per_node.isdigit():
        return int(per_node) * 1024 * 1024
    per_cpu, cpus = env.get("SLURM_MEM_PER_CPU", ""), env.get("SLURM_CPUS_ON_NODE", "")
    if per_cpu.isdigit() and cpus.isdigit():
        return int(per_cpu) * int(cpus) * 1024 * 1024
    return None


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]?)$")


def slurm_size_bytes(value: str) -> int | None:
    """Slurm's memory sizes (``1G``, ``512M``, ``1024`` = MiB) in bytes; anything else None."""
    match = _SIZE.match(value.strip())
    if not match:
        return None
    number, unit = float(match.group(1)), match.group(2) or "M"
    return int(number * 1024 ** "KMGT".index(unit) * 1024)


def record_memory_limit_bytes(record: Mapping[str, str]) -> int | None:
    """The job's memory per node from its record (``MinMemoryNode``, or per CPU times CPUs)."""
    per_node = slurm_size_bytes(record.get("MinMemoryNode", ""))
    if per_node:
        return per_node
    per_cpu = slurm_size_bytes(record.get("MinMemoryCPU", ""))
    cpus = record.get("NumCPUs", "")
    return per_cpu * int(cpus) if per_cpu and cpus.isdigit() else None


def _children(proc: Path) -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process ended while we looked
            continue
        # "pid (comm) state ppid ...": comm may contain spaces and parentheses.
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def process_tree_rss(root_pid: int, proc: Path = Path("/proc")) -> int:
    """Resident bytes of ``root_pid`` and all its descendants (0 for those that vanished)."""
    page = os.sysconf("SC_PAGE_SIZE")
    tree = _children(proc)
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(tree.get(pid, ()))
        try:
            total += int((proc / str(pid) / "statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
    return total


_SECRET = re.compile(r"(?i)(token|secret|password|authorization)([\"']?\s*[:=]\s*|\s+)\S+")
_LONG_HEX = re.compile(r"\b[0-9a-f]{32,}\b")


def redact(text: str) -> str:
    """Hide tokens and secrets (``token=...``, long hex strings) in log text shown to users."""
    return _LONG_HEX.sub("[hidden]", _SECRET.sub(r"\1\2[hidden]", text))


def tail(path: str, lines: int, max_bytes: int = 64 * 1024) -> str:
    """The last ``lines`` lines of a text file (reading at most its last ``max_bytes``)."""
    if lines <= 0 or not path:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            data = f.read().decode(errors="replace")
    except OSError as exc:
        return f"(cannot read the job log {path}: {exc.strerror})"
    return "\n".join(data.splitlines()[-lines:])


@dataclass
class JobStatus:
    """A snapshot for the browser; times are epoch seconds of this server's clock."""

    in_job: bool
    user: str
    server_name: str
    job_id: str = ""
    partition: str = ""
    node: str = ""
    end_epoch: float | None = None
    time_limit: str = ""
    now_epoch: float = 0.0
    memory_used_bytes: int = 0
    memory_limit_bytes: int | None = None
    log_path: str = ""
    problem: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(data.pop("extra"))
        data.pop("log_path")  # the Help view gets the log lines, not a path to guess from
        return data


class JobWatcher:
    """This session's job: environment facts at once, Slurm's record every few minutes."""

    def __init__(self, env: Mapping[str, str] | None = None, *,
                 source: JobRecordSource = scontrol_job_record, refresh_seconds: float = 300,
                 root_pid: int | None = None, proc: Path = Path("/proc"),
                 clock: Callable[[], float] = time.time) -> None:
        self.env = dict(os.environ if env is None else env)
        self.source = source
        self.refresh_seconds = refresh_seconds
        self.root_pid = os.getpid() if root_pid is None else root_pid
        self.proc = proc
        self.clock = clock
        self.record: dict[str, str] = {}
        self.problem = ""
        self.last_error: BaseException | None = None
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    @property
    def job_id(self) -> str:
        return self.env.get("SLURM_JOB_ID", "")

    async def refresh(self, force: bool = False) -> None:
        """Read the job's record if it is older than ``refresh_seconds`` (or ``force``)."""
        if not self.job_id:
            return
        async with self._lock:
            now = self.clock()
            if not force and self._read_at is not None and \
                    now - self._read_at < self.refresh_seconds:
                return
            self._read_at = now
            try:
                self.record = parse_job_record(await self.source(self.job_id))
            except (RuntimeError, OSError) as exc:  # SlurmError is a RuntimeError
                # The user sees that the time left may be stale; Slurm's words go to the log.
                self.problem = "Slurm did not answer; the time left may be out of date."
                self.last_error = exc
            else:
                self.problem, self.last_error = "", None

    def status(self) -> JobStatus:
        env, record = self.env, self.record
        try:
            used = process_tree_rss(self.root_pid, self.proc)
        except OSError:
            used = 0
        return JobStatus(
            in_job=bool(self.job_id),
            user=env.get("JUPYTERHUB_USER") or env.get("USER", ""),
            server_name=env.get("JUPYTERHUB_SERVER_NAME", ""),
            job_id=self.job_id,
            partition=record.get("Partition") or env.get("SLURM_JOB_PARTITION", ""),
            node=env.get("SLURMD_NODENAME") or record.get("BatchHost", ""),
            end_epoch=slurm_datetime_epoch(record.get("EndTime", "")),
            time_limit=record.get("TimeLimit", ""),
            now_epoch=self.clock(),
            memory_used_bytes=used,
            memory_limit_bytes=memory_limit_bytes(env) or record_memory_limit_bytes(record),
            log_path=record.get("StdOut", ""),
            problem=self.problem,
        )
