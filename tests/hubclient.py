"""A small HTTP client for the real hub, as a browser would use it (cookies, xsrf)."""

from __future__ import annotations

import re
import time
from typing import Any

import requests


class HubClient:
    """Log in through the login form and drive the hub's pages and REST API."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000") -> None:
        self.base = base_url.rstrip("/")
        self.http = requests.Session()
        self.user: str | None = None

    def _xsrf(self) -> str:
        return self.http.cookies.get("_xsrf", "", path="/hub/")

    def login(self, user: str, password: str) -> requests.Response:
        self.http.get(f"{self.base}/hub/login")
        resp = self.http.post(
            f"{self.base}/hub/login?next=",
            data={"username": user, "password": password, "_xsrf": self._xsrf()},
            allow_redirects=False,
        )
        if resp.status_code != 302:
            raise AssertionError(f"login as {user} failed: {resp.status_code}")
        self.user = user
        return resp

    def token(self, scopes: list[str] | None = None) -> str:
        """A REST API token for the logged-in user (through the token page's API)."""
        body: dict[str, Any] = {"note": "tests", "expires_in": 3600}
        if scopes:
            body["scopes"] = scopes
        resp = self.http.post(
            f"{self.base}/hub/api/users/{self.user}/tokens", json=body,
            headers={"X-XSRFToken": self._xsrf()},
        )
        resp.raise_for_status()
        return resp.json()["token"]

    def spawn_form(self, server: str = "", **fields: Any) -> requests.Response:
        path = f"/hub/spawn/{self.user}/{server}" if server else "/hub/spawn"
        data = {k: str(v) for k, v in fields.items()}
        data["_xsrf"] = self._xsrf()
        return self.http.post(f"{self.base}{path}", data=data, allow_redirects=False)

    def api(self, method: str, path: str, token: str | None = None, **kw: Any) -> requests.Response:
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = f"token {token}"
        else:
            headers["X-XSRFToken"] = self._xsrf()
        return self.http.request(method, f"{self.base}/hub/api{path}", headers=headers, **kw)

    def server_model(self, server: str = "") -> dict[str, Any] | None:
        resp = self.api("GET", f"/users/{self.user}")
        resp.raise_for_status()
        return resp.json().get("servers", {}).get(server)

    def wait_ready(self, server: str = "", timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        model: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            model = self.server_model(server)
            if model and model.get("ready"):
                return model
            time.sleep(0.25)
        raise AssertionError(f"server {server!r} not ready in {timeout} s: {model}")

    def stop(self, server: str = "", timeout: float = 60, remove: bool = True) -> None:
        """Stop a server; named servers are also removed (they count towards the hub's limit)."""
        if server:
            self.api("DELETE", f"/users/{self.user}/servers/{server}", json={"remove": remove})
        else:
            self.api("DELETE", f"/users/{self.user}/server")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server_model(server) is None:
                return
            time.sleep(0.25)
        raise AssertionError(f"server {server!r} did not stop in {timeout} s")

    def pending_page_text(self, server: str = "") -> str:
        path = f"/hub/spawn-pending/{self.user}/{server}"
        return re.sub(r"<[^>]+>", " ", self.http.get(f"{self.base}{path}").text)
