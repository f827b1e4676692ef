"""Budgets and usage on the hub's API (accounts and budgets, :mod:`shopfloor.accounts`).

* ``GET /hub/api/shopfloor/budgets``: the caller's accounts, default account and each
  account's budget (``used / granted`` per TRES, percent used, warnings under the site's
  ``accounting.warn_remaining_percent``). Any token of the user may read it; it only ever
  describes the caller. For the spawn page, ComputePanel and the home page.
* ``GET /hub/api/shopfloor/usage``: every account's and user's use (admins only), as
  ``shopfloor usage`` prints it.

Both answer 404 on sites without ``accounting.enabled`` and 503 when Slurm does not answer.
"""

from __future__ import annotations

import json
from typing import Any

from tornado import web

from shopfloor.accounts.usage import usage_rows
from shopfloor.extensions.compat import register_api_handler
from shopfloor.extensions.resources_api import _ShopfloorHandler
from shopfloor.slurm.seam import SlurmError


def budgets_for(ctx: Any, user: str, accounts: Any) -> dict[str, Any]:
    """The caller's budgets as the API, the spawn page and panels show them."""
    mine = accounts.for_user(user)
    warn = ctx.site.accounting.warn_remaining_percent
    budgets = [b.as_json(warn) for b in accounts.budgets_of(user)]
    return {
        "user": user,
        "accounts": list(mine.accounts) if mine else [],
        "default_account": mine.default if mine else None,
        "warn_remaining_percent": warn,
        "budgets": budgets,
        "warnings": [w for b in budgets for w in b["warnings"]],
    }


class _AccountsHandler(_ShopfloorHandler):
    async def accounts(self, user: str | None) -> Any:
        info = self.ctx.cluster_info.accounts
        if not self.ctx.site.accounting.enabled or info is None:
            raise web.HTTPError(404, "this site does not use Slurm accounting")
        try:
            return await info.snapshot(user=user)
        except SlurmError as exc:
            raise web.HTTPError(503, f"Slurm is not answering: {exc.slurm_message}") from None


class BudgetsHandler(_AccountsHandler):
    """The calling user's accounts and budgets."""

    async def get(self) -> None:
        user = self.caller()
        self.finish(json.dumps(budgets_for(self.ctx, user.name, await self.accounts(user.name))))


class UsageHandler(_AccountsHandler):
    """Use per account and user, for admins."""

    async def get(self) -> None:
        if not self.caller().is_admin:
            raise web.HTTPError(403, "only admins may see everyone's usage")
        snap = await self.accounts(None)
        self.finish(json.dumps({"usage": usage_rows(snap.usage)}))


def register_accounts_handlers() -> None:
    """Add the budgets and usage endpoints to the hub's API (once)."""
    register_api_handler(r"/api/shopfloor/budgets", BudgetsHandler)
    register_api_handler(r"/api/shopfloor/usage", UsageHandler)
