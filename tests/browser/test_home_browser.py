"""The front door in real Chromium: alice's home page, help with expiring access, bob's nothing.

A hub of its own ($SHOPFLOOR_TEST_PORT_BASE + 40..42; apps service +51, workshop service +53)
with a one-second expiry check and a two-second auth cache in sessions, so that "access ends
at expiry" is seen within seconds. alice has a running session (cpu), a pending one (debug,
filled by a job of bob's), a published app and a workshop she co-trains.
"""

from __future__ import annotations

import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from appsupport import install_notebook, service_login
from hubclient import HubClient
from support import PORT_BASE, RunningHub, fill_debug_partition, job_hub_port, write_test_site
from workshopsupport import running_workshop, trainer_client
from workshopsupport import wait_for_service as wait_for_workshops

from shopfloor.demo.hub import Hub
from shopfloor.site import load_site

pytestmark = [pytest.mark.browser, pytest.mark.hub, pytest.mark.slow]

PORTS = {"bind_url": PORT_BASE + 40, "hub_bind_url": PORT_BASE + 41,
         "proxy_api_url": PORT_BASE + 42}
RUNNING, WAITING = "work", "waiting"
APP_TITLE = "Front door app"
SESSION = {"partition": "cpu", "cpus": 1, "memory_gb": 0.5, "walltime": "20"}


def cancel_our_jobs() -> None:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True,
                         check=True).stdout.split()
    ours = [j for j in out if job_hub_port(j) == PORTS["hub_bind_url"]]
    if ours:
        subprocess.run(["scancel", *ours], check=False)


@pytest.fixture(scope="module")
def fhub(local_cluster: object, passwords: dict[str, str]) -> Iterator[RunningHub]:
    directory = Path(tempfile.mkdtemp(prefix="shopfloor-home-hub-"))
    directory.chmod(0o711)  # the app store beside the hub's state must be reachable by owners
    site_file = write_test_site(directory)
    data = yaml.safe_load(site_file.read_text())
    for key, port in PORTS.items():
        data["hub"][key] = f"http://127.0.0.1:{port}"
    data["support"] = {**data.get("support", {}), "expiry_check_seconds": 1,
                       "session_auth_cache_seconds": 2}
    data["home"] = {**data.get("home", {}), "refresh_seconds": 1}
    site_file.write_text(yaml.safe_dump(data, sort_keys=False))
    site = load_site(site_file)
    process = Hub(site, site_file)
    cancel_our_jobs()
    process.start(detach=True)
    try:
        yield RunningHub(site.hub.bind_url, site, site_file, process, passwords)
    finally:
        process.stop()
        cancel_our_jobs()


@pytest.fixture(scope="module")
def alice_things(fhub: RunningHub) -> Iterator[dict[str, str]]:
    """alice's running and pending sessions, her app and her workshop; all removed after."""
    alice = fhub.client("alice")
    token = alice.token()
    filler = ""
    wait_for_workshops(fhub)
    trainer = trainer_client(fhub)
    try:
        resp = alice.api("POST", f"/users/alice/servers/{RUNNING}", json={"user_options": SESSION})
        assert resp.status_code in (201, 202), resp.text
        filler = fill_debug_partition()
        resp = alice.api("POST", f"/users/alice/servers/{WAITING}", json={"user_options": {
            **SESSION, "partition": "debug", "walltime": "10"}})
        assert resp.status_code in (201, 202), resp.text
        service_login(alice)
        notebook = install_notebook("alice")
        resp = requests.post(f"{fhub.url}/services/apps/api/apps", timeout=60,
                             headers={"Authorization": f"token {token}"},
                             json={"notebook": str(notebook), "title": APP_TITLE})
        assert resp.status_code == 201, resp.text
        slug = resp.json()["app"]["slug"]
        with running_workshop(fhub, trainer, "h", title="Front door workshop", hours=1,
                              capacity=2, partition="debug", trainers=["alice"]) as workshop:
            alice.wait_ready(RUNNING, timeout=180)
            yield {"slug": slug, "workshop": str(workshop["name"]), "filler": filler}
    finally:
        requests.delete(f"{fhub.url}/services/apps/api/apps/alice/{locals().get('slug', 'x')}",
                        headers={"Authorization": f"token {token}"}, timeout=30)
        if filler:
            subprocess.run(["scancel", filler], check=False)
        for server in (RUNNING, WAITING):
            alice.stop(server)


def log_in(page, hub: RunningHub, user: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{hub.url}/hub/login")
    page.fill("#username_input", user)
    page.fill("#password_input", hub.passwords[user])
    page.click("#login_submit")
    page.wait_for_load_state()


def session_row(page, name: str):  # type: ignore[no-untyped-def]
    return page.locator(f"#sf-sessions tr[data-session='{name}']")


def test_alice_sees_her_sessions_app_and_workshop(fhub: RunningHub, alice_things: dict[str, str],
                                                  page, artifacts: Path) -> None:  # type: ignore[no-untyped-def]
    log_in(page, fhub, "alice")
    page.goto(f"{fhub.url}/hub/home")
    running = session_row(page, RUNNING)
    running.wait_for(timeout=30_000)
    page.wait_for_selector(f"#sf-sessions tr[data-session='{RUNNING}'][data-state='running']",
                           timeout=30_000)
    assert "cpu" in running.inner_text()
    assert "left" in running.locator(".sf-detail").inner_text()  # time left in the job
    # The pending one says why, in words (the debug node is full of bob's job).
    page.wait_for_selector(f"#sf-sessions tr[data-session='{WAITING}'][data-state='pending']",
                           timeout=60_000)
    detail = session_row(page, WAITING).locator(".sf-detail").inner_text()
    assert "Queued on debug" in detail, detail
    assert APP_TITLE in page.locator("#sf-apps").inner_text()
    workshop = page.locator(f".sf-workshop[data-workshop='{alice_things['workshop']}']")
    assert "you run it" in workshop.inner_text()
    assert "demo devices" in page.locator("#sf-announcements").inner_text()
    assert "2 models and 2 datasets" in page.locator("#sf-catalog").inner_text()
    page.screenshot(path=str(artifacts / "home-page.png"), full_page=True)
    # The page keeps its latest data (it polls the API rather than reloading).
    assert page.evaluate("window.shopfloorHome.last().sessions.length") >= 2
    # Everything on the page is in the API too.
    home = fhub.client("alice").api("GET", "/shopfloor/home").json()
    assert {s["name"] for s in home["sessions"]} >= {RUNNING, WAITING}
    assert [a["slug"] for a in home["apps"]] == [alice_things["slug"]]
    page.goto(f"{fhub.url}/hub/catalog")
    assert "support-replies" in page.locator("#sf-catalog-datasets").inner_text()
    assert "/opt/shopfloor/models/minilm-l6" in page.locator("#sf-catalog-models").inner_text()


def test_help_with_expiring_access(fhub: RunningHub, alice_things: dict[str, str], browser,
                                   artifacts: Path) -> None:  # type: ignore[no-untyped-def]
    alice_page = browser.new_context().new_page()
    support_page = browser.new_context().new_page()
    bob_page = browser.new_context().new_page()
    try:
        log_in(alice_page, fhub, "alice")
        alice_page.goto(f"{fhub.url}/hub/home")
        session_row(alice_page, RUNNING).locator(".sf-ask-help").click()
        alice_page.fill("#sf-help-message", "My training stops with an out-of-memory error")
        alice_page.fill("#sf-help-hours", "1")
        alice_page.click("#sf-help-send")
        request = alice_page.locator("#sf-requests tr[data-state='open']")
        request.wait_for(timeout=15_000)
        assert "support" in request.locator(".sf-access").inner_text()  # who has access
        request_id = request.get_attribute("data-request")

        # The support member sees the request with its facts and enters the session.
        log_in(support_page, fhub, "support")
        support_page.goto(f"{fhub.url}/hub/support")
        row = support_page.locator(f"#sf-queue tr[data-request='{request_id}']")
        text = row.inner_text()
        assert "alice" in text and "out-of-memory" in text and RUNNING in text
        row.locator(".sf-open-shared").click()
        # JupyterHub asks someone entering another user's server to confirm (its OAuth page).
        support_page.wait_for_url("**/oauth2/authorize**", timeout=60_000)
        support_page.click("button[type=submit]")
        support_page.wait_for_url(f"**/user/alice/{RUNNING}/**", timeout=60_000)
        support_page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)
        support_page.screenshot(path=str(artifacts / "support-shared-session.png"))

        # bob sees none of it and cannot enter alice's shared session.
        log_in(bob_page, fhub, "bob")
        assert bob_page.goto(f"{fhub.url}/hub/support").status == 404
        bob_page.goto(f"{fhub.url}/hub/home")
        bob_page.wait_for_selector("#sf-sessions tbody tr", timeout=15_000)
        assert "alice" not in bob_page.locator("#sf-home").inner_text()
        bob_entry = bob_page.goto(f"{fhub.url}/user/alice/{RUNNING}/lab")
        assert bob_entry.status in (403, 404), bob_entry.status
        bob = fhub.client("bob")
        assert bob.api("GET", f"/shopfloor/support/{request_id}").status_code == 404
        assert bob.api("DELETE", f"/shopfloor/support/{request_id}").status_code == 404
        assert bob.api("GET", "/shopfloor/support").json()["mine"] == []
        assert bob.http.get(f"{fhub.url}/hub/support/{request_id}/open").status_code == 404
        home = bob.api("GET", "/shopfloor/home").json()
        assert not [s for s in home["sessions"] if s["name"] in (RUNNING, WAITING)]
        assert home["apps"] == [] and home["workshops"] == []
        assert bob.api("POST", "/shopfloor/support", json={
            "server": RUNNING, "message": "let me in", "hours": 1}).status_code == 400

        # Time passes: the request is due now. Nobody acts; the hub revokes on its own.
        db = Path(fhub.site.hub.state_dir) / "support" / "support.sqlite"
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE requests SET expires = ? WHERE id = ?",
                         (time.time(), int(request_id or 0)))
        deadline = time.monotonic() + 30
        status = 200
        while time.monotonic() < deadline:
            time.sleep(2)
            response = support_page.goto(f"{fhub.url}/user/alice/{RUNNING}/api/status")
            status = response.status if response else 0
            if status in (403, 404):
                break
        assert status in (403, 404), f"support still reaches alice's session ({status})"
        alice_page.wait_for_selector(f"#sf-requests tr[data-request='{request_id}']"
                                     "[data-state='expired']", timeout=15_000)
        journal = fhub.client("alice").api("GET", f"/shopfloor/support/{request_id}").json()
        actions = [(j["actor"], j["action"]) for j in journal["journal"]]
        assert actions == [("alice", "grant"), ("support", "use"), ("hub", "expire")], actions
        log = fhub.log_text()
        assert f"support: request {request_id}: grant by alice" in log
        assert f"support: request {request_id}: expire by hub" in log
    finally:
        for page in (alice_page, support_page, bob_page):
            page.context.close()


def test_alice_revokes_and_bad_requests_name_the_field(fhub: RunningHub,
                                                       alice_things: dict[str, str],
                                                       page) -> None:  # type: ignore[no-untyped-def]
    alice = fhub.client("alice")
    bad = alice.api("POST", "/shopfloor/support", json={"server": RUNNING, "message": "",
                                                         "hours": 25})
    assert bad.status_code == 400
    assert set(bad.json()["problems"]) == {"message", "hours"}
    made = alice.api("POST", "/shopfloor/support", json={"server": RUNNING,
                                                          "message": "please look", "hours": 2})
    assert made.status_code == 201, made.text
    request_id = made.json()["id"]
    admin = fhub.client("admin")
    shares = admin.api("GET", f"/shares/alice/{RUNNING}", token=admin.token()).json()["items"]
    # JupyterHub's own sharing, one share per support member, this one server only.
    assert [(s["user"]["name"], s["scopes"]) for s in shares] == [
        ("support", [f"access:servers!server=alice/{RUNNING}"])]
    log_in(page, fhub, "alice")
    page.goto(f"{fhub.url}/hub/home")
    page.locator(f"#sf-requests tr[data-request='{request_id}'] .sf-revoke").click()
    page.wait_for_selector(f"#sf-requests tr[data-request='{request_id}'][data-state='revoked']",
                           timeout=15_000)
    shares = admin.api("GET", f"/shares/alice/{RUNNING}", token=admin.token()).json()["items"]
    assert shares == []
    support = HubClient(fhub.url)
    support.login("support", fhub.passwords["support"])
    assert support.http.get(f"{fhub.url}/hub/support/{request_id}/open",
                            allow_redirects=False).status_code == 404
