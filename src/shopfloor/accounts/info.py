"""Associations and budgets for the hub, cached: one ``sacctmgr``/``sshare`` round per period.

A stale snapshot is returned at once while one refresh runs in the background (as
:class:`shopfloor.slurm.clusterinfo.ClusterInfo` does for partitions). A user missing from it
(a workshop participant who joined a second ago) triggers one fresh look at once.
"""

from __future__ import annotations

import asyncio
import logging
import time

from shopfloor.accounts.model import AccountsSnapshot, build_snapshot
from shopfloor.slurm.accounting import Accounting
from shopfloor.slurm.seam import Slurm

log = logging.getLogger(__name__)
#: At most one fresh look per this many seconds for users missing from the cache.
_MISSING_RETRY_SECONDS = 2.0


class AccountsInfo:
    """Cached :class:`~shopfloor.accounts.model.AccountsSnapshot` of the whole cluster."""

    def __init__(self, slurm: Slurm, cache_seconds: float = 30.0) -> None:
        self.accounting = Accounting(slurm)
        self.cache_seconds = cache_seconds
        self._snapshot: AccountsSnapshot | None = None
        self._taken = 0.0
        self._refresh: asyncio.Task[AccountsSnapshot] | None = None

    async def _fetch(self) -> AccountsSnapshot:
        associations, defaults, shares = await asyncio.gather(
            self.accounting.associations(), self.accounting.user_defaults(),
            self.accounting.shares())
        snap = build_snapshot(associations, defaults, shares)
        self._snapshot, self._taken = snap, time.monotonic()
        return snap

    def _start_refresh(self) -> asyncio.Task[AccountsSnapshot]:
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.ensure_future(self._fetch())
            self._refresh.add_done_callback(_log_failure)
        return self._refresh

    async def snapshot(self, *, user: str | None = None, fresh: bool = False) -> AccountsSnapshot:
        """The last snapshot; waits for a new one only at first, when ``fresh``, or when
        ``user`` is missing from it (at most every two seconds)."""
        age = time.monotonic() - self._taken
        missing = (user is not None and self._snapshot is not None
                   and self._snapshot.for_user(user) is None and age > _MISSING_RETRY_SECONDS)
        if self._snapshot is None or fresh or missing:
            return await self._start_refresh()
        if age > self.cache_seconds:
            self._start_refresh()
        return self._snapshot


def _log_failure(task: asyncio.Task[AccountsSnapshot]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("accounts refresh failed: %s", task.exception())
