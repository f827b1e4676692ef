"""The hub's association cache in a workshop rush: a participant whose association was written
a moment ago is never refused because a ``sacctmgr`` round that read Slurm earlier answers."""

from __future__ import annotations

import asyncio

import pytest

from shopfloor.accounts import info
from shopfloor.accounts.info import AccountsInfo
from shopfloor.slurm.accounting import Association


class SlowSlurmdbd:
    """``sacctmgr`` stand-in: each round reads the state when it starts, answers 50 ms later."""

    def __init__(self) -> None:
        self.users: dict[str, str] = {"alice": "proj-ml"}
        self.without_default: set[str] = set()
        self.rounds = 0

    async def associations(self) -> list[Association]:
        self.rounds += 1
        seen = dict(self.users)
        await asyncio.sleep(0.05)
        return [Association(account=a, user=u) for u, a in seen.items()]

    async def user_defaults(self) -> dict[str, str]:
        seen = {u: a for u, a in self.users.items() if u not in self.without_default}
        await asyncio.sleep(0.05)
        return seen

    async def shares(self) -> list[object]:
        return []


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch) -> tuple[AccountsInfo, SlowSlurmdbd]:
    monkeypatch.setattr(info, "_MISSING_RETRY_SECONDS", 0.1)
    accounts = AccountsInfo(None)  # type: ignore[arg-type]
    slurmdbd = SlowSlurmdbd()
    accounts.accounting = slurmdbd  # type: ignore[assignment]
    return accounts, slurmdbd


def test_a_round_that_read_before_the_join_does_not_answer(
        cache: tuple[AccountsInfo, SlowSlurmdbd]) -> None:
    accounts, slurmdbd = cache

    async def rush() -> tuple[object, object]:
        await accounts.snapshot()
        slurmdbd.users["ws-a-1"] = "ws-a"
        first = asyncio.ensure_future(accounts.snapshot(user="ws-a-1"))
        await asyncio.sleep(0.01)  # ws-a-1's round has read Slurm; now ws-a-2 joins
        slurmdbd.users["ws-a-2"] = "ws-a"
        second = await accounts.snapshot(user="ws-a-2")
        return await first, second

    first, second = asyncio.run(rush())
    assert first.for_user("ws-a-1") is not None  # type: ignore[attr-defined]
    mine = second.for_user("ws-a-2")  # type: ignore[attr-defined]
    assert mine is not None and mine.default == "ws-a"


def test_a_user_read_between_sacctmgr_steps_is_looked_at_again(
        cache: tuple[AccountsInfo, SlowSlurmdbd]) -> None:
    accounts, slurmdbd = cache

    async def half_written() -> object:
        slurmdbd.users["ws-a-3"] = "ws-a"
        slurmdbd.without_default.add("ws-a-3")
        await accounts.snapshot()
        slurmdbd.without_default.clear()
        return await accounts.snapshot(user="ws-a-3")

    snap = asyncio.run(half_written())
    assert snap.for_user("ws-a-3").default == "ws-a"  # type: ignore[attr-defined]


def test_a_class_shares_few_rounds_and_settled_users_wait_for_none(
        cache: tuple[AccountsInfo, SlowSlurmdbd]) -> None:
    accounts, slurmdbd = cache

    async def class_joins() -> list[object]:
        await accounts.snapshot()
        before = slurmdbd.rounds
        await accounts.snapshot(user="alice")
        assert slurmdbd.rounds == before  # known and settled: the cached snapshot
        for n in range(30):
            slurmdbd.users[f"ws-a-{n}"] = "ws-a"
        return list(await asyncio.gather(
            *(accounts.snapshot(user=f"ws-a-{n}") for n in range(30))))

    snaps = asyncio.run(class_joins())
    assert all(s.for_user(f"ws-a-{n}") is not None  # type: ignore[attr-defined]
               for n, s in enumerate(snaps))
    assert slurmdbd.rounds <= 3  # the first, one for the whole class, maybe one more
