"""Run a workshop from Python: create it, watch progress, end it (the ``workshop`` service).

Inside a trainer's session it needs nothing (``$JUPYTERHUB_API_TOKEN``; the hub tells sessions
the service URL as ``$SHOPFLOOR_WORKSHOP_URL``). Elsewhere pass the URL and a token::

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
from collections.abc import Mapping
from dataclasses import fields
from typing import Any
from urllib.parse import urlparse

import requests

from shopfloor.session.services import ServiceError, service_url_beside
from shopfloor.workshops.model import ProgressRow

SERVICE_PATH = "/services/workshop"


class WorkshopError(ServiceError):
    """The workshop service refused or failed; ``problems`` maps field → message."""


def service_url_from_hub(api_url: str) -> str:
    """The service beside a hub API URL (``workshops.service_port`` default: API port + 12)."""
    return service_url_beside(api_url, (urlparse(api_url).port or 80) + 12, SERVICE_PATH)


def service_url_from_env(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("SHOPFLOOR_WORKSHOP_URL") or service_url_from_hub(
        env.get("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api"))


class WorkshopClient:
    """Talks to the workshop service with a user's token (a trainer's, for most calls)."""

    def __init__(self, url: str | None = None, token: str | None = None,
                 timeout: float = 300) -> None:
        self.url = (url or service_url_from_env()).rstrip("/")
        self._token = token if token is not None else os.environ.get("JUPYTERHUB_API_TOKEN", "")
        self.timeout = timeout
        self.http = requests.Session()

    def __repr__(self) -> str:  # never show the token
        return f"WorkshopClient({self.url!r})"

    def _call(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        headers = {}
        if auth:
            if not self._token:
                raise WorkshopError("no API token: run this in a Shopfloor session, or pass "
                                    "WorkshopClient(url, token) with a token from the hub")
            headers["Authorization"] = f"token {self._token}"
        try:
            response = self.http.request(method, f"{self.url}/api{path}", json=body,
                                         headers=headers, timeout=self.timeout)
        except requests.ConnectionError:
            raise WorkshopError(f"Cannot reach the workshop service at {self.url}; is the hub "
                                "running?") from None
        except requests.Timeout:
            raise WorkshopError(f"The workshop service did not answer within "
                                f"{self.timeout:.0f} s; try again.") from None
        try:
            data = response.json()
        except ValueError:
            data = {}
        if response.status_code >= 400:
            problems = data.get("problems") if isinstance(data, dict) else None
            message = (data.get("message") if isinstance(data, dict) else None) or (
                response.reason)
            raise WorkshopError(str(message), problems, response.status_code)
        return data

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
        if not self._token:
            raise WorkshopError("no API token: run this in a Shopfloor session, or pass "
                                "WorkshopClient(url, token) with a token from the hub")
        try:
            response = self.http.get(f"{self.url}/api/workshops/{name}/exports/{filename}",
                                     headers={"Authorization": f"token {self._token}"},
                                     timeout=self.timeout)
        except requests.RequestException:
            raise WorkshopError(f"Cannot reach the workshop service at {self.url}; is the hub "
                                "running?") from None
        if response.status_code >= 400:
            try:
                message = response.json().get("message") or response.reason
            except ValueError:
                message = response.reason
            raise WorkshopError(str(message), None, response.status_code)
        return response.content

    # -- participants ----------------------------------------------------------------------

    def join(self, code: str, name: str) -> dict[str, Any]:
        """Join with a code (no token needed): returns ``username`` and ``password``."""
        return self._call("POST", "/join", {"code": code, "name": name}, auth=False)

    def checkpoint(self, step: str, ok: bool = True, message: str = "") -> dict[str, Any]:
        return self._call("POST", "/checkpoints", {"step": step, "ok": ok, "message": message})


__all__ = ["WorkshopClient", "WorkshopError", "service_url_from_env", "service_url_from_hub"]
