"""The one HTTP client for code in a user's session: the hub and Shopfloor's services.

:class:`Hub` talks to the JupyterHub REST API and Shopfloor's own endpoints
(:mod:`shopfloor.extensions.resources_api`), and finds Shopfloor's services (apps, workshop)
in the hub's own service list (``GET /hub/api/services``), never by guessing ports. Inside a
session it needs no arguments: it reads ``JUPYTERHUB_API_URL``, ``JUPYTERHUB_API_TOKEN`` and
``JUPYTERHUB_USER``, which the hub gives every server. Elsewhere pass them explicitly::

    from shopfloor.session.hubapi import Hub
    hub = Hub()                                       # inside a session
    hub = Hub("http://127.0.0.1:8081/hub/api", token)  # anywhere else
    hub.partitions()["default_partition"]
    hub.validate({"partition": "debug", "walltime": "20"})   # -> ResourceRequest
    hub.service_url("apps")                           # -> http://10.0.0.5:8091/services/apps

Every call goes through one :class:`requests.Session` made by :func:`http_session`: the
user's token in the ``Authorization`` header, a timeout on every call, and urllib3's own
retries (:data:`RETRIES`) for connections that fail and for idempotent calls the server
could not answer. The service clients (:mod:`shopfloor.session.services`) share it.

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
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

from shopfloor.errors import ShopfloorError
from shopfloor.resources import RequestError, ResourceRequest

#: What a refused (403) call most likely lacks, by the first path segment after the API root.
_SCOPE_HINTS = {
    "users": "this token may not manage your sessions (it needs the servers scopes)",
    "shopfloor": "this token does not belong to a hub user",
    "services": "this token may not read the hub's service list (it needs the "
                "list:services and read:services scopes; a session started before the hub "
                "granted them gets them when it is started again)",
}

#: urllib3's retries for every call: connections that fail (the request never left, so any
#: method is safe to send again) and, for idempotent methods only (GET, PUT, DELETE, ...),
#: answers that say "try again" (502/503/504, honouring Retry-After). A read that times out
#: is not retried: the caller's timeout is the longest a person waits. Back-off 0, 1, 2 s
#: rides over a service restarting, not over a hub that is down.
RETRIES = Retry(
    total=3, connect=3, read=False, other=0, status=3, redirect=False,
    allowed_methods=Retry.DEFAULT_ALLOWED_METHODS, status_forcelist=(502, 503, 504),
    backoff_factor=0.5, backoff_max=4, raise_on_status=False,
)


#: Seconds to wait for a connection (per try); each client's own timeout bounds the answer.
CONNECT_TIMEOUT = 5.0


def http_session(token: str = "", *, retries: Retry = RETRIES) -> requests.Session:
    """A :class:`requests.Session` with ``token`` in the ``Authorization`` header (none when
    empty) and ``retries`` on every HTTP(S) connection. Pass a timeout with each call."""
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retries)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if token:
        session.headers["Authorization"] = f"token {token}"
    return session


class HubError(ShopfloorError, RuntimeError):
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
    ``user`` their name (looked up with the token when not given), ``timeout`` the seconds
    an answer may take, ``retries`` urllib3's retry policy (:data:`RETRIES`).
    """

    def __init__(
        self,
        api_url: str | None = None,
        token: str | None = None,
        user: str | None = None,
        *,
        timeout: float = 30.0,
        retries: Retry = RETRIES,
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
        #: The one HTTP session of this client (token, retries); service clients share it.
        self.http = http_session(token, retries=retries)
        self._services: dict[str, dict[str, Any]] | None = None

    def __repr__(self) -> str:  # never show the token
        return f"Hub({self.api_url!r}, user={self._user!r})"

    # -- plumbing -------------------------------------------------------------------------

    def request(self, method: str, path: str, *, json_body: Any = None,
                ok: tuple[int, ...] = (200, 201, 202, 204)) -> requests.Response:
        """One API call; raises :class:`HubError` in plain words unless the status is ``ok``."""
        url = f"{self.api_url}/{path.lstrip('/')}"
        try:
            response = self.http.request(method, url, json=json_body,
                                         timeout=(CONNECT_TIMEOUT, self.timeout))
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
        """``GET`` an API path and return its JSON body (:class:`HubError` on failure)."""
        return self.request("GET", path).json()

    # -- the hub's services ---------------------------------------------------------------

    def services(self) -> dict[str, dict[str, Any]]:
        """The hub's service list (``GET /services``) this token may read, by name.

        Asked once per client: services are configured when the hub starts.
        """
        if self._services is None:
            self._services = dict(self.get_json("/services"))
        return self._services

    def service_url(self, name: str) -> str:
        """Where this session reaches service ``name``: the hub's ``url`` for it (its own
        address) joined with its ``prefix`` (``/services/<name>``), without a trailing ``/``.
        """
        model = self.services().get(name)
        if model is None:
            raise HubError(
                f"The hub has no {name!r} service this token may see: it may be switched off "
                "on this site. Ask your admin."
            )
        url, prefix = str(model.get("url") or ""), str(model.get("prefix") or "")
        if not url:
            raise HubError(
                f"The hub does not tell this token where the {name!r} service is (it needs the "
                "read:services scope); start the session again, or ask your admin."
            )
        return f"{url.rstrip('/')}/{prefix.strip('/')}".rstrip("/")

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

    def budgets(self) -> dict[str, Any] | None:
        """``GET /shopfloor/budgets``: the user's accounts and budgets; None on sites without
        Slurm accounting."""
        response = self.request("GET", "/shopfloor/budgets", ok=(200, 404))
        return response.json() if response.status_code == 200 else None

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
            with self.http.get(url, stream=True, timeout=(CONNECT_TIMEOUT, wait)) as response:
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

    # -- help with access that expires ----------------------------------------------------

    def help_requests(self) -> dict[str, Any]:
        """``GET /shopfloor/support``: the user's help requests (``mine``) and the site's
        ``max_hours`` and ``default_hours``."""
        return dict(self.get_json("/shopfloor/support"))

    def ask_for_help(self, server: str, message: Any, hours: Any) -> dict[str, Any]:
        """Share session ``server`` with the site's support group for ``hours`` (1 to the
        site's maximum; the hub checks both); returns the request. A bad field raises
        :class:`~shopfloor.resources.RequestError` naming it."""
        response = self.request("POST", "/shopfloor/support", ok=(201, 400), json_body={
            "server": server, "message": message, "hours": hours})
        data = response.json()
        if response.status_code == 400:
            problems = data.get("problems") if isinstance(data, dict) else None
            raise RequestError(problems or {"body": _message_of(response)})
        return dict(data)

    def revoke_help(self, request_id: int) -> None:
        """End help request ``request_id`` and the support group's access at once."""
        self.request("DELETE", f"/shopfloor/support/{int(request_id)}")


__all__ = ["CONNECT_TIMEOUT", "RETRIES", "Hub", "HubError", "http_session"]
