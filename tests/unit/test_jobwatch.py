"""One batched squeue for many spawners; unknown (not dead) when Slurm does not answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from shopfloor.slurm.jobwatch import JobState, JobWatcher
from shopfloor.slurm.seam import JobInfo, Slurm, SlurmError


class FakeSlurm(Slurm):
    """Replaces the seam only: counts squeue calls and answers from a dict."""

    def __init__(self, jobs: dict[str, str]) -> None:
        super().__init__()
        self.jobs = jobs
        self.squeue_ids: list[list[str]] = []
        self.fail = False

    async def squeue(self, job_ids: Sequence[str] | None = None, *, user: str | None = None
                     ) -> dict[str, JobInfo]:
        self.squeue_ids.append(list(job_ids or []))
        await asyncio.sleep(0.01)
        if self.fail:
            raise SlurmError(["squeue"], 1, "", "squeue: error: Unable to contact slurm controller")
        return {
            j: JobInfo(j, state, "None", "node1", "node1", None, "alice", "cpu", "x")
            for j, state in self.jobs.items() if j in (job_ids or [])
        }


async def test_many_spawners_share_one_squeue() -> None:
    slurm = FakeSlurm({str(i): "RUNNING" for i in range(300)})
    watcher = JobWatcher(slurm)
    for i in range(300):
        watcher.watch(str(i))
    results = await asyncio.gather(*(watcher.status(str(i), max_age=5) for i in range(300)))
    assert all(r.state is JobState.ACTIVE for r in results)
    assert len(slurm.squeue_ids) == 1 and len(slurm.squeue_ids[0]) == 300
    # Within max_age, polls are answered from the snapshot.
    await asyncio.gather(*(watcher.status(str(i), max_age=5) for i in range(300)))
    assert len(slurm.squeue_ids) == 1


async def test_a_new_job_is_never_reported_gone_from_an_older_snapshot() -> None:
    slurm = FakeSlurm({"1": "RUNNING", "2": "PENDING"})
    watcher = JobWatcher(slurm)
    assert (await watcher.status("1", max_age=60)).state is JobState.ACTIVE
    status = await watcher.status("2", max_age=60)  # snapshot is fresh but lacks job 2
    assert status.state is JobState.ACTIVE and status.info and status.info.is_pending


async def test_finished_and_missing_jobs_are_gone() -> None:
    slurm = FakeSlurm({"1": "FAILED"})
    watcher = JobWatcher(slurm)
    assert (await watcher.status("1", max_age=0)).state is JobState.GONE
    assert (await watcher.status("7", max_age=0)).state is JobState.GONE


async def test_slurm_outage_is_unknown_not_gone() -> None:
    slurm = FakeSlurm({"1": "RUNNING"})
    watcher = JobWatcher(slurm)
    slurm.fail = True
    status = await watcher.status("1", max_age=0)
    assert status.state is JobState.UNKNOWN
    assert "Unable to contact slurm controller" in (status.error or "")
    slurm.fail = False
    assert (await watcher.status("1", max_age=0)).state is JobState.ACTIVE


def test_unwatched_jobs_leave_the_batch() -> None:
    slurm = FakeSlurm({"1": "RUNNING", "2": "RUNNING"})
    watcher = JobWatcher(slurm)
    asyncio.run(watcher.status("1", max_age=0))
    watcher.watch("2")
    watcher.unwatch("1")
    asyncio.run(watcher.status("2", max_age=0))
    assert slurm.squeue_ids[-1] == ["2"]
