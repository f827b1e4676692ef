"""How fast an app opens, against the real hub, Slurm and Voila, without giving anything away.

* A cold start reports where its time went (the service's phases, the job's own timings), its
  pool's kernel is the one started while Voila imported, and the progress page's status call
  returns the moment the app serves (no poll interval).
* The page reaches the viewer as Voila writes it: its head (styles, scripts) while a slow
  notebook still runs, not all at once when it has finished.
* A viewer who closes the page frees their kernel at once (Voila's goodbye beacon answers 204
  through the service), so reloading never runs into the per-viewer cap.
* The page's files reuse the viewer's groups for a few seconds, but the page itself asks the
  hub afresh: a viewer removed from the app's group is refused at the next page.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from appsupport import (
    SHARE_GROUP,
    apps_hub,
    install_notebook,
    kernel_id,
    origin_of,
    publish_app,
    share_group,
    wait_app_ready,
)
from hubclient import HubClient
from support import RunningHub

pytestmark = [pytest.mark.hub, pytest.mark.cluster, pytest.mark.slow]
PER_VIEWER = 2


@pytest.fixture(scope="module")
def ahub(local_cluster: object, passwords: dict[str, str]) -> Iterator[RunningHub]:
    with apps_hub(passwords, idle_stop_minutes=10, partition="cpu", walltime="0:20:00",
                  max_kernels_per_viewer=PER_VIEWER) as hub:
        yield hub


@pytest.fixture(scope="module")
def notebook() -> Path:
    return install_notebook("alice")


def say_goodbye(client: HubClient, origin: str, key: str, kernel: str) -> int:
    """What Voila's ``beforeunload`` handler sends when the tab closes (a beacon: a form POST
    with the origin's ``_xsrf`` cookie value)."""
    host = origin.split("//", 1)[1].split(":")[0]
    xsrf = next((c.value for c in client.http.cookies if c.domain == host
                 and c.name == "_xsrf"), "")
    resp = client.http.post(f"{origin}/services/apps/{key}/voila/api/shutdown/{kernel}",
                            data={"_xsrf": xsrf},
                            headers={"Sec-Fetch-Site": "same-origin"})
    return resp.status_code


def start_and_wait(alice: HubClient, origin: str, key: str) -> dict[str, object]:
    """Open a stopped app (its job is submitted: the progress page) and wait, as the progress
    page does, until the service says it is ready; its status then."""
    assert alice.http.get(f"{origin}/services/apps/{key}/").status_code == 202
    status_url = f"{origin}/services/apps/api/apps/{key}/status"
    deadline = time.monotonic() + 180
    status: dict[str, object] = {"state": "starting"}
    while status["state"] == "starting" and time.monotonic() < deadline:
        status = alice.http.get(status_url, params={"wait": "starting"}, timeout=30).json()
    assert status["state"] == "ready", status
    return status


def test_cold_start_says_where_its_time_went(ahub: RunningHub, notebook: Path) -> None:
    key = publish_app(ahub, notebook, "phases")
    origin = origin_of(ahub)
    alice = ahub.client("alice")
    first = alice.http.get(f"{origin}/services/apps/{key}/")
    assert first.status_code == 202  # the progress page: the job was submitted
    status_url = f"{origin}/services/apps/api/apps/{key}/status"
    deadline = time.monotonic() + 180
    status: dict[str, object] = {}
    shown = None
    while time.monotonic() < deadline:
        asked = time.monotonic()
        status = alice.http.get(status_url, params={"wait": "starting"}, timeout=30).json()
        waited = time.monotonic() - asked
        if status["state"] != "starting":
            break
        # Still starting: the service held the answer until there was something new to show
        # (or for its whole wait), so the page needs no poll interval of its own.
        assert waited > 1 or status["message"] != shown, (waited, status)
        shown = status["message"]
    assert status["state"] == "ready", status
    phases = status["phases"]
    assert isinstance(phases, dict)
    assert 0 <= phases["submitted"] <= phases["port"] <= phases["ready"], phases
    assert phases.get("running", 0) <= phases["ready"], phases
    timings = status["job_timings"]
    assert isinstance(timings, dict)
    assert 0 < timings["imports_s"] <= timings["voila_ready_s"] <= timings["listening_s"], timings
    # The port came once the pool's kernel had started: the first page is the pool's.
    page = wait_app_ready(alice, origin, key)
    assert kernel_id(page.text)
    late = alice.http.get(status_url).json()["job_timings"]
    assert late["pool_warm_s"] >= late["listening_s"], late
    # The pool's kernel is the one the job started before Voila's imports ended.
    assert 0 < late["kernel_ahead_s"] < late["imports_s"], late
    assert "kernel_ahead_unused_s" not in late, late


def test_the_first_page_of_a_cold_start_is_the_pools(ahub: RunningHub, notebook: Path) -> None:
    """The page asked for the moment the app is ready (as the progress page does) is rendered
    by the kernel the job preheated, not by a second kernel Voila starts for it alone."""
    key = publish_app(ahub, notebook, "first-page")
    origin = origin_of(ahub)
    alice = ahub.client("alice")
    status = start_and_wait(alice, origin, key)
    page = alice.http.get(f"{origin}/services/apps/{key}/", timeout=60)
    assert page.status_code == 200 and kernel_id(page.text)
    job_log = Path(f"/home/alice/.shopfloor/logs/app-{status['job_id']}.log")
    deadline = time.monotonic() + 10
    while "Using pre-heated kernel" not in job_log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)  # the job's log reaches the file a moment after the page
    lines = job_log.read_text().splitlines()
    used = next((i for i, line in enumerate(lines) if "Using pre-heated kernel" in line), None)
    assert used is not None, "\n".join(lines)
    assert sum("Kernel started" in line for line in lines[:used]) == 1, "\n".join(lines)


def test_closing_the_page_frees_the_viewers_kernel(ahub: RunningHub, notebook: Path) -> None:
    key = publish_app(ahub, notebook, "goodbye")
    origin = origin_of(ahub)
    bob = ahub.client("bob")
    for visit in range(PER_VIEWER + 2):  # more pages than the cap, one after the other
        page = wait_app_ready(bob, origin, key)
        assert page.status_code == 200, (visit, page.status_code, page.text[-300:])
        kernel = kernel_id(page.text)
        assert say_goodbye(bob, origin, key, kernel) == 204, visit
        # Gone for real: its REST path now answers like any unknown kernel.
        assert bob.http.get(f"{origin}/services/apps/{key}/api/kernels/{kernel}").status_code \
            == 404


def test_a_viewer_removed_from_the_group_loses_the_next_page(
        ahub: RunningHub, notebook: Path) -> None:
    share_group(ahub, ["bob"])
    key = publish_app(ahub, notebook, "grouped", audience="groups", names=[SHARE_GROUP])
    origin = origin_of(ahub)
    bob = ahub.client("bob")
    page = wait_app_ready(bob, origin, key)
    kernel = kernel_id(page.text)
    static = f"{origin}/services/apps/{key}/voila/static/voila.js"
    assert bob.http.get(static).status_code == 200
    admin = ahub.client("admin")
    admin.api("DELETE", f"/groups/{SHARE_GROUP}/users", token=admin.token(),
              json={"users": ["bob"]}).raise_for_status()
    try:
        # The page asks the hub afresh: refused at once, as if the app did not exist.
        assert bob.http.get(f"{origin}/services/apps/{key}/").status_code == 404
        # Everything else follows within the few seconds its answer may be reused.
        time.sleep(6)
        assert bob.http.get(static).status_code == 404
        assert bob.http.get(f"{origin}/services/apps/{key}/api/kernels/{kernel}").status_code \
            == 404
    finally:
        share_group(ahub, ["bob"])


def test_the_page_arrives_while_a_slow_notebook_runs(ahub: RunningHub, notebook: Path) -> None:
    slow = json.loads(notebook.read_text())
    slow["cells"].insert(0, {"cell_type": "code", "execution_count": None, "metadata": {},
                             "outputs": [], "source": "import time\ntime.sleep(4)"})
    path = notebook.with_name("slow_app.ipynb")
    subprocess.run(["sudo", "-u", "alice", "--", "tee", str(path)], input=json.dumps(slow),
                   text=True, check=True, capture_output=True)
    key = publish_app(ahub, path, "slow-page")
    origin = origin_of(ahub)
    alice = ahub.client("alice")
    start_and_wait(alice, origin, key)
    # Ready: the pool's kernel has started and is running the notebook (four seconds).
    asked = time.monotonic()
    with alice.http.get(f"{origin}/services/apps/{key}/", stream=True, timeout=60) as page:
        assert page.status_code == 200
        chunks = [(time.monotonic() - asked, chunk) for chunk in page.iter_content(None)]
    body = b"".join(chunk for _, chunk in chunks).decode()
    head_at = next(at for at, _ in chunks if b"<head" in b"".join(
        chunk for when, chunk in chunks if when <= at))
    done_at = chunks[-1][0]
    assert done_at - head_at > 2, [(round(at, 2), len(chunk)) for at, chunk in chunks]
    kernel = kernel_id(body)
    mine = alice.http.get(f"{origin}/services/apps/{key}/api/kernels/{kernel}", timeout=30)
    assert mine.status_code == 200, mine.text
