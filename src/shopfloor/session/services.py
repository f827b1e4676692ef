"""What clients of Shopfloor's hub services (apps, workshop) share: one way to call them.

:class:`ServiceClient` sends JSON calls to one service with the user's token, over the same
:class:`requests.Session` as :class:`~shopfloor.session.hubapi.Hub` (urllib3's retries and a
timeout on every call). It finds the service in the hub's own service list the first time it
needs it, unless it was given a URL (``$SHOPFLOOR_APPS_URL``-style overrides, tests). Every
failure, finding the service included, raises the client's :class:`ServiceError` subclass.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import requests
from urllib3.util import Retry

from shopfloor.errors import ShopfloorError
from shopfloor.session.hubapi import CONNECT_TIMEOUT, RETRIES, Hub, HubError, http_session

T = TypeVar("T")


class ServiceError(ShopfloorError, RuntimeError):
    """A service refused or failed a request; ``problems`` maps field → message, ``status``
    is the HTTP status it answered (0 when it did not answer)."""

    def __init__(self, message: str, problems: Mapping[str, str] | None = None,
                 status: int = 0) -> None:
        self.status = status
        super().__init__(message, problems)


class ServiceClient:
    """JSON calls to the hub service ``name`` (``apps``, ``workshop``) with a user's token.

    ``url`` is the service's root (``.../services/<name>``); without it the client asks the
    hub's service list (``hub``, or the session's own hub). ``token`` defaults to
    ``$JUPYTERHUB_API_TOKEN``; an empty one allows only calls made with ``auth=False``.
    Failures raise ``error`` (a :class:`ServiceError` subclass) in plain words. With ``hub``
    the client shares its HTTP session (token, retries); else ``retries`` is urllib3's policy.
    """

    def __init__(self, name: str, *, url: str | None = None, token: str | None = None,
                 hub: Hub | None = None, timeout: float = 60,
                 error: type[ServiceError] = ServiceError, retries: Retry = RETRIES) -> None:
        self.name = name
        self.timeout = timeout
        self.error = error
        self._url = url.rstrip("/") if url else None
        self._hub = hub
        if hub is not None:  # a Hub always holds a token; share its session
            self._token = ""
            self._has_token = True
            self.http = hub.http
        else:
            self._token = os.environ.get("JUPYTERHUB_API_TOKEN", "") if token is None else token
            self._has_token = bool(self._token)
            self.http = http_session(self._token, retries=retries)

    def __repr__(self) -> str:  # never show the token
        return f"ServiceClient({self.name!r}, url={self._url!r})"

    @property
    def url(self) -> str:
        """The service's root URL, from the hub's service list unless it was given."""
        if self._url is None:
            try:
                hub = self._hub or Hub(token=self._token or None)
                self._url = hub.service_url(self.name)
            except HubError as exc:
                raise self.error(f"Cannot find the {self.name} service: {exc}",
                                 status=exc.status or 0) from None
        return self._url

    def require_token(self) -> None:
        """Raise ``error`` saying how to get a token when this client has none."""
        if not self._has_token:
            raise self.error(
                f"no API token for the {self.name} service: run this in a Shopfloor session, "
                "or pass a token from the hub's token page"
            )

    def response(self, method: str, path: str, body: Any = None, *,
                 auth: bool = True) -> requests.Response:
        """``method`` on ``<url>/api<path>`` with a JSON ``body``; the response when it is a
        success, else ``error`` with the service's message and per-field problems."""
        if auth:
            self.require_token()
        # Calls without auth (joining a workshop) must not carry a token the session has.
        headers = None if auth else {"Authorization": None}
        url = self.url
        try:
            response = self.http.request(method, f"{url}/api{path}", json=body,
                                         headers=headers,
                                         timeout=(CONNECT_TIMEOUT, self.timeout))
        except requests.ConnectionError:
            raise self.error(f"Cannot reach the {self.name} service at {url}; is the hub "
                             "running? Try again in a minute.") from None
        except requests.Timeout:
            raise self.error(f"The {self.name} service did not answer within "
                             f"{self.timeout:.0f} s; try again.") from None
        if response.status_code >= 400:
            raise self._refusal(response)
        return response

    def call(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        """Like :meth:`response`, returning the JSON answer (``{}`` for an empty one)."""
        response = self.response(method, path, body, auth=auth)
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError:
            raise self.error(f"The {self.name} service answered something that is not JSON; "
                             "try again.", status=response.status_code) from None

    def _refusal(self, response: requests.Response) -> ServiceError:
        try:
            data = response.json()
        except ValueError:
            data = None
        data = data if isinstance(data, dict) else {}
        message = data.get("message") or response.reason or (
            f"the {self.name} service answered {response.status_code}")
        return self.error(str(message), data.get("problems"), response.status_code)


def blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to the end from blocking code, also inside a running event loop
    (a Jupyter kernel has one): then it runs on its own loop in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


__all__ = ["ServiceClient", "ServiceError", "blocking"]
