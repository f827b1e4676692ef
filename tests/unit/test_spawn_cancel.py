"""A stopped session's job is cancelled even when slurmctld does not answer at first.

Found for real (a start timeout while slurmctld did not answer): the hub logged the failed
``scancel`` and forgot the job, which stayed pending for nobody. The retries here run against
a stand-in for the Slurm seam's ``scancel`` that fails as the real one does.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from shopfloor.extensions import spawn_cancel
from shopfloor.slurm.jobwatch import JobState, JobStatus
from shopfloor.slurm.seam import SlurmError

UNREACHABLE = SlurmError(["scancel", "7"], 8, "", "scancel: error: Kill job error on job id 7: "
                         "Unable to contact slurm controller (connect failure)")
GONE = SlurmError(["scancel", "7"], 1, "", "scancel: error: Kill job error on job id 7: "
                  "Invalid job id specified")


class Seam:
    """``scancel`` that fails with each of ``errors`` in turn, then succeeds."""

    def __init__(self, *errors: SlurmError) -> None:
        self.errors = list(errors)
        self.calls: list[tuple[str, str | None]] = []

    async def scancel(self, job_id: str, *, user: str | None = None) -> None:
        self.calls.append((job_id, user))
        if self.errors:
            raise self.errors.pop(0)


def run(seam: Seam, attempts: int = 5) -> bool:
    return asyncio.run(spawn_cancel.cancel_until_done(seam, "7", "alice", "alice:x",
                                                      interval=0, attempts=attempts))


def test_retries_while_slurmctld_does_not_answer() -> None:
    seam = Seam(UNREACHABLE, UNREACHABLE)
    assert run(seam) is True
    assert seam.calls == [("7", "alice")] * 3


def test_a_refusal_ends_the_tries() -> None:
    seam = Seam(UNREACHABLE, GONE)
    assert run(seam) is False
    assert len(seam.calls) == 2


def test_gives_up_after_the_last_attempt() -> None:
    seam = Seam(*[UNREACHABLE] * 10)
    assert run(seam, attempts=3) is False
    assert len(seam.calls) == 3


def test_background_task_is_kept_until_done() -> None:
    async def main() -> Seam:
        seam = Seam(UNREACHABLE)
        original = spawn_cancel.RETRY_SECONDS
        spawn_cancel.RETRY_SECONDS = 0
        try:
            spawn_cancel.cancel_in_background(seam, "7", "alice", "alice:x")
            assert len(spawn_cancel._TASKS) == 1
            await asyncio.gather(*spawn_cancel._TASKS)
        finally:
            spawn_cancel.RETRY_SECONDS = original
        return seam

    seam = asyncio.run(main())
    assert len(seam.calls) == 2 and not spawn_cancel._TASKS


class Watcher:
    """The job watcher while slurmctld does not answer (then: the job is gone)."""

    def __init__(self) -> None:
        self.unwatched: list[str] = []

    async def status(self, job_id: str, max_age: float) -> JobStatus:
        return JobStatus(JobState.GONE)

    def unwatch(self, job_id: str) -> None:
        self.unwatched.append(job_id)


def test_the_spawner_hands_an_unanswered_cancel_to_the_retries() -> None:
    from shopfloor.extensions.spawner import ShopfloorSpawner

    async def main(error: SlurmError) -> Seam:
        seam = Seam(error)
        spawner = ShopfloorSpawner(context=SimpleNamespace(slurm=seam, job_watcher=Watcher()),
                                   user=SimpleNamespace(name="alice"))
        spawner.job_id = "7"
        original = spawn_cancel.RETRY_SECONDS
        spawn_cancel.RETRY_SECONDS = 0
        try:
            await spawner.stop(now=True)
            await asyncio.gather(*spawn_cancel._TASKS)
        finally:
            spawn_cancel.RETRY_SECONDS = original
        assert spawner.job_id == ""
        return seam

    assert len(asyncio.run(main(UNREACHABLE)).calls) == 2  # once in stop(), once more after
    assert len(asyncio.run(main(GONE)).calls) == 1  # Slurm answered: nothing to retry
