"""One call at a time for everyone waiting: what arrives during a call shares the next one.

The workshop service makes participants' Slurm associations this way. ``sacctmgr`` adds run
at the same moment can be lost, so they must never overlap; and one call for a whole group
of a class joining at once is also far quicker than one call each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence


class SerialBatches:
    """Run ``work(items)`` for queued items; never two runs at once, no item left waiting.

    A run that fails fails every caller whose item was in it (with the run's exception);
    the next run is unaffected.
    """

    def __init__(self, work: Callable[[Sequence[str]], Awaitable[None]],
                 most_at_once: int = 100) -> None:
        self._work = work
        self._most = most_at_once
        self._queued: dict[str, asyncio.Future[None]] = {}
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, item: str) -> None:
        """Queue ``item`` and wait until a run that included it has finished."""
        if item in self._queued:
            raise ValueError(f"{item!r} is already waiting")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued[item] = done
        if self._runner is None or self._runner.done():
            self._runner = asyncio.ensure_future(self._drain())
        await asyncio.shield(done)

    async def _drain(self) -> None:
        while self._queued:
            items = list(self._queued)[:self._most]
            batch = {item: self._queued.pop(item) for item in items}
            try:
                await self._work(items)
            except Exception as exc:  # handed to every waiter of this run
                for done in batch.values():
                    if not done.done():
                        done.set_exception(exc)
            else:
                for done in batch.values():
                    if not done.done():
                        done.set_result(None)
