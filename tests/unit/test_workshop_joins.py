"""A class joining at once: the slow privileged steps overlap, places and numbers stay exact.

The privileged steps (Unix account, Slurm association, reservation, hub user) are replaced
by timed stand-ins here; the real ones are exercised by
``tests/integration/test_workshop_lifecycle.py`` and ``benchmarks.workshop``.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shopfloor.extensions.workshops_service import JOINS_AT_ONCE, Workshops
from shopfloor.site import parse_site
from shopfloor.workshops import ops
from shopfloor.workshops.model import Workshop, WorkshopInputError, WorkshopStore

CODE = "ABCD-EFGH"
STEP_S = 0.05


def site(accounting: bool) -> Any:
    return parse_site({
        "partitions": {"cpu": {}},
        "accounting": {"enabled": accounting},
        "workshops": {"partitions": ["cpu"], "max_capacity": 60},
    })


class Steps:
    """Timed stand-ins for the privileged steps; records what ran at the same time."""

    def __init__(self) -> None:
        self.running = 0
        self.most_at_once = 0
        self.accounts: list[str] = []
        self.associations: list[str] = []
        self.slurm_accounts: set[str] = set()
        self.associating = False
        self.fail_associations = 0
        self.deleted: list[str] = []
        self.association_runs: list[list[str]] = []
        self.reservation_users: list[str] = []

    async def step(self) -> None:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        await asyncio.sleep(STEP_S)
        self.running -= 1

    async def create_account(self, username: str) -> str:
        assert username not in self.accounts, f"{username} made twice"
        await self.step()
        self.accounts.append(username)
        return "pw-" + username

    async def associate(self, usernames: list[str], *, slurm_conf: str = "") -> None:
        # Two sacctmgr adds at the same moment lose associations: runs must never overlap.
        assert not self.associating, "two association runs at once"
        if self.fail_associations:
            self.fail_associations -= 1
            raise ops.OperationError("slurm-associate exited 4: Slurm did not keep it")
        self.associating = True
        self.association_runs.append(list(usernames))
        try:
            await self.step()
        finally:
            self.associating = False
        for username in usernames:
            self.slurm_accounts.add(username.rsplit("-", 1)[0])
            self.associations.append(username)

    async def delete_account(self, username: str) -> None:
        self.accounts.remove(username)
        self.deleted.append(username)

    async def add_reservation_user(self, slurm: Any, reservation: str, username: str) -> None:
        await self.step()
        self.reservation_users.append(username)


class Hub:
    async def call(self, method: str, path: str, body: Any = None, ok: Any = None) -> Any:
        await asyncio.sleep(0)
        return {}


def prepared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capacity: int,
             accounting: bool = True) -> tuple[Workshops, Steps]:
    steps = Steps()
    monkeypatch.setattr(ops, "create_account", steps.create_account)
    monkeypatch.setattr(ops, "associate_participants", steps.associate)
    monkeypatch.setattr(ops, "add_reservation_user", steps.add_reservation_user)
    monkeypatch.setattr(ops, "delete_account", steps.delete_account)
    store = WorkshopStore(tmp_path / "w.sqlite")
    now = datetime.now()
    store.add_workshop(Workshop(
        name="intro", title="Intro", code=CODE.replace("-", ""),
        start=now.isoformat(), end=(now + timedelta(hours=2)).isoformat(),
        capacity=capacity, partition="cpu", reservation="ws-intro", material="",
        trainers=["trainer"], created_by="trainer"))
    return Workshops(site(accounting), store, None, Hub()), steps  # type: ignore[arg-type]


async def join_all(workshops: Workshops, count: int) -> list[Any]:
    return await asyncio.gather(*(workshops.join(f"10.0.0.{i}", CODE, f"Person {i}")
                                  for i in range(count)), return_exceptions=True)


def test_a_class_joins_in_parallel_with_distinct_accounts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workshops, steps = prepared(tmp_path, monkeypatch, capacity=40)
    t0 = time.monotonic()
    joined = asyncio.run(join_all(workshops, 40))
    elapsed = time.monotonic() - t0
    assert not [j for j in joined if isinstance(j, BaseException)], joined
    names = [j["username"] for j in joined]
    assert sorted(names) == sorted(f"ws-intro-{n}" for n in range(1, 41))
    assert len(set(j["password"] for j in joined)) == 40
    stored = workshops.store.participants("intro")
    assert sorted(p.number for p in stored) == list(range(1, 41))
    assert sorted(steps.reservation_users) == sorted(names)
    # The slow steps overlap (one after the other: 40 joins x 3 steps x STEP_S = 6 s) but
    # never more than JOINS_AT_ONCE at a time.
    assert 1 < steps.most_at_once <= JOINS_AT_ONCE
    assert elapsed < 40 * 3 * STEP_S / 2
    assert steps.slurm_accounts == {"ws-intro"}
    assert sorted(steps.associations) == sorted(names)
    # One association run at a time, shared by the joins that waited for it.
    assert len(steps.association_runs) < 40 / 2
    assert workshops.joining["intro"] == set()


@pytest.mark.parametrize("capacity", [1, 3, 7])
def test_a_rush_never_overfills_the_workshop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capacity: int) -> None:
    workshops, steps = prepared(tmp_path, monkeypatch, capacity=capacity)
    joined = asyncio.run(join_all(workshops, capacity + 5))
    ok = [j for j in joined if isinstance(j, dict)]
    refused = [j for j in joined if isinstance(j, WorkshopInputError)]
    assert len(ok) == capacity and len(refused) == 5
    assert all("full" in r.problems["workshop"] for r in refused)
    assert sorted(j["username"] for j in ok) == sorted(
        f"ws-intro-{n}" for n in range(1, capacity + 1))
    assert len(steps.accounts) == capacity


def test_a_failed_join_frees_its_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workshops, steps = prepared(tmp_path, monkeypatch, capacity=2)
    real_create = steps.create_account

    async def failing_once(username: str) -> str:
        monkeypatch.setattr(ops, "create_account", real_create)
        raise ops.OperationError("useradd exited 1")

    monkeypatch.setattr(ops, "create_account", failing_once)
    with pytest.raises(ops.OperationError):
        asyncio.run(workshops.join("10.0.0.1", CODE, "Ann"))
    assert workshops.joining["intro"] == set()
    joined = asyncio.run(join_all(workshops, 3))
    assert sum(isinstance(j, dict) for j in joined) == 2


def test_without_accounting_no_association_is_made(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    workshops, steps = prepared(tmp_path, monkeypatch, capacity=5, accounting=False)
    assert all(isinstance(j, dict) for j in asyncio.run(join_all(workshops, 5)))
    assert steps.associations == [] and steps.slurm_accounts == set()


def test_a_failed_association_removes_the_account_it_made(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workshops, steps = prepared(tmp_path, monkeypatch, capacity=3)
    steps.fail_associations = 1
    with pytest.raises(ops.OperationError):
        asyncio.run(workshops.join("10.0.0.1", CODE, "Ann"))
    assert steps.deleted == ["ws-intro-1"] and steps.accounts == []
    assert workshops.store.participants("intro") == []
    # The number is free again, and so is its account: the next participant gets both.
    joined = asyncio.run(workshops.join("10.0.0.2", CODE, "Ben"))
    assert joined["username"] == "ws-intro-1" and steps.accounts == ["ws-intro-1"]
