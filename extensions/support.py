"""Help with access that expires: a user lets the site's support group into one session.

A user asks for help on one of their running sessions (the home page, the JupyterLab Help
view, or ``POST /hub/api/shopfloor/support``). The hub then

* stores a support request: what they wrote, the user, session, job id, partition, node and
  the last lines of the job log, read **as the user** (:func:`shopfloor.userfiles.tail_as_user`
  through the spawner), never as root;
* shares *that one server* with the members of the hub group ``support.group`` through
  JupyterHub's own sharing (one ``orm.Share`` per member, scope
  ``access:servers!server=<user>/<server>`` only, with an expiry; per member because
  JupyterHub 6.1 ignores a group's share for OAuth tokens, see
  :func:`shopfloor.extensions.compat.share_with_members`), for the hours the user chose (1 to
  ``support.max_hours``);
* logs every grant, use (a support member opening the session through ``/hub/support``) and
  revoke, in the hub log (``support:`` lines) and in the request's own journal.

The user sees who has access (the group's members) and can revoke at once; a periodic task
revokes at expiry even if nobody acts, and ends the OAuth tokens the members got for that
server, so their browsers must ask the hub again (the session's server trusts its cached
answer at most ``support.session_auth_cache_seconds``). Members of other groups gain nothing:
the share names one group and one server, and the support page and its API answer 404 to
everyone else.

API (JSON, the caller's own token or login):

* ``GET  /hub/api/shopfloor/support``: ``mine`` (the caller's requests) and, for support
  members, ``queue`` (open requests of everyone);
* ``POST /hub/api/shopfloor/support``: ``{"server": "", "message": "...", "hours": 2}``;
* ``DELETE /hub/api/shopfloor/support/<id>``: revoke (the requester) or close (support).

Asking and revoking need access to that server (:func:`own_server_only`): a session's own
token (``access:servers!server``) may do both for its own session only, which is how the
JupyterLab Help view asks (``shopfloor/lab/support`` in the session, server-side).

Pages: ``/hub/support`` (support members) and ``/hub/support/<id>/open``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jupyterhub.handlers import BaseHandler
from tornado import ioloop, web
from tornado.log import app_log

from shopfloor.errors import ShopfloorError
from shopfloor.extensions.compat import (
    group_members,
    hub_start_future,
    register_api_handler,
    register_page_handler,
    running_hub,
    share_with_members,
    unshare_with_users,
)
from shopfloor.extensions.resources_api import _ShopfloorHandler, user_context_for
from shopfloor.resources import UserContext
from shopfloor.site import SiteConfig, SupportSettings
from shopfloor.userfiles import private_dir, private_file

#: JupyterHub's own log (tornado's application logger, which the hub configures): the
#: support lines must reach the hub log beside JupyterHub's.
log = app_log

MAX_MESSAGE = 2000


class SupportInputError(ShopfloorError, ValueError):
    """A help request that cannot be made as it is; ``problems`` names each field."""

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__("", problems)


@dataclass
class HelpRequest:
    """One request for help on one session."""

    id: int
    user: str
    server: str
    message: str
    job_id: str
    partition: str
    node: str
    log_tail: str
    hours: int
    created: float
    expires: float
    state: str = "open"  #: open, revoked (by the user), closed (by support), expired
    ended_by: str = ""
    ended_at: float = 0.0
    #: The support members given access (JSON list): who is shown, and whose access ends.
    granted: str = "[]"

    @property
    def granted_to(self) -> list[str]:
        return list(json.loads(self.granted or "[]"))

    @property
    def session(self) -> str:
        return self.server or "default"

    def public(self) -> dict[str, Any]:
        """As the API answers (for the requester or a support member)."""
        data = asdict(self)
        data.pop("granted")
        data["session"] = self.session
        data["access"] = self.granted_to if self.state == "open" else []
        data["expires_iso"] = _iso(self.expires)
        data["created_iso"] = _iso(self.created)
        return data


def _iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds")


def validate_request(raw: Any, settings: SupportSettings) -> tuple[str, str, int]:
    """(server, message, hours) from a request body; :class:`SupportInputError` otherwise."""
    if not isinstance(raw, dict):
        raise SupportInputError({"body": "must be a JSON object with server, message, hours"})
    problems: dict[str, str] = {}
    unknown = sorted(set(raw) - {"server", "message", "hours"})
    if unknown:
        problems["body"] = f"unknown field(s) {', '.join(unknown)}; use server, message, hours"
    server = raw.get("server", "")
    if not isinstance(server, str) or len(server) > 255:
        problems["server"] = "must be the name of one of your sessions ('' for the default)"
        server = ""
    message = raw.get("message")
    if not isinstance(message, str) or not message.strip():
        problems["message"] = "say what you need help with"
    elif len(message) > MAX_MESSAGE:
        problems["message"] = f"at most {MAX_MESSAGE} characters; you wrote {len(message)}"
    hours = raw.get("hours", settings.default_hours)
    if isinstance(hours, str) and hours.strip().isdigit():
        hours = int(hours)
    if isinstance(hours, bool) or not isinstance(hours, int) or not (
            1 <= hours <= settings.max_hours):
        problems["hours"] = f"a whole number of hours from 1 to {settings.max_hours}"
    if problems:
        raise SupportInputError(problems)
    return server, str(message).strip(), int(hours)


# -- the store ------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT, server TEXT, message TEXT, job_id TEXT,
    partition TEXT, node TEXT, log_tail TEXT, hours INTEGER, created REAL, expires REAL,
    state TEXT, ended_by TEXT, ended_at REAL, granted TEXT
);
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT, request INTEGER, at REAL, actor TEXT, action TEXT,
    detail TEXT
);
"""


class SupportStore:
    """The hub's sqlite file of help requests and their journal (root's alone: 0700/0600)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        private_dir(self.path.parent)
        private_file(self.path)
        with self._connect() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10)
        db.row_factory = sqlite3.Row
        try:
            with db:
                yield db
        finally:
            db.close()

    def add(self, request: HelpRequest) -> HelpRequest:
        data = asdict(request)
        data.pop("id")
        columns = ", ".join(data)
        marks = ", ".join(f":{k}" for k in data)
        with self._connect() as db:
            cursor = db.execute(f"INSERT INTO requests ({columns}) VALUES ({marks})", data)
            request.id = int(cursor.lastrowid or 0)
        return request

    def get(self, request_id: int) -> HelpRequest | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM requests WHERE id = ?", (request_id,)).fetchone()
        return HelpRequest(**dict(row)) if row else None

    def requests(self, *, user: str | None = None, state: str | None = None,
                 limit: int = 50) -> list[HelpRequest]:
        query, args = "SELECT * FROM requests WHERE 1=1", []
        if user is not None:
            query += " AND user = ?"
            args.append(user)
        if state is not None:
            query += " AND state = ?"
            args.append(state)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [HelpRequest(**dict(r)) for r in rows]

    def set_granted(self, request_id: int, users: list[str]) -> None:
        with self._connect() as db:
            db.execute("UPDATE requests SET granted = ? WHERE id = ?",
                       (json.dumps(users), request_id))

    def end(self, request_id: int, state: str, by: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE requests SET state = ?, ended_by = ?, ended_at = ? "
                       "WHERE id = ? AND state = 'open'", (state, by, time.time(), request_id))

    def record(self, request_id: int, actor: str, action: str, detail: str = "") -> None:
        """One journal line (grant, use, revoke, close, expire) and the same in the hub log."""
        with self._connect() as db:
            db.execute("INSERT INTO journal (request, at, actor, action, detail) "
                       "VALUES (?, ?, ?, ?, ?)", (request_id, time.time(), actor, action, detail))
        log.info("support: request %s: %s by %s%s", request_id, action, actor,
                 f" ({detail})" if detail else "")

    def journal(self, request_id: int) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute("SELECT at, actor, action, detail FROM journal WHERE request = ? "
                              "ORDER BY id", (request_id,)).fetchall()
        return [dict(r) | {"at_iso": _iso(r["at"])} for r in rows]


_STORES: dict[str, SupportStore] = {}


def support_store(site: SiteConfig) -> SupportStore:
    """The store of this site (``support/support.sqlite`` in the hub's state folder)."""
    path = str(Path(site.hub.state_dir) / "support" / "support.sqlite")
    if path not in _STORES:
        _STORES[path] = SupportStore(path)
    return _STORES[path]


# -- granting and ending access -------------------------------------------------------------


def _utc_naive(stamp: float) -> datetime:
    """A naive UTC datetime, as JupyterHub's database keeps times."""
    return datetime.fromtimestamp(stamp, UTC).replace(tzinfo=None)


def end_access(db: Any, store: SupportStore, request: HelpRequest, state: str,
               by: str) -> None:
    """Revoke the shares of ``request``'s server and mark the request ended (logged)."""
    if request.state != "open":
        return
    ended = unshare_with_users(db, request.user, request.server, request.granted_to)
    store.end(request.id, state, by)
    detail = f"{', '.join(request.granted_to) or 'nobody'} on {request.user}/{request.session}"
    if ended:
        detail += f"; ended the session logins of {', '.join(ended)}"
    store.record(request.id, by, {"expired": "expire", "revoked": "revoke",
                                  "closed": "close"}[state], detail)


def expire_due(db: Any, site: SiteConfig, now: float | None = None) -> int:
    """End every open request whose time is up; returns how many."""
    store = support_store(site)
    now = time.time() if now is None else now
    due = [r for r in store.requests(state="open", limit=10_000) if r.expires <= now]
    for request in due:
        end_access(db, store, request, "expired", "hub")
    return len(due)


def is_member(db: Any, site: SiteConfig, caller: UserContext) -> bool:
    """Whether the caller is in the site's support group (its hub group)."""
    return caller.name in group_members(db, site.support.group)


def support_view(handler: Any, caller: UserContext) -> dict[str, Any]:
    """The support part of the home model: the caller's requests, and the queue size for
    support members."""
    site: SiteConfig = handler.ctx.site
    store = support_store(site)
    view: dict[str, Any] = {
        "group": site.support.group,
        "max_hours": site.support.max_hours,
        "default_hours": site.support.default_hours,
        "mine": [r.public() for r in store.requests(user=caller.name, limit=20)],
        "member": is_member(handler.db, site, caller),
    }
    if view["member"]:
        view["open_requests"] = len(store.requests(state="open", limit=10_000))
    return view


# -- handlers ------------------------------------------------------------------------------


def own_server_only(handler: Any, user: str, server: str) -> None:
    """403 unless the caller's token may open ``user``'s server ``server``.

    A session's own token (``access:servers!server`` only) may thus ask for help on, and
    revoke access to, that one session and no other of its user's; the user's login and
    their own tokens (``access:servers!user``) may for each of their sessions.
    """
    if not handler.has_scope(f"access:servers!server={user}/{server}"):
        raise web.HTTPError(403, "this token may ask for help only on its own session "
                            f"({user}/{server or 'default'} is another)")


class SupportApiHandler(_ShopfloorHandler):
    """``GET``: the caller's requests (and the queue, for support). ``POST``: ask for help."""

    async def get(self) -> None:
        caller = self.caller()
        site = self.ctx.site
        store = support_store(site)
        answer: dict[str, Any] = {"mine": [r.public() for r in store.requests(user=caller.name)],
                                  "max_hours": site.support.max_hours,
                                  "default_hours": site.support.default_hours}
        if is_member(self.db, site, caller):
            answer["queue"] = [r.public() for r in store.requests(state="open")]
        self.finish(json.dumps(answer))

    async def post(self) -> None:
        caller = self.caller()
        site = self.ctx.site
        try:
            raw = json.loads(self.request.body or b"{}")
        except ValueError:
            raw = None
        try:
            server, message, hours = validate_request(raw, site.support)
            own_server_only(self, caller.name, server)
            request = await self._open(caller, server, message, hours)
        except SupportInputError as exc:
            self.set_status(exc.http_status)
            self.finish(json.dumps(exc.as_json()))
            return
        self.set_status(201)
        self.finish(json.dumps(request.public()))

    async def _open(self, caller: UserContext, server: str, message: str,
                    hours: int) -> HelpRequest:
        site = self.ctx.site
        user = self.current_user
        spawner = user.spawners[server] if server in user.orm_user.orm_spawners else None
        if spawner is None or not spawner.active:
            name = server or "default"
            raise SupportInputError({"server": f"you have no running session {name!r}"})
        store = support_store(site)
        if any(r.server == server for r in store.requests(user=caller.name, state="open")):
            raise SupportInputError({"server": "this session already has an open help "
                                     "request; revoke it first to ask again"})
        if not group_members(self.db, site.support.group):
            raise SupportInputError({"server": "this site has no support staff to share "
                                     "with; write to your admin"})
        request = getattr(spawner, "request", None)
        tail = ""
        if site.support.log_lines and hasattr(spawner, "job_log_tail"):
            tail = await spawner.job_log_tail(lines=site.support.log_lines)  # as the user
        now = time.time()
        help_request = store.add(HelpRequest(
            id=0, user=caller.name, server=server, message=message,
            job_id=str(getattr(spawner, "job_id", "") or ""),
            partition=request.partition if request is not None else "",
            node=getattr(spawner, "node_name", "") or "", log_tail=tail, hours=hours,
            created=now, expires=now + hours * 3600,
        ))
        granted = share_with_members(self.db, caller.name, server, site.support.group,
                                     _utc_naive(help_request.expires))
        if not granted:
            store.end(help_request.id, "closed", "hub")
            raise SupportInputError({"server": "this session cannot be shared now"})
        store.set_granted(help_request.id, granted)
        help_request.granted = json.dumps(granted)
        store.record(help_request.id, caller.name, "grant",
                     f"{', '.join(granted)} ({site.support.group}) on {caller.name}/"
                     f"{help_request.session} for {hours} h, until {_iso(help_request.expires)}")
        return help_request


class SupportRequestHandler(_ShopfloorHandler):
    """``DELETE``: the requester revokes, a support member closes; ``GET``: one request."""

    def _visible(self, request_id: str) -> tuple[HelpRequest, UserContext, bool]:
        caller = self.caller()
        site = self.ctx.site
        request = support_store(site).get(int(request_id))
        member = is_member(self.db, site, caller)
        if request is None or not (request.user == caller.name or member):
            raise web.HTTPError(404, f"There is no help request {request_id}.")
        return request, caller, member

    async def get(self, request_id: str) -> None:
        request, _, _ = self._visible(request_id)
        site = self.ctx.site
        data = request.public()
        data["journal"] = support_store(site).journal(request.id)
        self.finish(json.dumps(data))

    async def delete(self, request_id: str) -> None:
        request, caller, _member = self._visible(request_id)
        site = self.ctx.site
        state = "revoked" if request.user == caller.name else "closed"
        if state == "revoked":
            own_server_only(self, caller.name, request.server)
        end_access(self.db, support_store(site), request, state, caller.name)
        self.set_status(204)
        self.finish()


class SupportPageHandler(BaseHandler):
    """``/hub/support``: open requests, for members of the support group only."""

    @web.authenticated
    async def get(self) -> None:
        site: SiteConfig = self.settings["shopfloor"].site
        caller = user_context_for(self.current_user)
        if not is_member(self.db, site, caller):
            raise web.HTTPError(404)
        store = support_store(site)
        html = await self.render_template(
            "shopfloor_support.html", requests=[r.public() for r in store.requests(state="open")],
            recent=[r.public() for r in store.requests(limit=20) if r.state != "open"],
            group=site.support.group)
        self.finish(html)


class SupportOpenHandler(BaseHandler):
    """``/hub/support/<id>/open``: a support member enters the shared session (logged)."""

    @web.authenticated
    async def get(self, request_id: str) -> None:
        site: SiteConfig = self.settings["shopfloor"].site
        caller = user_context_for(self.current_user)
        store = support_store(site)
        request = store.get(int(request_id))
        if (request is None or not is_member(self.db, site, caller) or request.state != "open"
                or request.expires <= time.time()):
            raise web.HTTPError(404, "This help request is not open (any more).")
        store.record(request.id, caller.name, "use", f"opened {request.user}/{request.session}")
        owner = self.find_user(request.user)
        if owner is None:
            raise web.HTTPError(404)
        self.redirect(owner.server_url(request.server))


def schedule_expiry(site: SiteConfig) -> None:
    """Once the hub has started, end expired access every ``support.expiry_check_seconds``."""
    app = running_hub()
    started = hub_start_future(app) if app is not None else None
    if started is None:
        return

    def check() -> None:
        try:
            count = expire_due(app.db, site)
        except Exception:  # the next round tries again; the hub must keep serving
            log.exception("support: expiry check failed")
            return
        if count:
            log.info("support: %d help request(s) expired", count)

    def start(_future: Any) -> None:
        check()  # access that ran out while the hub was down ends at once
        ioloop.PeriodicCallback(check, site.support.expiry_check_seconds * 1000).start()

    started.add_done_callback(start)


def install_support(c: Any, site: SiteConfig) -> None:
    """Handlers, the support group and its members, the servers' auth cache, the expiry."""
    register_api_handler(r"/api/shopfloor/support", SupportApiHandler)
    register_api_handler(r"/api/shopfloor/support/(?P<request_id>[0-9]{1,12})",
                         SupportRequestHandler)
    register_page_handler(r"/support", SupportPageHandler)
    register_page_handler(r"/support/(?P<request_id>[0-9]{1,12})/open", SupportOpenHandler)
    groups = dict(c.JupyterHub.load_groups) if "load_groups" in c.JupyterHub else {}
    entry = groups.get(site.support.group) or {}
    if isinstance(entry, list):
        entry = {"users": entry}
    users = sorted({*entry.get("users", []), *site.support.members})
    groups[site.support.group] = {**entry, "users": users}
    c.JupyterHub.load_groups = groups
    # A revoked member's browser holds a token the server trusts until its cache ends.
    args = [a for a in (c.ShopfloorSpawner.args if "args" in c.ShopfloorSpawner else [])
            if not str(a).startswith("--HubOAuth.cache_max_age=")]
    c.ShopfloorSpawner.args = [
        *args, f"--HubOAuth.cache_max_age={site.support.session_auth_cache_seconds}"]
    support_store(site)  # made (0700/0600) at start, not at the first request
    schedule_expiry(site)


__all__ = ["HelpRequest", "SupportInputError", "SupportStore", "end_access", "expire_due",
           "install_support", "support_store", "support_view", "validate_request"]
