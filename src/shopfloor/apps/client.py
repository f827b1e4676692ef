"""Python API for publishing apps from a session (also behind ``shopfloor apps`` and the panel).

Inside a session it needs nothing: it uses ``$JUPYTERHUB_API_TOKEN`` and finds the apps service
beside the hub API (``$SHOPFLOOR_APPS_URL`` overrides)::

    from shopfloor.apps.client import AppsClient
    apps = AppsClient.from_env()
    app = apps.publish("slider_app.ipynb", title="Wave explorer", audience="groups",
                       names=["ml-team"], compute={"partition": "cpu", "cpus": 1})
    apps.rollback(app["owner"], app["slug"])

Every check happens in the service; a refusal raises :class:`AppsError` whose ``problems`` map
each field to what is allowed.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from shopfloor.apps.model import default_service_port
from shopfloor.session.services import ServiceError, service_url_beside


class AppsError(ServiceError):
    """The apps service refused a request; ``problems`` maps field → message."""


def service_url_from_hub(api_url: str) -> str:
    """The apps service next to a hub API URL (``apps.service_port`` default: API port + 10)."""
    port = default_service_port(urlparse(api_url).port or 80)
    return service_url_beside(api_url, port, "/services/apps")


class AppsClient:
    """Talks to the apps service with a user's token."""

    def __init__(self, url: str, token: str, timeout: float = 60) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AppsClient:
        """The client for this session (``$JUPYTERHUB_API_TOKEN``, ``$JUPYTERHUB_API_URL``)."""
        env = os.environ if env is None else env
        token = env.get("JUPYTERHUB_API_TOKEN", "")
        if not token:
            raise AppsError("no $JUPYTERHUB_API_TOKEN: run this inside a Shopfloor session, or "
                            "set it to a token from the hub's token page")
        url = env.get("SHOPFLOOR_APPS_URL") or service_url_from_hub(
            env.get("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api"))
        return cls(url, token)

    def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.url}/api{path}", data=data, method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                reply = json.loads(exc.read() or b"{}")
            except ValueError:
                reply = {}
            raise AppsError(reply.get("message") or f"the apps service answered {exc.code}",
                            reply.get("problems"), exc.code) from None
        except OSError as exc:
            raise AppsError(f"cannot reach the apps service at {self.url}: {exc}") from None

    def publish(
        self,
        notebook: str | os.PathLike[str],
        *,
        title: str,
        description: str = "",
        slug: str | None = None,
        audience: str = "private",
        names: Sequence[str] = (),
        compute: Mapping[str, Any] | None = None,
        files: Sequence[str] = (),
        thumbnail: str | os.PathLike[str] | None = None,
    ) -> dict[str, Any]:
        """Publish ``notebook`` as a new version; returns the app's summary and URL."""
        body: dict[str, Any] = {
            "notebook": os.path.abspath(notebook), "title": title, "description": description,
            "audience": audience, "names": list(names), "compute": dict(compute or {}),
            "files": list(files),
        }
        if slug:
            body["slug"] = slug
        if thumbnail is not None:
            body["thumbnail"] = base64.b64encode(Path(thumbnail).read_bytes()).decode()
        reply = self._call("POST", "/apps", body)
        return {**reply["app"], "url": reply["url"]}

    def list(self, which: str = "all", search: str = "") -> list[dict[str, Any]]:
        """Apps you can see: ``all``, ``mine`` or ``shared`` (with you)."""
        from urllib.parse import urlencode

        return self._call("GET", "/apps?" + urlencode({"filter": which, "q": search}))["apps"]

    def get(self, owner: str, slug: str) -> dict[str, Any]:
        return self._call("GET", f"/apps/{owner}/{slug}")["app"]

    def rollback(self, owner: str, slug: str, version: int | None = None) -> dict[str, Any]:
        """Make an earlier version current (the one before the current by default)."""
        return self._call("POST", f"/apps/{owner}/{slug}/rollback", {"version": version})["app"]

    def unpublish(self, owner: str, slug: str) -> None:
        self._call("DELETE", f"/apps/{owner}/{slug}")

    def share(self, owner: str, slug: str, audience: str,
              names: Sequence[str] = ()) -> dict[str, Any]:
        """Change who may open the app (no new version)."""
        return self._call("POST", f"/apps/{owner}/{slug}/audience",
                          {"audience": audience, "names": list(names)})["app"]


__all__ = ["AppsClient", "AppsError", "service_url_from_hub"]
