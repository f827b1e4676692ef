"""Workshops inside the hub process: trainer roles, participants' defaults, their material.

Called from ``shopfloor.extensions.install`` (:func:`install_workshops`):

* registers the ``workshop`` managed service (:mod:`shopfloor.extensions.workshops_service`)
  with a role to manage workshop accounts, groups and servers, and lets every user's tokens
  (sessions' included) reach it, so guided notebooks can record checkpoints;
* **trainer roles.** JupyterHub 6 has no REST API to create roles (``/hub/api/roles`` does
  not exist; ``c.JupyterHub.load_roles`` is read at start-up, and roles missing from it are
  deleted then). So the hub gets one small API, ``PUT|DELETE
  /hub/api/shopfloor/workshop-roles/<workshop>``, that only the workshop service may call:
  it creates the role ``workshop-trainer-<workshop>`` with JupyterHub's own
  ``roles.create_role`` (scopes fixed here, filtered to the workshop's group) and grants it
  to the trainers. At every hub start, ``install`` puts the roles of active workshops into
  ``load_roles`` (read from the service's database), so they survive restarts;
* **participants' sessions** use the workshop's partition and reservation unless they chose
  otherwise (``apply_user_options`` fills them in before the one resource check), and find
  the workshop's material in ``~/<workshop>`` on their first start (``pre_spawn_hook``,
  copied as the participant, never overwritten).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from jupyterhub.apihandlers import APIHandler
from tornado import web

from shopfloor.extensions.compat import (
    create_role,
    delete_role,
    grant_role_to_user,
    is_service,
    register_api_handler,
    spawner_log_name,
)
from shopfloor.site import SiteConfig
from shopfloor.workshops.model import Workshop, WorkshopStore, group_name, role_name, store_path

log = logging.getLogger("shopfloor.workshops.client")
SERVICE_NAME = "workshop"
ACCESS_SCOPE = f"access:services!service={SERVICE_NAME}"
#: What the workshop service may do on the hub: make and remove participants' hub users,
#: the workshop groups and their members, start and stop their servers.
SERVICE_SCOPES = ["admin:users", "admin:groups", "servers", "list:users",
                  "read:users:activity"]
_SERVER_ROLE_SCOPES = ["users:activity!user", "access:servers!server"]


def trainer_scopes(workshop: str) -> list[str]:
    """A trainer's rights: only over the workshop group's members, never hub-wide.

    See and list participants (with activity), start, stop and open their servers, and use
    the hub's admin page for them (it shows only what the other scopes allow). No
    ``admin:users`` (no admin flags), no ``groups`` (no adding others to the group).
    """
    group = group_name(workshop)
    return [
        "admin-ui",
        f"list:users!group={group}",
        f"read:users!group={group}",
        f"read:users:activity!group={group}",
        f"servers!group={group}",
        f"access:servers!group={group}",
        f"read:groups!group={group}",
    ]


def trainer_role(workshop: str, trainers: list[str]) -> dict[str, Any]:
    return {
        "name": role_name(workshop),
        "description": f"Trainers of workshop {workshop}: its participants' servers only.",
        "scopes": trainer_scopes(workshop),
        "users": list(trainers),
    }


class WorkshopRolesHandler(APIHandler):
    """``PUT`` (body ``{"trainers": [...]}``) or ``DELETE`` a workshop's trainer role.

    Only the workshop service may call it; the scopes are fixed by :func:`trainer_scopes`.
    """

    def _check_caller(self) -> None:
        if not is_service(self.current_user, SERVICE_NAME):
            raise web.HTTPError(403, "only the workshop service manages trainer roles")

    def put(self, workshop: str) -> None:
        self._check_caller()
        try:
            trainers = json.loads(self.request.body or b"{}").get("trainers", [])
        except (ValueError, AttributeError):
            raise web.HTTPError(400, "body must be {\"trainers\": [user names]}") from None
        spec = trainer_role(workshop, trainers)
        role = create_role(self.db, spec["name"], spec["description"], spec["scopes"])
        for name in trainers:
            grant_role_to_user(self.db, name, role)
        self.set_status(200)
        self.finish(json.dumps({"role": role.name, "users": trainers}))

    def delete(self, workshop: str) -> None:
        self._check_caller()
        if not delete_role(self.db, role_name(workshop)):
            self.set_status(404)
            self.finish(json.dumps({"message": "no such role"}))
            return
        self.set_status(204)
        self.finish()


# -- participants' sessions -----------------------------------------------------------------


def participant_workshop(site: SiteConfig, username: str) -> Workshop | None:
    """The active workshop ``username`` takes part in (from the service's database)."""
    store = WorkshopStore(store_path(site), readonly=True)
    if not store.exists():
        return None
    participant = store.participant(username)
    if participant is None or participant.state != "active":
        return None
    workshop = store.workshop(participant.workshop)
    return workshop if workshop is not None and workshop.state == "active" else None


def workshop_user_options(spawner: Any, user_options: dict[str, Any]) -> Any:
    """``apply_user_options``: a participant's request defaults to the workshop's compute.

    The partition is filled in when none was chosen, and the reservation when the request is
    for the workshop's partition; then the site's one resource check runs as for everyone.
    """
    async def apply() -> None:
        options = dict(user_options or {})
        workshop = participant_workshop(spawner.ctx.site, spawner.user.name)
        if workshop is not None:
            if not options.get("partition"):
                options["partition"] = workshop.partition
            if workshop.reservation and not options.get("reservation") and (
                    options["partition"] == workshop.partition):
                options["reservation"] = workshop.reservation
            if options.get("reservation") == workshop.reservation:
                await _fresh_reservation(spawner, workshop.reservation)
        spawner.request = await spawner.validate_options(options)
    return apply()


async def _fresh_reservation(spawner: Any, reservation: str) -> None:
    """Re-read reservations when the cached copy predates the participant joining it."""
    live = await spawner.ctx.cluster_info.snapshot()
    res = live.reservations.get(reservation)
    if res is None or (res.users and spawner.user.name not in res.users):
        await spawner.ctx.cluster_info.snapshot(fresh=True)


async def workshop_pre_spawn(spawner: Any) -> None:
    """``pre_spawn_hook``: put the workshop material into ``~/<workshop>`` once."""
    from shopfloor.workshops.ops import OperationError, place_material

    workshop = participant_workshop(spawner.ctx.site, spawner.user.name)
    if workshop is None or not workshop.material:
        return
    try:
        placed = await place_material(spawner.user.name, workshop.material, workshop.name)
    except OperationError as exc:
        # The session is still useful without it; the trainer sees the log line.
        spawner.log.warning("%s: workshop material not placed: %s", spawner_log_name(spawner),
                            exc)
        return
    if placed:
        spawner.log.info("%s: placed %s material in ~/%s", spawner_log_name(spawner),
                         workshop.name, workshop.name)


# -- install --------------------------------------------------------------------------------


def _configured(section: Any, key: str) -> list[Any]:
    value = section[key] if key in section else []
    return list(value) if isinstance(value, list | tuple) else []


def _site_file(site: SiteConfig, source: str | None) -> str:
    if source:
        return str(Path(source).resolve())
    path = Path(site.hub.state_dir) / "workshop-site.json"
    path.write_text(json.dumps(site.model_dump(mode="json")))
    path.chmod(0o600)
    return str(path)


def active_trainer_roles(site: SiteConfig) -> list[dict[str, Any]]:
    """``load_roles`` entries for the trainers of workshops that have not ended."""
    store = WorkshopStore(store_path(site), readonly=True)
    if not store.exists():
        return []
    return [trainer_role(w.name, w.trainers) for w in store.workshops()
            if w.state != "ended"]


def install_workshops(c: Any, site: SiteConfig, site_source: str | None) -> None:
    """Register the workshop service, trainer roles and participants' spawn hooks."""
    from shopfloor.extensions.workshops_service import workshop_service_config

    services = [s for s in _configured(c.JupyterHub, "services")
                if s.get("name") != SERVICE_NAME]
    c.JupyterHub.services = [*services, workshop_service_config(site, _site_file(site,
                                                                                site_source))]
    load_roles = _configured(c.JupyterHub, "load_roles")
    load_roles.append({
        "name": "shopfloor-workshop-service",
        "description": "The workshop service manages participants' accounts and servers.",
        "scopes": SERVICE_SCOPES,
        "services": [SERVICE_NAME],
    })
    user_role = next((r for r in load_roles if r.get("name") == "user"), None)
    if user_role is None:
        load_roles.append({"name": "user", "scopes": ["self", ACCESS_SCOPE]})
    elif ACCESS_SCOPE not in user_role.get("scopes", []):
        user_role["scopes"] = [*user_role.get("scopes", ["self"]), ACCESS_SCOPE]
    load_roles.extend(active_trainer_roles(site))
    c.JupyterHub.load_roles = load_roles

    scopes = _configured(c.ShopfloorSpawner, "server_token_scopes") or _SERVER_ROLE_SCOPES
    if ACCESS_SCOPE not in scopes:
        c.ShopfloorSpawner.server_token_scopes = [*scopes, ACCESS_SCOPE]
    c.ShopfloorSpawner.apply_user_options = workshop_user_options
    c.ShopfloorSpawner.pre_spawn_hook = workshop_pre_spawn
    # Sessions find the service in the hub's service list (shopfloor.session.hubapi).
    register_api_handler(r"/api/shopfloor/workshop-roles/([a-z][a-z0-9]{1,11})",
                         WorkshopRolesHandler)
    os.makedirs(store_path(site).parent, mode=0o700, exist_ok=True)


__all__ = [
    "WorkshopRolesHandler",
    "install_workshops",
    "participant_workshop",
    "trainer_role",
    "trainer_scopes",
    "workshop_pre_spawn",
    "workshop_user_options",
]
