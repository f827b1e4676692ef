"""Shopfloor's REST API on the hub: the resource model, for code that runs in users' sessions.

Widgets, Ray clusters and apps run inside users' kernels, which cannot read the site file.
They ask the hub, so that limits live in exactly one place (:mod:`shopfloor.resources`):

* ``GET  /hub/api/shopfloor/partitions``: what the calling user may ask for, with live numbers:
  partitions, accounts, and the QoS of each account on each partition (``qos_by_account``).
* ``POST /hub/api/shopfloor/validate``: check raw options; 200 with the typed request, or 400
  with ``problems`` (field → message in the user's words).

Any valid token of the user (their server's token included) may call them; answers only ever
describe the caller.
"""

from __future__ import annotations

import json
import pwd
from dataclasses import asdict
from typing import Any

from jupyterhub.apihandlers import APIHandler
from tornado import web

from shopfloor.extensions.compat import register_api_handler
from shopfloor.resources import RequestError, UserContext
from shopfloor.slurm.seam import SlurmError
from shopfloor.timeutil import format_minutes


def user_context_for(user: Any) -> UserContext:
    """Hub and Unix groups of a hub user (as the spawner sees them)."""
    import grp
    import os

    groups = {g.name for g in getattr(user, "groups", [])}
    try:
        pw = pwd.getpwnam(user.name)
        groups |= {grp.getgrgid(g).gr_name for g in os.getgrouplist(pw.pw_name, pw.pw_gid)}
    except KeyError:
        pass
    return UserContext(user.name, frozenset(groups), bool(getattr(user, "admin", False)))


class _ShopfloorHandler(APIHandler):
    @property
    def ctx(self) -> Any:
        ctx = self.settings.get("shopfloor")
        if ctx is None:
            from shopfloor.extensions.install import current_context

            ctx = current_context()
        return ctx

    def caller(self) -> UserContext:
        """The calling user; 403 without a valid token or login (no redirect: this is an API)."""
        if self.current_user is None or not hasattr(self.current_user, "spawners"):
            raise web.HTTPError(403, "a user's API token is required")
        return user_context_for(self.current_user)

    async def live(self) -> Any:
        try:
            user = self.current_user
            return await self.ctx.cluster_info.snapshot(user=getattr(user, "name", None))
        except SlurmError as exc:
            raise web.HTTPError(503, f"Slurm is not answering: {exc.slurm_message}") from None


class PartitionsHandler(_ShopfloorHandler):
    """What the calling user may ask for, partition by partition."""

    async def get(self) -> None:
        user = self.caller()
        live = await self.live()
        policy = self.ctx.policy
        partitions = []
        for name in policy.partitions_for(user):
            site = self.ctx.site.partitions[name]
            info = live.partitions.get(name)
            limits = policy.limits(user, name, live)
            partitions.append({
                "name": name,
                "description": site.description,
                "demo_gpus": site.demo_gpus,
                "live": asdict(info) if info else None,
                "pending_jobs": len(live.pending.get(name, [])),
                "limits": asdict(limits),
                "max_walltime_text": format_minutes(limits.max_walltime_minutes),
                "defaults": policy.defaults(user, name, live),
            })
        mine = policy.associations(user, live)
        qos = policy.qos_by_account(user, live)
        self.finish(json.dumps({
            "user": user.name,
            "default_partition": policy.default_partition(user),
            "partitions": partitions,
            # What the account field may hold (accounting: the user's Slurm associations).
            "accounts": policy.accounts_for(user, live),
            "default_account": mine.default if mine else None,
            # QoS per partition when no account is named (the default account's) ...
            "qos": qos.pop(""),
            # ... and per account and partition: what /validate accepts for that pair.
            "qos_by_account": qos,
        }, default=str))


class ValidateHandler(_ShopfloorHandler):
    """Check raw options with the site's one resource model."""

    async def post(self) -> None:
        user = self.caller()
        try:
            raw = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "body must be a JSON object of options") from None
        if not isinstance(raw, dict):
            raise web.HTTPError(400, "body must be a JSON object of options")
        try:
            request = self.ctx.policy.validate(raw, user, await self.live())
        except RequestError as exc:
            self.set_status(exc.http_status)
            self.finish(json.dumps(exc.as_json()))
            return
        self.finish(json.dumps({"request": request.model_dump()}))


def register_api_handlers() -> None:
    """Add Shopfloor's handlers to the hub's API (once)."""
    routes = {
        r"/api/shopfloor/partitions": PartitionsHandler,
        r"/api/shopfloor/validate": ValidateHandler,
    }
    for path, cls in routes.items():
        register_api_handler(path, cls)
