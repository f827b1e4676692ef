"""Slurm as code in a session sees it: reads from the hub's shared snapshot, writes as the user.

Every open compute panel, batch-run list and Ray cluster polls job and node state. Run as
``squeue`` and ``scontrol`` in each session, that is Slurm calls that grow with the number of
open panels. :class:`HubSlurm` answers those reads from the hub instead
(``GET /hub/api/shopfloor/jobs``, one cached snapshot per hub,
:mod:`shopfloor.extensions.jobs_api`) and leaves everything else (``sbatch``, ``scancel``, a
named node's address) to Slurm as the user, exactly as :class:`~shopfloor.slurm.seam.SlurmSync`
does. It *is* a ``SlurmSync``, so ``Compute``, ``BatchRun`` and ``RayCluster`` take it as
their ``slurm``; :func:`session_slurm` picks it inside a session::

    from shopfloor.session.hubslurm import session_slurm
    slurm = session_slurm()          # HubSlurm in a session, plain SlurmSync elsewhere
    slurm.squeue(["1234"])           # your job 1234, from the hub's snapshot

The hub lists only the caller's jobs: ``squeue`` for another user, or from a hub without the
endpoint (an older Shopfloor), falls back to Slurm itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from shopfloor.session.hubapi import Hub, HubError
from shopfloor.slurm.queueview import job_number
from shopfloor.slurm.seam import JobInfo, SlurmError, SlurmSync

#: Path of the hub's endpoint under the API root.
JOBS_PATH = "/shopfloor/jobs"


def job_from_json(data: dict[str, Any]) -> JobInfo:
    """A :class:`JobInfo` from the hub's JSON (``start``, ``end`` as ISO text or null)."""
    start, end = data.get("start"), data.get("end")
    return JobInfo(
        job_id=str(data["job_id"]), state=str(data["state"]), reason=str(data.get("reason", "")),
        batch_host=str(data.get("batch_host", "")), nodes=str(data.get("nodes", "")),
        start=datetime.fromisoformat(start) if start else None, user=str(data.get("user", "")),
        partition=str(data.get("partition", "")), name=str(data.get("name", "")),
        priority=int(data.get("priority", 0)),
        end=datetime.fromisoformat(end) if end else None,
    )


class HubSlurm(SlurmSync):
    """A :class:`SlurmSync` whose ``squeue``, ``nodes()`` and :meth:`queue` come from the hub.

    ``hub`` is the session's hub client; ``reuse_seconds`` how long one answer serves the
    calls of one refresh (a panel asks for nodes, the queue and its runs in a row). Other
    keyword arguments are :class:`SlurmSync`'s, for the commands that still run here.
    """

    def __init__(self, hub: Hub, *, reuse_seconds: float = 1.0, **slurm: Any) -> None:
        super().__init__(**slurm)
        self.hub = hub
        self.reuse_seconds = reuse_seconds
        #: GET requests made to the hub's endpoint (benchmarks and tests count them).
        self.hub_calls = 0
        self._served = True
        self._last: tuple[float, dict[str, Any]] | None = None

    def _answer(self, newest: int = 0) -> dict[str, Any] | None:
        """The hub's answer covering job ``newest``; ``None`` when the hub has no endpoint."""
        if not self._served:
            return None
        if self._last is not None:
            at, answer = self._last
            if time.monotonic() - at < self.reuse_seconds and newest <= int(answer["newest"]):
                return answer
        path = JOBS_PATH + (f"?{urlencode({'newest': newest})}" if newest else "")
        self.hub_calls += 1
        try:
            answer = dict(self.hub.get_json(path))
        except HubError as exc:
            if exc.status == 404:
                self._served = False  # an older hub: ask Slurm as before
                return None
            # Callers handle Slurm being unreachable; the hub's words say what happened.
            raise SlurmError(["GET", f"/hub/api{JOBS_PATH}"], -1, "", str(exc)) from None
        self._last = (time.monotonic(), answer)
        return answer

    def _mine(self, user: str | None) -> bool:
        return user is None or user == self.hub.user

    def squeue(self, job_ids: Sequence[str] | None = None, *, user: str | None = None
               ) -> dict[str, JobInfo]:
        """Your jobs (only ``job_ids`` if given) from the hub's snapshot; Slurm for others'."""
        answer = self._answer(max((job_number(j) for j in job_ids or ()), default=0)) \
            if self._mine(user) else None
        if answer is None:
            return super().squeue(job_ids, user=user)
        jobs = {str(j["job_id"]): job_from_json(j) for j in answer["jobs"]}
        if job_ids:
            wanted = set(job_ids)
            jobs = {k: v for k, v in jobs.items() if k in wanted}
        return jobs

    def nodes(self, node: str | None = None, *, details: bool = False
              ) -> dict[str, dict[str, str]]:
        """Every node's state, partitions and GPUs from the hub; one named node from Slurm."""
        answer = self._answer() if node is None else None
        if answer is None:
            return super().nodes(node, details=details)
        return {name: dict(fields) for name, fields in answer["nodes"].items()}

    def queue(self) -> list[JobInfo]:
        """Your jobs and, without owner or name, everybody else's pending ones (for waits)."""
        answer = self._answer()
        if answer is None:
            return super().queue()
        jobs = [job_from_json(j) for j in answer["jobs"]]
        for item in answer["queue"]:
            start = item.get("start")
            jobs.append(JobInfo(
                job_id="", state="PENDING", reason="", batch_host="", nodes="",
                start=datetime.fromisoformat(start) if start else None, user="",
                partition=str(item.get("partition", "")), name="",
            ))
        return jobs


def session_slurm(hub: Hub | None = None) -> SlurmSync:
    """:class:`HubSlurm` inside a session (or with ``hub``), a plain :class:`SlurmSync` else."""
    if hub is None:
        if not (os.environ.get("JUPYTERHUB_API_URL") and os.environ.get("JUPYTERHUB_API_TOKEN")):
            return SlurmSync()
        hub = Hub()
    return HubSlurm(hub)


__all__ = ["JOBS_PATH", "HubSlurm", "job_from_json", "session_slurm"]
