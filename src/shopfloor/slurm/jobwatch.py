"""One batched ``squeue`` for every job the hub watches.

Stock batchspawner runs ``squeue`` once per server per poll and every 0.5 s per pending spawn.
Here all spawners ask one :class:`JobWatcher`: it answers from its last snapshot while that is
fresh enough for the caller and otherwise makes *one* ``squeue`` call for all watched jobs,
which every concurrent caller shares.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from shopfloor.slurm.seam import JobInfo, Slurm, SlurmError

log = logging.getLogger(__name__)


class JobState(enum.Enum):
    """What the hub knows of a job."""

    ACTIVE = "active"  #: pending or running; details in :attr:`JobStatus.info`
    GONE = "gone"  #: Slurm no longer lists it, or lists it as finished
    UNKNOWN = "unknown"  #: Slurm could not be asked (slurmctld down, squeue failing)


@dataclass(frozen=True)
class JobStatus:
    state: JobState
    info: JobInfo | None = None
    error: str | None = None


class JobWatcher:
    """Shared, batched job status for many spawners in one hub process."""

    def __init__(self, slurm: Slurm) -> None:
        self.slurm = slurm
        self._watched: set[str] = set()
        self._jobs: dict[str, JobInfo] = {}
        self._taken = 0.0
        self._covered: frozenset[str] = frozenset()
        self._ok = False
        self._error: str | None = None
        self._inflight: asyncio.Future[None] | None = None
        self.squeue_calls = 0
        #: Told after each batched squeue that answered: (jobs asked, the jobs Slurm listed).
        #: The hub sets it to ``shopfloor.extensions.metrics.observe_watch``.
        self.observer: Callable[[int, Mapping[str, JobInfo]], None] | None = None

    def watch(self, job_id: str) -> None:
        self._watched.add(job_id)

    def unwatch(self, job_id: str) -> None:
        self._watched.discard(job_id)

    @property
    def watched(self) -> frozenset[str]:
        return frozenset(self._watched)

    async def _refresh(self) -> None:
        ids = sorted(self._watched, key=int)
        started = time.monotonic()
        self.squeue_calls += 1
        try:
            jobs = await self.slurm.squeue(ids) if ids else {}
        except SlurmError as exc:
            self._ok, self._error = False, exc.slurm_message
            log.warning("squeue failed (%d jobs watched): %s", len(ids), exc)
        else:
            self._jobs, self._ok, self._error = jobs, True, None
            if self.observer is not None:
                self.observer(len(ids), jobs)
        self._covered = frozenset(ids)
        self._taken = started

    async def status(self, job_id: str, max_age: float) -> JobStatus:
        """Status of ``job_id``, at most ``max_age`` seconds old (one shared squeue if older)."""
        self.watch(job_id)
        # Two rounds at most: a refresh already in flight may predate this job's watch.
        for _ in range(2):
            fresh = time.monotonic() - self._taken <= max_age
            if fresh and (job_id in self._covered or not self._ok):
                break
            if self._inflight is None or self._inflight.done():
                self._inflight = asyncio.ensure_future(self._refresh())
            await asyncio.shield(self._inflight)
        if not self._ok:
            return JobStatus(JobState.UNKNOWN, error=self._error)
        info = self._jobs.get(job_id)
        if info is None or info.is_finished:
            return JobStatus(JobState.GONE, info)
        return JobStatus(JobState.ACTIVE, info)
