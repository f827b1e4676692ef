"""The hub's shared queue snapshot: one Slurm read for every panel, fresh for new jobs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import datetime

import pytest
from tornado import web

from shopfloor.extensions.jobs_api import job_json, parse_newest
from shopfloor.session.hubslurm import job_from_json
from shopfloor.slurm.queueview import NODE_FIELDS, QueueSnapshot, QueueView, job_number
from shopfloor.slurm.seam import JobInfo, Slurm, SlurmError


def _job(job_id: str, user: str, state: str = "RUNNING", partition: str = "cpu") -> JobInfo:
    return JobInfo(job_id, state, "None", "node1", "node1", datetime(2026, 1, 1, 10, 0), user,
                   partition, f"job-{job_id}")


class FakeSlurm(Slurm):
    """Replaces the seam only: counts calls and answers from a dict the test changes."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs: dict[str, JobInfo] = {"10": _job("10", "alice"), "11": _job("11", "bob")}
        self.squeues = 0
        self.fail = False

    async def squeue(self, job_ids: Sequence[str] | None = None, *, user: str | None = None
                     ) -> dict[str, JobInfo]:
        self.squeues += 1
        await asyncio.sleep(0.01)
        if self.fail:
            raise SlurmError(["squeue"], 1, "", "squeue: error: Unable to contact slurm controller")
        return dict(self.jobs)

    async def nodes(self, node: str | None = None, *, details: bool = False
                    ) -> dict[str, dict[str, str]]:
        return {"gpu1": {"Partitions": "gpu", "State": "IDLE", "Gres": "gpu:2",
                         "GresUsed": "gpu:0", "OS": "Linux secret-kernel", "Comment": "x"}}


async def test_fifty_panels_share_one_snapshot() -> None:
    slurm = FakeSlurm()
    view = QueueView(slurm, max_age=5)
    snaps = await asyncio.gather(*(view.snapshot(user=f"u{i}") for i in range(50)))
    assert slurm.squeues == 1 and view.slurm_calls == 2
    assert len({id(s) for s in snaps}) == 1
    await view.snapshot(user="alice")
    assert slurm.squeues == 1  # still fresh


async def test_a_stale_snapshot_is_read_again() -> None:
    slurm = FakeSlurm()
    view = QueueView(slurm, max_age=0.05, min_interval=0.01)
    await view.snapshot()
    await asyncio.sleep(0.08)
    await view.snapshot()
    assert slurm.squeues == 2


async def test_a_job_newer_than_the_snapshot_forces_one_fresh_read() -> None:
    slurm = FakeSlurm()
    view = QueueView(slurm, max_age=60, min_interval=0.05)
    await view.snapshot(user="alice")
    slurm.jobs["12"] = _job("12", "alice", "PENDING")
    snap = await view.snapshot(user="alice", newest=12)
    assert "12" in snap.jobs and slurm.squeues == 2
    # Known now: asking again (or for an older job) reads nothing more.
    await view.snapshot(user="alice", newest=12)
    await view.snapshot(user="alice", newest=10)
    assert slurm.squeues == 2


async def test_forged_newest_ids_cannot_flood_slurm() -> None:
    slurm = FakeSlurm()
    view = QueueView(slurm, max_age=60, min_interval=0.2)
    await view.snapshot()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.gather(*(view.snapshot(user=f"u{i}", newest=10_000 + i) for i in range(30)))
    # One forced read for all thirty, and not before min_interval after the last one.
    assert slurm.squeues == 2
    assert loop.time() - started >= 0.15
    # A user's forged id is remembered for that user only: others still force their own.
    await view.snapshot(user="mallory", newest=99_999_999)
    before = slurm.squeues
    slurm.jobs["13"] = _job("13", "alice")
    snap = await view.snapshot(user="alice", newest=13)
    assert slurm.squeues == before + 1 and "13" in snap.jobs


async def test_an_outage_is_repeated_not_retried_by_every_caller() -> None:
    slurm = FakeSlurm()
    slurm.fail = True
    view = QueueView(slurm, max_age=1, min_interval=0.5)
    for _ in range(5):
        with pytest.raises(SlurmError):
            await view.snapshot()
    assert slurm.squeues == 1


def test_snapshot_is_scoped_to_the_caller() -> None:
    jobs = {"10": _job("10", "alice"), "11": _job("11", "bob", "PENDING", "gpu"),
            "12_3": _job("12_3", "alice", "PENDING")}
    snap = QueueSnapshot(jobs=jobs, nodes={"n": {"State": "IDLE", "OS": "Linux"}}, taken=0)
    assert snap.newest_job == 12
    assert [j.job_id for j in snap.jobs_of("alice")] == ["10", "12_3"]
    assert [j.job_id for j in snap.jobs_of("bob")] == ["11"]
    assert snap.queued_for_others("alice") == [("gpu", datetime(2026, 1, 1, 10, 0))]
    assert snap.queued_for_others("bob") == [("cpu", datetime(2026, 1, 1, 10, 0))]
    assert snap.public_nodes() == {"n": {"State": "IDLE"}}
    assert "OS" not in NODE_FIELDS


def test_job_ids_and_the_newest_parameter() -> None:
    assert job_number("123_4") == 123 and job_number("77") == 77 and job_number("x") == 0
    assert parse_newest(None) == 0 and parse_newest("") == 0 and parse_newest("42") == 42
    for bad in ("-1", "1,2", "abc", "1" * 13, "1;id"):
        with pytest.raises(web.HTTPError) as caught:
            parse_newest(bad)
        assert caught.value.status_code == 400 and "newest" in str(caught.value.log_message)


def test_jobs_travel_through_json_unchanged() -> None:
    job = _job("10", "alice")
    assert job_from_json(job_json(job)) == job
    pending = JobInfo("11", "PENDING", "Priority", "", "", None, "alice", "gpu", "n", 5)
    assert job_from_json(job_json(pending)) == pending


async def test_steady_callers_never_wait_for_slurm() -> None:
    """Past 80 % of max_age a caller still gets the current snapshot at once, and one
    background read replaces it before it expires."""
    slurm = FakeSlurm()
    view = QueueView(slurm, max_age=1.0, min_interval=0.01)
    first = await view.snapshot()
    # 85 % of max_age after the snapshot was taken (measured, so a busy machine's late wake-up
    # still leaves 150 ms before it expires).
    await asyncio.sleep(first.taken + 0.85 - time.monotonic())
    assert await view.snapshot() is first  # not expired: no wait
    latest = first
    # The background read (10 ms) replaces it before max_age: nobody waited for Slurm.
    while latest is first and time.monotonic() < first.taken + 0.95:
        await asyncio.sleep(0.01)
        latest = await view.snapshot()
    assert latest is not first and slurm.squeues == 2
