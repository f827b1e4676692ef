"""OpenID Connect login against a real, certified OpenID provider, in real Chromium.

The provider is panva's ``oidc-provider`` (tests/oidc, started here on a loopback port); the
hub runs the demo site with ``auth.method: oidc`` on its own ports (PORT_BASE + 14..17, within
the 20 ports of one port base: +30 met the next base's test cluster), so it runs beside the
PAM test hub and a demo. The provider's user names carry a domain
(alice@example.org; the hub's ``username_domain``). alice logs in, consents, is back at the hub
as alice, spawns a session that Slurm runs as alice and that holds her (refreshed) tokens in
its environment, which bob cannot read, and logs out of the hub and the provider; bob is bob;
identities without a usable Unix account, or of another domain, get our page and no hub
cookie; a tampered state or redirect is refused.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlparse, urlunparse

import pytest
import yaml
from cryptography.fernet import Fernet
from oidc_support import CLIENT_ID, DOMAIN, OidcProvider, start_provider
from support import PORT_BASE, give_to_hub, job_hub_port, squeue_jobs, write_test_site

from shopfloor.auth_site import ACCESS_TOKEN_ENV, ID_TOKEN_ENV
from shopfloor.demo.hub import Hub
from shopfloor.site import SiteConfig, load_site

pytestmark = [pytest.mark.browser, pytest.mark.hub, pytest.mark.slow]

HUB_PORT, HUB_API_PORT, PROXY_PORT, PROVIDER_PORT = (PORT_BASE + n for n in (14, 15, 16, 17))
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
                              f"{HUB_URL}/hub/oauth_callback", ACCESS_TOKEN_TTL,
                              post_logout_redirect_uri=f"{HUB_URL}/hub/login")
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
            "username_domain": DOMAIN, "pass_tokens": "access_and_id",
            # logout_at_provider: unset, on because discovery advertises end_session_endpoint
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


class TokenWatch:
    """Every access and ID token ``user``'s auth_state holds while the watch runs (the hub
    refreshes them every few seconds: the session must hold one of them)."""

    def __init__(self, hub: OidcHub, user: str) -> None:
        self.hub, self.user = hub, user
        self.access: list[str] = []
        self.id: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TokenWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                _, state = self.hub.auth_state(self.user)
            except sqlite3.OperationalError:  # the hub is writing: look again
                pass
            else:
                for seen, key in ((self.access, "access_token"), (self.id, "id_token")):
                    if state.get(key) and state[key] not in seen:
                        seen.append(state[key])
            self._stop.wait(0.1)


#: Runs ``code`` in a new kernel of the session the page shows (the session's own REST API
#: and kernel websocket, with the browser's cookies) and returns what it printed.
RUN_IN_KERNEL_JS = """async ([base, code]) => {
  const xsrf = decodeURIComponent((document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1] || '');
  const headers = {'X-XSRFToken': xsrf, 'Content-Type': 'application/json'};
  const made = await fetch(base + 'api/kernels', {method: 'POST', headers, body: '{}'});
  if (!made.ok) throw new Error('starting a kernel: ' + made.status + ' ' + await made.text());
  const kernel = await made.json();
  const session = crypto.randomUUID(), msgId = crypto.randomUUID(), out = [];
  const ws = new WebSocket(location.origin.replace(/^http/, 'ws') + base + 'api/kernels/'
                           + kernel.id + '/channels?session_id=' + session);
  try {
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no reply: ' + out.join(''))), 60000);
      ws.onerror = () => reject(new Error('kernel websocket failed'));
      ws.onmessage = (event) => {
        const msg = JSON.parse(event.data);
        if (!msg.parent_header || msg.parent_header.msg_id !== msgId) return;
        if (msg.msg_type === 'stream') out.push(msg.content.text);
        if (msg.msg_type === 'error') out.push(msg.content.ename + ': ' + msg.content.evalue);
        if (msg.msg_type === 'status' && msg.content.execution_state === 'idle') {
          clearTimeout(timer);
          resolve();
        }
      };
      ws.onopen = () => ws.send(JSON.stringify({
        header: {msg_id: msgId, session, username: '', msg_type: 'execute_request',
                 version: '5.3', date: new Date().toISOString()},
        parent_header: {}, metadata: {}, channel: 'shell', buffers: [],
        content: {code, silent: false, store_history: false, user_expressions: {},
                  allow_stdin: false},
      }));
    });
  } finally {
    ws.close();
    await fetch(base + 'api/kernels/' + kernel.id, {method: 'DELETE', headers});
  }
  return out.join('');
}"""


def session_environment(page: Any, user: str, names: tuple[str, ...]) -> dict[str, Any]:
    """``names`` in the environment of a kernel of ``user``'s session, asked as ``user``."""
    code = f"import json, os; print(json.dumps({{k: os.environ.get(k) for k in {names!r}}}))"
    printed = page.evaluate(RUN_IN_KERNEL_JS, [f"/user/{user}/", code])
    return json.loads(printed)


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def as_bob(*argv: str) -> str:
    """What bob sees running ``argv`` (stdout and stderr together)."""
    done = subprocess.run(["sudo", "-n", "-u", "bob", *argv], capture_output=True, text=True,
                          errors="replace", check=False)
    return done.stdout + done.stderr


def processes_holding(user: str, secret: str) -> list[int]:
    """Pids of ``user``'s processes (read as root) whose environment holds ``secret``."""
    uid = subprocess.run(["id", "-u", user], capture_output=True, text=True,
                         check=True).stdout.strip()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if str(proc.stat().st_uid) == uid and secret.encode() in (
                    proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:  # gone meanwhile
            continue
    return found


def assert_bob_cannot_read(job_id: str, job_log: Path, pids: list[int],
                           secrets: list[str]) -> None:
    """bob, on the same machine, finds none of alice's session tokens: not in her job's
    script, record or log, not in her processes' environment, not in the process list."""
    assert as_bob("id", "-un").strip() == "bob"  # the probes below really run as bob
    processes = as_bob("ps", "-eo", "pid,user,args")
    assert all(str(pid) in processes for pid in pids)  # he sees her processes, not the tokens
    seen = [
        processes,
        as_bob("scontrol", "write", "batch_script", job_id, "-"),
        as_bob("scontrol", "show", "job", "-dd", job_id),
        as_bob("cat", str(job_log)),
        *(as_bob("cat", f"/proc/{pid}/environ") for pid in pids),
        *(as_bob("cat", f"/proc/{pid}/cmdline") for pid in pids),
    ]
    for secret in secrets:
        assert not [text for text in seen if secret in text]
    # Not even in the script as Slurm keeps it (read as root): the tokens travel by name.
    script = subprocess.run(["scontrol", "write", "batch_script", job_id, "-"],
                            capture_output=True, text=True, check=True).stdout
    assert "#SBATCH" in script and not [s for s in secrets if s in script]


def test_alice_logs_in_consents_spawns_with_her_tokens_and_logs_out(
        oidc_hub: OidcHub, page: Any, artifacts: Path) -> None:
    provider_login(page, "alice", oidc_hub.provider)
    page.wait_for_url(f"{HUB_URL}/hub/spawn**")
    me = hub_api(page, "GET", "/user").json()
    # alice@example.org is the Unix account alice.
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
    with TokenWatch(oidc_hub, "alice") as held:
        page.click("input[type=submit], button[type=submit]")
        try:
            page.wait_for_url("**/user/alice/lab**", timeout=120_000)
            page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)
            page.screenshot(path=str(artifacts / "oidc-jupyterlab.png"))
            jobs = [j for j in squeue_jobs("alice", other_hubs=True)
                    if job_hub_port(j["id"]) == HUB_API_PORT]
            assert len(jobs) == 1 and jobs[0]["user"] == "alice"
            assert jobs[0]["state"] == "RUNNING" and jobs[0]["partition"] == "debug"
            # The session holds her tokens (asked through its own kernel, as alice): the ones
            # the hub refreshed just before the spawn (the 4 s token was about to expire).
            env = session_environment(page, "alice", (ACCESS_TOKEN_ENV, ID_TOKEN_ENV))
            assert env[ACCESS_TOKEN_ENV] in held.access
            assert env[ACCESS_TOKEN_ENV] != first_access_token
            assert env[ID_TOKEN_ENV] in held.id
            claims = jwt_claims(env[ID_TOKEN_ENV])
            assert claims["sub"] == "sub-alice" and claims["aud"] == CLIENT_ID
            log = oidc_hub.process.log_file.read_text(errors="replace")
            assert "OIDC: refreshed the tokens of alice before a spawn" in log
            # bob cannot read them anywhere; the check sees them where alice can.
            secrets = [env[ACCESS_TOKEN_ENV], env[ID_TOKEN_ENV]]
            pids = processes_holding("alice", env[ACCESS_TOKEN_ENV])
            assert pids  # jupyterhub-singleuser and the kernel, readable to alice and root
            job_log = Path(os.path.expanduser("~alice"), ".shopfloor", "logs",
                           f"{jobs[0]['id']}.log")
            assert_bob_cannot_read(jobs[0]["id"], job_log, pids, secrets)
            assert job_log.exists() and not [
                s for s in secrets if s in job_log.read_text(errors="replace")]
            # The access token (4 s) expired meanwhile: the hub refreshed it with the refresh
            # token and kept alice logged in.
            # (The provider may accept a just-expired token for its clock tolerance: ask until
            # the hub's periodic refresh has exchanged it, bounded.)
            deadline = time.monotonic() + 45
            while env[ACCESS_TOKEN_ENV] == held.access[-1] and time.monotonic() < deadline:
                assert hub_api(page, "GET", "/user").json()["name"] == "alice"
                time.sleep(2)
            assert held.access[-1] != env[ACCESS_TOKEN_ENV]
        finally:
            stop = hub_api(page, "DELETE", "/users/alice/server")
            assert stop.status in (202, 204), stop.text()
    _, state = oidc_hub.auth_state("alice")

    # Clearing the hub's cookies alone (what logging out of the hub used to do) leaves alice
    # signed in at the provider: it sends her straight back, asking no password.
    page.context.clear_cookies(name=re.compile(r"^jupyterhub-"))
    page.goto(f"{HUB_URL}/hub/login")
    page.click("text=Sign in with Test IdP")
    page.wait_for_url(re.compile(rf"^({re.escape(HUB_URL)}/hub/(spawn|home)|"
                                 rf"{re.escape(oidc_hub.provider.issuer)}/interaction/)"))
    assert page.locator("input[name=password]").count() == 0
    if page.url.startswith(oidc_hub.provider.issuer):
        page.click("button[type=submit]")  # consent again, if the provider asks
        page.wait_for_url(f"{HUB_URL}/hub/**")
    assert hub_api(page, "GET", "/user").json()["name"] == "alice"
    _, state = oidc_hub.auth_state("alice")

    # Logging out of the hub ends the provider's session too (RP-initiated logout, no token in
    # the URL), and the provider sends the browser back to the hub's login page.
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{HUB_URL}/hub/logout")
    page.wait_for_selector("text=Sign out of the test identity provider?")
    end_session = parse_qs(urlparse(next(
        u for u in requested if u.startswith(f"{oidc_hub.provider.issuer}/session/end"))).query)
    assert "id_token_hint" not in end_session and state["id_token"] not in "".join(requested)
    assert end_session["client_id"] == [CLIENT_ID]
    assert end_session["post_logout_redirect_uri"] == [f"{HUB_URL}/hub/login"]
    page.click("button[value=yes]")
    page.wait_for_url(f"{HUB_URL}/hub/login**")
    assert not hub_cookies(page)
    assert hub_api(page, "GET", "/user").status == 403
    # Signing in again asks the provider for credentials.
    page.click("text=Sign in with Test IdP")
    page.wait_for_url(f"{oidc_hub.provider.issuer}/interaction/**")
    page.wait_for_selector("input[name=password]")
    # Neither the client secret nor alice's tokens reached the hub's log.
    log = oidc_hub.process.log_file.read_text(errors="replace")
    for secret in (oidc_hub.provider.client_secret, first_access_token, state["access_token"],
                   state["refresh_token"], state["id_token"], *held.access, *held.id):
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
    ("carol", f"carol@{DOMAIN}", "there is no account with this name here"),
    # A provider record claiming root never reaches a system account.
    ("mallory", f"root@{DOMAIN}", "this account cannot log in through the identity provider"),
    # Markup in a claim is shown as text, not run.
    ("eve", f"eve<img src=x onerror=alert(1)>@{DOMAIN}", "not a valid account name"),
    # "alice" of another domain, or without one, is not our alice.
    ("trudy", "alice@evil.example", f"this hub admits {DOMAIN} identities only"),
    ("oscar", "alice", f"expected name@{DOMAIN}"),
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
    if login in ("carol", "eve"):  # and no account was created on the way
        local = shown.rsplit("@", 1)[0]
        assert subprocess.run(["getent", "passwd", local], capture_output=True).returncode == 2


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
