"""Associations and budgets for the hub, cached: one ``sacctmgr``/``sshare`` round per period.

A stale snapshot is returned at once while one refresh runs in the background (as
:class:`shopfloor.slurm.clusterinfo.ClusterInfo` does for partitions). A user missing from it
(a workshop participant who joined a second ago) waits for a look that started after it
asked; such looks start at most every two seconds, shared by everyone waiting.
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
        self._started = float("-inf")

    async def _fetch(self) -> AccountsSnapshot:
        associations, defaults, shares = await asyncio.gather(
            self.accounting.associations(), self.accounting.user_defaults(),
            self.accounting.shares())
        snap = build_snapshot(associations, defaults, shares)
        self._snapshot, self._taken = snap, time.monotonic()
        return snap

    def _start_refresh(self) -> asyncio.Task[AccountsSnapshot]:
        if self._refresh is None or self._refresh.done():
            self._started = time.monotonic()
            self._refresh = asyncio.ensure_future(self._fetch())
            self._refresh.add_done_callback(_log_failure)
        return self._refresh

    async def snapshot(self, *, user: str | None = None, fresh: bool = False) -> AccountsSnapshot:
        """The last snapshot; waits for a new one only at first, when ``fresh``, or when
        ``user`` is missing from it or has no default account yet (see :meth:`_look_again`)."""
        age = time.monotonic() - self._taken
        if self._snapshot is None or fresh:
            return await self._start_refresh()
        if user is not None and _not_settled(self._snapshot, user):
            return await self._look_again()
        if age > self.cache_seconds:
            self._start_refresh()
        return self._snapshot


    async def _look_again(self) -> AccountsSnapshot:
        """A snapshot whose ``sacctmgr`` round started after this call.

        A round already running may have read Slurm before the user's association was
        written (a class joining at once: the next participant asks while the first one's
        round runs), so it does not count. New rounds start at most every
        ``_MISSING_RETRY_SECONDS``, whoever asks, and everyone waiting shares them.
        """
        asked = time.monotonic()
        while self._started < asked:
            if self._refresh is not None and not self._refresh.done():
                await asyncio.wait([self._refresh])
                continue
            wait = self._started + _MISSING_RETRY_SECONDS - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self._start_refresh()
        if self._refresh is not None:  # the round the loop saw start at or after ``asked``
            return await self._refresh
        return await self._start_refresh()


def _not_settled(snapshot: AccountsSnapshot, user: str) -> bool:
    """Whether ``user`` is missing from ``snapshot`` or has no default account: Slurm gives
    every user one, so a read between ``sacctmgr add user`` steps shows it unsettled."""
    accounts = snapshot.for_user(user)
    return accounts is None or accounts.default is None


def _log_failure(task: asyncio.Task[AccountsSnapshot]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("accounts refresh failed: %s", task.exception())
