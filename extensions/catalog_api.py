"""The site's catalog of models and datasets: ``GET /hub/api/shopfloor/catalog`` and
``/hub/catalog``.

Entries come from the site file (``catalog:``, :class:`shopfloor.catalog_site.CatalogSettings`);
each answer lists only those the caller may use (an entry's ``groups``, or everyone). Code
in sessions (the fine-tuning wizard) asks here with the session's token: it cannot read the
site file, and the hub never opens the entries' files (their Unix permissions are the site's
second line of defence).
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

from jupyterhub.handlers import BaseHandler
from tornado import web

from shopfloor.catalog_site import CatalogEntry
from shopfloor.errors import ShopfloorError
from shopfloor.extensions.compat import register_api_handler, register_page_handler
from shopfloor.extensions.resources_api import _ShopfloorHandler, user_context_for
from shopfloor.resources import UserContext
from shopfloor.site import SiteConfig


def entry_json(name: str, kind: str, entry: CatalogEntry) -> dict[str, Any]:
    """One entry as the API answers it (everything but who else may use it)."""
    data = entry.model_dump(exclude={"groups"})
    return {"name": name, "kind": kind, **data}


def catalog_for(site: SiteConfig, caller: UserContext) -> dict[str, list[dict[str, Any]]]:
    """The models and datasets ``caller`` may use."""
    return {
        kind: [entry_json(name, kind.rstrip("s"), entry)
               for name, entry in getattr(site.catalog, kind).items()
               if entry.usable_by(caller.groups, caller.is_admin)]
        for kind in ("models", "datasets")
    }


#: At most this many paths per check (a recipe needs four: data and model, as given and real).
MAX_CHECK_PATHS = 50


class CatalogCheckError(ShopfloorError):
    """A check request the hub cannot answer; ``problems`` names the bad field."""


def _owner(site: SiteConfig, path: str) -> tuple[str, str, CatalogEntry] | None:
    """The catalog entry whose location is ``path`` or holds it (the deepest such one)."""
    found: list[tuple[str, str, CatalogEntry]] = []
    for kind in ("model", "dataset"):
        for name, entry in getattr(site.catalog, f"{kind}s").items():
            root = entry.location.rstrip("/") or "/"
            if path == root or path.startswith(root.rstrip("/") + "/"):
                found.append((kind, name, entry))
    return max(found, key=lambda f: len(f[2].location)) if found else None


def path_verdicts(site: SiteConfig, caller: UserContext, body: Any) -> dict[str, Any]:
    """What the catalog says about the files a recipe names: ``{"paths": {path: verdict}}``.

    ``body`` is ``{"paths": ["/abs/path", ...]}``. A verdict says whether the path is (in) a
    catalog entry (``kind``), whether ``caller`` may use it, and its licence terms. Entries the
    caller may not use are not named. Only strings are compared: the hub never opens the path.
    """
    paths = body.get("paths") if isinstance(body, dict) else None
    if not isinstance(paths, list) or not 1 <= len(paths) <= MAX_CHECK_PATHS:
        raise CatalogCheckError(problems={
            "paths": f"must be a list of 1 to {MAX_CHECK_PATHS} absolute paths"})
    verdicts: dict[str, Any] = {}
    for index, path in enumerate(paths):
        if (not isinstance(path, str) or not path.startswith("/") or len(path) > 4096
                or "\x00" in path or "\n" in path):
            raise CatalogCheckError(problems={
                f"paths.{index}": "must be an absolute path (at most 4096 characters)"})
        owner = _owner(site, posixpath.normpath(path))
        if owner is None:
            verdicts[path] = {"kind": None, "name": None, "usable": True}
            continue
        kind, name, entry = owner
        if not entry.usable_by(caller.groups, caller.is_admin):
            verdicts[path] = {"kind": kind, "name": None, "usable": False}
            continue
        verdicts[path] = {"kind": kind, "name": name, "usable": True,
                          "licence": entry.licence, "accept_licence": entry.accept_licence}
    return {"paths": verdicts}


class CatalogCheckHandler(_ShopfloorHandler):
    """``POST /hub/api/shopfloor/catalog/check``: may the caller train on these files?"""

    async def post(self) -> None:
        caller = self.caller()
        try:
            body = json.loads(self.request.body or b"{}")
            answer = path_verdicts(self.ctx.site, caller, body)
        except ValueError:
            raise web.HTTPError(400, "body must be a JSON object: {\"paths\": [...]}") from None
        except CatalogCheckError as exc:
            self.set_status(exc.http_status)
            self.finish(json.dumps(exc.as_json()))
            return
        self.finish(json.dumps(answer))


class CatalogApiHandler(_ShopfloorHandler):
    """``GET /hub/api/shopfloor/catalog[?task=classification]``."""

    async def get(self) -> None:
        caller = self.caller()
        catalog = catalog_for(self.ctx.site, caller)
        task = self.get_argument("task", "")
        if task:
            catalog = {k: [e for e in v if e["task"] == task] for k, v in catalog.items()}
        self.finish(json.dumps(catalog))


class CatalogPageHandler(BaseHandler):
    """``/hub/catalog``: the same, as a page."""

    @web.authenticated
    async def get(self) -> None:
        site: SiteConfig = self.settings["shopfloor"].site
        catalog = catalog_for(site, user_context_for(self.current_user))
        self.finish(await self.render_template("shopfloor_catalog.html", catalog=catalog))


def register_catalog_handlers() -> None:
    """Add the catalog's API and page to the hub (once)."""
    register_api_handler(r"/api/shopfloor/catalog", CatalogApiHandler)
    register_api_handler(r"/api/shopfloor/catalog/check", CatalogCheckHandler)
    register_page_handler(r"/catalog", CatalogPageHandler)


__all__ = ["CatalogCheckError", "catalog_for", "entry_json", "path_verdicts",
           "register_catalog_handlers"]
