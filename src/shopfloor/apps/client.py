"""Python API for publishing apps from a session (also behind ``shopfloor apps`` and the panel).

Inside a session it needs nothing: it uses ``$JUPYTERHUB_API_TOKEN`` and finds the apps service
in the hub's service list (``$SHOPFLOOR_APPS_URL`` overrides)::

    from shopfloor.apps.client import AppsClient
    apps = AppsClient.from_env()
    app = apps.publish("slider_app.ipynb", title="Wave explorer", audience="groups",
                       names=["ml-team"], compute={"partition": "cpu", "cpus": 1},
                       account="proj-chem", note="First version")
    apps.rollback(app["owner"], app["slug"])

Every check happens in the service; a refusal raises :class:`AppsError` whose ``problems`` map
each field to what is allowed.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from shopfloor.session.hubapi import Hub
from shopfloor.session.services import ServiceClient, ServiceError

#: The apps service's name in the hub's service list.
SERVICE_NAME = "apps"


class AppsError(ServiceError):
    """The apps service refused a request; ``problems`` maps field → message."""


class AppsClient:
    """Talks to the apps service with a user's token.

    ``url`` is the service's root (``.../services/apps``); without it the service is looked up
    in the hub's service list (``hub``, or the session's hub). ``token`` defaults to
    ``$JUPYTERHUB_API_TOKEN``.
    """

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 60,
                 *, hub: Hub | None = None) -> None:
        self.service = ServiceClient(SERVICE_NAME, url=url, token=token, hub=hub,
                                     timeout=timeout, error=AppsError)

    def __repr__(self) -> str:  # never show the token
        return f"AppsClient({self.service!r})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AppsClient:
        """The client for this session (``$JUPYTERHUB_API_TOKEN``; the hub's service list,
        or ``$SHOPFLOOR_APPS_URL`` where set)."""
        env = os.environ if env is None else env
        token = env.get("JUPYTERHUB_API_TOKEN", "")
        if not token:
            raise AppsError("no $JUPYTERHUB_API_TOKEN: run this inside a Shopfloor session, or "
                            "set it to a token from the hub's token page")
        url = env.get("SHOPFLOOR_APPS_URL")
        if url:
            return cls(url, token)
        api_url = env.get("JUPYTERHUB_API_URL", "")
        if not api_url:
            raise AppsError("no $JUPYTERHUB_API_URL: run this inside a Shopfloor session, or "
                            "set $SHOPFLOOR_APPS_URL to the apps service's URL")
        return cls(token=token, hub=Hub(api_url, token, env.get("JUPYTERHUB_USER")))

    @property
    def url(self) -> str:
        """The apps service's root URL (asks the hub the first time)."""
        return self.service.url

    def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        return self.service.call(method, path, body)

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
        note: str = "",
        account: str | None = None,
        qos: str | None = None,
    ) -> dict[str, Any]:
        """Publish ``notebook`` as a new version; returns the app's summary and URL.

        ``note`` says what changed in this version (one line); version lists show it.
        ``account`` is the Slurm account the app's jobs charge (one of yours, as
        ``Hub().partitions()["accounts"]`` lists them; your default account when None) and
        ``qos`` their QoS; both go into ``compute`` and the service checks them at publish
        and again at every start of the app's job.
        """
        compute = dict(compute or {})
        for key, value in (("account", account), ("qos", qos)):
            if value is not None:
                compute[key] = value
        body: dict[str, Any] = {
            "notebook": os.path.abspath(notebook), "title": title, "description": description,
            "audience": audience, "names": list(names), "compute": compute,
            "files": list(files), "note": note,
        }
        if slug:
            body["slug"] = slug
        if thumbnail is not None:
            body["thumbnail"] = base64.b64encode(Path(thumbnail).read_bytes()).decode()
        reply = self._call("POST", "/apps", body)
        return {**reply["app"], "url": reply["url"]}

    def list(self, which: str = "all", search: str = "") -> list[dict[str, Any]]:
        """Apps you can see: ``all``, ``mine`` or ``shared`` (with you)."""
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


__all__ = ["SERVICE_NAME", "AppsClient", "AppsError"]
