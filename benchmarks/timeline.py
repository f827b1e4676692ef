"""Where a spawn's time goes: marks read from the hub's log and the job's log, as segments.

Every program on the path writes timestamped log lines on the same machine and clock:
JupyterHub (``[I 2026-11-30 09:31:58.698 JupyterHub spawner:412] ...``), Jupyter Server in the
job (``[I 2026-11-30 09:31:58.698 ServerApp] ...``) and our launcher
(``[I ... shopfloor] port reported to the hub; job started at ...``, the job's process start
read from ``/proc``). Slurm's controller logs when it starts a job
(``[2026-11-30T09:31:58.698] sched: Allocate JobId=...``); :func:`slurmctld_lines` rewrites
those lines of one job in Jupyter's format (source ``slurmctld``), which splits "schedule"
from "job start". A *mark* is the time of the first line matching a pattern; consecutive
marks make the *segments* of :func:`breakdown`. Nothing here changes what is measured: the
port callback's body stays ``{"port": N}`` and the hub is not instrumented beyond its log.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from benchmarks.report import median

#: A log line's level letter and local timestamp, as JupyterHub and Jupyter Server write them.
STAMP = r"^\[[A-Z] (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) "
_STAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def parse_stamp(text: str) -> float:
    """Epoch seconds of a log timestamp (local time, milliseconds)."""
    return datetime.strptime(text, _STAMP_FORMAT).timestamp()


def first_stamp(text: str, pattern: str) -> float | None:
    """Epoch time of the first timestamped line of ``text`` whose rest matches ``pattern``.

    ``pattern`` is a regular expression searched in what follows the timestamp; it may have
    one named group ``at`` holding another timestamp, which is then returned instead (our
    launcher's line carries the job's start time that way).
    """
    for match in re.finditer(STAMP + r"(.*)$", text, re.MULTILINE):
        found = re.search(pattern, match.group(2))
        if found is None:
            continue
        inner = found.groupdict().get("at")
        try:
            return parse_stamp(inner) if inner else parse_stamp(match.group(1))
        except ValueError:
            return None
    return None


@dataclass(frozen=True)
class Mark:
    """A named moment: ``source`` (``hub`` or ``job`` log) and the pattern that finds it."""

    name: str
    source: str
    pattern: str


#: Slurm's controller starting a job: its main scheduler or a backfill pass.
SCHEDULED = Mark("scheduled", "slurmctld",
                 r"slurmctld\] (sched: Allocate|sched/backfill: _start_job: Started) JobId=")

#: Our hub and job, in the order they happen.
OURS_MARKS = (
    Mark("submitted", "hub", r"submitted job \d+ to "),
    SCHEDULED,
    Mark("job_started", "job",
         r"shopfloor\] port reported.*job started at (?P<at>\d{4}-\S+ \S+)"),
    Mark("port_reported", "job", r"shopfloor\] port reported"),
    Mark("server_first_line", "job", r"(ServerApp|JupyterHubSingleUser)\] "),
    Mark("server_listening", "job", r"ServerApp\] Jupyter Server \S+ is running at"),
    Mark("hub_saw_listener", "hub", r"job \d+ ready on "),
    Mark("proxy_added", "hub", r"took [\d.]+ seconds to start"),
)
#: Stock batchspawner's hub and job (no launcher line: its job start is Slurm's StartTime).
STOCK_MARKS = (
    Mark("submitted", "hub", r"Job submitted\. output: \d+"),
    SCHEDULED,
    Mark("server_first_line", "job", r"(ServerApp|JupyterHubSingleUser)\] "),
    Mark("server_listening", "job", r"ServerApp\] Jupyter Server \S+ is running at"),
    Mark("proxy_added", "hub", r"took [\d.]+ seconds to start"),
)
#: Plain ``jupyter lab``: the floor's own imports and start.
LAB_MARKS = (
    Mark("server_first_line", "job", r"(ServerApp|LabApp)\] "),
    Mark("server_listening", "job", r"ServerApp\] Jupyter Server \S+ is running at"),
)

#: What each segment (from the previous mark to this one) stands for, for the table.
SEGMENT_MEANING = {
    "submitted": "submit (hub: validate, log folder, sbatch)",
    "scheduled": "schedule (Slurm's main loop or backfill takes the job)",
    "job_started": "job start (slurmd launches the batch script)",
    "port_reported": "launcher: Python start, node address, port callback",
    "server_first_line": "Python imports of the server (up to its first log line)",
    "server_listening": "server start (extensions loaded, listening)",
    "hub_saw_listener": "hub notices the listener",
    "proxy_added": "proxy route + hub bookkeeping",
    "ready_seen": "benchmark sees ready (its 0.1 s polling)",
}


_SLURMCTLD_LINE = re.compile(
    r"^\[(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d\.\d+)\] (.*)$", re.MULTILINE)


def slurmctld_lines(text: str, job_id: str) -> str:
    """The lines of a ``slurmctld`` log about ``job_id``, restamped as Jupyter log lines.

    ``[2026-11-30T09:31:58.698] sched: Allocate JobId=42 ...`` becomes
    ``[I 2026-11-30 09:31:58.698 slurmctld] sched: Allocate JobId=42 ...``, so that
    :data:`SCHEDULED` finds it like any other mark.
    """
    if not job_id.isdigit():
        return ""  # no job id (the hub logged none): nothing is that job's
    needle = re.compile(rf"\bJobId={job_id}\b")
    return "".join(
        f"[I {m[1]} {m[2]} slurmctld] {m[3]}\n"
        for m in _SLURMCTLD_LINE.finditer(text) if needle.search(m[3])
    )


def find_marks(marks: Sequence[Mark], logs: Mapping[str, str]) -> dict[str, float | None]:
    """Each mark's epoch time from the log of its source (``None`` if not found)."""
    return {m.name: first_stamp(logs.get(m.source, ""), m.pattern) for m in marks}


def breakdown(
    posted: float, times: Mapping[str, float | None], ready_seen: float | None = None
) -> dict[str, float | None]:
    """Seconds from each mark to the next, starting at ``posted`` and ending at ``ready_seen``.

    A missing mark gives ``None`` for its own segment, and the next segment is counted from
    the last mark that was found, so the segments still add up to the whole.
    """
    segments: dict[str, float | None] = {}
    last = posted
    ordered = [*times.items()] + ([("ready_seen", ready_seen)] if ready_seen else [])
    for name, when in ordered:
        if when is None:
            segments[name] = None
            continue
        segments[name] = round(when - last, 3)
        last = when
    return segments


def median_breakdown(runs: Sequence[Mapping[str, float | None]]) -> dict[str, float | None]:
    """Per segment, the median over the runs that have it (``None`` when none has)."""
    names: list[str] = []
    for run in runs:
        names += [n for n in run if n not in names]
    result: dict[str, float | None] = {}
    for name in names:
        values = [v for run in runs if (v := run.get(name)) is not None]
        value = median(values)
        result[name] = None if value is None else round(value, 3)
    return result


def largest(segments: Mapping[str, float | None]) -> str | None:
    """The name of the longest segment, or ``None`` when none was measured."""
    known = {k: v for k, v in segments.items() if v is not None}
    return max(known, key=lambda k: known[k]) if known else None
