"""Apps: warm render vs plain Voila, cold start as a Slurm job vs a session spawn, memory.

Run from the repository root, as root (the hub authenticates with PAM, jobs run as alice)::

    python -m benchmarks.apps --runs 5

Three measurements, each against its anchor in the same run:

1. **Warm render** (server-side, no network hops): the app job's Voila (``shopfloor.apps.job``,
   preheated pool) against plain ``voila NOTEBOOK`` on the same notebook, both on this machine,
   timed from request to the last byte of the page. Each warm render waits for the pool to
   refill first (what an app in use looks like). Target: under 0.3 s and at least 5x faster.
2. **Cold start**: a published app's first visit through a real hub + apps service until the
   app serves (Slurm job, Voila, pool warm), against a JupyterLab session spawn on the same hub,
   partition and resources. Target: within 1.5x of the spawn.
3. **Memory** of one warm app (Voila plus its pool kernels, RSS of the process tree).

Output: JSON on stdout, a table on stderr (``benchmarks/report.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import requests
import yaml

from benchmarks.report import RunResult, emit, format_grid, format_table, ratio, summarize
from shopfloor.apps.job import SECRET_HEADER
from shopfloor.apps.jobstart import SECRET_ENV
from shopfloor.session.singleuser import free_port

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "example_notebooks" / "slider_app.ipynb"
PYTHON = sys.executable
BASE = "/services/apps/bench/app/"


# -- 1 and 3: warm render and memory, on this machine -----------------------------------------


@contextmanager
def app_voila(notebook: Path, pool_size: int) -> Iterator[tuple[str, str, int]]:
    """The app job's Voila, run here: yields (url, secret, pid)."""
    reported: dict[str, int] = {}

    class Callback(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            reported["port"] = json.loads(self.rfile.read(length))["port"]
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), Callback)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret = secrets.token_urlsafe(32)
    proc = subprocess.Popen(
        [PYTHON, "-m", "shopfloor.apps.jobstart", "--notebook", str(notebook), "--base-url", BASE,
         "--callback", f"http://127.0.0.1:{server.server_port}/", "--pool-size", str(pool_size)],
        env={**os.environ, SECRET_ENV: secret}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while "port" not in reported and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        if "port" not in reported:
            raise RuntimeError("the app's Voila did not report its port")
        yield f"http://127.0.0.1:{reported['port']}{BASE}", secret, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        server.shutdown()


@contextmanager
def plain_voila(notebook: Path) -> Iterator[str]:
    port = free_port("127.0.0.1")
    proc = subprocess.Popen(
        [PYTHON, "-m", "voila", str(notebook), "--no-browser", f"--port={port}",
         "--Voila.ip=127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.get(url + "voila/static/", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def timed_get(url: str, headers: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    response = requests.get(url, headers=headers or {}, timeout=120)
    elapsed = time.perf_counter() - start
    if response.status_code != 200 or "jupyter-widgets" not in response.text.lower():
        raise RuntimeError(f"{url} answered {response.status_code}")
    return elapsed


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MiB."""
    import psutil

    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 1024 / 1024


def measure_renders(runs: int, pool_size: int, refill_wait: float) -> dict[str, object]:
    warm: list[RunResult] = []
    plain: list[RunResult] = []
    memory: dict[str, float] = {}
    with app_voila(NOTEBOOK, pool_size) as (url, secret, pid), plain_voila(NOTEBOOK) as purl:
        time.sleep(refill_wait)
        memory["app_mib"] = round(tree_rss_mib(pid), 1)
        for run in range(1, runs + 1):
            for arm, target in ((warm, lambda: timed_get(url, {SECRET_HEADER: secret})),
                                (plain, lambda: timed_get(purl))):
                arm.append(_attempt(run, target))
            time.sleep(refill_wait)  # the pool refills, plain voila's kernels settle
        memory["app_after_mib"] = round(tree_rss_mib(pid), 1)
    return {"warm": warm, "plain": plain, "memory": memory}


def _attempt(run: int, target: Callable[[], float]) -> RunResult:
    try:
        return RunResult(run, True, target())
    except (RuntimeError, requests.RequestException) as exc:
        return RunResult(run, False, error=str(exc))


# -- 2: cold start through a real hub vs a session spawn --------------------------------------


def login(base: str, user: str, password: str) -> requests.Session:
    http = requests.Session()
    http.get(f"{base}/hub/login")
    xsrf = http.cookies.get("_xsrf", "", path="/hub/")
    resp = http.post(f"{base}/hub/login?next=", allow_redirects=False,
                     data={"username": user, "password": password, "_xsrf": xsrf})
    if resp.status_code != 302:
        raise RuntimeError(f"login as {user} failed ({resp.status_code})")
    xsrf = http.cookies.get("_xsrf", "", path="/hub/")  # login sets a new one
    reply = http.post(f"{base}/hub/api/users/{user}/tokens", json={"note": "bench"},
                      headers={"X-XSRFToken": xsrf})
    if reply.status_code != 201:
        raise RuntimeError(f"no token for {user} ({reply.status_code}): {reply.text[:200]}")
    token = reply.json()["token"]
    http.headers["Authorization"] = f"token {token}"
    return http


@contextmanager
def bench_hub(port_base: int) -> Iterator[tuple[str, dict[str, str]]]:
    from shopfloor.demo.hub import Credentials, Hub, credentials_path, default_site_file
    from shopfloor.site import load_site

    passwords = Credentials(credentials_path(load_site(default_site_file()))).ensure()
    directory = Path(tempfile.mkdtemp(prefix="shopfloor-bench-apps-"))
    directory.chmod(0o711)
    data = yaml.safe_load((REPO / "hub_config" / "demo_site.yaml").read_text())
    for offset, key in enumerate(("bind_url", "hub_bind_url", "proxy_api_url")):
        data["hub"][key] = f"http://127.0.0.1:{port_base + offset}"
    data["hub"]["state_dir"] = str(directory / "hub")
    data["apps"] = {**data.get("apps", {}), "partition": "debug", "walltime": "0:20:00",
                    "idle_stop_minutes": 10}
    site_file = directory / "site.yaml"
    site_file.write_text(yaml.safe_dump(data))
    hub = Hub(load_site(site_file), site_file)
    hub.start(detach=True)
    try:
        yield f"http://127.0.0.1:{port_base}", passwords
    finally:
        hub.stop()
        shutil.rmtree(directory, ignore_errors=True)


def cold_start(http: requests.Session, base: str, slug: str) -> float:
    start = time.perf_counter()
    http.get(f"{base}/services/apps/alice/{slug}/")
    while time.perf_counter() - start < 300:
        status = http.get(f"{base}/services/apps/api/apps/alice/{slug}/status").json()
        if status["state"] == "ready":
            return time.perf_counter() - start
        if status["state"] == "failed":
            raise RuntimeError(status["message"])
        time.sleep(0.1)
    raise RuntimeError("the app did not start in 300 s")


def spawn(http: requests.Session, base: str) -> float:
    options = {"partition": "debug", "cpus": 1, "memory_gb": 1, "walltime": "20"}
    start = time.perf_counter()
    resp = http.post(f"{base}/hub/api/users/alice/server", json={"user_options": options})
    if resp.status_code not in (201, 202):
        raise RuntimeError(f"spawn answered {resp.status_code}: {resp.text[:200]}")
    while time.perf_counter() - start < 300:
        server = http.get(f"{base}/hub/api/users/alice").json()["servers"].get("")
        if server and server.get("ready"):
            return time.perf_counter() - start
        time.sleep(0.1)
    raise RuntimeError("the session did not start in 300 s")


def wait_no_jobs(pattern: str, timeout: float = 60, user: str = "alice") -> None:
    """Wait (at most ``timeout`` s) until no job of ``user`` has a name matching ``pattern``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-u", user, "-o", "%j"], capture_output=True,
                             text=True, check=False).stdout
        if not re.search(pattern, out):
            return
        time.sleep(0.5)


def measure_cold(runs: int, port_base: int) -> dict[str, list[RunResult]]:
    cold: list[RunResult] = []
    spawns: list[RunResult] = []
    folder = Path("/home/alice/apps-bench")
    subprocess.run(["sudo", "-u", "alice", "--", "mkdir", "-p", str(folder)], check=True)
    subprocess.run(["sudo", "-u", "alice", "--", "cp", str(NOTEBOOK), str(folder)], check=True)
    with bench_hub(port_base) as (base, passwords):
        http = login(base, "alice", passwords["alice"])
        for run in range(1, runs + 1):
            slug = f"bench-{run}"
            resp = http.post(f"{base}/services/apps/api/apps", json={
                "notebook": str(folder / NOTEBOOK.name), "title": "Bench", "slug": slug})
            if resp.status_code != 201:
                raise RuntimeError(f"publish failed: {resp.text}")
            cold.append(_attempt(run, lambda slug=slug: cold_start(http, base, slug)))
            http.delete(f"{base}/services/apps/api/apps/alice/{slug}")
            wait_no_jobs(r"shopfloor-app-")
            spawns.append(_attempt(run, lambda: spawn(http, base)))
            http.delete(f"{base}/hub/api/users/alice/server")
            wait_no_jobs(r"shopfloor-alice-default")
    return {"cold": cold, "spawn": spawns}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.apps", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pool-size", type=int, default=1)
    parser.add_argument("--refill-wait", type=float, default=3.0,
                        help="seconds between renders (the pool refills)")
    parser.add_argument("--port-base", type=int, default=8870, help="ports of the bench hub")
    parser.add_argument("--skip-cold", action="store_true", help="only warm render and memory")
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)

    renders = measure_renders(args.runs, args.pool_size, args.refill_wait)
    arms = {
        "warm": summarize("app, warm pool (server-side)", renders["warm"],
                          pool_size=args.pool_size),
        "plain": summarize("plain voila, same notebook", renders["plain"]),
    }
    if not args.skip_cold:
        cold = measure_cold(args.runs, args.port_base)
        arms["cold"] = summarize("app cold start (Slurm job)", cold["cold"])
        arms["spawn"] = summarize("session spawn (same hub)", cold["spawn"])
    speedup = ratio(arms["plain"]["median"], arms["warm"]["median"])
    cold_ratio = ratio(arms.get("cold", {}).get("median"), arms.get("spawn", {}).get("median"))
    memory = renders["memory"]
    document = {
        "benchmark": "apps", "arms": arms, "memory": memory,
        "ratios": {"plain_over_warm": speedup, "cold_over_spawn": cold_ratio},
        "targets": {"warm_median_s": 0.3, "plain_over_warm_min": 5, "cold_over_spawn_max": 1.5},
    }
    grid = format_grid("Ratios and memory (same run)", ("metric", "value", "target"), [
        ("plain / warm", f"{speedup:.1f}x" if speedup else "-", ">= 5x"),
        ("cold / spawn", f"{cold_ratio:.2f}x" if cold_ratio else "-", "<= 1.5x"),
        ("warm app memory, idle", f"{memory['app_mib']} MiB", "Voila + pool kernels"),
        ("after the renders", f"{memory['app_after_mib']} MiB", "+ viewers' kernels"),
    ])
    table = format_table("Apps: time to first render and cold start", arms)
    emit(document, table + "\n" + grid, json_out=args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
