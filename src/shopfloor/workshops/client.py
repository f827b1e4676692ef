"""Run a workshop from Python: create it, watch progress, end it (the ``workshop`` service).

Inside a trainer's session it needs nothing: it uses ``$JUPYTERHUB_API_TOKEN`` and finds the
service in the hub's service list (``$SHOPFLOOR_WORKSHOP_URL`` overrides). Elsewhere pass the
URL and a token::

    from shopfloor.workshops.client import WorkshopClient
    ws = WorkshopClient()
    info = ws.create("intro", title="Intro to ML", hours=3, capacity=40, partition="cpu",
                     cores=8, material="/srv/material/intro")
    info["code"], info["join_url"], info["spawn_url"]    # tell participants
    for row in ws.progress("intro"):                       # who is where, who is stuck
        print(row.username, row.step, row.stuck)
    ws.end("intro")      # exports every home + progress.csv, then stops, releases, removes

The service checks everything; refusals raise :class:`WorkshopError` whose ``problems`` map
each field to what is allowed.
"""

from __future__ import annotations

import os
from dataclasses import fields
from typing import Any

from shopfloor.session.hubapi import Hub
from shopfloor.session.services import ServiceClient, ServiceError
from shopfloor.workshops.model import ProgressRow

#: The workshop service's name in the hub's service list.
SERVICE_NAME = "workshop"


class WorkshopError(ServiceError):
    """The workshop service refused or failed; ``problems`` maps field → message."""


class WorkshopClient:
    """Talks to the workshop service with a user's token (a trainer's, for most calls).

    ``url`` is the service's root (``.../services/workshop``); without it
    ``$SHOPFLOOR_WORKSHOP_URL``, else the hub's service list (``hub``, or the session's hub).
    ``token`` defaults to ``$JUPYTERHUB_API_TOKEN``; with an empty one only :meth:`join` works.
    """

    def __init__(self, url: str | None = None, token: str | None = None,
                 timeout: float = 300, *, hub: Hub | None = None) -> None:
        url = url or (None if hub else os.environ.get("SHOPFLOOR_WORKSHOP_URL"))
        self.service = ServiceClient(SERVICE_NAME, url=url, token=token, hub=hub,
                                     timeout=timeout, error=WorkshopError)

    def __repr__(self) -> str:  # never show the token
        return f"WorkshopClient({self.service!r})"

    @property
    def url(self) -> str:
        """The workshop service's root URL (asks the hub the first time)."""
        return self.service.url

    def _call(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        return self.service.call(method, path, body, auth=auth)

    # -- trainers --------------------------------------------------------------------------

    def create(self, name: str, **settings: Any) -> dict[str, Any]:
        """Create a workshop (see :func:`shopfloor.workshops.model.parse_spec` for the settings).

        Returns its description, with the join ``code``, ``join_url`` and ``spawn_url``.
        """
        return self._call("POST", "/workshops", {"name": name, **settings})

    def list(self) -> list[dict[str, Any]]:
        """The workshops the caller trains (all of them for admins)."""
        return self._call("GET", "/workshops")["workshops"]

    def status(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/workshops/{name}")

    def progress(self, name: str) -> list[ProgressRow]:
        """Each participant's step, errors, last activity, server state and stuck flag."""
        known = {f.name for f in fields(ProgressRow)}
        rows = self._call("GET", f"/workshops/{name}/progress")["participants"]
        return [ProgressRow(**{k: v for k, v in row.items() if k in known}) for row in rows]

    def accounts(self, name: str, *, count: int | None = None, csv: str | None = None) -> str:
        """Make accounts in advance (``count`` of them, or one per row of a roster ``csv``
        with a ``name`` column); returns a CSV of login, password, name."""
        body: dict[str, Any] = {"csv": csv} if csv is not None else {"count": count}
        return self._call("POST", f"/workshops/{name}/accounts", body)["csv"]

    def start_server(self, name: str, username: str) -> None:
        self._call("POST", f"/workshops/{name}/participants/{username}/server")

    def stop_server(self, name: str, username: str) -> None:
        self._call("DELETE", f"/workshops/{name}/participants/{username}/server")

    def end(self, name: str, accounts: str = "delete") -> dict[str, Any]:
        """Export every participant's home and the progress table into your export folder,
        then stop servers, release the reservation and delete (or ``"disable"``) accounts.
        Safe to run again after an interruption: finished steps are skipped."""
        return self._call("POST", f"/workshops/{name}/end", {"accounts": accounts})

    def export(self, name: str, filename: str) -> bytes:
        """One file of your export of an ended workshop: ``<login>.tar.gz`` or ``progress.csv``.

        The files are private to you (folder 0700, files 0600); the service reads them with
        your rights, so this works from anywhere you have a token, not only in a session.
        """
        return self.service.response("GET", f"/workshops/{name}/exports/{filename}").content

    # -- participants ----------------------------------------------------------------------

    def join(self, code: str, name: str) -> dict[str, Any]:
        """Join with a code (no token needed): returns ``username`` and ``password``."""
        return self._call("POST", "/join", {"code": code, "name": name}, auth=False)

    def checkpoint(self, step: str, ok: bool = True, message: str = "") -> dict[str, Any]:
        return self._call("POST", "/checkpoints", {"step": step, "ok": ok, "message": message})


__all__ = ["SERVICE_NAME", "WorkshopClient", "WorkshopError"]
