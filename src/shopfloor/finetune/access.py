"""The site's catalog as one user may use it: which datasets to offer, and may this run train?

The site file lists models and datasets on the shared file system, each with a licence and
the groups that may use it (:mod:`shopfloor.catalog_site`). A session cannot read the site
file, so it asks the hub through the session's one client (:class:`shopfloor.session.hubapi.
Hub`):

* ``GET /hub/api/shopfloor/catalog``: the entries this user may use (what the wizard offers);
* ``POST /hub/api/shopfloor/catalog/check``: whether files a recipe names (its data and its
  model, as given and with links resolved) are catalog entries, whether this user may use
  them and whether their licence must be accepted. A dataset the user's groups may not use is
  refused even when named by its path.

:func:`check_access` turns the answer into the problems of a recipe; the fine-tuning recipe
check (:func:`shopfloor.finetune.recipe.check_recipe`) calls it before any compute is spent.
The files' Unix permissions stay the site's last line of defence: this check is what turns a
policy into a clear message before training rather than a failure inside it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shopfloor.session.hubapi import Hub, HubError


@dataclass(frozen=True)
class SiteEntry:
    """One catalog model or dataset this user may use, as the hub describes it."""

    name: str
    kind: str  # "model" or "dataset"
    task: str
    description: str
    licence: str
    accept_licence: bool
    size: str
    location: str

    @property
    def label(self) -> str:
        """How the wizard lists it: name, description, size and licence."""
        return f"{self.name} — {self.description} ({self.size}, licence {self.licence})"


@dataclass(frozen=True)
class Verdict:
    """What the hub says about one file a recipe names."""

    kind: str | None  # "model", "dataset", or None when the file is not in the catalog
    name: str | None  # None for entries this user may not use (they are not named)
    usable: bool
    licence: str = ""
    accept_licence: bool = False


class SiteCatalog:
    """The site catalog through the hub (``hub``: the session's :class:`Hub` by default)."""

    def __init__(self, hub: Hub | None = None) -> None:
        self.hub = hub or Hub()
        self._entries: list[SiteEntry] | None = None

    def entries(self) -> list[SiteEntry]:
        """Every model and dataset this user may use (asked once per object)."""
        if self._entries is None:
            answer = self.hub.get_json("/shopfloor/catalog")
            self._entries = [
                SiteEntry(name=str(e["name"]), kind=str(e["kind"]), task=str(e["task"]),
                          description=str(e.get("description", "")),
                          licence=str(e.get("licence", "")),
                          accept_licence=bool(e.get("accept_licence")),
                          size=str(e.get("size", "")), location=str(e["location"]))
                for kind in ("models", "datasets") for e in answer.get(kind) or ()]
        return self._entries

    def datasets(self, task: str | None = None) -> list[SiteEntry]:
        """The datasets this user may use (of ``task`` when given)."""
        return [e for e in self.entries()
                if e.kind == "dataset" and (task is None or e.task == task)]

    def verdicts(self, paths: Iterable[str]) -> dict[str, Verdict]:
        """The hub's verdict on each absolute path (one call for all of them)."""
        unique = list(dict.fromkeys(paths))
        if not unique:
            return {}
        response = self.hub.request("POST", "/shopfloor/catalog/check",
                                    json_body={"paths": unique})
        answer: dict[str, Any] = response.json()["paths"]
        return {path: Verdict(kind=v.get("kind"), name=v.get("name"),
                              usable=bool(v.get("usable")), licence=str(v.get("licence") or ""),
                              accept_licence=bool(v.get("accept_licence")))
                for path, v in answer.items()}


def session_catalog() -> SiteCatalog | None:
    """The site catalog of the hub this session belongs to; None outside a hub session."""
    if not (os.environ.get("JUPYTERHUB_API_URL") and os.environ.get("JUPYTERHUB_API_TOKEN")):
        return None
    return SiteCatalog()


def _forms(path: str | Path) -> list[str]:
    """A path as given (absolute) and with every link resolved: a link to a restricted
    dataset is the restricted dataset."""
    given = Path(path).expanduser().absolute()
    return list(dict.fromkeys([os.path.normpath(given), os.path.realpath(given)]))


def check_access(catalog: SiteCatalog, *, data: str | Path, model: str | Path | None,
                 accepted_licences: Iterable[str] = ()) -> dict[str, str]:
    """Problems with training on ``data`` (and the model folder ``model``) for this user.

    Refuses catalog entries the user's groups may not use (named by path or through a link)
    and datasets whose licence needs accepting unless their name is in ``accepted_licences``.
    Empty when all is well; a hub that cannot answer is a problem too (nothing is assumed).
    """
    data_forms = _forms(data)
    model_forms = _forms(model) if model else []
    try:
        verdicts = catalog.verdicts([*data_forms, *model_forms])
    except HubError as exc:
        return {"data": f"cannot check the site catalog's permissions: {exc}"}
    problems: dict[str, str] = {}
    accepted = set(accepted_licences)
    for field, forms in (("data", data_forms), ("model", model_forms)):
        for path in forms:
            verdict = verdicts.get(path)
            if verdict is None or verdict.kind is None:
                continue
            if not verdict.usable:
                problems[field] = (
                    f"{forms[0]} belongs to a site {verdict.kind} your groups may not use; "
                    "ask your admin for access, or choose another one")
                break
            if verdict.accept_licence and verdict.name not in accepted:
                problems["licence"] = (
                    f"the site {verdict.kind} {verdict.name} is under the licence "
                    f"{verdict.licence}, which you must accept before training on it: tick "
                    f"'I accept the licence' (in code: accepted_licences=['{verdict.name}'])")
                break
    return problems


__all__ = ["SiteCatalog", "SiteEntry", "Verdict", "check_access", "session_catalog"]
