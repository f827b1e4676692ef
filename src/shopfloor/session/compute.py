"""Everything the compute panel shows, as one plain object for code: :class:`Compute`.

::

    from shopfloor.session.compute import Compute
    compute = Compute()                  # inside a session
    for p in compute.partitions():
        print(p.name, p.nodes_idle, p.gpus_idle, p.estimated_wait)
    compute.sessions.start("debugging", partition="debug")
    run = compute.run_notebook("analysis.ipynb", partition="cpu", parameters={"n": 10})

Limits and defaults come from the hub (the site's one resource model); live numbers Shopfloor's
hub's partitions do not carry (idle GPUs, the expected start of queued jobs, your batch runs'
jobs) come from the hub's one shared snapshot of Slurm (:class:`shopfloor.session.hubslurm.
HubSlurm`), so open panels do not add Slurm calls; submitting and cancelling run as the user.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from shopfloor.session.batch import BatchRun, RunStatus, statuses
from shopfloor.session.hubapi import Hub
from shopfloor.session.hubslurm import session_slurm
from shopfloor.session.sessions import Session, Sessions
from shopfloor.slurm.seam import JobInfo, SlurmError, SlurmSync, gpus_in_gres
from shopfloor.timeutil import format_minutes

_UNAVAILABLE_STATES = ("DOWN", "DRAIN", "FAIL", "MAINT", "NOT_RESPONDING", "POWERED_DOWN")


@dataclass(frozen=True)
class PartitionRow:
    """One partition as the user may use it: live numbers, limits, defaults, expected wait."""

    name: str
    description: str = ""
    up: bool = True
    demo_gpus: bool = False
    nodes_idle: int = 0
    nodes_total: int = 0
    cpus_idle: int = 0
    cpus_total: int = 0
    gpus_idle: int | None = None
    gpus_total: int = 0
    memory_gb_per_node: float = 0.0
    max_walltime_minutes: int = 0
    max_walltime_text: str = ""
    pending_jobs: int = 0
    estimated_wait: str = "unknown"
    limits: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)


def idle_gpus(nodes: dict[str, dict[str, str]], partition: str) -> int:
    """GPUs not allocated on the usable nodes of ``partition`` (``scontrol -d show node``)."""
    idle = 0
    for fields in nodes.values():
        if partition not in fields.get("Partitions", "").split(","):
            continue
        if any(bad in fields.get("State", "") for bad in _UNAVAILABLE_STATES):
            continue
        idle += gpus_in_gres(fields.get("Gres", "")) - gpus_in_gres(fields.get("GresUsed", ""))
    return max(idle, 0)


def estimate_wait(
    partition: str, *, up: bool, cpus_idle: int, cpus_wanted: int, jobs: list[JobInfo] | None,
    now: datetime | None = None,
) -> str:
    """When a new default-sized job on ``partition`` would likely start, in words.

    Free CPUs and nobody queued: now. Queued jobs go first: a new job starts after the last
    expected start Slurm computed for them. Without Slurm's view (``jobs`` is None): unknown.
    """
    if not up:
        return "partition is down"
    if jobs is None:
        return "unknown"
    queued = [j for j in jobs if j.is_pending and partition in j.partition.split(",")]
    if not queued and cpus_idle >= max(cpus_wanted, 1):
        return "starts now"
    starts = [j.start for j in queued if j.start is not None]
    now = now or datetime.now()
    if starts:
        last = max(starts)
        minutes = int((last - now).total_seconds() // 60)
        if minutes < 1:
            return "within a minute"
        return f"after {last:%H:%M} (~{format_minutes(minutes)})"
    if queued:
        return f"after {len(queued)} queued job{'s' if len(queued) != 1 else ''}"
    return "when running jobs end"


def partition_rows(
    answer: dict[str, Any],
    nodes: dict[str, dict[str, str]] | None,
    jobs: list[JobInfo] | None,
    now: datetime | None = None,
) -> list[PartitionRow]:
    """Rows for the hub's ``/shopfloor/partitions`` answer plus what Slurm says now."""
    rows = []
    for item in answer.get("partitions", []):
        live = item.get("live") or {}
        limits, defaults = dict(item.get("limits") or {}), dict(item.get("defaults") or {})
        name = str(item["name"])
        up = bool(live.get("up", True))
        cpus_idle = int(live.get("cpus_idle", 0))
        rows.append(PartitionRow(
            name=name, description=str(item.get("description", "")), up=up,
            demo_gpus=bool(item.get("demo_gpus")),
            nodes_idle=int(live.get("nodes_idle", 0)),
            nodes_total=int(live.get("nodes_total", 0)),
            cpus_idle=cpus_idle, cpus_total=int(live.get("cpus_total", 0)),
            gpus_idle=idle_gpus(nodes, name) if nodes is not None else None,
            gpus_total=int(live.get("gpus_per_node", 0)) * int(live.get("nodes_total", 0)),
            memory_gb_per_node=round(int(live.get("memory_per_node_mb", 0)) / 1024, 1),
            max_walltime_minutes=int(limits.get("max_walltime_minutes", 0)),
            max_walltime_text=str(item.get("max_walltime_text", "")),
            pending_jobs=int(item.get("pending_jobs", 0)),
            estimated_wait=estimate_wait(
                name, up=up, cpus_idle=cpus_idle, cpus_wanted=int(defaults.get("cpus", 1)),
                jobs=jobs, now=now,
            ),
            limits=limits, defaults=defaults,
        ))
    return rows


def qos_table(answer: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    """QoS per account and partition from the hub's ``/shopfloor/partitions`` answer; the
    key "" (no account named) holds the default account's."""
    table = {str(account): {str(p): [str(q) for q in names] for p, names in parts.items()}
             for account, parts in (answer.get("qos_by_account") or {}).items()}
    table[""] = {str(p): [str(q) for q in names]
                 for p, names in (answer.get("qos") or {}).items()}
    return table


class Compute:
    """The user's compute: partitions, sessions and batch runs (what the panel shows).

    ``hub`` defaults to this session's hub, ``slurm`` to Slurm read through that hub
    (:func:`~shopfloor.session.hubslurm.session_slurm`), ``runs_dir`` to ``~/shopfloor-batch``.
    """

    def __init__(self, hub: Hub | None = None, slurm: SlurmSync | None = None,
                 runs_dir: str | Path | None = None) -> None:
        self.hub = hub or Hub()
        self.slurm = slurm or session_slurm(self.hub)
        self.runs_dir = runs_dir
        self.sessions = Sessions(self.hub)
        #: The default partition of the last :meth:`partitions` answer.
        self.default_partition: str | None = None
        #: Accounts the user may charge and the preselected one (last :meth:`partitions`).
        self.accounts: list[str] = []
        self.default_account: str | None = None
        #: QoS per account and partition (:func:`qos_table`, last :meth:`partitions`).
        self.qos_by_account: dict[str, dict[str, list[str]]] = {}
        #: Why the last :meth:`partitions` had to do without Slurm's own view ("" if it did).
        self.slurm_problem = ""

    def partitions(self) -> list[PartitionRow]:
        """Partitions the user may use, with live numbers and the expected wait."""
        answer = self.hub.partitions()
        self.default_partition = answer.get("default_partition")
        self.accounts = list(answer.get("accounts") or [])
        self.default_account = answer.get("default_account")
        self.qos_by_account = qos_table(answer)
        nodes, jobs = self._slurm_view()
        return partition_rows(answer, nodes, jobs)

    def _slurm_view(self) -> tuple[dict[str, dict[str, str]] | None, list[JobInfo] | None]:
        try:
            nodes, jobs = self.slurm.nodes(details=True), self.slurm.queue()
        except SlurmError as exc:
            self.slurm_problem = f"Idle GPUs and expected waits are unavailable: " \
                                 f"{exc.slurm_message}"
            return None, None
        self.slurm_problem = ""
        return nodes, jobs

    def budgets(self) -> dict[str, Any] | None:
        """The user's budgets (``used / granted`` per account); None without accounting."""
        return self.hub.budgets()

    def list_sessions(self) -> list[Session]:
        """The user's sessions (:meth:`Sessions.list`), each running one with its job's end
        time; without Slurm's view (or a hub that lists no jobs) the end stays unknown."""
        sessions = self.sessions.list()
        if not any(s.state == "running" for s in sessions):
            return sessions
        try:
            jobs = list(self.slurm.squeue(user=self.hub.user).values())
        except SlurmError:
            return sessions
        return [s.with_job_end(self.hub.user, jobs) for s in sessions]

    def run_notebook(self, notebook: str | Path, *, parameters: dict[str, Any] | None = None,
                     **resources: Any) -> BatchRun:
        """Submit ``notebook`` as a batch job (see :meth:`BatchRun.submit`)."""
        return BatchRun.submit(notebook, parameters=parameters, hub=self.hub, slurm=self.slurm,
                               runs_dir=self.runs_dir, **resources)

    def runs(self, limit: int = 20) -> list[tuple[BatchRun, RunStatus]]:
        """The newest ``limit`` batch runs with their status (one ``squeue`` for all)."""
        runs = BatchRun.list(self.runs_dir, self.slurm)[:limit]
        found = statuses(runs, self.slurm)
        return [(run, found[run.id]) for run in runs]


__all__ = ["Compute", "PartitionRow", "estimate_wait", "idle_gpus", "partition_rows",
           "qos_table"]
