"""SerialBatches: one run at a time, every waiter answered by a run that included it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from shopfloor.workshops.batches import SerialBatches


class Work:
    def __init__(self, fail_with: set[str] | None = None) -> None:
        self.runs: list[list[str]] = []
        self.running = False
        self.fail_with = fail_with or set()

    async def __call__(self, items: Sequence[str]) -> None:
        assert not self.running, "two runs at once"
        self.running = True
        self.runs.append(list(items))
        try:
            await asyncio.sleep(0.02)
            if self.fail_with & set(items):
                raise RuntimeError(f"failed: {sorted(self.fail_with & set(items))}")
        finally:
            self.running = False


def test_waiters_share_runs_and_runs_never_overlap() -> None:
    work = Work()

    async def main() -> None:
        batches = SerialBatches(work, most_at_once=10)
        first = asyncio.ensure_future(batches.submit("a"))
        await asyncio.sleep(0.005)  # "a" runs alone; the next 25 queue meanwhile
        await asyncio.gather(first, *(batches.submit(f"u{i}") for i in range(25)))

    asyncio.run(main())
    assert work.runs[0] == ["a"]
    assert [len(r) for r in work.runs[1:]] == [10, 10, 5]
    assert sorted(x for r in work.runs for x in r) == sorted(["a", *(f"u{i}" for i in range(25))])


def test_a_failed_run_fails_only_its_own_waiters() -> None:
    work = Work(fail_with={"bad"})

    async def main() -> list[object]:
        batches = SerialBatches(work)
        first = asyncio.ensure_future(batches.submit("bad"))
        await asyncio.sleep(0.005)
        later = [batches.submit("x"), batches.submit("y")]
        return await asyncio.gather(first, *later, return_exceptions=True)

    results = asyncio.run(main())
    assert isinstance(results[0], RuntimeError) and results[1:] == [None, None]
    assert work.runs == [["bad"], ["x", "y"]]


def test_an_item_already_waiting_is_refused() -> None:
    async def main() -> None:
        batches = SerialBatches(Work())
        first = asyncio.ensure_future(batches.submit("a"))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        second = asyncio.ensure_future(batches.submit("b"))
        await asyncio.sleep(0)
        with pytest.raises(ValueError, match="already waiting"):
            await batches.submit("b")
        await asyncio.gather(first, second)

    asyncio.run(main())
