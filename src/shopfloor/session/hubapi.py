"""Talk to the hub from inside a user's session (or from any code holding a user's token).

:class:`Hub` is a small, blocking client for the JupyterHub REST API and Shopfloor's own
endpoints (:mod:`shopfloor.extensions.resources_api`). Inside a session it needs no arguments:
it reads ``JUPYTERHUB_API_URL``, ``JUPYTERHUB_API_TOKEN`` and ``JUPYTERHUB_USER``, which the hub
gives every server. Elsewhere pass them explicitly::

    from shopfloor.session.hubapi import Hub
    hub = Hub()                                       # inside a session
    hub = Hub("http://127.0.0.1:8081/hub/api", token)  # anywhere else
    hub.partitions()["default_partition"]
    hub.validate({"partition": "debug", "walltime": "20"})   # -> ResourceRequest

Every failure raises :class:`HubError` with a message in plain words that says what to do;
the token never appears in messages, logs or URLs.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any
from urllib.parse import quote

import requests

from shopfloor.resources import RequestError, ResourceRequest

#: What a refused (403) call most likely lacks, by the first path segment after the API root.
_SCOPE_HINTS = {
    "users": "this token may not manage your sessions (it needs the servers scopes)",
    "shopfloor": "this token does not belong to a hub user",
}


class HubError(RuntimeError):
    """A call to the hub failed. ``str()`` is a message for users; ``status`` the HTTP code."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


def _message_of(response: requests.Response) -> str:
    """The hub's own words from an error response (JSON ``message`` or the reason)."""
    try:
        data = response.json()
    except ValueError:
        return response.reason or f"HTTP {response.status_code}"
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"])
    return response.reason or f"HTTP {response.status_code}"


class Hub:
    """A user's view of the hub: partitions, resource checks, their servers.

    ``api_url`` is the hub's API root (``.../hub/api``), ``token`` an API token of the user,
    ``user`` their name (looked up with the token when not given).
    """

    def __init__(
        self,
        api_url: str | None = None,
        token: str | None = None,
        user: str | None = None,
        *,
        timeout: float = 30.0,
    ) -> None:
        from_env = not api_url
        api_url = api_url or os.environ.get("JUPYTERHUB_API_URL", "")
        token = token or os.environ.get("JUPYTERHUB_API_TOKEN", "")
        if not api_url or not token:
            raise HubError(
                "Cannot find the hub: JUPYTERHUB_API_URL and JUPYTERHUB_API_TOKEN are not set. "
                "Run this inside a Shopfloor session, or pass Hub(api_url, token)."
            )
        self.api_url = api_url.rstrip("/")
        self._token = token
        # An explicit URL means "not this session's hub": do not trust JUPYTERHUB_USER then.
        self._user = user or (os.environ.get("JUPYTERHUB_USER") if from_env else None)
        self.timeout = timeout
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"token {token}"

    def __repr__(self) -> str:  # never show the token
        return f"Hub({self.api_url!r}, user={self._user!r})"

    # -- plumbing -------------------------------------------------------------------------

    def request(self, method: str, path: str, *, json_body: Any = None,
                ok: tuple[int, ...] = (200, 201, 202, 204)) -> requests.Response:
        """One API call; raises :class:`HubError` in plain words unless the status is ``ok``."""
        url = f"{self.api_url}/{path.lstrip('/')}"
        try:
            response = self.http.request(method, url, json=json_body, timeout=self.timeout)
        except requests.ConnectionError:
            raise HubError(
                f"Cannot reach the hub at {self.api_url}; it may be restarting. "
                "Try again in a minute."
            ) from None
        except requests.Timeout:
            raise HubError(
                f"The hub did not answer within {self.timeout:.0f} seconds; try again."
            ) from None
        if response.status_code not in ok:
            raise self._error(response, path)
        return response

    def _error(self, response: requests.Response, path: str) -> HubError:
        status, words = response.status_code, _message_of(response)
        if status == 403:
            hint = _SCOPE_HINTS.get(path.strip("/").split("/", 1)[0], "permission denied")
            return HubError(f"The hub refused this: {hint} ({words}).", status)
        if status == 404:
            return HubError(f"The hub does not know this: {words}.", status)
        if status >= 500:
            return HubError(f"The hub had a problem: {words}. Try again in a minute.", status)
        return HubError(words, status)

    def get_json(self, path: str) -> Any:
        return self.request("GET", path).json()

    # -- who ------------------------------------------------------------------------------

    @property
    def user(self) -> str:
        """The token owner's name."""
        if not self._user:
            self._user = str(self.get_json("/user")["name"])
        return self._user

    def _servers_path(self, name: str = "") -> str:
        base = f"/users/{quote(self.user, safe='')}/servers"
        return f"{base}/{quote(name, safe='')}" if name else base

    # -- Shopfloor's resource model -------------------------------------------------------

    def partitions(self) -> dict[str, Any]:
        """``GET /shopfloor/partitions``: partitions the user may use, limits, live numbers."""
        return self.get_json("/shopfloor/partitions")

    def validate(self, options: dict[str, Any]) -> ResourceRequest:
        """Check raw options with the site's one model (``POST /shopfloor/validate``).

        Returns the typed request; raises :class:`~shopfloor.resources.RequestError` whose
        ``problems`` name each bad field, exactly as the spawn page would.
        """
        response = self.request("POST", "/shopfloor/validate", json_body=options, ok=(200, 400))
        data = response.json()
        if response.status_code == 400:
            problems = data.get("problems") if isinstance(data, dict) else None
            raise RequestError(problems or {"options": _message_of(response)})
        return ResourceRequest.model_validate(data["request"])

    # -- the user's servers ---------------------------------------------------------------

    def servers(self) -> dict[str, dict[str, Any]]:
        """The user's servers (JupyterHub server models), by name; ``""`` is the default."""
        model = self.get_json(f"/users/{quote(self.user, safe='')}")
        return dict(model.get("servers") or {})

    def start_server(self, name: str, options: dict[str, Any]) -> None:
        """Ask the hub to start server ``name`` with ``user_options`` (validated by the hub)."""
        self.request("POST", self._servers_path(name), json_body={"user_options": options})

    def stop_server(self, name: str) -> None:
        """Ask the hub to stop server ``name`` (it cancels the Slurm job)."""
        self.request("DELETE", self._servers_path(name))

    def progress(self, name: str, wait: float = 1.0) -> dict[str, Any] | None:
        """The latest spawn progress event of a starting server, reading the stream ``wait`` s.

        JupyterHub streams the spawner's messages (Slurm's reason and expected start while
        queued). ``None`` when the server is not starting.
        """
        url = f"{self.api_url}{self._servers_path(name)}/progress"
        latest: dict[str, Any] | None = None
        deadline = time.monotonic() + wait
        try:
            with self.http.get(url, stream=True, timeout=(self.timeout, wait)) as response:
                if response.status_code in (400, 404):
                    return None
                if response.status_code != 200:
                    raise self._error(response, self._servers_path(name))
                for line in response.iter_lines(decode_unicode=True):
                    if line and line.startswith("data:"):
                        latest = json.loads(line[5:])
                        # The hub always sends "Server requested" first; ours comes next.
                        if latest.get("ready") or latest.get("failed") or (
                            latest.get("progress", 0) > 0
                        ):
                            break
                    if time.monotonic() > deadline:
                        break
        except (requests.Timeout, requests.ConnectionError, ValueError):
            return latest
        return latest


__all__ = ["Hub", "HubError"]
