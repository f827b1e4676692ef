"""What a user reads when their session's job did not start in the time the site allows.

JupyterHub's own start timeout tells the user nothing ("Spawn failed: "). The spawner gives
up a little earlier and words the failure here: where the job was (still queued, and why, in
:mod:`shopfloor.slurm.pending`'s words; or running without its server answering), that the
job was cancelled, and what to do next. Core code (no JupyterHub import): apps and Ray
clusters can word the same failure the same way.
"""

from __future__ import annotations

from shopfloor.slurm.pending import describe_reason
from shopfloor.slurm.seam import JobInfo
from shopfloor.timeutil import format_minutes

#: What to do next, by Slurm's pending reason, where the reason's own words do not say it.
_ADVICE = {
    "Reservation": "Start it again once the reservation has begun, or without the "
                   "reservation.",
    "BeginTime": "Start it again later.",
    "ReqNodeNotAvail": "Start it again on another partition, or ask your admin when the "
                       "nodes are back.",
    "PartitionDown": "Start it again on another partition, or ask your admin when the "
                     "partition is back.",
    "JobHeldAdmin": "Ask your admin why it was held before you start it again.",
    "JobHeldUser": "Release your hold (or leave it out) and start it again.",
}
#: For a busy cluster (Resources, Priority, limits that pass when other jobs end, ...).
_BUSY_ADVICE = ("Start it again with a smaller request (fewer CPUs, less memory, a shorter "
                "walltime) or on another partition, or try again later.")


def waited(seconds: float) -> str:
    """``45 seconds``, ``10 minutes``, ``1 hour 30 minutes``."""
    whole = int(seconds)
    return f"{whole} seconds" if whole < 120 else format_minutes(whole // 60)


def describe_start_timeout(info: JobInfo | None, seconds: float, *, job_id: str = "",
                           log_path: str = "", account: str | None = None,
                           qos: str | None = None) -> str:
    """The user's message for a session not ready after ``seconds`` whose job is cancelled.

    ``info`` is the job as Slurm last reported it (None if unknown); ``log_path`` is where the
    job writes its log, named when the job ran but its server never answered.
    """
    job = f"job {job_id}" if job_id else "job"
    cancelled = f"Job {job_id} was cancelled." if job_id else "The job was cancelled."
    within = f"Your session did not start within {waited(seconds)}"
    if info is not None and info.is_pending:
        reason = describe_reason(info.reason, partition=info.partition, account=account,
                                 qos=qos)
        advice = _ADVICE.get(info.reason, _BUSY_ADVICE)
        return (f"{within}: its {job} was still queued on the {info.partition} partition "
                f"({reason}). {cancelled} {advice}")
    if info is not None and info.is_running:
        where = f" on {info.batch_host}" if info.batch_host else ""
        log = f" and send your admin its log, {log_path}" if log_path else ""
        return (f"{within}: its {job} ran{where} but JupyterLab did not answer in time. "
                f"{cancelled} Start it again; if this happens again, tell your admin{log}.")
    return f"{within} and Slurm could not say where its {job} was. {cancelled} {_BUSY_ADVICE}"


__all__ = ["describe_start_timeout", "waited"]
