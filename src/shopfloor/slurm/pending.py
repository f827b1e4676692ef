"""Why a pending job waits and until when, in users' words.

One wording for every place that shows a queued job: the spawner's progress page, Ray
clusters and apps. It lives in the core (not the hub side) so that code running in a user's
kernel words a pending job without importing JupyterHub.
"""

from __future__ import annotations

from datetime import datetime

from shopfloor.slurm.seam import JobInfo
from shopfloor.timeutil import format_minutes

#: Slurm's pending reasons in users' words.
PENDING_REASONS = {
    "Resources": "waiting for free resources on the {partition} partition",
    "Priority": "other jobs are ahead of yours in the queue",
    "ReqNodeNotAvail": "the nodes it needs are unavailable (down, drained or reserved)",
    "Reservation": "waiting for its reservation to start",
    "Dependency": "waiting for another job to finish",
    "BeginTime": "waiting for its start time",
    "PartitionDown": "the {partition} partition is down",
    "PartitionNodeLimit": "it asks for more nodes than the {partition} partition has",
    "PartitionTimeLimit": "it asks for more time than the {partition} partition allows",
    "QOSMaxJobsPerUserLimit": "you already run as many jobs as your QoS allows",
    "AssocMaxJobsLimit": "your account runs as many jobs as it may",
    "JobHeldAdmin": "an administrator is holding it",
    "JobHeldUser": "it is held",
    "None": "it was just submitted",
}


def describe_pending(info: JobInfo, position: int | None, now: datetime | None = None) -> str:
    """One sentence on why a job waits and until when, for the pending page."""
    reason = PENDING_REASONS.get(info.reason, info.reason).format(partition=info.partition)
    text = f"Queued on {info.partition}: {reason}"
    if position:
        text += f"; position {position} in the queue"
    if info.start is not None:
        now = now or datetime.now()
        wait = (info.start - now).total_seconds()
        if wait > 60:
            eta = format_minutes(int(wait // 60))
            text += f"; expected to start around {info.start:%H:%M} (in {eta})"
        else:
            text += "; expected to start within a minute"
    return text + "."


__all__ = ["PENDING_REASONS", "describe_pending"]
