"""Live cluster state (partitions, reservations, queue), cached and shared.

One :class:`ClusterInfo` per process answers every "what does the cluster have" question from
a cache: a stale cache is returned at once while one background refresh runs, so a page view
never waits on ``sinfo`` except the very first time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import TYPE_CHECKING

from shopfloor.resources import LiveCluster
from shopfloor.slurm.seam import Slurm, SlurmError

if TYPE_CHECKING:
    from shopfloor.accounts.info import AccountsInfo

log = logging.getLogger(__name__)


class ClusterInfo:
    """Cached ``sinfo`` / ``scontrol show reservation`` / pending counts."""

    def __init__(self, slurm: Slurm, cache_seconds: float = 10.0,
                 accounts: AccountsInfo | None = None) -> None:
        self.slurm = slurm
        #: Associations and budgets (sites with accounting), added to every snapshot.
        self.accounts = accounts
        self.cache_seconds = cache_seconds
        self._snapshot: LiveCluster | None = None
        self._taken = 0.0
        self._refresh: asyncio.Task[LiveCluster] | None = None
        self.last_error: str | None = None

    async def _fetch(self) -> LiveCluster:
        partitions, reservations, pending = await asyncio.gather(
            self.slurm.partitions(),
            self.slurm.reservations(),
            self.slurm.pending_jobs(),
        )
        snap = LiveCluster(
            partitions={p.name: p for p in partitions},
            reservations=reservations,
            pending=pending,
        )
        self._snapshot, self._taken, self.last_error = snap, time.monotonic(), None
        return snap

    def _start_refresh(self) -> asyncio.Task[LiveCluster]:
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.ensure_future(self._fetch())
            self._refresh.add_done_callback(self._log_failure)
        return self._refresh

    def _log_failure(self, task: asyncio.Task[LiveCluster]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.last_error = str(task.exception())
            log.warning("cluster info refresh failed: %s", self.last_error)

    async def snapshot(self, *, fresh: bool = False, user: str | None = None) -> LiveCluster:
        """The cluster as last seen; waits only when nothing was seen yet (or ``fresh``).

        With accounting, the snapshot carries associations and budgets; ``user`` (the one
        asking) is looked up afresh when the cache does not know them yet.
        """
        snap = await self._cluster_snapshot(fresh=fresh)
        if self.accounts is None:
            return snap
        accounts = await self.accounts.snapshot(user=user, fresh=fresh)
        return dataclasses.replace(snap, accounts=accounts)

    async def _cluster_snapshot(self, *, fresh: bool = False) -> LiveCluster:
        stale = time.monotonic() - self._taken > self.cache_seconds
        if self._snapshot is None or fresh:
            try:
                return await self._start_refresh()
            except SlurmError:
                if self._snapshot is None:
                    raise
                return self._snapshot
        if stale:
            self._start_refresh()
        return self._snapshot
