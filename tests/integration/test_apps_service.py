"""Published apps for real: hub + apps service + Voila app jobs on the local Slurm cluster."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from appsupport import (
    SHARE_GROUP,
    apps_hub,
    install_notebook,
    kernel_id,
    origin_of,
    service_login,
    share_group,
    wait_app_ready,
)
from hubclient import HubClient
from support import RunningHub, squeue_jobs

pytestmark = [pytest.mark.hub, pytest.mark.cluster, pytest.mark.slow]
IDLE_MINUTES = 0.25


@pytest.fixture(scope="module")
def ahub(local_cluster: object, passwords: dict[str, str]) -> Iterator[RunningHub]:
    with apps_hub(passwords, idle_stop_minutes=IDLE_MINUTES, allow_public=True,
                  partition="cpu", walltime="0:20:00") as hub:
        share_group(hub, ["bob"])
        yield hub


@pytest.fixture(scope="module")
def notebook() -> Path:
    return install_notebook("alice")


def publish(hub: RunningHub, token: str, notebook: Path, **fields: object) -> requests.Response:
    body = {"notebook": str(notebook), "title": "Wave explorer", **fields}
    return requests.post(f"{hub.url}/services/apps/api/apps", json=body, timeout=60,
                         headers={"Authorization": f"token {token}"})


def logged_in(hub: RunningHub, user: str) -> HubClient:
    client = hub.client(user)
    service_login(client)
    return client


def app_jobs(key: str) -> list[dict[str, str]]:
    owner, slug = key.split("/")
    return [j for j in squeue_jobs(owner) if j["name"].endswith(f"-{owner}-{slug}")
            and j["state"] in ("RUNNING", "PENDING")]


def test_publish_share_open_republish_rollback_cli(ahub: RunningHub, notebook: Path) -> None:
    alice = ahub.client("alice")
    token = alice.token()
    resp = publish(ahub, token, notebook, slug="wave", audience="groups", names=[SHARE_GROUP],
                   files=["logo.svg"], description="Move the slider.", note="First cut")
    assert resp.status_code == 201, resp.text
    app = resp.json()["app"]
    assert (app["version"], app["audience"], app["has_thumbnail"]) == (1, "groups", True)
    assert (app["note"], [v["note"] for v in app["history"]]) == ("First cut", ["First cut"])
    assert resp.json()["url"] == f"{origin_of(ahub)}/services/apps/alice/wave/"

    # The snapshot belongs to the service (root, or hub.service_user): alice can read it, not
    # change it; nobody else can read it.
    store = next(Path(ahub.site.hub.state_dir).parent.glob("apps/alice/wave/v1"))
    copied = store / "slider_app.ipynb"
    assert copied.stat().st_uid != pwd.getpwnam("alice").pw_uid
    assert not copied.stat().st_mode & 0o027  # no group write, nothing for others
    write = subprocess.run(["sudo", "-u", "alice", "--", "sh", "-c", f"echo x >> {copied}"],
                           capture_output=True, text=True, check=False)
    assert write.returncode != 0 and "Permission denied" in write.stderr
    for user, readable in (("alice", True), ("bob", False)):
        read = subprocess.run(["sudo", "-u", user, "--", "head", "-c1", str(copied)],
                              capture_output=True, text=True, check=False)
        assert (read.returncode == 0) == readable, (user, read.stderr)

    bob = logged_in(ahub, "bob")
    gallery = bob.http.get(f"{ahub.url}/services/apps/?filter=shared").text
    assert 'data-app="alice/wave"' in gallery and "v1: First cut" in gallery
    assert f'href="{origin_of(ahub)}/services/apps/alice/wave/"' in gallery
    page = wait_app_ready(bob, origin_of(ahub), "alice/wave")
    assert "jupyter-widgets" in page.text.lower() and "wave_svg(" not in page.text  # stripped
    jobs = app_jobs("alice/wave")
    assert len(jobs) == 1 and jobs[0]["user"] == "alice" and jobs[0]["partition"] == "cpu"

    env = {**os.environ, "JUPYTERHUB_API_TOKEN": token,
           "SHOPFLOOR_APPS_URL": f"{ahub.url}/services/apps"}
    cli = ["/opt/shopfloor/venv/bin/shopfloor", "apps"]
    out = subprocess.run([*cli, "publish", str(notebook), "--title", "Wave explorer two",
                          "--slug", "wave", "--audience", "groups", "--names", SHARE_GROUP,
                          "--note", "Second <try> & more"],
                         env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0 and "v2" in out.stdout, out.stderr
    versions = subprocess.run([*cli, "versions", "alice/wave"], env=env, capture_output=True,
                              text=True, check=True).stdout.splitlines()
    assert versions[0].startswith("* v2") and versions[0].endswith("Second <try> & more")
    assert versions[1].startswith("  v1") and versions[1].endswith("First cut")
    gallery = bob.http.get(f"{ahub.url}/services/apps/?filter=shared").text
    assert "v2: Second &lt;try&gt; &amp; more" in gallery  # escaped on the page
    assert not app_jobs("alice/wave") or _gone_soon("alice/wave")  # republish stops v1's job
    listing = subprocess.run([*cli, "list", "--filter", "mine", "--json"], env=env,
                             capture_output=True, text=True, check=True).stdout
    assert [(a["slug"], a["version"], a["versions"]) for a in json.loads(listing)
            if a["slug"] == "wave"] == [("wave", 2, [1, 2])]
    out = subprocess.run([*cli, "rollback", "alice/wave"], env=env, capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0 and "v1" in out.stdout, out.stderr
    summary = bob.http.get(f"{ahub.url}/services/apps/api/apps/alice/wave").json()["app"]
    assert (summary["version"], summary["title"]) == (1, "Wave explorer")
    assert summary["note"] == "First cut" and "now serves v1: First cut" in out.stdout
    assert [(v["version"], v["note"]) for v in summary["history"]] == [
        (1, "First cut"), (2, "Second <try> & more")]
    # bob may open it but not change it.
    resp = bob.http.delete(f"{ahub.url}/services/apps/api/apps/alice/wave")
    assert resp.status_code == 403
    out = subprocess.run([*cli, "publish", str(notebook), "--title", "<script>", "--audience",
                          "groups", "--names", "no-such-group"], env=env, capture_output=True,
                         text=True, check=False)
    assert out.returncode == 2 and "title:" in out.stderr and "names:" in out.stderr


def _gone_soon(key: str, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not app_jobs(key):
            return True
        time.sleep(0.5)
    return False


def test_private_app_answers_like_a_missing_one(ahub: RunningHub, notebook: Path) -> None:
    """A private app is invisible: bob gets the same 404 (status and body, with the name
    swapped) as for an app that does not exist, on every route."""
    alice = ahub.client("alice")
    resp = publish(ahub, alice.token(), notebook, slug="secret-plans", audience="private")
    assert resp.status_code == 201, resp.text
    bob = logged_in(ahub, "bob")
    origin = origin_of(ahub)
    wait_app_ready(bob, origin, "alice/secret-plans", expect=404)  # logs bob in on the origin
    assert "alice/secret-plans" not in bob.http.get(f"{ahub.url}/services/apps/").text
    for base, route in ((origin, "/services/apps/{}/"), (ahub.url, "/services/apps/api/apps/{}"),
                        (ahub.url, "/services/apps/api/thumbnails/{}"),
                        (origin, "/services/apps/api/apps/{}/status")):
        private = bob.http.get(base + route.format("alice/secret-plans"))
        missing = bob.http.get(base + route.format("alice/no-such-plans"))
        assert private.status_code == missing.status_code == 404, route
        assert private.text.replace("secret", "no-such") == missing.text, route
    listed = bob.api("GET", "/users/bob")  # sanity: bob is logged in to the hub
    assert listed.status_code == 200
    # Not logged in: sent to the login page, never to the app, whether it exists or not.
    for slug in ("secret-plans", "no-such-plans"):
        anon = requests.get(f"{origin}/services/apps/alice/{slug}/", allow_redirects=False,
                            timeout=30)
        assert anon.status_code == 302, slug
        assert anon.headers["Location"].startswith(f"{ahub.url}/hub/api/oauth2/authorize")
    assert not app_jobs("alice/secret-plans")
    # alice sees it under "mine".
    alice_view = logged_in(ahub, "alice").http.get(f"{ahub.url}/services/apps/?filter=mine")
    assert 'data-app="alice/secret-plans"' in alice_view.text


def test_public_app_opens_without_login(ahub: RunningHub, notebook: Path) -> None:
    alice = ahub.client("alice")
    resp = publish(ahub, alice.token(), notebook, slug="public-wave", audience="public")
    assert resp.status_code == 201, resp.text
    anonymous = requests.Session()
    page = wait_app_ready(anonymous, origin_of(ahub), "alice/public-wave")
    assert "jupyter-widgets" in page.text.lower()


def test_publish_validation_names_each_field(ahub: RunningHub, notebook: Path) -> None:
    token = ahub.client("alice").token()
    cases = {
        "title": {"title": "x" * 200},
        "slug": {"slug": "../../etc"},
        "notebook": {"notebook": "/etc/passwd.ipynb"},
        "files": {"files": ["../private-notes.svg"]},
        "names": {"audience": "users", "names": ["nobody-here"]},
        "audience": {"audience": "everyone"},
        "compute.partition": {"compute": {"partition": "nope"}},
        "note": {"note": "two\nlines"},
        "compute.walltime": {"compute": {"partition": "debug", "walltime": "5:00:00"}},
    }
    for field, fields in cases.items():
        resp = publish(ahub, token, Path(fields.pop("notebook", str(notebook))), **fields)
        assert resp.status_code == 400, (field, resp.text)
        assert field in resp.json()["problems"], (field, resp.text)
    resp = publish(ahub, token, notebook.with_name("missing.ipynb"), slug="missing")
    assert resp.status_code == 400 and "notebook" in resp.json()["problems"]


def _kernel_messages(url: str, cookies: str, kernel: str) -> dict[str, list[str]]:
    """Send kernel_info_request and execute_request over the app's kernel websocket."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    async def talk() -> dict[str, list[str]]:
        conn = await websocket_connect(HTTPRequest(url, headers={"Cookie": cookies}))
        session = uuid.uuid4().hex
        replies: dict[str, list[str]] = {}

        def message(msg_type: str, content: dict[str, object]) -> str:
            msg_id = uuid.uuid4().hex
            replies[msg_id] = []
            header = {"msg_id": msg_id, "msg_type": msg_type, "session": session,
                      "username": "viewer", "version": "5.3", "date": ""}
            return json.dumps({"header": header, "parent_header": {}, "metadata": {},
                               "content": content, "channel": "shell", "buffers": []})

        await conn.write_message(message("execute_request", {
            "code": "import os; print('EXECUTED', os.getuid())", "silent": False,
            "store_history": False, "user_expressions": {}, "allow_stdin": False}))
        await conn.write_message(message("kernel_info_request", {}))
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            try:
                raw = await asyncio.wait_for(conn.read_message(), deadline - time.monotonic())
            except TimeoutError:
                break
            if raw is None:
                break
            if isinstance(raw, bytes):
                continue
            msg = json.loads(raw)
            parent = msg.get("parent_header", {}).get("msg_id")
            if parent in replies:
                replies[parent].append(msg["msg_type"] + ":" + json.dumps(msg["content"]))
        conn.close()
        return replies

    replies = asyncio.run(talk())
    assert kernel  # the websocket URL names it
    return replies


def test_viewer_cannot_execute_code_or_read_outside_snapshot(
    ahub: RunningHub, notebook: Path
) -> None:
    alice = ahub.client("alice")
    resp = publish(ahub, alice.token(), notebook, slug="locked", audience="users",
                   names=["bob"], files=["logo.svg"])
    assert resp.status_code == 201, resp.text
    bob = logged_in(ahub, "bob")
    page = wait_app_ready(bob, origin_of(ahub), "alice/locked")
    kernel = kernel_id(page.text)
    base = f"{origin_of(ahub)}/services/apps/alice/locked"
    cookies = "; ".join(f"{c.name}={c.value}" for c in bob.http.cookies)
    ws_url = base.replace("http://", "ws://") + f"/api/kernels/{kernel}/channels"
    replies = _kernel_messages(ws_url, cookies, kernel)
    kinds = [r.split(":", 1)[0] for rs in replies.values() for r in rs]
    assert "kernel_info_reply" in kinds, replies  # the socket works...
    assert not any("EXECUTED" in r or r.startswith("execute_reply") for rs in replies.values()
                   for r in rs), replies  # ...but code never runs

    # Files: the declared file is served; nothing outside the snapshot is.
    assert bob.http.get(f"{base}/voila/files/logo.svg").status_code == 200
    for path in ("/voila/files/../../private-notes.svg", "/voila/files/%2e%2e/%2e%2e/etc/passwd",
                 "/voila/files//home/alice/private-notes.svg", "/voila/files/slider_app.ipynb",
                 "/api/contents", "/voila/render/slider_app.ipynb", "/lab", "/terminals/1",
                 "/voila/tree"):
        resp = bob.http.get(base + path, allow_redirects=False)
        assert resp.status_code in (302, 400, 403, 404), (path, resp.status_code)
        assert "root:x:0" not in resp.text and "<circle" not in resp.text, path

    # The job itself answers only requests that carry the service's secret.
    job = app_jobs("alice/locked")[0]
    log_text = Path(f"/home/alice/.shopfloor/logs/app-{job['id']}.log").read_text()
    address = re.search(r"on (\d+\.\d+\.\d+\.\d+:\d+)", log_text).group(1)  # type: ignore[union-attr]
    direct = requests.get(f"http://{address}/services/apps/alice/locked/", timeout=10)
    assert direct.status_code == 403
    secret_header = {"X-Shopfloor-App-Secret": "guess"}
    assert requests.get(f"http://{address}/services/apps/alice/locked/", headers=secret_header,
                        timeout=10).status_code == 403


def test_idle_app_stops_and_restarts_on_next_visit(ahub: RunningHub, notebook: Path) -> None:
    alice = ahub.client("alice")
    resp = publish(ahub, alice.token(), notebook, slug="sleepy", audience="hub")
    assert resp.status_code == 201, resp.text
    bob = logged_in(ahub, "bob")
    wait_app_ready(bob, origin_of(ahub), "alice/sleepy")
    assert app_jobs("alice/sleepy")
    deadline = time.monotonic() + IDLE_MINUTES * 60 + 30
    while app_jobs("alice/sleepy") and time.monotonic() < deadline:
        time.sleep(1)
    assert not app_jobs("alice/sleepy"), "the idle app's job was not stopped"
    first = bob.http.get(f"{origin_of(ahub)}/services/apps/alice/sleepy/")
    assert first.status_code == 202 and "Starting" in first.text
    wait_app_ready(bob, origin_of(ahub), "alice/sleepy")
    summary = logged_in(ahub, "alice").http.get(
        f"{ahub.url}/services/apps/api/apps/alice/sleepy").json()["app"]
    assert summary["viewers"] == 1 and summary["sessions"] >= 2
