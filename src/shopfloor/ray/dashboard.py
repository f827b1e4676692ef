"""The Ray dashboard of a user's cluster, through the user's own Jupyter server.

A Jupyter server extension (enabled for single-user servers by
``jupyter-config/shopfloor-raydashboard.json``) that serves
``{base_url}shopfloor/ray/<cluster>/dashboard/...`` by proxying to that cluster's head, with
jupyter-server-proxy's handler:

* only the user who owns the server reaches it (Jupyter's own login; the hub checks access);
* it connects only to the head named in the user's private ``head.json`` of that cluster
  (its host allowlist is that one address), never to a host or port from the URL;
* it adds the cluster's token as the ``Authorization`` header server-side, so the token never
  reaches the browser, URLs or notebook outputs; the browser's own cookies and Jupyter token
  are not passed on to Ray.

jupyter-server-proxy's generic ``/proxy/<host>:<port>`` route keeps its default allowlist
(``localhost`` only), so it cannot be used to reach other users' clusters either.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jupyter_server.utils import url_path_join
from jupyter_server_proxy.handlers import AddSlashHandler, ProxyHandler
from tornado import web


def _head_of(name: str) -> tuple[str, int, dict[str, str]]:
    """(address, dashboard port, auth header) of the user's running cluster ``name``."""
    # Imported on the first dashboard request, not when the server starts: the site model
    # behind RaySettings costs ~0.1-0.2 s of every session's start (benchmarks/spawn.py).
    from shopfloor.ray.cluster import RayCluster, RayClusterError, check_name
    from shopfloor.site import RaySettings

    try:
        cluster = RayCluster(check_name(name), settings=RaySettings())
        head = cluster.head()
        headers = cluster.auth_header() if head else {}
    except (RayClusterError, OSError, ValueError):
        head = None
    if not head:
        raise web.HTTPError(404, f"You have no running Ray cluster named {name!r}.")
    return str(head["address"]), int(head["dashboard_port"]), headers


class RayDashboardHandler(ProxyHandler):
    """Proxy to the dashboard of one of the server owner's Ray clusters."""

    def initialize(self, **kwargs: Any) -> None:
        self._target: tuple[str, int, dict[str, str]] | None = None
        self.host_allowlist = self._only_the_head

    @staticmethod
    def _only_the_head(handler: RayDashboardHandler, host: str) -> bool:
        return handler._target is not None and host == handler._target[0]

    def _resolve(self, name: str) -> tuple[str, int]:
        self._target = _head_of(name)
        self.proxy_base = f"shopfloor/ray/{name}/dashboard"
        return self._target[0], self._target[1]

    def proxy_request_headers(self) -> Any:
        headers = super().proxy_request_headers()
        for private in ("Cookie", "Authorization", "X-Ray-Authorization", "X-Xsrftoken"):
            if private in headers:
                del headers[private]
        if self._target is not None:
            headers.update(self._target[2])
        return headers

    async def http_get(self, name: str, proxied_path: str) -> Any:
        return await self.proxy(*self._resolve(name), proxied_path)

    async def open(self, name: str, proxied_path: str) -> Any:
        return await self.proxy_open(*self._resolve(name), proxied_path)

    def post(self, name: str, proxied_path: str) -> Any:
        return self.proxy(*self._resolve(name), proxied_path)

    def put(self, name: str, proxied_path: str) -> Any:
        return self.proxy(*self._resolve(name), proxied_path)

    def delete(self, name: str, proxied_path: str) -> Any:
        return self.proxy(*self._resolve(name), proxied_path)

    def patch(self, name: str, proxied_path: str) -> Any:
        return self.proxy(*self._resolve(name), proxied_path)

    def head(self, name: str, proxied_path: str) -> Any:
        return self.proxy(*self._resolve(name), proxied_path)

    def options(self, name: str, proxied_path: str) -> Any:
        return self.proxy(*self._resolve(name), proxied_path)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "shopfloor.ray.dashboard"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    base = serverapp.web_app.settings["base_url"]
    prefix = url_path_join(base, "shopfloor/ray/(?P<name>[a-z0-9-]{1,30})/dashboard")
    serverapp.web_app.add_handlers(".*$", [
        (prefix + "(?P<proxied_path>/.*)", RayDashboardHandler),
        (prefix, AddSlashHandler),
    ])
    serverapp.log.info("shopfloor: Ray dashboards served under %s/", prefix)


#: The config file that enables this extension for every Jupyter server of the environment.
CONFIG = {"ServerApp": {"jpserver_extensions": {"shopfloor.ray.dashboard": True}}}


def config_file_text() -> str:
    return json.dumps(CONFIG, indent=2) + "\n"


def config_path(prefix: str | Path) -> Path:
    """Where :data:`CONFIG` goes under an environment's prefix."""
    return Path(prefix) / "etc/jupyter/jupyter_server_config.d/shopfloor-raydashboard.json"
