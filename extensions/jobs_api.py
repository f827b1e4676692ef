"""``GET /hub/api/shopfloor/jobs``: the caller's Slurm jobs and the nodes, from the hub's cache.

Panels and libraries in users' sessions (the compute panel, batch runs, Ray clusters) read
job and node state here instead of running ``squeue`` and ``scontrol`` themselves, so Slurm
sees one call per snapshot (:class:`shopfloor.slurm.queueview.QueueView`) however many
panels are open. The answer describes the caller only:

* ``jobs``: the caller's own jobs (every state Slurm still lists), never anybody else's;
* ``queue``: other users' *pending* jobs as partition and expected start only (what the
  expected wait needs), without ids, names or owners;
* ``nodes``: per node the fields of :data:`~shopfloor.slurm.queueview.NODE_FIELDS`;
* ``newest``: the newest job id the snapshot is known to cover, ``age_seconds`` its age.

Query: ``newest=<job id>`` says "I know this job exists": the answer then comes from a
snapshot that includes it (for a job just submitted). Any valid token of the user may call it.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict
from typing import Any

from tornado import web

from shopfloor.extensions.compat import register_api_handler
from shopfloor.extensions.resources_api import _ShopfloorHandler
from shopfloor.slurm.queueview import job_number
from shopfloor.slurm.seam import JobInfo, SlurmError

#: A job id as Slurm prints it: digits, optionally an array task (``123_4``).
_JOB_ID = re.compile(r"[0-9]{1,12}(_[0-9]{1,9})?")


def job_json(job: JobInfo) -> dict[str, Any]:
    """One job for the API (times as ISO text)."""
    data = asdict(job)
    data["start"] = job.start.isoformat() if job.start else None
    data["end"] = job.end.isoformat() if job.end else None
    return data


def parse_newest(value: str | None) -> int:
    """The ``newest`` query value as a job number; raises 400 naming the field."""
    if value is None or value == "":
        return 0
    if not _JOB_ID.fullmatch(value):
        raise web.HTTPError(400, f"newest: {value[:40]!r} is not a Slurm job id, e.g. 1234")
    return job_number(value)


class JobsHandler(_ShopfloorHandler):
    """The calling user's jobs and the nodes, from the hub's one shared snapshot."""

    async def get(self) -> None:
        user = self.caller()
        newest = parse_newest(self.get_argument("newest", None))
        view = self.ctx.queue_view
        try:
            snapshot = await view.snapshot(user=user.name, newest=newest)
        except SlurmError as exc:
            raise web.HTTPError(503, f"Slurm is not answering: {exc.slurm_message}") from None
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({
            "user": user.name,
            "age_seconds": round(time.monotonic() - snapshot.taken, 3),
            "newest": max(snapshot.newest_job, newest),
            "jobs": [job_json(j) for j in snapshot.jobs_of(user.name)],
            "queue": [{"partition": partition, "start": start.isoformat() if start else None}
                      for partition, start in snapshot.queued_for_others(user.name)],
            "nodes": snapshot.public_nodes(),
        }))


def register_jobs_handlers() -> None:
    """Add the handler to the hub's API (once)."""
    register_api_handler(r"/api/shopfloor/jobs", JobsHandler)


__all__ = ["JobsHandler", "job_json", "parse_newest", "register_jobs_handlers"]
