"""Attacks on published apps by their own viewers, against the real hub, Slurm and Voila.

bob tries to take over alice's viewer kernel (REST and websockets, through the service that
adds the valid secret), to exhaust the app with ``?template=`` and with many pages, and to
find kernel ids in logs. Each attack must get nothing.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from appsupport import apps_hub, install_notebook, kernel_id, origin_of, publish_app, wait_app_ready
from hubclient import HubClient
from support import RunningHub, squeue_jobs

pytestmark = [pytest.mark.hub, pytest.mark.cluster, pytest.mark.slow]
PER_VIEWER = 2
PER_APP = 3


@pytest.fixture(scope="module")
def ahub(local_cluster: object, passwords: dict[str, str]) -> Iterator[RunningHub]:
    with apps_hub(passwords, idle_stop_minutes=10, partition="cpu", walltime="0:20:00",
                  max_kernels_per_viewer=PER_VIEWER, max_kernels_per_app=PER_APP) as hub:
        yield hub


@pytest.fixture(scope="module")
def notebook() -> Path:
    return install_notebook("alice")


def origin_cookies(client: HubClient, origin: str) -> str:
    host = origin.split("//", 1)[1].split(":")[0]
    return "; ".join(f"{c.name}={c.value}" for c in client.http.cookies if c.domain == host)


def websocket_status(url: str, cookies: str) -> int:
    """The HTTP status of a websocket handshake (101 when it opens)."""
    from tornado.httpclient import HTTPClientError, HTTPRequest
    from tornado.websocket import websocket_connect

    async def connect() -> int:
        try:
            conn = await websocket_connect(HTTPRequest(url, headers={"Cookie": cookies},
                                                       request_timeout=20))
        except HTTPClientError as exc:
            return exc.code
        conn.close()
        return 101

    return asyncio.run(connect())


def alice_kernels() -> int:
    """Kernel processes of alice's app jobs (all nodes are this machine)."""
    out = subprocess.run(["pgrep", "-u", "alice", "-f", "ipykernel_launcher"],
                         capture_output=True, text=True, check=False).stdout
    return len(out.split())


def app_log(key: str) -> Path:
    owner, slug = key.split("/")
    job = next(j for j in squeue_jobs(owner) if j["name"].endswith(f"-{owner}-{slug}"))
    return Path(f"/home/{owner}/.shopfloor/logs/app-{job['id']}.log")


def test_bob_cannot_take_over_alices_kernel(ahub: RunningHub, notebook: Path) -> None:
    key = publish_app(ahub, notebook, "takeover")
    origin = origin_of(ahub)
    base = f"{origin}/services/apps/{key}"
    alice, bob = ahub.client("alice"), ahub.client("bob")
    theirs = kernel_id(wait_app_ready(alice, origin, key).text)  # alice, as a viewer
    mine = kernel_id(wait_app_ready(bob, origin, key).text)
    bob_cookies = origin_cookies(bob, origin)
    assert bob_cookies and theirs != mine

    # bob's own kernel works: the refusal below is not a broken proxy.
    assert bob.http.get(f"{base}/api/kernels/{mine}").status_code == 200
    assert websocket_status(f"{base.replace('http', 'ws', 1)}/api/kernels/{mine}/channels",
                            bob_cookies) == 101
    # alice's kernel: REST, kernel websocket, request-info websocket, shutdown. All refused.
    for method, path in (("GET", f"api/kernels/{theirs}"), ("DELETE", f"api/kernels/{theirs}"),
                         ("POST", f"voila/api/shutdown/{theirs}"), ("GET", "api/kernels"),
                         ("GET", "api/sessions")):
        resp = bob.http.request(method, f"{base}/{path}", headers={"Sec-Fetch-Site": "same-origin"})
        assert resp.status_code in ((404,) if method == "GET" else (403, 404)), (method, path)
        assert theirs not in resp.text
    for path in (f"api/kernels/{theirs}/channels", f"voila/query/{theirs}"):
        assert websocket_status(f"{base.replace('http', 'ws', 1)}/{path}", bob_cookies) in (
            403, 404), path
    # ...and alice's kernel still lives and answers her.
    assert alice.http.get(f"{base}/api/kernels/{theirs}").status_code == 200

    # Kernel ids never reach a log; the app's log is its owner's alone.
    log_file = app_log(key)
    assert log_file.stat().st_mode & 0o777 == 0o600
    assert log_file.parent.stat().st_mode & 0o777 == 0o700
    log_text = log_file.read_text()
    hub_log = ahub.log_text()
    for kernel in (theirs, mine):
        assert kernel not in log_text and kernel not in hub_log


def test_template_override_answers_at_once_without_a_kernel(
    ahub: RunningHub, notebook: Path
) -> None:
    key = publish_app(ahub, notebook, "templates")
    origin = origin_of(ahub)
    bob = ahub.client("bob")
    wait_app_ready(bob, origin, key)
    time.sleep(3)  # let the pool refill after bob's page took its kernel
    before = alice_kernels()
    for query in ("template=reveal", "template=../../etc", "theme=dark", "template=lab&x=1"):
        started = time.monotonic()
        resp = bob.http.get(f"{origin}/services/apps/{key}/?{query}", timeout=10)
        assert resp.status_code == 400 and "template and theme" in resp.text, query
        assert time.monotonic() - started < 3, query
    time.sleep(2)
    assert alice_kernels() == before


def test_kernels_per_viewer_and_per_app_are_capped(ahub: RunningHub, notebook: Path) -> None:
    key = publish_app(ahub, notebook, "capped")
    origin = origin_of(ahub)
    page = f"{origin}/services/apps/{key}/"
    bob, trainer, admin = (ahub.client(u) for u in ("bob", "trainer", "admin"))
    wait_app_ready(bob, origin, key)  # bob's first page
    assert bob.http.get(page).status_code == 200  # and his second
    refused = bob.http.get(page)
    assert refused.status_code == 429
    assert f"You have this app open {PER_VIEWER} times" in refused.text
    assert "kernelId" not in refused.text
    assert wait_app_ready(trainer, origin, key).status_code == 200  # the app's third kernel
    full = wait_app_ready(admin, origin, key, expect=503)
    assert f"as many viewers as it can ({PER_APP})" in full.text
