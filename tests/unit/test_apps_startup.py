"""An app's cold start without a cluster: the job's port report with its start-up timings, the
service taking it (only with the run's secret, only known numbers, never a new port), and the
wake-up that lets the progress page reload the moment the app serves."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from apprunner_support import SECRET, demo_runner

from shopfloor.apps.job import KERNEL_ID, SECRET_HEADER, process_age, report_port
from shopfloor.apps.jobstart import SECRET_ENV
from shopfloor.extensions.apps_runner import JOB_TIMINGS, AppRunner, Run

NOTEBOOK = Path(__file__).resolve().parents[2] / "example_notebooks" / "slider_app.ipynb"


@pytest.fixture
def runner() -> Iterator[AppRunner]:
    with demo_runner("shopfloor-apps-startup-") as made:
        yield made


def test_the_port_needs_the_runs_secret(runner: AppRunner) -> None:
    assert not runner.callback("alice/wave", "t" * 43, 8123)
    assert not runner.callback("alice/other", SECRET, 8123)
    for port in (True, "8123", 80, 70000, 8123.0, None):
        assert not runner.callback("alice/wave", SECRET, port), port
    assert runner.runs["alice/wave"].port == 0
    assert runner.callback("alice/wave", SECRET, 8123)
    assert runner.runs["alice/wave"].port == 8123
    assert "port" in runner.runs["alice/wave"].phases


def test_a_reported_port_cannot_be_moved(runner: AppRunner) -> None:
    """The second report (with the pool's warm-up) may not point the proxy elsewhere."""
    assert runner.callback("alice/wave", SECRET, 8123, {"listening_s": 1.5})
    assert not runner.callback("alice/wave", SECRET, 8124, {"pool_warm_s": 2.0})
    assert runner.callback("alice/wave", SECRET, 8123, {"pool_warm_s": 2.5})
    run = runner.runs["alice/wave"]
    assert run.port == 8123
    assert run.job_timings == {"listening_s": 1.5, "pool_warm_s": 2.5}


def test_only_known_plain_timings_are_kept(runner: AppRunner) -> None:
    """The job is the owner's code: what it reports is bounded and never echoed raw."""
    timings: dict[str, Any] = {
        "imports_s": 1.25, "voila_ready_s": True, "listening_s": "2", "pool_warm_s": -1,
        "evil": 3, "<script>": 1.0,
    }
    assert runner.callback("alice/wave", SECRET, 8123, timings)
    assert runner.runs["alice/wave"].job_timings == {"imports_s": 1.25}
    for bad in (float("nan"), float("inf"), 1e9, [1], {"a": 1}):
        assert runner.callback("alice/wave", SECRET, 8123, {"pool_warm_s": bad})
        assert "pool_warm_s" not in runner.runs["alice/wave"].job_timings, bad
    assert runner.callback("alice/wave", SECRET, 8123, ["not", "a", "dict"])
    assert set(runner.runs["alice/wave"].job_timings) <= set(JOB_TIMINGS)


async def test_the_callback_wakes_the_waiter_at_once(runner: AppRunner) -> None:
    run = runner.runs["alice/wave"]
    waiter = asyncio.ensure_future(run.wait_change(30))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    started = time.monotonic()
    assert runner.callback("alice/wave", SECRET, 8123)
    await asyncio.wait_for(waiter, 2)
    assert time.monotonic() - started < 1


async def test_a_state_change_wakes_the_progress_page() -> None:
    run = Run(key="alice/wave", version=1, secret=SECRET)
    waiter = asyncio.ensure_future(run.wait_change(30))
    await asyncio.sleep(0.05)
    run.set_state("ready", "Ready")
    await asyncio.wait_for(waiter, 2)
    started = time.monotonic()
    await run.wait_change(0.2)  # nothing changes: it returns after its timeout
    assert 0.15 < time.monotonic() - started < 2


def test_phases_keep_their_first_time() -> None:
    run = Run(key="alice/wave", version=1, secret=SECRET, submitted=time.monotonic() - 2)
    run.mark("running")
    first = run.phases["running"]
    time.sleep(0.01)
    run.mark("running")
    assert run.phases["running"] == first and 1.9 < first < 10


def test_process_age_is_this_process() -> None:
    age = process_age()
    assert 0 < age < time.clock_gettime(time.CLOCK_BOOTTIME)


class _Callback(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, Any], str]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.received.append((json.loads(self.rfile.read(length)),
                              self.headers.get(SECRET_HEADER, "")))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def service() -> Iterator[tuple[str, list[tuple[dict[str, Any], str]]]]:
    server = HTTPServer(("127.0.0.1", 0), _Callback)
    _Callback.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/cb", _Callback.received
    finally:
        server.shutdown()


def test_the_job_reports_port_and_timings_with_the_secret(
        service: tuple[str, list[tuple[dict[str, Any], str]]]) -> None:
    url, received = service
    report_port(url, 8123, SECRET, timings={"imports_s": 1.0, "listening_s": 2.0})
    body, secret = received[-1]
    assert body == {"port": 8123, "timings": {"imports_s": 1.0, "listening_s": 2.0}}
    assert secret == SECRET
    report_port(url, 8123, SECRET)
    assert received[-1][0] == {"port": 8123}


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def test_the_job_starts_its_kernel_ahead_without_the_secret(
        service: tuple[str, list[tuple[dict[str, Any], str]]], tmp_path: Path) -> None:
    """The job's entry point, as the app's Slurm job runs it (real Voila, no cluster): it
    imports Voila without the unused slow import, its first kernel starts before Voila's
    imports end and is the pool's (one kernel, the one started ahead), the page renders with
    it, and the kernel's environment has Voila's variables but not the run's secret."""
    url, received = service
    notebook = tmp_path / "app.ipynb"
    notebook.write_bytes(NOTEBOOK.read_bytes())
    env = {k: v for k, v in os.environ.items() if k != "SLURMD_NODENAME"}
    job = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "shopfloor.apps.jobstart", "--notebook",
         str(notebook), "--base-url", "/services/apps/alice/wave/", "--callback", url],
        env={**env, SECRET_ENV: SECRET}, cwd=tmp_path, stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "job.err").open("w"))
    try:
        deadline = time.monotonic() + 120
        while not received and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert received, job.poll()
        body, secret = received[0]
        assert secret == SECRET
        timings = body["timings"]
        assert 0 < timings["kernel_ahead_s"] < timings["imports_s"] <= timings["pool_warm_s"]
        assert "kernel_ahead_unused_s" not in timings
        page = requests.get(f"http://127.0.0.1:{body['port']}/services/apps/alice/wave/",
                            headers={SECRET_HEADER: SECRET}, timeout=60)
        assert page.status_code == 200 and KERNEL_ID.search(page.text)
        kernels = [pid for pid in _children(job.pid)
                   if b"ipykernel_launcher" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(kernels) == 1, kernels  # the pool took the kernel started ahead
        environ = dict(item.split(b"=", 1) for item in
                       Path(f"/proc/{kernels[0]}/environ").read_bytes().split(b"\0") if item)
        assert SECRET_ENV.encode() not in environ
        assert not any(SECRET.encode() in value for value in environ.values())
        assert environ[b"VOILA_APP_PORT"] == str(body["port"]).encode()
        assert environ[b"VOILA_BASE_URL"] == b"/services/apps/alice/wave/"
    finally:
        job.terminate()
        job.wait(timeout=60)
    imports = (tmp_path / "job.err").read_text()
    imported = {line.rsplit("|", 1)[-1].strip() for line in imports.splitlines()
                if line.startswith("import time:")}
    # (the blocked name itself is listed, failing at once; its grammars are never compiled)
    assert "voila.app" in imported and "rfc3987_syntax.syntax_helpers" not in imported
    # Elsewhere (the apps service imports the job module for its constants) nothing is left out.
    plain = ("import sys; import shopfloor.apps.job; "
             "print(sys.modules.get('rfc3987_syntax', 'absent') is None)")
    out = subprocess.run([sys.executable, "-c", plain], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    assert out == ["False"]


def test_the_job_script_runs_the_job_entry_point(runner: AppRunner) -> None:
    from shopfloor.apps.model import validate_publish
    from shopfloor.resources import ResourceRequest

    notebook = NOTEBOOK
    spec = validate_publish({"notebook": "w/app.ipynb", "title": "Wave"}, home="/home/alice",
                            settings=runner.settings, user_exists=lambda n: False,
                            group_exists=lambda n: False)
    app = runner.store.publish("alice", spec, {"partition": "cpu"},
                               lambda path, limit: notebook.read_bytes())
    request = ResourceRequest(partition="cpu", cpus=1, memory_gb=1, walltime_minutes=10)
    script = runner.job_script(app, request)
    assert "-m shopfloor.apps.jobstart --notebook" in script
    assert SECRET not in script and "Secret" not in script


async def test_a_new_message_wakes_the_progress_page_but_the_same_one_does_not() -> None:
    run = Run(key="alice/wave", version=1, secret=SECRET)
    waiter = asyncio.ensure_future(run.wait_change(30))
    await asyncio.sleep(0.05)
    run.say(run.message)  # nothing new to show
    await asyncio.sleep(0.05)
    assert not waiter.done()
    run.say("Queued on cpu: waiting for free resources")
    await asyncio.wait_for(waiter, 2)
    assert run.state == "starting"
