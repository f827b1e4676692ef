"""The front door: the hub's home page and ``GET /hub/api/shopfloor/home``.

The page (``templates/hub/home.html``, which replaces JupyterHub's stock ``home.html`` through
``c.JupyterHub.template_paths``) is a shell that draws everything from the API and polls it
every ``home.refresh_seconds``, so it updates itself without reloading. The API answers only
about the caller (there is no user parameter), from what the hub already has:

* sessions: the caller's spawners, with job state, node, Slurm's pending reason and the time
  left, from the hub's one shared, cached snapshot of the queue
  (:class:`~shopfloor.slurm.queueview.QueueView`, also behind ``/hub/api/shopfloor/jobs``):
  300 users polling their home cost no more ``squeue`` calls than one;
* Ray clusters and batch runs: the caller's Slurm jobs in that same snapshot, recognised by
  their job names (``shopfloor-ray-<name>``, ``shopfloor-run-<id>``); never files in the
  caller's home, which the hub (root) must not open;
* apps (mine and shared with me) from the apps service's store, with the gallery's own rule
  (:func:`shopfloor.apps.model.gallery`); workshops joined or run from the workshop service's
  database, opened read-only;
* catalog entries the caller may use, announcements from the site file, and the caller's help
  requests (:mod:`shopfloor.extensions.support`).

``DELETE /hub/api/shopfloor/jobs/<id>`` stops one of the caller's Ray clusters or batch runs
(``scancel`` as the caller, after checking that the job is theirs). Sessions stop through
JupyterHub's own ``DELETE /hub/api/users/<name>/servers/<server>``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from tornado import web
from tornado.log import app_log

from shopfloor.extensions.compat import register_api_handler
from shopfloor.extensions.resources_api import _ShopfloorHandler
from shopfloor.resources import UserContext
from shopfloor.site import SiteConfig
from shopfloor.slurm.pending import describe_pending
from shopfloor.slurm.seam import JobInfo, SlurmError

#: JupyterHub's own log (tornado's application logger, which the hub configures): the
#: home lines must reach the hub log beside JupyterHub's.
log = app_log

#: Folder of the hub page templates (home, support, catalog) put before JupyterHub's own.
HUB_TEMPLATES = Path(__file__).parent / "templates" / "hub"
RAY_HEAD_PREFIX = "shopfloor-ray-"
RAY_WORKER_PREFIX = "shopfloor-raywk-"
BATCH_PREFIX = "shopfloor-run-"


# -- the parts of the home model -----------------------------------------------------------


def session_state(spawner: Any, info: JobInfo | None) -> str:
    """running / pending / starting / stopping / stopped, as the home page shows it."""
    if spawner.pending == "stop":
        return "stopping"
    if spawner.ready:
        return "running"
    if spawner.active:
        return "pending" if info is not None and info.is_pending else "starting"
    return "stopped"


def minutes_left(info: JobInfo | None, walltime_minutes: int | None,
                 now: datetime) -> int | None:
    """Minutes until a running job reaches its walltime; None when unknown."""
    if info is None or not info.is_running or info.start is None or not walltime_minutes:
        return None
    elapsed = (now - info.start).total_seconds() / 60
    return max(0, int(walltime_minutes - elapsed))


def session_rows(user: Any, jobs: Mapping[str, JobInfo], queue: dict[str, list[str]],
                 now: datetime) -> list[dict[str, Any]]:
    """One row per server of ``user`` (a JupyterHub ``User``)."""
    rows = []
    for spawner in user.all_spawners(include_default=True):
        request = getattr(spawner, "request", None)
        job_id = str(getattr(spawner, "job_id", "") or "")
        info = jobs.get(job_id) if job_id else None
        state = session_state(spawner, info)
        if state == "stopped" and not spawner.name:
            continue  # the default server only shows while it exists as a job
        partition = request.partition if request is not None else (info.partition if info else "")
        waiting = None
        if info is not None and info.is_pending:
            line = queue.get(info.partition, [])
            waiting = describe_pending(info, line.index(job_id) + 1 if job_id in line else None,
                                       now, account=request.account if request else None)
        rows.append({
            "name": spawner.name or "default",
            "server": spawner.name,
            "state": state,
            "partition": partition,
            "node": getattr(spawner, "node_name", "") or (
                info.batch_host if info is not None and info.is_running else ""),
            "job_id": job_id,
            "pending_reason": waiting,
            "minutes_left": minutes_left(info, request.walltime_minutes if request else None,
                                         now),
            "url": user.server_url(spawner.name),
            "spawn_url": f"spawn/{user.name}/{spawner.name}" if spawner.name else
            f"spawn/{user.name}",
        })
    return rows


def job_rows(username: str, jobs: Mapping[str, JobInfo], server_url: str | None
             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(Ray clusters, batch runs) of ``username`` among Slurm's jobs."""
    clusters: dict[str, dict[str, Any]] = {}
    runs = []
    for info in jobs.values():
        if info.user != username or info.is_finished:
            continue
        if info.name.startswith(RAY_HEAD_PREFIX):
            name = info.name.removeprefix(RAY_HEAD_PREFIX)
            clusters.setdefault(name, {"workers": 0}).update({
                "name": name, "job_id": info.job_id, "state": info.state.lower(),
                "partition": info.partition, "nodes": info.nodes,
                "dashboard_url": (f"{server_url}shopfloor/ray/{name}/dashboard/"
                                  if server_url and info.is_running else None),
            })
        elif info.name.startswith(RAY_WORKER_PREFIX):
            name = info.name.removeprefix(RAY_WORKER_PREFIX)
            clusters.setdefault(name, {"workers": 0})["workers"] += 1
        elif info.name.startswith(BATCH_PREFIX):
            runs.append({
                "id": info.name.removeprefix(BATCH_PREFIX), "job_id": info.job_id,
                "state": info.state.lower(), "partition": info.partition,
                "node": info.batch_host if info.is_running else "",
                "reason": info.reason if info.is_pending else "",
            })
    return [c for c in clusters.values() if "job_id" in c], runs


def app_rows(site: SiteConfig, viewer: UserContext) -> list[dict[str, Any]]:
    """Apps the caller owns or may open, from the apps service's store (the gallery's rule)."""
    from shopfloor.apps.model import AppStore, app_origin, gallery

    root = Path(site.apps.store_dir or Path(site.hub.state_dir).parent / "apps")
    if not root.is_dir():
        return []  # no app published yet (the service makes its store on first start)
    try:
        apps = AppStore(root, site.apps).all()
    except OSError as exc:
        log.warning("home: cannot read the app store %s: %s", root, exc)
        return []
    try:
        base = app_origin(site.hub.bind_url, site.apps).url
    except ValueError:
        base = ""
    return [{
        "title": a.title, "owner": a.owner, "slug": a.slug, "description": a.description,
        "mine": a.owner == viewer.name, "audience": a.audience.describe(),
        "url": f"{base}/services/apps/{a.key}/",
    } for a in gallery(apps, viewer, allow_public=site.apps.allow_public)]


def workshop_rows(site: SiteConfig, username: str) -> list[dict[str, Any]]:
    """Workshops the caller joined (as a participant account) or runs (as a trainer)."""
    from shopfloor.workshops.model import WorkshopStore, store_path

    path = store_path(site)
    if not path.exists():
        return []
    store = WorkshopStore(path, readonly=True)
    rows = []
    joined = store.participant(username)
    for w in store.workshops():
        runs = username in w.trainers or username == w.created_by
        if not runs and not (joined and joined.workshop == w.name):
            continue
        rows.append({"name": w.name, "title": w.title, "start": w.start, "end": w.end,
                     "state": w.state, "role": "trainer" if runs else "participant",
                     "partition": w.partition})
    return rows


class HomeApiHandler(_ShopfloorHandler):
    """``GET /hub/api/shopfloor/home``: everything the home page shows, for the caller."""

    async def get(self) -> None:
        self.finish(await home_model(self))


async def home_model(handler: Any) -> dict[str, Any]:
    """The caller's home, as JSON-ready data (see the module docstring)."""
    from shopfloor.extensions.catalog_api import catalog_for
    from shopfloor.extensions.support import support_view

    caller = handler.caller()
    user = handler.current_user
    ctx = handler.ctx
    site: SiteConfig = ctx.site
    slurm_error = None
    try:
        jobs: Mapping[str, JobInfo] = (await ctx.queue_view.snapshot(user=user.name)).jobs
    except SlurmError as exc:
        jobs, slurm_error = {}, exc.slurm_message
    try:
        queue = (await ctx.cluster_info.snapshot()).pending
    except SlurmError:
        queue = {}
    now = datetime.now()
    sessions = session_rows(user, jobs, queue, now)
    running = next((s for s in sessions if s["state"] == "running"), None)
    clusters, runs = job_rows(user.name, jobs, running["url"] if running else None)
    apps, workshops = await asyncio.gather(
        asyncio.to_thread(app_rows, site, caller),
        asyncio.to_thread(workshop_rows, site, user.name),
    )
    return {
        "user": user.name,
        "site": site.name,
        "refresh_seconds": site.home.refresh_seconds,
        "announcements": list(site.home.announcements),
        "sessions": sessions,
        "named_server_limit": site.hub.named_server_limit_per_user,
        "ray_clusters": clusters,
        "batch_runs": runs,
        "apps": apps,
        "workshops": workshops,
        "catalog": catalog_for(site, caller),
        "finetuned_models": None,  # reported by the session's Fine-tune card, not the hub
        "support": support_view(handler, caller),
        "slurm_error": slurm_error,
    }


class JobCancelHandler(_ShopfloorHandler):
    """``DELETE /hub/api/shopfloor/jobs/<id>``: stop one of the caller's clusters or runs."""

    async def delete(self, job_id: str) -> None:
        caller = self.caller()
        try:
            found = await self.ctx.slurm.squeue([job_id])
        except SlurmError as exc:
            raise web.HTTPError(503, f"Slurm is not answering: {exc.slurm_message}") from None
        info = found.get(job_id)
        # Someone else's job answers exactly like a missing one: nobody learns job ids.
        if (info is None or info.user != caller.name or info.is_finished
                or not info.name.startswith((RAY_HEAD_PREFIX, RAY_WORKER_PREFIX, BATCH_PREFIX))):
            raise web.HTTPError(404, f"You have no Ray cluster or batch run with job {job_id}.")
        names = [info.name]
        if info.name.startswith(RAY_HEAD_PREFIX):
            names.append(RAY_WORKER_PREFIX + info.name.removeprefix(RAY_HEAD_PREFIX))
        try:
            await self.ctx.slurm.scancel(job_id, user=caller.name)
            if len(names) > 1:  # a cluster's workers go with its head
                await self.ctx.slurm.cancel_jobs_of(caller.name, names=names[1:])
        except SlurmError as exc:
            raise web.HTTPError(502, f"Slurm refused: {exc.slurm_message}") from None
        log.info("home: %s cancelled job %s (%s)", caller.name, job_id, info.name)
        self.set_status(204)
        self.finish()


def register_home_handlers() -> None:
    """Add the home API handlers to the hub (once)."""
    register_api_handler(r"/api/shopfloor/home", HomeApiHandler)
    register_api_handler(r"/api/shopfloor/jobs/(?P<job_id>[0-9]{1,12})", JobCancelHandler)


def install_home(c: Any, site: SiteConfig) -> None:
    """The home, catalog and support pages and APIs (called by ``install``)."""
    from shopfloor.extensions.catalog_api import register_catalog_handlers
    from shopfloor.extensions.support import install_support

    paths = list(c.JupyterHub.template_paths) if "template_paths" in c.JupyterHub else []
    if str(HUB_TEMPLATES) not in paths:
        c.JupyterHub.template_paths = [str(HUB_TEMPLATES), *paths]
    register_home_handlers()
    from shopfloor.extensions.home_models import register_home_models_handler

    register_home_models_handler()  # "My fine-tuned models", asked of the session by the hub
    register_catalog_handlers()
    install_support(c, site)


__all__ = ["HomeApiHandler", "install_home", "job_rows", "minutes_left",
           "session_rows", "session_state"]
