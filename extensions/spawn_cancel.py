"""Cancelling a stopped session's job even when slurmctld does not answer at that moment.

A session stops (the user, the idle culler, a start that timed out) and its job must leave
the queue. If ``scancel`` meets a slurmctld that is restarting or overloaded, the hub used to
log the failure and forget the job: a pending job then waited in the queue for nobody and
started later, charging the user's project for a session nobody could reach (seen for real:
a start timeout during a slurmctld blip left its job pending). The spawner hands such a job
to :func:`cancel_in_background`, which keeps trying for a bounded time.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from shopfloor.slurm.seam import SlurmError

log = logging.getLogger(__name__)

#: Seconds between tries, and how many, when slurmctld does not answer: ten minutes in all,
#: longer than a slurmctld restart, short enough that the hub does not keep tasks forever.
RETRY_SECONDS = 15.0
RETRY_ATTEMPTS = 40

_TASKS: set[asyncio.Task[bool]] = set()


class Canceller(Protocol):
    """What this needs of the Slurm seam (:class:`shopfloor.slurm.seam.Slurm`)."""

    async def scancel(self, job_id: str, *, user: str | None = None) -> None: ...


async def cancel_until_done(slurm: Canceller, job_id: str, user: str, who: str, *,
                            interval: float = RETRY_SECONDS,
                            attempts: int = RETRY_ATTEMPTS) -> bool:
    """``scancel`` ``job_id`` as ``user`` until Slurm takes it; True once it did.

    Retries only while slurmctld does not answer; a refusal (the job is already gone, say)
    ends the tries. ``who`` prefixes the log lines (``user:server``).
    """
    for attempt in range(1, attempts + 1):
        await asyncio.sleep(interval)
        try:
            await slurm.scancel(job_id, user=user)
        except SlurmError as exc:
            if not exc.unreachable:
                log.info("%s: job %s: scancel refused (%s); nothing left to cancel", who,
                         job_id, exc.slurm_message)
                return False
            if attempt == attempts:
                log.error("%s: job %s still not cancelled after %d tries: Slurm does not "
                          "answer; cancel it by hand (scancel %s)", who, job_id, attempts,
                          job_id)
                return False
            continue
        log.info("%s: job %s cancelled at try %d", who, job_id, attempt + 1)
        return True
    return False


def cancel_in_background(slurm: Canceller, job_id: str, user: str, who: str) -> None:
    """Keep trying to cancel ``job_id`` after ``scancel`` found slurmctld unreachable."""
    log.warning("%s: slurmctld did not answer scancel %s; trying again every %.0f s", who,
                job_id, RETRY_SECONDS)
    task = asyncio.ensure_future(cancel_until_done(slurm, job_id, user, who,
                                                   interval=RETRY_SECONDS))
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


__all__ = ["RETRY_ATTEMPTS", "RETRY_SECONDS", "cancel_in_background", "cancel_until_done"]
