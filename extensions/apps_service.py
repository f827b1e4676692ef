"""The ``apps`` hub service: a gallery of published notebook apps, and the door to each app.

Run by JupyterHub as a managed service (registered by :func:`apps_service_config`, called from
``shopfloor.extensions.install``)::

    python -m shopfloor.extensions.apps_service

It listens twice. On the hub's origin (through the proxy, all under ``/services/apps/``):

* ``/``: the gallery (filters ``mine``, ``shared``, ``all``; search ``q``). It shows only our
  own templates; its cards link to the app origin.
* ``/api/apps``: list (GET) and publish (POST); ``/api/apps/<owner>/<app>``: one app (GET),
  unpublish (DELETE); ``.../rollback`` (POST), ``.../status`` (GET); ``/api/thumbnails/...``.
* ``/api/callback/<owner>/<app>``: the app job reports its port (authenticated by the secret).
* ``/<owner>/<app>/...``: redirects to the same path on the app origin.

On the apps' own origin (``apps.origin_url``, another host name than the hub's, so app pages
never see the hub's cookies or xsrf token; every answer carries a strict
Content-Security-Policy):

* ``/services/apps/<owner>/<app>/...``: the app's stable URL, the same across versions. The
  service checks the viewer's hub identity (OAuth, through the ``apps-viewer`` client whose
  redirect URI is on this origin) and the app's audience, starts the app's Slurm job on the
  first visit (a progress page shows the way), then proxies pages and kernel websockets to the
  job, adding the per-run secret the job requires. Viewers' cookies and tokens never reach it.
  Each kernel belongs to the viewer whose page it rendered: requests for it from anyone else
  answer 404, as do Voila's page overrides (``?template=``, ``?theme=``: refused with 400).
  Kernels per viewer and per app are capped (``apps.max_kernels_per_viewer``,
  ``apps.max_kernels_per_app``).
* ``/services/apps/_static/<key>/...``: Voila's own static files (its bundle, the widget
  manager and other JupyterLab extensions, the template's CSS), one path for every app and
  version of this installation, cached by browsers for a year (``<key>`` changes with the
  installed files; see :mod:`shopfloor.apps.shared_static`). Served from an index made at
  start, so no request path reaches the file system. App pages whose job runs the same
  installation point there instead of at their own copies.
* ``/services/apps/api/apps/<owner>/<app>/status``: the progress page's polling
  (``?wait=starting`` answers when the app stops starting, at most ten seconds later), with
  where a cold start's time went (``phases``, ``job_timings``).

A private app answers a viewer who may not open it exactly like a missing one (404).
"""

from __future__ import annotations

import asyncio
import grp
import json
import logging
import mimetypes
import os
import posixpath
import pwd
import re
import secrets
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import jinja2
from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from tornado import httpclient, ioloop, web, websocket
from tornado.httputil import HTTPHeaders, parse_response_start_line

from shopfloor.apps.job import KERNEL_ID, SECRET_HEADER, RedactKernelIds
from shopfloor.apps.model import (
    App,
    AppInputError,
    AppNotFound,
    AppOrigin,
    AppStore,
    app_origin,
    can_view,
    check_audience,
    gallery,
    read_as_user,
    validate_publish,
)
from shopfloor.apps.shared_static import StaticIndex, installed_index, share_page
from shopfloor.extensions import metrics
from shopfloor.extensions.apps_runner import AppRunner, KernelClaim, compute_options
from shopfloor.resources import RequestError, UserContext
from shopfloor.site import SiteConfig, SiteConfigError, load_site
from shopfloor.slurm.seam import SlurmError

log = logging.getLogger("shopfloor.apps.model")
SERVICE_NAME = "apps"
#: The OAuth client (an API-less hub service) that logs viewers in on the app origin: a hub
#: OAuth client has exactly one redirect URI, and the gallery's is on the hub's origin.
VIEWER_SERVICE = "apps-viewer"
PREFIX = f"/services/{SERVICE_NAME}"
#: Anonymous viewers of public apps are told apart by this (signed) cookie of the app origin.
VIEWER_COOKIE = "shopfloor-app-viewer"
#: Paths of the app job that name a kernel: only the viewer it was given to may use them.
_KERNEL_PATH = re.compile(
    r"(?:api/kernels|voila/query|voila/api/shutdown|voila/execution)/(?P<kernel>[^/?]+)(?:/.*)?")
#: Voila's page overrides: each renders with a fresh kernel outside the preheated pool.
_OVERRIDES = ("template", "theme")
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_APP = rf"(?P<owner>{_SEGMENT})/(?P<slug>[a-z0-9][a-z0-9-]{{0,39}})"
#: Request headers that never travel to an app job: viewers' credentials and hop-by-hop ones.
_DROP_REQUEST = {"cookie", "authorization", "host", "connection", "upgrade", "keep-alive",
                 "proxy-authorization", "te", "trailer", "transfer-encoding", "origin",
                 SECRET_HEADER.lower(), "x-forwarded-for", "x-xsrftoken",
                 # plain bodies: the service reads the kernel id from the rendered page
                 "accept-encoding"}
_DROP_RESPONSE = {"set-cookie", "connection", "keep-alive", "transfer-encoding",
                  "content-length", "server", "date"}
TEMPLATES = Path(__file__).with_name("templates")
#: Seconds a progress page's status request may wait for its app's state to change.
STATUS_WAIT_S = 10.0
#: Where the shared static files live on the app origin (``_`` starts no owner's name).
SHARED_STATIC = f"{PREFIX}/_static"
#: How long browsers keep a shared static file: its URL changes when the file can.
SHARED_STATIC_MAX_AGE = 365 * 24 * 3600
#: Seconds the viewer's hub groups, asked when a page opened, also answer for that page's
#: files and kernel calls (the page and kernel websockets always ask the hub afresh).
VIEWER_CACHE_S = 5.0


class Hub:
    """What the service asks the hub: users, groups (with the service's own token)."""

    def __init__(self, api_url: str, token: str) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token
        #: User name -> (when asked, the answer): :meth:`user_context` with ``max_age``.
        self._contexts: dict[str, tuple[float, UserContext]] = {}

    async def get(self, path: str) -> dict[str, Any] | None:
        response = await httpclient.AsyncHTTPClient().fetch(
            f"{self.api_url}{path}", headers={"Authorization": f"token {self.token}"},
            raise_error=False, request_timeout=20,
        )
        if response.code == 404:
            return None
        if response.code >= 400:
            raise web.HTTPError(502, f"the hub answered {response.code} to {path}")
        return json.loads(response.body)

    async def user_exists(self, name: str) -> bool:
        return await self.get(f"/users/{quote(name)}") is not None

    async def group_exists(self, name: str) -> bool:
        if await self.get(f"/groups/{quote(name)}") is not None:
            return True
        try:
            grp.getgrnam(name)
            return True
        except KeyError:
            return False

    async def user_context(self, model: dict[str, Any], max_age: float = 0.0) -> UserContext:
        """Hub groups plus Unix groups: asked fresh (a group change counts at once), or an
        answer at most ``max_age`` seconds old (for the many files of a page just opened)."""
        name = model["name"]
        now = time.monotonic()
        known = self._contexts.get(name)
        if known is not None and now - known[0] <= max_age:
            return known[1]
        context = await self._user_context(name, model)
        if len(self._contexts) > 1000:  # forget stale answers instead of growing forever
            self._contexts = {k: v for k, v in self._contexts.items()
                              if now - v[0] <= VIEWER_CACHE_S}
        self._contexts[name] = (now, context)
        return context

    async def _user_context(self, name: str, model: dict[str, Any]) -> UserContext:
        user = await self.get(f"/users/{quote(name)}") or {}
        # The hub's answer counts even when empty: the token's model (cached by HubOAuth for
        # minutes) would bring back a group the user was just removed from.
        groups = set(user["groups"] if "groups" in user else model.get("groups") or [])
        try:
            pw = pwd.getpwnam(name)
            groups |= {grp.getgrgid(g).gr_name for g in os.getgrouplist(name, pw.pw_gid)}
        except KeyError:
            pass
        return UserContext(name, frozenset(groups), bool(user.get("admin", model.get("admin"))))


class _Access(HubOAuthenticated):
    """Who is asking and what they may open (for page, API and websocket handlers)."""

    settings: dict[str, Any]
    request: Any

    @property
    def hub_auth(self) -> HubOAuth:
        """The OAuth client of the origin this handler serves (hub's or the apps')."""
        return self.settings["hub_auth"]

    @hub_auth.setter
    def hub_auth(self, auth: HubOAuth) -> None:
        raise AttributeError("set hub_auth in the application's settings")

    @property
    def site(self) -> SiteConfig:
        return self.settings["site"]

    @property
    def store(self) -> AppStore:
        return self.settings["store"]

    @property
    def runner(self) -> AppRunner:
        return self.settings["runner"]

    @property
    def hub(self) -> Hub:
        return self.settings["hub"]

    def check_xsrf_cookie(self) -> None:
        """Same-origin reads (an app's own scripts and fetches, the progress page's polling)
        need no xsrf token: browsers keep their answers from other sites. Everything else
        authenticated by cookie needs JupyterHub's xsrf check."""
        headers = self.request.headers
        if self.request.method in ("GET", "HEAD") and headers.get("Sec-Fetch-Site") == (
                "same-origin"):
            return
        super().check_xsrf_cookie()  # type: ignore[misc]

    async def viewer(self, max_age: float = 0.0) -> UserContext | None:
        """The hub user asking (None: anonymous or a service), with their groups at most
        ``max_age`` seconds old."""
        model = self.get_current_user()
        if not model or model.get("kind", "user") != "user":
            return None
        return await self.hub.user_context(model, max_age)

    def not_found(self, owner: str, slug: str) -> web.HTTPError:
        """The one answer for a missing app and for one the caller may not open."""
        return web.HTTPError(404, f"There is no app {owner}/{slug}.")

    def app_or_404(self, owner: str, slug: str) -> App:
        try:
            return self.store.get(owner, slug)
        except AppNotFound:
            raise self.not_found(owner, slug) from None

    async def visible_app(self, owner: str, slug: str,
                          max_age: float = 0.0) -> tuple[App, UserContext | None]:
        """The app if the caller may open it. Otherwise a login redirect (a page asked for
        without login) or 404, the same whether the app exists or not: nobody learns which
        private apps exist. ``max_age``: see :meth:`viewer`."""
        viewer = await self.viewer(max_age)
        try:
            app: App | None = self.store.get(owner, slug)
        except AppNotFound:
            app = None
        if app is not None and can_view(app, viewer, allow_public=self.site.apps.allow_public):
            return app, viewer
        if viewer is None and self.request.method == "GET" and not self._is_api():
            self.redirect(self.get_login_url())
            raise web.Finish()
        raise self.not_found(owner, slug)

    def viewer_key(self, viewer: UserContext | None) -> str | None:
        """Who holds a kernel: the hub user, or an anonymous browser of a public app (told
        apart by a signed cookie); None for a browser without one."""
        if viewer is not None:
            return f"user:{viewer.name}"
        raw = self.get_secure_cookie(VIEWER_COOKIE, max_age_days=1)  # type: ignore[attr-defined]
        return f"anonymous:{raw.decode()}" if raw else None

    def new_viewer_key(self, viewer: UserContext | None) -> str:
        """:meth:`viewer_key`, giving an anonymous browser its cookie when it has none."""
        known = self.viewer_key(viewer)
        if known is not None:
            return known
        browser = secrets.token_urlsafe(16)
        self.set_secure_cookie(  # type: ignore[attr-defined]
            VIEWER_COOKIE, browser, expires_days=None, httponly=True, samesite="Lax",
            path=f"{PREFIX}/")
        return f"anonymous:{browser}"

    def _is_api(self) -> bool:
        return self.request.path.startswith(f"{PREFIX}/api/") or isinstance(
            self, websocket.WebSocketHandler)


class _Base(_Access, web.RequestHandler):
    """Page and API handlers: JSON answers, error pages in plain words."""

    def set_default_headers(self) -> None:
        origin: AppOrigin | None = self.settings.get("origin")
        if origin is not None:  # the app origin: owners' code runs here
            self.set_header("Content-Security-Policy", origin.content_security_policy())
            self.set_header("X-Frame-Options", "DENY")
            self.set_header("X-Content-Type-Options", "nosniff")
            self.set_header("Referrer-Policy", "no-referrer")

    def page(self, name: str, **context: Any) -> str:
        """One of our templates, with links back to the hub where pages live on the app
        origin."""
        return render(name, prefix=PREFIX, hub_url=self.settings.get("hub_url", ""),
                      **context)

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = exc.log_message if isinstance(exc, web.HTTPError) and exc.log_message else (
            self._reason)
        if self._is_api():
            self.finish(json.dumps({"status": status_code, "message": message}))
        else:
            self.finish(self.page("apps_error.html", status=status_code, message=message))


def render(name: str, **context: Any) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    return env.get_template(name).render(**context)


class GalleryHandler(_Base):
    """Cards of every app the viewer may open, with filters and search."""

    @web.authenticated
    async def get(self) -> None:
        viewer = await self.viewer()
        if viewer is None:
            raise web.HTTPError(403, "Log in as a user to see the gallery.")
        which = self.get_argument("filter", "all")
        if which not in ("all", "mine", "shared"):
            which = "all"
        search = self.get_argument("q", "")[:100]
        apps = gallery(self.store.all(), viewer, allow_public=self.site.apps.allow_public,
                       which=which, search=search)
        self.finish(self.page("apps_gallery.html", apps=[a.summary() for a in apps],
                              which=which, q=search, user=viewer.name,
                              app_base=f"{self.settings['origin_url']}{PREFIX}",
                              site_name=self.site.name))


class AppListHandler(_Base):
    """``GET``: the caller's view of the gallery as JSON. ``POST``: publish a version."""

    @web.authenticated
    async def get(self) -> None:
        viewer = await self.viewer()
        if viewer is None:
            raise web.HTTPError(403, "a user's token is required")
        apps = gallery(self.store.all(), viewer, allow_public=self.site.apps.allow_public,
                       which=self.get_argument("filter", "all"), search=self.get_argument("q", ""))
        self.write_json({"apps": [a.summary() for a in apps]})

    @web.authenticated
    async def post(self) -> None:
        owner = await self.viewer()
        if owner is None:
            raise web.HTTPError(403, "a user's token is required")
        try:
            raw = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "the body must be a JSON object") from None
        try:
            app = await self.publish(owner, raw)
        except AppInputError as exc:
            self.write_json(exc.as_json(), exc.http_status)
            return
        await self.runner.stop(app.key)
        self.write_json({"app": app.summary(),
                         "url": f"{self.settings['origin_url']}{PREFIX}/{app.key}/"}, 201)

    async def publish(self, owner: UserContext, raw: Any) -> App:
        try:
            pw = pwd.getpwnam(owner.name)
        except KeyError:
            raise AppInputError({"owner": "you have no Unix account here; ask your admin"}) \
                from None
        users: dict[str, bool] = {}
        groups: dict[str, bool] = {}
        if isinstance(raw, dict) and isinstance(raw.get("names"), list):
            for name in raw["names"][:100]:
                if isinstance(name, str) and re.fullmatch(_SEGMENT, name):
                    users[name] = await self.hub.user_exists(name)
                    groups[name] = await self.hub.group_exists(name)
        spec = validate_publish(
            raw, home=pw.pw_dir, settings=self.site.apps,
            user_exists=lambda n: users.get(n, False), group_exists=lambda n: groups.get(n, False),
        )
        try:
            live = await self.runner.cluster.snapshot(user=owner.name)
            request = self.runner.policy.validate(
                compute_options(spec.compute, self.site.apps), owner, live)
        except RequestError as exc:
            raise AppInputError({f"compute.{k}": v for k, v in exc.problems.items()}) from None
        except SlurmError as exc:
            raise web.HTTPError(503, f"Slurm is not answering: {exc.slurm_message}") from None
        app = await asyncio.to_thread(
            self.store.publish, owner.name, spec, request.model_dump(),
            lambda path, limit: read_as_user(owner.name, path, limit), pw.pw_gid,
        )
        log.info("apps: %s published %s v%s (%s)", owner.name, app.key, app.current,
                 app.audience.describe())
        return app


class AppApiHandler(_Base):
    """One app: ``GET`` its summary, ``DELETE`` unpublishes (owner or admin)."""

    async def owned(self, owner: str, slug: str) -> App:
        app = self.app_or_404(owner, slug)
        caller = await self.viewer()
        if caller is None or not (caller.name == app.owner or caller.is_admin):
            if caller is not None and can_view(app, caller,
                                               allow_public=self.site.apps.allow_public):
                raise web.HTTPError(403, "Only the app's owner may change it.")
            raise self.not_found(owner, slug)
        return app

    @web.authenticated
    async def get(self, owner: str, slug: str) -> None:
        app, _ = await self.visible_app(owner, slug)
        self.write_json({"app": app.summary()})

    @web.authenticated
    async def delete(self, owner: str, slug: str) -> None:
        app = await self.owned(owner, slug)
        await self.runner.stop(app.key)
        self.store.unpublish(app.owner, app.slug)
        log.info("apps: %s unpublished", app.key)
        self.write_json({"unpublished": app.key})


class RollbackHandler(AppApiHandler):
    @web.authenticated
    async def post(self, owner: str, slug: str) -> None:
        app = await self.owned(owner, slug)
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise web.HTTPError(400, "the body must be a JSON object such as {\"version\": 1}")
        number = body.get("version")
        try:
            if number is not None and (isinstance(number, bool) or not isinstance(number, int)):
                raise AppInputError({"version": "must be a version number such as 1"})
            app = self.store.rollback(app.owner, app.slug, number)
        except AppInputError as exc:
            self.write_json(exc.as_json(), exc.http_status)
            return
        await self.runner.stop(app.key)
        self.write_json({"app": app.summary()})


class AudienceHandler(AppApiHandler):
    @web.authenticated
    async def post(self, owner: str, slug: str) -> None:
        app = await self.owned(owner, slug)
        body = json.loads(self.request.body or b"{}")
        names = body.get("names") if isinstance(body, dict) else None
        known = {n: (await self.hub.user_exists(n), await self.hub.group_exists(n))
                 for n in (names if isinstance(names, list) else [])[:100]
                 if isinstance(n, str) and re.fullmatch(_SEGMENT, n)}
        audience, problems = check_audience(
            body.get("audience") if isinstance(body, dict) else None, names,
            allow_public=self.site.apps.allow_public,
            user_exists=lambda n: known.get(n, (False, False))[0],
            group_exists=lambda n: known.get(n, (False, False))[1],
        )
        if problems:
            error = AppInputError(problems)
            self.write_json(error.as_json(), error.http_status)
            return
        self.write_json({"app": self.store.set_audience(app.owner, app.slug, audience).summary()})


class StatusHandler(_Base):
    """Where the app's job is (for the progress page). With ``?wait=starting`` the answer
    waits (at most :data:`STATUS_WAIT_S`) until the app stops starting or its message
    changes, so the page reloads the moment its app is ready instead of at its next poll."""

    async def get(self, owner: str, slug: str) -> None:
        app, _ = await self.visible_app(owner, slug)
        run = self.runner.run_for(app)
        if self.get_argument("wait", "") == "starting" and run is not None:
            deadline, said = time.monotonic() + STATUS_WAIT_S, run.message
            while run is not None and run.state == "starting" and run.message == said and (
                    left := deadline - time.monotonic()) > 0:
                await run.wait_change(left)
                run = self.runner.run_for(app)
        if run is None:
            self.write_json({"state": "stopped", "message": "Not running"})
        else:
            self.write_json({"state": run.state, "message": run.message, "job_id": run.job_id,
                             "ready_after": run.ready_after, "phases": run.phases,
                             "job_timings": run.job_timings})


class ThumbnailHandler(_Base):
    async def get(self, owner: str, slug: str) -> None:
        app, _ = await self.visible_app(owner, slug)
        version = app.version()
        if not version.thumbnail:
            raise web.HTTPError(404, "This app has no thumbnail.")
        path = self.store.snapshot_dir(app) / version.thumbnail
        kind = {".png": "image/png", ".jpg": "image/jpeg", ".svg": "image/svg+xml"}
        self.set_header("Content-Type", kind[path.suffix])
        # An SVG from a notebook must not run script on the hub's origin.
        self.set_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
        self.set_header("Cache-Control", "no-cache")
        self.finish(path.read_bytes())


class CallbackHandler(web.RequestHandler):
    """The app job reports its port; only its own per-run secret is accepted."""

    def check_xsrf_cookie(self) -> None:
        """The job authenticates with its secret header, not a browser cookie."""

    def post(self, owner: str, slug: str) -> None:
        try:
            body = json.loads(self.request.body or b"{}")
            port, timings, static = body.get("port"), body.get("timings"), body.get("static")
        except (ValueError, AttributeError):
            port = timings = static = None
        secret = self.request.headers.get(SECRET_HEADER, "")
        if not self.settings["runner"].callback(f"{owner}/{slug}", secret, port, timings,
                                                static):
            raise web.HTTPError(403)
        self.finish({"ok": True})


def _app_path(path: str) -> str:
    """The path inside the app, refusing anything that climbs out of it."""
    segments = path.split("/")
    if any(s in ("..", ".") for s in segments) or "\\" in path or "\x00" in path:
        raise web.HTTPError(400, "That path is not part of the app.")
    return posixpath.normpath("/" + path).lstrip("/") if path else ""


def _kernel_in(path: str) -> str | None:
    """The kernel id a path of the app job names, if any."""
    match = _KERNEL_PATH.fullmatch(path)
    return match.group("kernel") if match else None


def _rendered_kernel(page: bytes) -> str | None:
    """The kernel id Voila put in a rendered page (its page config's ``kernelId``)."""
    match = re.search(rb'"kernelId":\s*"(' + KERNEL_ID.pattern.encode() + rb')"', page)
    return match.group(1).decode() if match else None


class PageStream:
    """An app's page on its way from the job to the viewer, passed on in whole lines (a URL
    or the page's kernel id is never cut in two): each line's shared files' URLs rewritten
    (``rewrite``, :func:`~shopfloor.apps.shared_static.share_page`), and the page's kernel
    handed to ``claim`` before the line that names it is passed on."""

    #: Bytes of earlier lines kept for finding the kernel id (Voila writes it on one line).
    KEEP = 256

    def __init__(self, claim: Callable[[str], None],
                 rewrite: Callable[[bytes], bytes] | None = None) -> None:
        self.claim = claim
        self.rewrite = rewrite
        self.kernel: str | None = None
        self._partial = b""
        self._seen = b""

    def feed(self, chunk: bytes) -> bytes:
        """What of the page so far can be passed on now (whole lines)."""
        data = self._partial + chunk
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        return self._pass(data[:cut])

    def end(self) -> bytes:
        """The rest of the page."""
        rest, self._partial = self._partial, b""
        return self._pass(rest)

    def _pass(self, lines: bytes) -> bytes:
        if not lines:
            return b""
        if self.kernel is None:
            self.kernel = _rendered_kernel(self._seen + lines)
            if self.kernel is not None:
                self.claim(self.kernel)
            self._seen = (self._seen + lines)[-self.KEEP:]
        return self.rewrite(lines) if self.rewrite is not None else lines


class AppProxyHandler(_Base):
    """The app's stable URL on the app origin: check who may view, start on demand, proxy to
    the job; kernels only for the viewer they were given to, and only so many."""

    async def _handle(self, owner: str, slug: str, path: str) -> None:
        # The page itself (a new kernel) asks the hub afresh; the hundred files and calls of
        # a page being loaded may reuse that answer for a few seconds, instead of a hub
        # request each (they were most of the gap to a Voila reached directly).
        fresh = path in ("", "/")
        app, viewer = await self.visible_app(owner, slug,
                                             max_age=0.0 if fresh else VIEWER_CACHE_S)
        path = _app_path(path)
        if path == "" and any(k in self.request.query_arguments for k in _OVERRIDES):
            raise web.HTTPError(400, "This app is shown as its owner published it; remove "
                                "the template and theme parameters from the address.")
        run = self.runner.run_for(app)
        if run is None or run.state in ("failed", "stopped") or run.state == "starting":
            if self.request.method != "GET" or path != "":
                raise web.HTTPError(503, "The app is not running; open its page to start it.")
            if run is None or run.state != "starting":
                run, started = self.runner.ensure_started(app, await self.owner_context(app))
                if started:
                    metrics.observe_app_open(cold=True)
                    self.store.record_visit(app, viewer.name if viewer else None, started=True)
            self.set_status(202 if run.state != "failed" else 503)
            self.finish(self.page("apps_progress.html", app=app.summary(), state=run.state,
                                  message=run.message))
            return
        run.touch()
        kernel = _kernel_in(path)
        if kernel is not None or path.startswith("api/"):
            who = self.viewer_key(viewer)
            if kernel is None or who is None or not run.owns(kernel, who):
                # Unknown, foreign and pool kernels alike: nothing to learn from the answer.
                raise web.HTTPError(404, "There is no such kernel.")
            response = await self.forward(run, app, path)
            if response.code < 300 and (
                    (self.request.method == "POST" and path.startswith("voila/api/shutdown/"))
                    or (self.request.method == "DELETE" and path == f"api/kernels/{kernel}")):
                run.kernels.pop(kernel, None)
            return
        if path == "" and self.request.method == "GET":
            await self.render_page(run, app, viewer)
            return
        await self.forward(run, app, path)

    async def render_page(self, run: Any, app: App, viewer: UserContext | None) -> None:
        """Render the app with a kernel that from now on belongs to this viewer alone."""
        who = self.new_viewer_key(viewer)
        settings = self.site.apps
        refusal = run.over_capacity(who, settings.max_kernels_per_viewer,
                                    settings.max_kernels_per_app)
        if refusal:
            log.warning("apps: %s refused a page of %s: kernel cap reached", who, app.key)
            raise web.HTTPError(429 if refusal.startswith("You") else 503, refusal)
        # A placeholder holds the viewer's place while the page renders (two tabs at once
        # must not both slip under the cap).
        placeholder = f"rendering-{secrets.token_hex(8)}"
        run.kernels[placeholder] = KernelClaim(who)
        shared: StaticIndex = self.settings["shared_static"]
        rewrite: Callable[[bytes], bytes] | None = None
        if shared.key and run.static_key == shared.key:
            # The job serves the same files as the service: the page loads them from the one
            # shared path, which the browser may already hold from any other app.
            rewrite = partial(share_page, app_base=self.runner.base_url(app),
                              shared_base=f"{SHARED_STATIC}/{shared.key}/")

        def claim(kernel: str) -> None:
            # Before any byte naming the kernel leaves: the page's websocket may follow.
            if run is self.runner.run_for(app):
                run.kernels[kernel] = KernelClaim(who)

        try:
            code = await self.relay_page(run, app, PageStream(claim, rewrite))
        finally:
            run.kernels.pop(placeholder, None)
        if code == 200:
            # A run's first page ends the visit that cold-started it (counted cold then);
            # every later page found the app running: a warm hit.
            if "page" in run.phases:
                metrics.observe_app_open(cold=False)
            run.mark("page")
            self.store.record_visit(app, viewer.name if viewer else None)

    async def owner_context(self, app: App) -> UserContext:
        return await self.hub.user_context({"name": app.owner})

    def _upstream(self, run: Any, app: App, path: str, **options: Any
                  ) -> httpclient.HTTPRequest:
        """This request as the app's job gets it: the viewer's credentials and hop-by-hop
        headers left out, the run's secret added."""
        headers = HTTPHeaders()
        for name, value in self.request.headers.get_all():
            if name.lower() not in _DROP_REQUEST:
                headers.add(name, value)
        headers[SECRET_HEADER] = run.secret
        url = f"{run.upstream}{PREFIX}/{app.key}/{path}"
        if self.request.query:
            url += "?" + self.request.query
        body = self.request.body if self.request.method in ("POST", "PUT", "PATCH") else None
        return httpclient.HTTPRequest(
            url, method=self.request.method, headers=headers, body=body,
            follow_redirects=False, decompress_response=False, request_timeout=120,
            allow_nonstandard_methods=True, **options)

    def _answer_with(self, code: int, reason: str | None, headers: HTTPHeaders) -> None:
        """Our answer's status and headers: the job's, less those that are not its to set."""
        self.set_status(code, reason)
        self._headers = HTTPHeaders()
        self.set_default_headers()
        for name, value in headers.get_all():
            if name.lower() not in _DROP_RESPONSE:
                self.add_header(name, value)

    async def _stopped_answering(self, app: App) -> web.HTTPError:
        await self.runner.stop(app.key)
        return web.HTTPError(502, "The app stopped answering; reload the page to restart it.")

    async def relay_page(self, run: Any, app: App, stream: PageStream) -> int:
        """Relay the app's page as Voila writes it, line by line (:class:`PageStream`): the
        browser loads the page's styles and scripts while the notebook still runs, and a
        notebook rendered from scratch shows Voila's progress ("Executing cell 3 of 12")
        instead of a blank tab. An answer other than 200 is relayed whole. Returns its
        status."""
        start = ""
        headers = HTTPHeaders()
        held: list[bytes] = []
        streaming = False

        def on_header(line: str) -> None:
            nonlocal start
            if line.startswith("HTTP/"):
                start = line.strip()
                headers.clear()
            elif line.strip():
                headers.parse_line(line)

        def on_chunk(chunk: bytes) -> None:
            nonlocal streaming
            if not streaming and not held and start:  # the first chunk: stream a 200 only
                status = parse_response_start_line(start)
                if status.code == 200:
                    self._answer_with(status.code, status.reason, headers)
                    streaming = True
            if not streaming:
                held.append(chunk)
                return
            ready = stream.feed(chunk)
            if ready:
                self.write(ready)
                self.flush()

        request = self._upstream(run, app, "", header_callback=on_header,
                                 streaming_callback=on_chunk)
        try:
            response = await httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
        except OSError:
            if not streaming:
                raise await self._stopped_answering(app) from None
            log.warning("apps: %s stopped answering in the middle of a page", app.key)
            response = None
        except httpclient.HTTPClientError:  # the page took longer than request_timeout
            if not streaming:
                raise
            log.warning("apps: a page of %s was cut off after %.0f s", app.key,
                        request.request_timeout or 0)
            response = None
        if streaming:
            self.finish(stream.end())
            return 200 if response is not None else 502
        assert response is not None
        self._answer_with(response.code, response.reason, response.headers)
        if response.code in (204, 304) or 100 <= response.code < 200:
            self.finish()
        else:
            self.finish(b"".join(held))
        return response.code

    async def forward(self, run: Any, app: App, path: str) -> httpclient.HTTPResponse:
        """Relay this request to the app's job (with the run's secret) and its answer back."""
        try:
            response = await httpclient.AsyncHTTPClient().fetch(
                self._upstream(run, app, path), raise_error=False)
        except OSError:
            raise await self._stopped_answering(app) from None
        self._answer_with(response.code, response.reason, response.headers)
        if response.code in (204, 304) or 100 <= response.code < 200:
            # No body may follow these (Voila answers a kernel shutdown with 204; the
            # browser's cache checks of static files get 304).
            self.finish()
        else:
            self.finish(response.body or b"")
        return response

    async def get(self, owner: str, slug: str, path: str) -> None:
        await self._handle(owner, slug, path)

    async def post(self, owner: str, slug: str, path: str) -> None:
        await self._handle(owner, slug, path)

    async def delete(self, owner: str, slug: str, path: str) -> None:
        await self._handle(owner, slug, path)


class AppSocketProxy(_Access, websocket.WebSocketHandler):
    """Kernel and request-info websockets of an app, proxied with the secret added, for the
    viewer the kernel was given to only."""

    upstream: websocket.WebSocketClientConnection | None = None
    run: Any = None
    claim: KernelClaim | None = None

    async def get(self, owner: str, slug: str, path: str) -> None:
        app, viewer = await self.visible_app(owner, slug)
        run = self.runner.run_for(app)
        if run is None or run.state != "ready":
            raise web.HTTPError(503, "The app is not running; reload its page.")
        self.path = _app_path(path)
        kernel, who = _kernel_in(self.path), self.viewer_key(viewer)
        if kernel is None or who is None or not run.owns(kernel, who):
            raise web.HTTPError(404, "There is no such kernel.")
        self.run = run
        self.app_key = app.key
        if self.path.endswith("/channels"):
            self.claim = run.kernels[kernel]
        await super().get(owner, slug, path)

    async def open(self, owner: str, slug: str, path: str) -> None:
        if self.claim is not None:
            self.claim.sockets += 1
        url = f"ws://{self.run.address}:{self.run.port}{PREFIX}/{self.app_key}/{self.path}"
        if self.request.query:
            url += "?" + self.request.query
        request = httpclient.HTTPRequest(url, headers={SECRET_HEADER: self.run.secret},
                                         request_timeout=30)
        try:
            self.upstream = await websocket.websocket_connect(
                request, on_message_callback=self._from_app, max_message_size=64 * 1024 * 1024)
        except (OSError, httpclient.HTTPClientError, websocket.WebSocketError) as exc:
            log.warning("apps: websocket to %s failed: %s", self.app_key, exc)
            self.close(1011, "the app is not reachable")
        self.run.touch()

    def _from_app(self, message: str | bytes | None) -> None:
        if message is None:
            self.close()
            return
        try:
            self.write_message(message, binary=isinstance(message, bytes))
        except websocket.WebSocketClosedError:
            pass

    async def on_message(self, message: str | bytes) -> None:
        if self.run is not None:
            self.run.touch()
        if self.upstream is not None:
            await self.upstream.write_message(message, binary=isinstance(message, bytes))

    def on_close(self) -> None:
        if self.claim is not None:
            self.claim.sockets = max(0, self.claim.sockets - 1)
            self.claim.last_seen = time.monotonic()
            self.claim = None
        if self.upstream is not None:
            self.upstream.close()


class SharedStaticHandler(_Base):
    """Voila's static files for every app (:mod:`shopfloor.apps.shared_static`). No login:
    these are the installed packages' public files, the same for every viewer (as JupyterHub's
    and Jupyter Server's own static files); app data never comes this way."""

    async def get(self, key: str, path: str) -> None:
        await self._serve(key, path, body=True)

    async def head(self, key: str, path: str) -> None:
        await self._serve(key, path, body=False)

    async def _serve(self, key: str, path: str, body: bool) -> None:
        shared: StaticIndex = self.settings["shared_static"]
        file = shared.find(key, path)
        if file is None:
            raise web.HTTPError(404, "There is no such file.")
        try:
            content = await asyncio.to_thread(file.read_bytes)
        except OSError:
            raise web.HTTPError(404, "There is no such file.") from None
        self.set_header("Content-Type", _content_type(file.name))
        self.set_header("Cache-Control", f"public, max-age={SHARED_STATIC_MAX_AGE}, immutable")
        if body:
            self.finish(content)
        else:
            self.set_header("Content-Length", len(content))
            self.finish()


def _content_type(name: str) -> str:
    kind, encoding = mimetypes.guess_type(name)
    if kind is None or encoding is not None:  # a .gz must not be taken for what it packs
        return "application/octet-stream"
    return f"{kind}; charset=UTF-8" if kind.startswith("text/") or kind.endswith(
        ("javascript", "json")) else kind


class ToAppOrigin(web.RequestHandler):
    """Old and hand-typed app links on the hub's origin go to the app origin."""

    def get(self, owner: str, slug: str, path: str) -> None:
        target = f"{self.settings['origin_url']}{PREFIX}/{owner}/{slug}/{path}"
        self.redirect(target + ("?" + self.request.query if self.request.query else ""))


class ToGallery(web.RequestHandler):
    """Anything else on the app origin: the gallery, on the hub."""

    def get(self) -> None:
        self.redirect(f"{self.settings['hub_url']}{PREFIX}/")


class OriginOAuthCallback(_Access, HubOAuthCallbackHandler):
    """OAuth callback of the ``apps-viewer`` client, on the app origin."""


class HubOAuthCallback(_Access, HubOAuthCallbackHandler):
    """OAuth callback of the ``apps`` client (the gallery), on the hub's origin."""


def make_app(site: SiteConfig, hub: Hub, runner: AppRunner, store: AppStore,
             cookie_secret: bytes, origin: AppOrigin | None = None,
             hub_auth: HubOAuth | None = None) -> web.Application:
    """The service on the hub's origin: gallery, API, the jobs' callback."""
    handlers: list[Any] = [
        (rf"{PREFIX}/?", GalleryHandler),
        (rf"{PREFIX}/oauth_callback", HubOAuthCallback),
        (rf"{PREFIX}/api/apps", AppListHandler),
        (rf"{PREFIX}/api/apps/{_APP}", AppApiHandler),
        (rf"{PREFIX}/api/apps/{_APP}/rollback", RollbackHandler),
        (rf"{PREFIX}/api/apps/{_APP}/audience", AudienceHandler),
        (rf"{PREFIX}/api/apps/{_APP}/status", StatusHandler),
        (rf"{PREFIX}/api/thumbnails/{_APP}", ThumbnailHandler),
        (rf"{PREFIX}/api/callback/{_APP}", CallbackHandler),
        # Cold starts and warm hits for Prometheus (bearer $SHOPFLOOR_METRICS_TOKEN only).
        metrics.service_metrics_route(PREFIX),
        (rf"{PREFIX}/{_APP}/(?P<path>.*)", ToAppOrigin),
    ]
    origin = origin or app_origin(site.hub.bind_url, site.apps)
    return web.Application(
        handlers, site=site, hub=hub, runner=runner, store=store, cookie_secret=cookie_secret,
        xsrf_cookies=False, origin_url=origin.url, hub_url="",
        hub_auth=hub_auth or HubOAuth.instance(), log_function=_log_request,
    )


def make_origin_app(site: SiteConfig, hub: Hub, runner: AppRunner, store: AppStore,
                    cookie_secret: bytes, origin: AppOrigin, hub_auth: HubOAuth,
                    shared_static: StaticIndex | None = None) -> web.Application:
    """The service on the app origin: app pages, their kernels, the viewers' OAuth, Voila's
    shared static files (``shared_static``: this installation's when not given)."""
    handlers: list[Any] = [
        (rf"{PREFIX}/oauth_callback", OriginOAuthCallback),
        (rf"{SHARED_STATIC}/(?P<key>[0-9a-f]{{24}})/(?P<path>.+)", SharedStaticHandler),
        (rf"{PREFIX}/api/apps/{_APP}/status", StatusHandler),
        (rf"{PREFIX}/{_APP}/(?P<path>api/kernels/[^/]+/channels|voila/query/[^/]+)",
         AppSocketProxy),
        (rf"{PREFIX}/{_APP}/(?P<path>.*)", AppProxyHandler),
        (r"/.*", ToGallery),
    ]
    return web.Application(
        handlers, site=site, hub=hub, runner=runner, store=store, cookie_secret=cookie_secret,
        xsrf_cookies=False, websocket_ping_interval=30, origin=origin, origin_url=origin.url,
        hub_url=_public_hub(site), hub_auth=hub_auth, log_function=_log_request,
        shared_static=shared_static if shared_static is not None else installed_index(),
    )


def _public_hub(site: SiteConfig) -> str:
    url = urlparse(site.hub.bind_url)
    return f"{url.scheme}://{url.netloc}"


_access_log = logging.getLogger("tornado.access")
_redact = RedactKernelIds()


def _log_request(handler: web.RequestHandler) -> None:
    """Tornado's request log line without kernel ids (paths of kernel requests name them)."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    request = handler.request
    path = KERNEL_ID.sub("<kernel>", request.path)
    _access_log.log(level, "%d %s %s %.1fms", status, request.method, path,
                    1000 * request.request_time())


def viewer_oauth_secret_file(site: SiteConfig) -> Path:
    """The ``apps-viewer`` OAuth client's secret (made by the hub side, read by the service)."""
    return Path(site.hub.state_dir) / "apps_viewer_oauth_secret"


def viewer_oauth(site: SiteConfig, origin: AppOrigin) -> HubOAuth:
    """The OAuth client that logs viewers in on the app origin."""
    return HubOAuth(
        api_token=viewer_oauth_secret_file(site).read_text().strip(),
        oauth_client_id=f"service-{VIEWER_SERVICE}",
        oauth_redirect_uri=f"{origin.url}{PREFIX}/oauth_callback",
        access_scopes={f"access:services!service={VIEWER_SERVICE}"},
        hub_host=_public_hub(site), base_url=f"{PREFIX}/",
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="[%(levelname)1.1s %(asctime)s apps] %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_redact)
    site = load_site(os.environ["SHOPFLOOR_SITE"])
    origin = app_origin(site.hub.bind_url, site.apps)
    store = AppStore(site.apps.store_dir or Path(site.hub.state_dir).parent / "apps", site.apps)
    url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    runner = AppRunner(site, store, f"{url.scheme}://{url.netloc}{PREFIX}")
    hub = Hub(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"])
    secret_file = Path(site.hub.state_dir) / "apps_cookie_secret"
    if not secret_file.exists():
        secret_file.write_bytes(os.urandom(32))
        secret_file.chmod(0o600)
    cookie_secret = secret_file.read_bytes()
    app = make_app(site, hub, runner, store, cookie_secret, origin)
    app.listen(url.port or 80, url.hostname or "127.0.0.1", xheaders=True)
    pages = make_origin_app(site, hub, runner, store, cookie_secret, origin,
                            viewer_oauth(site, origin))
    # Behind a TLS proxy (origin_bind_url set) the proxy's forwarded headers count.
    pages.listen(origin.bind_port, origin.bind_host, xheaders=bool(site.apps.origin_bind_url))
    loop = ioloop.IOLoop.current()
    loop.add_callback(runner.cancel_leftovers)
    interval = max(1.0, min(30.0, site.apps.idle_stop_minutes * 60 / 4))

    async def housekeeping() -> None:
        await runner.stop_idle()
        await runner.reclaim_kernels()

    ioloop.PeriodicCallback(housekeeping, interval * 1000).start()
    log.info("apps service on %s, app pages on %s (store %s, idle stop %g min)", url.netloc,
             origin.url, store.root, site.apps.idle_stop_minutes)
    try:
        loop.start()
    finally:
        asyncio.run(runner.stop_all())


def apps_service_config(site: SiteConfig, site_file: str) -> dict[str, Any]:
    """The managed-service entry for ``c.JupyterHub.services``."""
    hub = urlparse(site.hub.hub_bind_url)
    from shopfloor.apps.model import default_service_port

    port = default_service_port(hub.port or 8081, site.apps)
    return {
        "name": SERVICE_NAME,
        "url": f"http://{hub.hostname or '127.0.0.1'}:{port}",
        "command": [sys.executable, "-m", "shopfloor.extensions.apps_service"],
        "environment": {"SHOPFLOOR_SITE": site_file, "PATH": os.environ.get("PATH", ""),
                        **metrics.service_environment()},
        "oauth_no_confirm": True,
        "display": True,
    }


def viewer_client_config(site: SiteConfig) -> dict[str, Any]:
    """The ``apps-viewer`` entry for ``c.JupyterHub.services``: an OAuth client (no URL, no
    process) whose redirect URI is on the app origin. Raises :class:`SiteConfigError` when
    ``apps.origin_url`` shares the hub's host."""
    try:
        origin = app_origin(site.hub.bind_url, site.apps)
    except ValueError as exc:
        raise SiteConfigError(str(exc)) from None
    secret = viewer_oauth_secret_file(site)
    if not secret.exists():
        secret.write_text(secrets.token_hex(32))
    secret.chmod(0o600)
    return {
        "name": VIEWER_SERVICE,
        "oauth_client_id": f"service-{VIEWER_SERVICE}",
        "oauth_redirect_uri": f"{origin.url}{PREFIX}/oauth_callback",
        "api_token": secret.read_text().strip(),
        "oauth_no_confirm": True,
        "display": False,
    }


if __name__ == "__main__":
    main()
