"""Work a spawn burst would otherwise repeat per spawn, done once: checks and state commits.

When many sessions start at once, the hub's event loop is the bottleneck, and most of its
time goes to database commits (``benchmarks.scale --bursts --profile``). Two pieces of
per-spawn work of ours are batched here:

* :class:`RecentChecks` remembers that a user's job log folder was made private, so that
  the next spawns of that user within a while skip the helper process that checks it;
* :class:`StateSaver` writes the spawner state that must survive a hub restart (the job id,
  saved as soon as ``sbatch`` answers) in one commit for all spawns submitted within a
  fraction of a second, instead of one commit per spawn.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable
from typing import Any

from shopfloor.extensions.compat import commit_staged_states, stage_spawner_state

log = logging.getLogger("shopfloor.spawn")


class RecentChecks:
    """Keys checked successfully, each trusted for a number of seconds after its check."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._checked: dict[Hashable, float] = {}

    def fresh(self, key: Hashable, seconds: float) -> bool:
        """True if ``key`` passed its check less than ``seconds`` ago."""
        checked = self._checked.get(key)
        return checked is not None and self._clock() - checked < seconds

    def passed(self, key: Hashable) -> None:
        """``key`` passed its check now."""
        self._checked[key] = self._clock()

    def forget(self, key: Hashable) -> None:
        """Check ``key`` again next time (what it vouched for may have changed)."""
        self._checked.pop(key, None)


class StateSaver:
    """Coalesce the commits of spawner states into one per ``delay`` seconds.

    :meth:`save_soon` puts the spawner's state on its database row at once (so that any
    commit the hub makes meanwhile carries it too) and schedules one commit, shared by every
    state staged until it runs. A state is thus in the database at most ``delay`` seconds
    after the job was submitted, as against a few milliseconds with a commit per spawn.
    """

    def __init__(self) -> None:
        self._staged: dict[int, Any] = {}
        self._handle: asyncio.TimerHandle | None = None
        #: Commits made and states they carried (for the log line and the tests).
        self.commits = 0
        self.saved = 0

    def save_soon(self, spawner: Any, delay: float) -> bool:
        """Stage ``spawner``'s state and make sure a commit follows within ``delay`` seconds.

        Returns False (nothing staged) when the spawner has no database row. With ``delay``
        0 or less the commit happens now.
        """
        if not stage_spawner_state(spawner):
            return False
        self._staged[id(spawner)] = spawner
        if delay <= 0:
            self.flush()
        elif self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(delay, self.flush)
        return True

    def flush(self) -> None:
        """Commit every staged state now (their latest ``get_state()``)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        staged, self._staged = list(self._staged.values()), {}
        if not staged:
            return
        try:
            count = commit_staged_states(staged)
        except Exception:
            # The hub's session rolled back; the states reach the database with the hub's
            # next commit of these spawners (when start() returns), as JupyterHub's own do.
            log.exception("could not save the state of %d starting server(s)", len(staged))
            return
        self.commits += 1
        self.saved += count


__all__ = ["RecentChecks", "StateSaver"]
