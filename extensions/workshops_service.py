"""The ``workshop`` hub service: join codes, checkpoints, the trainer's view, the clean end.

Run by JupyterHub as a managed service (registered by ``shopfloor.extensions.workshops_hub``)::

    python -m shopfloor.extensions.workshops_service

Routes (all under ``/services/workshop/``):

* ``join`` (GET form, POST): a participant enters the workshop code and their name; the
  service creates a Unix account ``ws-<workshop>-<n>`` with a generated password (shown once),
  a hub user in the workshop's group, and opens the reservation to it. Wrong codes are
  rate-limited per address; capacity is respected. ``api/join`` is the same as JSON.
* ``api/checkpoints`` (POST, a user's token such as the session's ``$JUPYTERHUB_API_TOKEN``):
  a guided notebook's step, ok or failed.
* ``api/workshops`` (GET list, POST create), ``api/workshops/<name>`` (status),
  ``.../progress``, ``.../accounts`` (generated logins as CSV), ``.../participants/<user>/
  server`` (POST start, DELETE stop), ``.../end`` (export, then clean up; re-runnable),
  ``.../exports/<file>`` (GET one exported file, read with the calling trainer's rights).

Trainers are the workshop's creator and co-trainers; hub admins may do everything. The
service keeps its state in one sqlite file (:class:`~shopfloor.workshops.model.WorkshopStore`).
"""

from __future__ import annotations

import asyncio
import grp
import json
import logging
import os
import pwd
import re
import sys
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlparse

import jinja2
from jupyterhub.services.auth import HubAuth
from tornado import httpclient, ioloop, web

from shopfloor.errors import ShopfloorError
from shopfloor.extensions import metrics
from shopfloor.ops.privileged import MOST_AT_ONCE
from shopfloor.site import SiteConfig, load_site
from shopfloor.slurm.seam import Slurm, SlurmError
from shopfloor.workshops import ops
from shopfloor.workshops.batches import SerialBatches
from shopfloor.workshops.model import (
    END_STEPS,
    STEP_NAME,
    Checkpoint,
    Participant,
    Workshop,
    WorkshopInputError,
    WorkshopStore,
    account_name,
    display_name,
    group_name,
    logins_csv,
    names_from_csv,
    new_code,
    normalize_code,
    parse_spec,
    progress_rows,
    store_path,
)

log = logging.getLogger("shopfloor.workshops.client")
SERVICE_NAME = "workshop"
PREFIX = f"/services/{SERVICE_NAME}"
ACCESS_SCOPE = f"access:services!service={SERVICE_NAME}"
_WS = r"(?P<workshop>[a-z][a-z0-9]{1,11})"
#: Names of files the end of a workshop exports: ``<login>.tar.gz`` and ``progress.csv``.
EXPORT_FILE = re.compile(r"[a-z0-9][a-z0-9_-]{0,40}\.tar\.gz|progress\.csv")
TEMPLATES = Path(__file__).with_name("templates")
# Joins whose privileged steps (account, association, reservation, hub user) run at once.
# They used to run one after the other (about 3 s each here: 40 participants took 2 min
# to join); more than a few at once only makes them share the CPU.
JOINS_AT_ONCE = 8


def default_service_port(hub_api_port: int, port: int | None = None) -> int:
    """The workshop service's port: ``workshops.service_port``, else hub API port + 12."""
    return port or hub_api_port + 12


def service_url(site: SiteConfig) -> str:
    """Where the hub and sessions reach the service (the hub's internal address)."""
    hub = urlparse(site.hub.hub_bind_url)
    port = default_service_port(hub.port or 8081, site.workshops.service_port)
    return f"http://{hub.hostname or '127.0.0.1'}:{port}"


class HubAPI:
    """The hub's REST API with the service's own token."""

    def __init__(self, api_url: str, token: str) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token

    async def call(self, method: str, path: str, body: Any = None,
                   ok: tuple[int, ...] = (200, 201, 202, 204)) -> Any:
        response = await httpclient.AsyncHTTPClient().fetch(
            f"{self.api_url}{path}", method=method, raise_error=False, request_timeout=60,
            headers={"Authorization": f"token {self.token}"},
            body=json.dumps(body) if body is not None else (None if method in (
                "GET", "DELETE") else b""),
            allow_nonstandard_methods=True,
        )
        if response.code not in ok:
            raise web.HTTPError(502, f"the hub answered {response.code} to {method} {path}: "
                                f"{response.body[:200].decode(errors='replace')}")
        return json.loads(response.body) if response.body else None

    async def user(self, name: str) -> dict[str, Any] | None:
        return await self.call("GET", f"/users/{quote(name)}", ok=(200, 404)) or None


class RateLimit:
    """At most ``limit`` events per ``window`` seconds per key (e.g. wrong codes per address)."""

    def __init__(self, limit: int, window: float = 60) -> None:
        self.limit = limit
        self.window = window
        self.events: dict[str, deque[float]] = defaultdict(deque)

    def blocked(self, key: str) -> bool:
        events = self.events[key]
        while events and time.monotonic() - events[0] > self.window:
            events.popleft()
        return len(events) >= self.limit

    def record(self, key: str) -> None:
        self.events[key].append(time.monotonic())


class Workshops:
    """What the service does, apart from HTTP (the handlers call these)."""

    def __init__(self, site: SiteConfig, store: WorkshopStore, slurm: Slurm, hub: HubAPI,
                 public_url: str = "") -> None:
        self.site = site
        self.store = store
        self.slurm = slurm
        self.hub = hub
        self.public_url = public_url.rstrip("/")
        # Held only while a place is counted and a number handed out, not for the slow steps.
        self.join_lock = asyncio.Lock()
        self.joining: dict[str, set[int]] = defaultdict(set)
        self.join_slots = asyncio.Semaphore(JOINS_AT_ONCE)
        # Participants' Slurm associations: one helper run at a time (sacctmgr adds at the
        # same moment can be lost), shared by every join waiting for one.
        self.associations = SerialBatches(self._associate_batch, MOST_AT_ONCE)
        self.end_locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.failures = RateLimit(site.workshops.join_failures_per_minute)

    # -- who may do what -----------------------------------------------------------------

    @staticmethod
    def groups_of(model: dict[str, Any]) -> set[str]:
        groups = set(model.get("groups") or [])
        try:
            pw = pwd.getpwnam(model["name"])
            groups |= {grp.getgrgid(g).gr_name for g in os.getgrouplist(pw.pw_name, pw.pw_gid)}
        except KeyError:
            pass
        return groups

    def may_create(self, model: dict[str, Any]) -> bool:
        settings = self.site.workshops
        return bool(model.get("admin")) or model["name"] in settings.creators or bool(
            self.groups_of(model) & set(settings.creator_groups))

    def managed(self, model: dict[str, Any], name: str) -> Workshop:
        """The workshop if the caller trains it (or is an admin); 404/403 otherwise."""
        workshop = self.store.workshop(name)
        if workshop is None:
            raise web.HTTPError(404, f"There is no workshop {name!r}.")
        if not model.get("admin") and model["name"] not in workshop.trainers:
            raise web.HTTPError(403, f"Only the trainers of {name!r} may do this.")
        return workshop

    # -- links ---------------------------------------------------------------------------

    def spawn_url(self, workshop: Workshop) -> str:
        """The one link that starts a participant's session on the workshop's compute."""
        query = {"opt-partition": workshop.partition}
        if workshop.reservation:
            query["opt-reservation"] = workshop.reservation
        return f"/hub/spawn?{urlencode(query)}"

    def describe(self, workshop: Workshop, *, with_code: bool) -> dict[str, Any]:
        data = asdict(workshop) if with_code else workshop.public()
        if with_code:
            data["code"] = f"{workshop.code[:4]}-{workshop.code[4:]}"
        data.update(
            group=workshop.group, spawn_url=self.spawn_url(workshop),
            join_url=f"{self.public_url}{PREFIX}/join",
            participants=len([p for p in self.store.participants(workshop.name)
                              if p.state == "active"]),
            end_steps_done=sorted(self.store.done_steps(workshop.name)),
        )
        return data

    # -- create --------------------------------------------------------------------------

    async def create(self, caller: dict[str, Any], raw: Any) -> dict[str, Any]:
        if not self.may_create(caller):
            raise web.HTTPError(403, "You may not create workshops; ask your admin to add you "
                                "to workshops.creators in the site file.")
        spec = parse_spec(raw, self.site)
        if self.store.workshop(spec.name) is not None:
            raise WorkshopInputError({"name": f"{spec.name!r} is taken; choose another name"})
        missing = [t for t in spec.trainers if not ops.unix_user_exists(t)]
        if missing:
            raise WorkshopInputError({"trainers": f"no such user: {', '.join(missing)}"})
        trainers = list(dict.fromkeys([caller["name"], *spec.trainers]))
        reservation = ""
        undo: list[Any] = []
        try:
            if spec.reserves:
                try:
                    reservation = await ops.create_reservation(self.slurm, spec, trainers)
                except SlurmError as exc:
                    raise WorkshopInputError({
                        "cores" if spec.cores else "nodes":
                        f"Slurm cannot reserve this: {exc.slurm_message}"}) from None
                undo.append(lambda: ops.delete_reservation(self.slurm, reservation))
            await self._ensure_group(group_name(spec.name))
            undo.append(lambda: self.hub.call("DELETE", f"/groups/{group_name(spec.name)}",
                                              ok=(200, 204, 404)))
            await self._ensure_group(self.site.workshops.participant_group)
            await self.hub.call("PUT", f"/shopfloor/workshop-roles/{spec.name}",
                                {"trainers": trainers})
            workshop = Workshop(
                name=spec.name, title=spec.title, code=normalize_code(new_code()),
                start=spec.start.isoformat(), end=spec.end.isoformat(),
                capacity=spec.capacity, partition=spec.partition, reservation=reservation,
                material=spec.material, trainers=trainers, created_by=caller["name"],
                cores=spec.cores, nodes=spec.nodes,
            )
            self.store.add_workshop(workshop)
        except BaseException:
            for step in reversed(undo):
                try:
                    await step()
                except (SlurmError, web.HTTPError, OSError) as exc:
                    log.warning("undoing a failed workshop creation: %s", exc)
            raise
        log.info("workshop %s created by %s (reservation %s)", spec.name, caller["name"],
                 reservation or "none")
        return self.describe(workshop, with_code=True)

    async def _ensure_group(self, name: str) -> None:
        await self.hub.call("POST", f"/groups/{quote(name)}", {}, ok=(201, 409))

    # -- join ----------------------------------------------------------------------------

    async def join(self, address: str, raw_code: Any, raw_name: Any) -> dict[str, Any]:
        """Make an account for a participant; refusals raise :class:`WorkshopInputError`."""
        if self.failures.blocked(address):
            metrics.observe_workshop_join("rate_limited")
            raise web.HTTPError(429, "Too many wrong codes from your address; wait a minute.")
        problems: dict[str, str] = {}
        try:
            code = normalize_code(raw_code)
        except WorkshopInputError as exc:
            problems.update(exc.problems)
            code = ""
        try:
            name = display_name(raw_name)
        except WorkshopInputError as exc:
            problems.update(exc.problems)
        if problems:
            if "code" in problems:
                self.failures.record(address)
            metrics.observe_workshop_join("wrong_code" if "code" in problems else "invalid")
            raise WorkshopInputError(problems)
        workshop = self.store.by_code(code)
        if workshop is None or workshop.ends_before(datetime.now()):
            self.failures.record(address)
            metrics.observe_workshop_join("wrong_code" if workshop is None else "closed")
            raise WorkshopInputError({"code": "no running workshop has this code; check it "
                                      "with your trainer"})
        async with self.join_lock:
            active = [p for p in self.store.participants(workshop.name) if p.state == "active"]
            # A join counts from its number on (stored or not yet), and only once.
            joining = self.joining[workshop.name] - {p.number for p in active}
            if len(active) + len(joining) >= workshop.capacity:
                metrics.observe_workshop_join("full")
                raise WorkshopInputError({"workshop": f"the workshop is full ({workshop.capacity}"
                                          " places); ask your trainer"})
            number = self._next_number(workshop.name)
            self.joining[workshop.name].add(number)
        username = account_name(workshop.name, number)
        try:
            async with self.join_slots:
                password = await self._add_participant(workshop, username, name, number)
        finally:
            self.joining[workshop.name].discard(number)
        metrics.observe_workshop_join("joined")
        login_next = self.spawn_url(workshop)
        return {
            "username": username, "password": password, "name": name,
            "workshop": workshop.name, "title": workshop.title, "spawn_url": login_next,
            "login_url": f"/hub/login?{urlencode({'next': login_next})}",
        }

    def _next_number(self, workshop: str) -> int:
        """The next participant number, past those stored and those still joining."""
        return max(self.store.next_number(workshop), max(self.joining[workshop], default=0) + 1)

    async def _associate_batch(self, usernames: Sequence[str]) -> None:
        """Participants' Slurm associations (a workshop's first makes its account)."""
        await ops.associate_participants(usernames, slurm_conf=self.site.slurm.conf_file)

    async def _add_participant(self, workshop: Workshop, username: str, name: str,
                               number: int) -> str:
        password = await ops.create_account(username)
        if self.site.accounting.enabled:
            try:
                await self.associations.submit(username)
            except Exception:
                # The number goes back to the pool, so the account made for it goes too:
                # the next participant given this number would find it taken.
                await self._remove_unstored_account(username)
                raise
        # Stored first: whatever fails next, the end of the workshop finds and removes it.
        self.store.add_participant(Participant(
            username=username, workshop=workshop.name, name=name, number=number,
            joined=datetime.now().isoformat(timespec="seconds")))
        await self.hub.call("POST", f"/users/{username}", {}, ok=(201, 409))
        for group in (workshop.group, self.site.workshops.participant_group):
            await self.hub.call("POST", f"/groups/{quote(group)}/users", {"users": [username]})
        if workshop.reservation:
            await ops.add_reservation_user(self.slurm, workshop.reservation, username)
        log.info("workshop %s: %s joined", workshop.name, username)
        return password

    @staticmethod
    async def _remove_unstored_account(username: str) -> None:
        try:
            await ops.delete_account(username)
        except Exception:
            log.exception("could not remove %s after its join failed", username)

    async def generate(self, caller: dict[str, Any], name: str, raw: Any) -> str:
        """Accounts made in advance, from a roster CSV or a count; returns the logins CSV."""
        workshop = self.managed(caller, name)
        if not isinstance(raw, dict):
            raise WorkshopInputError({"accounts": "send {'csv': ...} or {'count': N}"})
        free = workshop.capacity - len(
            [p for p in self.store.participants(name) if p.state == "active"])
        if raw.get("csv") is not None:
            names = names_from_csv(raw["csv"], free)
        else:
            count = raw.get("count")
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= free:
                raise WorkshopInputError({"count": f"must be a whole number from 1 to {free} "
                                          "(the places left)"})
            names = [f"Participant {i}" for i in range(1, count + 1)]
        rows = []
        async with self.join_lock:
            for person in names:
                number = self._next_number(name)
                username = account_name(name, number)
                password = await self._add_participant(workshop, username, person, number)
                rows.append({"login": username, "password": password, "name": person})
        return logins_csv(rows)

    # -- checkpoints and progress ----------------------------------------------------------

    def checkpoint(self, caller: dict[str, Any], raw: Any) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise WorkshopInputError({"checkpoint": "send a JSON object: step, ok, message"})
        step, ok, message = raw.get("step"), raw.get("ok", True), raw.get("message", "")
        problems = {}
        if not isinstance(step, str) or not STEP_NAME.match(step):
            problems["step"] = ("1 to 40 letters, digits, spaces and '_.:-', starting with a "
                                "letter or digit (e.g. step-2)")
        if not isinstance(ok, bool):
            problems["ok"] = "must be true or false"
        if not isinstance(message, str) or len(message) > 500:
            problems["message"] = "must be text of at most 500 characters"
        if problems:
            raise WorkshopInputError(problems)
        participant = self.store.participant(caller["name"])
        if participant is None or participant.state != "active":
            return {"recorded": False, "why": "you are not taking part in a workshop"}
        self.store.add_checkpoint(participant.workshop, Checkpoint(
            caller["name"], step, ok, message, datetime.now().isoformat(timespec="seconds")))
        return {"recorded": True, "workshop": participant.workshop}

    async def progress(self, caller: dict[str, Any], name: str) -> list[dict[str, Any]]:
        workshop = self.managed(caller, name)
        participants = self.store.participants(name)
        rows = progress_rows(participants, self.store.checkpoints(name),
                             self.site.workshops.stuck_minutes)
        models = await asyncio.gather(*(self.hub.user(r.username) for r in rows))
        out = []
        for row, model in zip(rows, models, strict=True):
            server = ((model or {}).get("servers") or {}).get("")
            if server:
                row.server = "running" if server.get("ready") else (
                    server.get("pending") or "starting")
            row.last_activity = (model or {}).get("last_activity")
            row.open_url = f"/user/{row.username}/lab/tree/{workshop.name}"
            out.append(asdict(row))
        return out

    async def start_server(self, caller: dict[str, Any], name: str, username: str) -> None:
        workshop = self.managed(caller, name)
        self._participant_of(workshop, username)
        options = {"partition": workshop.partition}
        if workshop.reservation:
            options["reservation"] = workshop.reservation
        await self.hub.call("POST", f"/users/{username}/server", {"user_options": options},
                            ok=(201, 202, 400))

    async def stop_server(self, caller: dict[str, Any], name: str, username: str) -> None:
        workshop = self.managed(caller, name)
        self._participant_of(workshop, username)
        await self.hub.call("DELETE", f"/users/{username}/server", ok=(202, 204, 400, 404))

    def _participant_of(self, workshop: Workshop, username: str) -> Participant:
        participant = self.store.participant(username)
        if participant is None or participant.workshop != workshop.name:
            raise web.HTTPError(404, f"{username!r} is not a participant of {workshop.name!r}.")
        return participant

    # -- the end -------------------------------------------------------------------------

    async def end(self, caller: dict[str, Any], name: str, accounts: Any) -> dict[str, Any]:
        """Export every participant's work and the progress table, then clean up.

        Each step is recorded in the journal when done; a re-run skips finished steps, and
        nothing is removed before the export step is complete.
        """
        workshop = self.managed(caller, name)
        if accounts not in ("delete", "disable"):
            raise WorkshopInputError({"accounts": "must be 'delete' or 'disable'"})
        async with self.end_locks[name]:
            if workshop.state == "active":
                self.store.set_state(name, "ending")
            done = self.store.done_steps(name)
            participants = [p for p in self.store.participants(name) if p.state != "removed"]
            for step in END_STEPS:
                if step in done:
                    continue
                detail = await getattr(self, f"_end_{step}")(caller, workshop, participants,
                                                             accounts)
                self.store.mark_done(name, step, detail or "")
            self.store.set_state(name, "ended")
        log.info("workshop %s ended by %s", name, caller["name"])
        return {"workshop": name, "state": "ended", "steps": self.store.done_steps(name)}

    async def _end_export(self, caller: dict[str, Any], workshop: Workshop,
                          participants: list[Participant], accounts: str) -> str:
        trainer = caller["name"]
        target = self.export_folder(trainer, workshop.name)
        await ops.private_folder(trainer, target)
        for participant in participants:
            if ops.unix_user_exists(participant.username):
                await ops.export_home(participant.username, trainer, target)
        rows = await self.progress(caller, workshop.name)
        await ops.write_as(trainer, target / "progress.csv", data=progress_csv(rows).encode())
        return str(target)

    def export_folder(self, trainer: str, workshop: str) -> Path:
        """Where ``trainer``'s exports of ``workshop`` go (``workshops.export_dir``).

        The folder is 0700 and each file 0600, owned by that trainer and written as them:
        only they (and root) can read participants' homes once exported.
        """
        try:
            home = ops.home_of(trainer)
        except KeyError:
            raise web.HTTPError(400, f"{trainer} has no Unix account to export into.") from None
        return Path(self.site.workshops.export_dir.format(home=home, user=trainer)) / workshop

    async def export_file(self, caller: dict[str, Any], name: str, filename: str) -> bytes:
        """One file of the caller's export of ``name``, read as the caller.

        Only a trainer of the workshop (or an admin) gets here, and only from their own
        export folder: it is read with their Unix rights, never root's.
        """
        workshop = self.managed(caller, name)
        if not EXPORT_FILE.fullmatch(filename):
            raise web.HTTPError(404, f"There is no export file {filename!r}.")
        path = self.export_folder(caller["name"], workshop.name) / filename
        try:
            return await ops.read_as(caller["name"], path)
        except ops.OperationError:
            log.info("export %s of %s not readable by %s", filename, name, caller["name"])
            raise web.HTTPError(404, f"There is no export file {filename!r}; end the "
                                "workshop first.") from None

    async def _end_stop_servers(self, caller: dict[str, Any], workshop: Workshop,
                                participants: list[Participant], accounts: str) -> str:
        for participant in participants:
            model = await self.hub.user(participant.username)
            for server in ((model or {}).get("servers") or {}):
                path = f"/users/{participant.username}/servers/{quote(server)}" if server else (
                    f"/users/{participant.username}/server")
                await self.hub.call("DELETE", path, ok=(202, 204, 400, 404))
            if ops.unix_user_exists(participant.username):
                await ops.cancel_jobs(self.slurm, participant.username)
        return f"{len(participants)} participants"

    async def _end_release_reservation(self, caller: dict[str, Any], workshop: Workshop,
                                       participants: list[Participant], accounts: str) -> str:
        if workshop.reservation:
            await ops.delete_reservation(self.slurm, workshop.reservation)
        return workshop.reservation

    async def _end_remove_accounts(self, caller: dict[str, Any], workshop: Workshop,
                                   participants: list[Participant], accounts: str) -> str:
        if "export" not in self.store.done_steps(workshop.name):  # never before the export
            raise web.HTTPError(500, "refusing to remove accounts before the export is done")
        for participant in participants:
            await self.hub.call("DELETE", f"/users/{participant.username}", ok=(204, 404))
            if self.site.accounting.enabled:
                await ops.remove_participant_association(
                    participant.username, slurm_conf=self.site.slurm.conf_file)
            if accounts == "delete":
                await ops.delete_account(participant.username)
            else:
                await ops.disable_account(participant.username)
            self.store.set_participant_state(participant.username, "removed")
        if self.site.accounting.enabled:
            await ops.remove_workshop_account(workshop.name,
                                              slurm_conf=self.site.slurm.conf_file)
        return accounts

    async def _end_cleanup_hub(self, caller: dict[str, Any], workshop: Workshop,
                               participants: list[Participant], accounts: str) -> str:
        await self.hub.call("DELETE", f"/shopfloor/workshop-roles/{workshop.name}",
                            ok=(204, 404))
        await self.hub.call("DELETE", f"/groups/{workshop.group}", ok=(204, 404))
        return workshop.group


def progress_csv(rows: list[dict[str, Any]]) -> str:
    """The progress table as CSV (one row per participant)."""
    import csv
    import io

    columns = ["username", "name", "step", "ok", "steps_done", "errors", "last_checkpoint",
               "last_activity", "stuck", "why_stuck"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


# -- HTTP -----------------------------------------------------------------------------------


class _Base(web.RequestHandler):
    @property
    def workshops(self) -> Workshops:
        return self.settings["workshops"]

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def body(self) -> Any:
        try:
            return json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "the body must be JSON") from None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ShopfloorError):
            self.set_status(exc.http_status)
            self.finish(json.dumps(exc.as_json()))
            return
        message = exc.log_message if isinstance(exc, web.HTTPError) and exc.log_message else (
            self._reason)
        self.finish(json.dumps({"status": status_code, "message": message}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, ShopfloorError):
            log.info("refused: %s", value)
            return
        super().log_exception(typ, value, tb)

    async def caller(self) -> dict[str, Any]:
        """The calling user, from their token (which must grant access to this service)."""
        auth: HubAuth = self.settings["hub_auth"]
        header = self.request.headers.get("Authorization", "")
        token = header[6:].strip() if header.lower().startswith("token ") else ""
        model = await auth.user_for_token(token, sync=False) if token else None
        if not model or model.get("kind", "user") != "user":
            raise web.HTTPError(403, "Send a user's API token (Authorization: token ...).")
        if not auth.check_scopes(auth.access_scopes, model):
            raise web.HTTPError(403, "This token may not use the workshop service.")
        return model


class JoinPage(_Base):
    """The page participants open: code + name → their login and password, shown once."""

    def render_page(self, **context: Any) -> None:
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
        context = {"prefix": PREFIX, "code": "", "name": "", "problems": {}, "joined": None,
                   **context}
        self.set_header("Cache-Control", "no-store")
        self.finish(env.get_template("workshop_join.html").render(**context))

    def get(self) -> None:
        self.render_page()

    async def post(self) -> None:
        code, name = self.get_body_argument("code", ""), self.get_body_argument("name", "")
        try:
            joined = await self.workshops.join(self.request.remote_ip or "", code, name)
        except WorkshopInputError as exc:
            self.set_status(400)
            self.render_page(code=code[:20], name=name[:40], problems=exc.problems)
            return
        self.render_page(joined=joined)


class JoinApi(_Base):
    async def post(self) -> None:
        raw = self.body()
        raw = raw if isinstance(raw, dict) else {}
        joined = await self.workshops.join(self.request.remote_ip or "", raw.get("code"),
                                           raw.get("name"))
        self.set_header("Cache-Control", "no-store")
        self.write_json(joined, 201)


class CheckpointApi(_Base):
    async def post(self) -> None:
        self.write_json(self.workshops.checkpoint(await self.caller(), self.body()))


class WorkshopListApi(_Base):
    async def get(self) -> None:
        model = await self.caller()
        ws = self.workshops
        visible = [w for w in ws.store.workshops() if model.get("admin")
                   or model["name"] in w.trainers]
        self.write_json({"workshops": [ws.describe(w, with_code=True) for w in visible]})

    async def post(self) -> None:
        self.write_json(await self.workshops.create(await self.caller(), self.body()), 201)


class WorkshopApi(_Base):
    async def get(self, workshop: str) -> None:
        ws = self.workshops
        self.write_json(ws.describe(ws.managed(await self.caller(), workshop), with_code=True))


class ProgressApi(_Base):
    async def get(self, workshop: str) -> None:
        rows = await self.workshops.progress(await self.caller(), workshop)
        self.write_json({"workshop": workshop, "participants": rows,
                         "stuck_minutes": self.workshops.site.workshops.stuck_minutes})


class AccountsApi(_Base):
    async def post(self, workshop: str) -> None:
        text = await self.workshops.generate(await self.caller(), workshop, self.body())
        self.set_header("Cache-Control", "no-store")
        self.write_json({"csv": text}, 201)


class ServerApi(_Base):
    async def post(self, workshop: str, user: str) -> None:
        await self.workshops.start_server(await self.caller(), workshop, user)
        self.write_json({"starting": user}, 202)

    async def delete(self, workshop: str, user: str) -> None:
        await self.workshops.stop_server(await self.caller(), workshop, user)
        self.write_json({"stopping": user}, 202)


class EndApi(_Base):
    async def post(self, workshop: str) -> None:
        raw = self.body()
        accounts = raw.get("accounts", "delete") if isinstance(raw, dict) else None
        self.write_json(await self.workshops.end(await self.caller(), workshop, accounts))


class ExportApi(_Base):
    """``GET``: one file of the caller's export (``<login>.tar.gz`` or ``progress.csv``)."""

    async def get(self, workshop: str, filename: str) -> None:
        data = await self.workshops.export_file(await self.caller(), workshop, filename)
        kind = "text/csv" if filename.endswith(".csv") else "application/gzip"
        self.set_header("Content-Type", kind)
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Disposition", f'attachment; filename="{filename}"')
        self.finish(data)


def make_app(workshops: Workshops, hub_auth: HubAuth) -> web.Application:
    user = r"(?P<user>[a-z_][a-z0-9_-]{0,31})"
    return web.Application([
        (rf"{PREFIX}/?", web.RedirectHandler, {"url": f"{PREFIX}/join"}),
        (rf"{PREFIX}/join", JoinPage),
        (rf"{PREFIX}/api/join", JoinApi),
        # Joins by outcome for Prometheus (bearer $SHOPFLOOR_METRICS_TOKEN only).
        metrics.service_metrics_route(PREFIX),
        (rf"{PREFIX}/api/checkpoints", CheckpointApi),
        (rf"{PREFIX}/api/workshops", WorkshopListApi),
        (rf"{PREFIX}/api/workshops/{_WS}", WorkshopApi),
        (rf"{PREFIX}/api/workshops/{_WS}/progress", ProgressApi),
        (rf"{PREFIX}/api/workshops/{_WS}/accounts", AccountsApi),
        (rf"{PREFIX}/api/workshops/{_WS}/participants/{user}/server", ServerApi),
        (rf"{PREFIX}/api/workshops/{_WS}/end", EndApi),
        (rf"{PREFIX}/api/workshops/{_WS}/exports/(?P<filename>[^/]+)", ExportApi),
    ], workshops=workshops, hub_auth=hub_auth, xsrf_cookies=False)


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="[%(levelname)1.1s %(asctime)s workshop] %(message)s")
    site = load_site(os.environ["SHOPFLOOR_SITE"])
    url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    hub = HubAPI(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"])
    workshops = Workshops(site, WorkshopStore(store_path(site)),
                          Slurm(bin_dir=site.slurm.bin_dir, env=site.slurm.environment()), hub,
                          public_url=site.hub.bind_url)
    hub_auth = HubAuth(cache_max_age=30, access_scopes={ACCESS_SCOPE})
    app = make_app(workshops, hub_auth)
    app.listen(url.port or 80, url.hostname or "127.0.0.1", xheaders=True)
    log.info("workshop service on %s (store %s)", url.netloc, workshops.store.path)
    ioloop.IOLoop.current().start()


def workshop_service_config(site: SiteConfig, site_file: str) -> dict[str, Any]:
    """The managed-service entry for ``c.JupyterHub.services``."""
    return {
        "name": SERVICE_NAME,
        "url": service_url(site),
        "command": [sys.executable, "-m", "shopfloor.extensions.workshops_service"],
        "environment": {"SHOPFLOOR_SITE": site_file, "PATH": os.environ.get("PATH", ""),
                        **metrics.service_environment()},
        "display": True,
    }


if __name__ == "__main__":
    main()
