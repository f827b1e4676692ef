"""OpenID Connect login against a real, certified OpenID provider, in real Chromium.

The provider is panva's ``oidc-provider`` (tests/oidc, started here on a loopback port); the
hub runs the demo site with ``auth.method: oidc`` on its own ports (PORT_BASE + 30..33), so it
runs beside the PAM test hub and a demo. alice logs in, consents, is back at the hub as alice,
spawns a session that Slurm runs as alice, and logs out; bob is bob; identities without a
usable Unix account get our page and no hub cookie; a tampered state or redirect is refused.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlparse, urlunparse

import pytest
import yaml
from cryptography.fernet import Fernet
from oidc_support import CLIENT_ID, OidcProvider, start_provider
from support import PORT_BASE, give_to_hub, job_hub_port, squeue_jobs, write_test_site

from shopfloor.demo.hub import Hub
from shopfloor.site import SiteConfig, load_site

pytestmark = [pytest.mark.browser, pytest.mark.hub, pytest.mark.slow]

HUB_PORT, HUB_API_PORT, PROXY_PORT, PROVIDER_PORT = (PORT_BASE + n for n in (30, 31, 32, 33))
HUB_URL = f"http://127.0.0.1:{HUB_PORT}"
#: Short enough that alice's access token expires during her spawn: the hub must refresh it.
ACCESS_TOKEN_TTL = 4
HUB_COOKIES = ("jupyterhub-hub-login", "jupyterhub-session-id")


@dataclass
class OidcHub:
    url: str
    site: SiteConfig
    process: Hub
    provider: OidcProvider

    @property
    def database(self) -> Path:
        return Path(self.site.hub.state_dir) / "jupyterhub.sqlite"

    def auth_state(self, user: str) -> tuple[bytes, dict[str, Any]]:
        """(encrypted bytes as stored, decrypted auth_state) of ``user``."""
        key = (Path(self.site.hub.state_dir) / "jupyterhub_crypt_key").read_text().strip()
        with sqlite3.connect(self.database) as db:
            (blob,) = db.execute("select encrypted_auth_state from users where name = ?",
                                 (user,)).fetchone()
        fernet = Fernet(base64.urlsafe_b64encode(bytes.fromhex(key)))
        return blob, json.loads(fernet.decrypt(blob))


def _cancel_jobs_of_this_hub() -> None:
    jobs = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True,
                          check=True).stdout.split()
    ours = [j for j in jobs if job_hub_port(j) == HUB_API_PORT]
    if ours:
        subprocess.run(["scancel", *ours], capture_output=True, check=False)


@pytest.fixture(scope="module")
def oidc_hub(local_cluster: object) -> Iterator[OidcHub]:
    directory = Path(tempfile.mkdtemp(prefix="shopfloor-test-oidc-"))
    directory.chmod(0o711)
    provider = start_provider(directory / "provider", PROVIDER_PORT,
                              f"{HUB_URL}/hub/oauth_callback", ACCESS_TOKEN_TTL)
    process = None
    try:
        secret_file = directory / "client-secret"
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(provider.client_secret + "\n")
        site_file = write_test_site(directory)
        data = yaml.safe_load(site_file.read_text())
        data["hub"].update(bind_url=HUB_URL, hub_bind_url=f"http://127.0.0.1:{HUB_API_PORT}",
                           proxy_api_url=f"http://127.0.0.1:{PROXY_PORT}")
        data["auth"].update(method="oidc", oidc={
            "issuer": provider.issuer, "client_id": CLIENT_ID,
            "client_secret_file": str(secret_file),
            "scopes": ["openid", "profile", "projects", "offline_access"],
            "username_claim": "preferred_username", "groups_claim": "projects",
            "keep_tokens": True, "refresh_seconds": 2,
            "login_service": "Test IdP", "contact": "hpc-support@example.org",
        })
        # Members of the provider's "physics" project get at most 1 CPU (a group limit).
        data["group_limits"]["physics"] = {"max_cpus": 1}
        site_file.write_text(yaml.safe_dump(data, sort_keys=False))
        site = load_site(site_file)
        give_to_hub(secret_file, site)  # the hub reads it as its service user
        process = Hub(site, site_file)
        _cancel_jobs_of_this_hub()
        process.start(detach=True)
        yield OidcHub(HUB_URL, site, process, provider)
    finally:
        if process is not None:
            process.stop()
        _cancel_jobs_of_this_hub()
        provider.stop()
        # The provider's identities, the client secret, the crypt key and the hub's database.
        shutil.rmtree(directory, ignore_errors=True)


def provider_login(page: Any, login: str, provider: OidcProvider, next_path: str = "",
                   hold_callback: bool = False) -> str:
    """From the hub's login page through the provider's sign-in and consent pages.

    With ``hold_callback`` the consent goes through the browser's own cookies but without
    following the provider's last redirect: returns the hub callback URL, unvisited.
    """
    query = f"?{urlencode({'next': next_path})}" if next_path else ""
    page.goto(f"{HUB_URL}/hub/login{query}")
    page.click("text=Sign in with Test IdP")
    page.wait_for_url(f"{provider.issuer}/interaction/**")
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", provider.passwords[login])
    page.click("button[type=submit]")
    page.wait_for_selector("text=Authorize")
    assert "projects" in page.inner_text("body")  # the consent page lists what the hub asks
    if not hold_callback:
        page.click("button[type=submit]")
        return ""
    resp = page.request.post(urljoin(provider.issuer, page.get_attribute("form", "action")),
                             max_redirects=0)
    while resp.status in (302, 303) and not resp.headers["location"].startswith(HUB_URL):
        resp = page.request.get(urljoin(provider.issuer, resp.headers["location"]),
                                max_redirects=0)
    assert resp.headers.get("location", "").startswith(f"{HUB_URL}/hub/oauth_callback?")
    return resp.headers["location"]


def hub_cookies(page: Any) -> set[str]:
    return {c["name"] for c in page.context.cookies() if c["name"] in HUB_COOKIES}


def hub_api(page: Any, method: str, path: str, **kw: Any) -> Any:
    """The hub's REST API with the browser's own cookies (and its xsrf token)."""
    xsrf = next((c["value"] for c in page.context.cookies()
                 if c["name"] == "_xsrf" and c["path"] == "/hub/"), "")
    return page.request.fetch(f"{HUB_URL}/hub/api{path}", method=method,
                              headers={"X-XSRFToken": xsrf}, **kw)


def test_alice_logs_in_consents_spawns_as_alice_and_logs_out(
        oidc_hub: OidcHub, page: Any, artifacts: Path) -> None:
    provider_login(page, "alice", oidc_hub.provider)
    page.wait_for_url(f"{HUB_URL}/hub/spawn**")
    me = hub_api(page, "GET", "/user").json()
    assert me["name"] == "alice"
    # The provider's projects claim became alice's hub groups...
    assert sorted(me["groups"]) == ["physics", "proj-shared"]
    # ...so the site's group limits apply to her (physics: at most 1 CPU).
    limited = hub_api(page, "POST", "/shopfloor/validate",
                      data={"partition": "debug", "cpus": "2"})
    assert limited.status == 400 and "cpus" in limited.json()["problems"]
    # Her tokens are kept encrypted in the hub's database, with a refresh token.
    blob, state = oidc_hub.auth_state("alice")
    first_access_token = state["access_token"]
    assert state["refresh_token"] and state["oauth_user"]["sub"] == "sub-alice"
    assert first_access_token.encode() not in blob and b"refresh_token" not in blob
    key_file = Path(oidc_hub.site.hub.state_dir) / "jupyterhub_crypt_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    page.check("input[name=partition][value=debug]")
    page.click("input[type=submit], button[type=submit]")
    try:
        page.wait_for_url("**/user/alice/lab**", timeout=120_000)
        page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)
        page.screenshot(path=str(artifacts / "oidc-jupyterlab.png"))
        jobs = [j for j in squeue_jobs("alice", other_hubs=True)
                if job_hub_port(j["id"]) == HUB_API_PORT]
        assert len(jobs) == 1 and jobs[0]["user"] == "alice"
        assert jobs[0]["state"] == "RUNNING" and jobs[0]["partition"] == "debug"
        # The access token (4 s) expired meanwhile: the hub refreshed it with the refresh
        # token and kept alice logged in.
        # (The provider may accept a just-expired token for its clock tolerance: ask until the
        # hub's periodic refresh has exchanged it, bounded.)
        time.sleep(ACCESS_TOKEN_TTL)
        deadline = time.monotonic() + 45
        while True:
            assert hub_api(page, "GET", "/user").json()["name"] == "alice"
            _, state = oidc_hub.auth_state("alice")
            if state["access_token"] != first_access_token or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert state["access_token"] != first_access_token
    finally:
        stop = hub_api(page, "DELETE", "/users/alice/server")
        assert stop.status in (202, 204), stop.text()
    page.goto(f"{HUB_URL}/hub/logout")
    page.wait_for_url(f"{HUB_URL}/hub/login**")
    assert not hub_cookies(page)
    assert hub_api(page, "GET", "/user").status == 403
    # Neither the client secret nor alice's tokens reached the hub's log.
    log = oidc_hub.process.log_file.read_text(errors="replace")
    for secret in (oidc_hub.provider.client_secret, first_access_token,
                   state["access_token"], state["refresh_token"]):
        assert secret not in log


def test_bob_is_bob(oidc_hub: OidcHub, page: Any) -> None:
    provider_login(page, "bob", oidc_hub.provider)
    page.wait_for_url(f"{HUB_URL}/hub/spawn**")
    me = hub_api(page, "GET", "/user").json()
    assert me["name"] == "bob" and me["groups"] == ["proj-shared"]
    # Not in physics: bob's 2 CPUs are fine.
    assert hub_api(page, "POST", "/shopfloor/validate",
                   data={"partition": "debug", "cpus": "2"}).status == 200


@pytest.mark.parametrize(("login", "shown", "reason"), [
    ("carol", "carol", "there is no account with this name here"),
    # A provider record claiming root never reaches a system account.
    ("mallory", "root", "this account cannot log in through the identity provider"),
    # Markup in a claim is shown as text, not run.
    ("eve", "eve<img src=x onerror=alert(1)>", "not a valid account name"),
])
def test_identity_without_account_sees_our_page_and_no_cookie(
        oidc_hub: OidcHub, page: Any, artifacts: Path, login: str, shown: str,
        reason: str) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    provider_login(page, login, oidc_hub.provider)
    page.wait_for_selector("#shopfloor-login-refused")
    assert page.inner_text("#refused-identity") == shown
    assert reason in page.inner_text("#shopfloor-login-refused")
    assert page.inner_text("#refused-contact") == "hpc-support@example.org"
    assert page.locator("#shopfloor-login-refused img").count() == 0 and not dialogs
    if login == "carol":
        page.screenshot(path=str(artifacts / "oidc-no-account.png"))
    assert not hub_cookies(page)
    assert hub_api(page, "GET", "/user").status == 403
    if shown != "root":  # and no account was created on the way
        assert subprocess.run(["getent", "passwd", shown], capture_output=True).returncode == 2


def _with_query(url: str, **changes: str) -> str:
    parts = urlparse(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunparse(parts._replace(query=urlencode(query)))


def test_tampered_state_and_foreign_callback_are_refused(
        oidc_hub: OidcHub, browser: Any, page: Any) -> None:
    callback = provider_login(page, "alice", oidc_hub.provider, hold_callback=True)
    # The same code from another browser (a login-CSRF attempt): no state cookie there.
    other = browser.new_context()
    try:
        foreign = other.new_page().goto(callback)
        assert foreign.status == 400
        assert not [c for c in other.cookies() if c["name"] in HUB_COOKIES]
    finally:
        other.close()
    # In alice's browser, with the state changed: refused, and no hub cookie either.
    forged = base64.urlsafe_b64encode(json.dumps({"state_id": "0" * 32}).encode()).decode()
    tampered = page.goto(_with_query(callback, state=forged))
    assert tampered.status == 400 and "state" in page.inner_text("body").lower()
    assert not hub_cookies(page)


def test_redirects_stay_on_the_hub_and_the_registered_uri(oidc_hub: OidcHub, page: Any) -> None:
    # next= pointing elsewhere: after login the browser is still on the hub.
    provider_login(page, "bob", oidc_hub.provider, next_path="https://evil.example/steal")
    page.wait_for_load_state()
    assert urlparse(page.url).netloc == f"127.0.0.1:{HUB_PORT}"
    # A redirect_uri changed on the way to the provider: the provider refuses to send the
    # code anywhere but the registered callback.
    page.context.clear_cookies()
    page.goto(f"{HUB_URL}/hub/login")
    start = page.request.get(f"{HUB_URL}/hub/oauth_login", max_redirects=0)
    authorize_url = start.headers["location"]
    assert authorize_url.startswith(f"{oidc_hub.provider.issuer}/auth?")
    evil = page.goto(_with_query(authorize_url, redirect_uri="http://127.0.0.1:9/steal"))
    assert urlparse(page.url).netloc == urlparse(oidc_hub.provider.issuer).netloc
    assert evil.status == 400 and "redirect_uri" in page.inner_text("body")
