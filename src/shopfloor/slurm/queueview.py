"""The whole queue and the nodes' GPUs, read once and shared by a hub: :class:`QueueView`.

Open panels and Ray clusters in users' sessions ask "where are my jobs" and "how many GPUs
are idle" every few seconds (a compute panel every 3-10 s, ``RayCluster.wait_ready`` every
0.25 s). Asked of Slurm by every session, that is one ``squeue`` and one ``scontrol`` per
panel per refresh, growing with the number of open panels. The hub asks instead, for
everybody: one ``squeue`` of every job and one ``scontrol -d show node`` per snapshot, at most
one snapshot per ``max_age`` seconds however many sessions ask
(:mod:`shopfloor.extensions.jobs_api` serves it, each user their own jobs only).

A snapshot can be older than a job a user just submitted. Slurm's job ids grow, so a caller
that knows a job id (``newest``) newer than everything in the snapshot gets an answer from a
snapshot taken after it asked; such forced snapshots are at most one per ``min_interval``
seconds for the whole hub, so asking for ever larger ids cannot flood slurmctld.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from shopfloor.slurm.seam import JobInfo, Slurm, SlurmError

#: The fields of ``scontrol -d show node`` a session may read through the hub (what idle GPUs
#: and node addresses need); the rest (comments, OS, features) stays with ``scontrol``.
NODE_FIELDS = ("Partitions", "State", "Gres", "GresUsed", "NodeAddr", "CPUTot", "CPUAlloc")

_LEADING_DIGITS = re.compile(r"\d+")


def job_number(job_id: str) -> int:
    """The numeric part of a Slurm job id (``123`` of ``123_4`` array tasks); 0 if none."""
    match = _LEADING_DIGITS.match(job_id)
    return int(match.group()) if match else 0


@dataclass(frozen=True)
class QueueSnapshot:
    """Every job Slurm lists and the nodes' fields, as seen at ``taken`` (monotonic clock)."""

    jobs: Mapping[str, JobInfo]
    nodes: Mapping[str, Mapping[str, str]]
    taken: float
    newest_job: int = field(init=False)

    def __post_init__(self) -> None:
        newest = max((job_number(j) for j in self.jobs), default=0)
        object.__setattr__(self, "newest_job", newest)

    def jobs_of(self, user: str) -> list[JobInfo]:
        """``user``'s jobs, oldest first."""
        mine = [j for j in self.jobs.values() if j.user == user]
        return sorted(mine, key=lambda j: (job_number(j.job_id), j.job_id))

    def queued_for_others(self, user: str) -> list[tuple[str, datetime | None]]:
        """Other users' pending jobs as ``(partition, expected start)`` only: enough to say
        when a new job would start, nothing about whose jobs they are."""
        return [(j.partition, j.start) for j in self.jobs.values()
                if j.user != user and j.is_pending]

    def public_nodes(self) -> dict[str, dict[str, str]]:
        """Each node's :data:`NODE_FIELDS` (what ``sinfo`` shows every user anyway)."""
        return {name: {k: v for k, v in fields.items() if k in NODE_FIELDS}
                for name, fields in self.nodes.items()}


class QueueView:
    """One hub's shared, cached view of the queue and the nodes.

    ``max_age``: seconds a snapshot is reused (the site's ``slurm.poll_interval``);
    ``min_interval``: the shortest time between two snapshots, also when callers force one.
    ``slurm_calls`` counts the Slurm commands it ran (benchmarks and tests read it).
    """

    def __init__(self, slurm: Slurm, max_age: float = 5.0, min_interval: float = 1.0) -> None:
        self.slurm = slurm
        self.max_age = max_age
        self.min_interval = min(min_interval, max_age)
        self.slurm_calls = 0
        self._snapshot: QueueSnapshot | None = None
        self._inflight: asyncio.Future[QueueSnapshot] | None = None
        #: Per user, the newest job id a snapshot taken after they named it has covered.
        self._confirmed: dict[str, int] = {}
        #: When the last fetch failed and why: repeated to callers for ``min_interval`` s, so
        #: that a slurmctld outage is not met with one more command per caller.
        self._failure: tuple[float, SlurmError] | None = None

    async def _fetch(self) -> QueueSnapshot:
        started = time.monotonic()
        self.slurm_calls += 2
        try:
            jobs, nodes = await asyncio.gather(self.slurm.squeue(),
                                               self.slurm.nodes(details=True))
        except SlurmError as exc:
            self._failure = (started, exc)
            raise
        self._failure = None
        snapshot = QueueSnapshot(jobs=jobs, nodes=nodes, taken=started)
        self._snapshot = snapshot
        return snapshot

    async def _taken_since(self, moment: float) -> QueueSnapshot:
        """A snapshot taken at ``moment`` or later; one fetch shared by every waiting caller."""
        while self._snapshot is None or self._snapshot.taken < moment:
            if self._inflight is None or self._inflight.done():
                if self._failure and time.monotonic() - self._failure[0] < self.min_interval:
                    raise self._failure[1]
                last = self._snapshot.taken if self._snapshot else -self.min_interval
                pause = last + self.min_interval - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
                    continue
                self._inflight = asyncio.ensure_future(self._fetch())
            await asyncio.shield(self._inflight)
        return self._snapshot

    def _refresh_ahead(self, snapshot: QueueSnapshot) -> None:
        """Start the next fetch in the background once ``snapshot`` is 80 % of ``max_age`` old,
        so that with steady callers nobody waits for Slurm (the one who would otherwise find
        it expired is the p95 of the endpoint)."""
        if time.monotonic() - snapshot.taken < 0.8 * self.max_age:
            return
        if self._inflight is not None and not self._inflight.done():
            return
        if self._failure and time.monotonic() - self._failure[0] < self.min_interval:
            return
        self._inflight = asyncio.ensure_future(self._fetch())
        # Nobody awaits this one: a failure is kept in _failure and repeated to later callers.
        self._inflight.add_done_callback(lambda done: done.cancelled() or done.exception())

    async def snapshot(self, *, user: str = "", newest: int = 0) -> QueueSnapshot:
        """A snapshot at most ``max_age`` old that includes job ``newest`` if ``user`` says
        it exists (0: no such hint). Raises :class:`~shopfloor.slurm.seam.SlurmError`."""
        asked = time.monotonic()
        snapshot = await self._taken_since(asked - self.max_age)
        self._refresh_ahead(snapshot)
        if newest > max(snapshot.newest_job, self._confirmed.get(user, 0)):
            snapshot = await self._taken_since(asked)
            self._confirmed[user] = max(newest, self._confirmed.get(user, 0))
        return snapshot


__all__ = ["NODE_FIELDS", "QueueSnapshot", "QueueView", "job_number"]
