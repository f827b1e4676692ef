"""Benchmark: N participants join a workshop with its code and start sessions at once.

Run as root from the repository root (the hub creates Unix accounts and submits as them)::

    sudo /opt/shopfloor/venv/bin/python -m benchmarks.workshop --participants 40 --table

One hub of ours (``install(c, site)``, workshop service included) on its own ports. A
trainer creates a workshop with a reservation on a temporary partition ``sfworkshop``
(``OverSubscribe=FORCE:100`` over ``--nodes``, tiny memory per job, deleted at the end).
Then, per arm:

* ``solo``: one participant alone (the anchor: join → login → session running);
* ``crowd``: ``--participants`` at once, each in its own thread, as a class does when the
  trainer shows the code: ``POST /services/workshop/api/join`` (code + name → Unix account,
  hub user, group, reservation), log in through the hub's login form with the shown
  password, open the workshop's start link (``/hub/spawn?opt-partition=..&opt-reservation=
  ..``), poll until the session is ready.

Sessions run :mod:`benchmarks.standin` (a tiny single-user server), not JupyterLab: 40
JupyterLabs would measure the 2-core machine. Measured: time from the first join to all
sessions running (target: under 60 s), each participant's join/login/ready times, and the
hub API's p95 latency during the crowd (a probe every 0.2 s). The workshop is then ended
through the service (export, stop, release, delete accounts) and that time is reported too.
"""

from __future__ import annotations

import argparse
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
import yaml

from benchmarks import spawn
from benchmarks.hubprocess import BenchHub, HubPorts
from benchmarks.report import RunResult, emit, format_table, percentile, ratio, summarize
from benchmarks.scale import Scene, create_partition, delete_partition
from shopfloor.extensions.workshops_service import PREFIX

PARTITION = "sfworkshop"
TARGET_SECONDS = 60.0
BENCH_TOKEN_NOTE = "benchmarks.workshop"


def say(message: str) -> None:
    print(f"[workshop-bench] {message}", file=sys.stderr, flush=True)


def site_data(scene: Scene, state_dir: Path, ports: HubPorts, participants: int) -> dict[str, Any]:
    site = yaml.safe_load(spawn.DEMO_SITE.read_text())
    site["hub"].update(bind_url=f"http://127.0.0.1:{ports.public}",
                       hub_bind_url=f"http://127.0.0.1:{ports.hub_api}",
                       state_dir=str(state_dir))
    site["partitions"][PARTITION] = {
        "description": "benchmarks.workshop only: oversubscribed, tiny jobs.",
        "max_cpus": 1, "max_memory_gb": 0.1, "max_walltime": "0:30:00", "default_cpus": 1,
        "default_memory_gb": 0.02, "default_walltime": "0:30:00",
    }
    site["workshops"] = {**site.get("workshops", {}), "creators": ["trainer"],
                         "partitions": [PARTITION], "max_capacity": max(60, participants + 1),
                         "max_cores": 8}
    return site


def hub_config(scene: Scene, state_dir: Path, ports: HubPorts, participants: int,
               token: str) -> str:
    source = state_dir / "site-source.yaml"
    source.write_text(yaml.safe_dump(site_data(scene, state_dir, ports, participants),
                                     sort_keys=False))
    return "\n".join([
        spawn.ours_config(state_dir, ports, site_source=source),
        f"c.ShopfloorSpawner.cmd = [{str(scene.standin)!r}]",
        "for _service in c.JupyterHub.services:",
        "    if _service.get('name') == 'apps':",
        "        _service.pop('command', None)",
        "c.JupyterHub.concurrent_spawn_limit = 200",
        "c.JupyterHub.tornado_settings.update({'slow_spawn_timeout': 0})",
        f"c.JupyterHub.services.append({{'name': 'bench', 'api_token': {token!r}}})",
        "c.JupyterHub.load_roles.append({'name': 'bench-admin', 'services': ['bench'], "
        "'scopes': ['admin:users', 'admin:servers', 'tokens']})",
        "",
    ])


class Participant:
    """One simulated participant: join, log in, open the start link, wait for running."""

    def __init__(self, url: str, code: str, name: str, t0: float) -> None:
        self.url, self.code, self.name, self.t0 = url, code, name, t0
        self.http = requests.Session()
        self.times: dict[str, float] = {}
        self.username = ""

    def mark(self, what: str) -> None:
        self.times[what] = round(time.monotonic() - self.t0, 3)

    def run(self, timeout: float) -> RunResult:
        try:
            joined = self.http.post(f"{self.url}{PREFIX}/api/join", timeout=60,
                                    json={"code": self.code, "name": self.name})
            joined.raise_for_status()
            info = joined.json()
            self.username = info["username"]
            self.mark("joined_s")
            self.http.get(f"{self.url}/hub/login", timeout=60)
            xsrf = self.http.cookies.get("_xsrf", "", path="/hub/")
            login = self.http.post(f"{self.url}/hub/login?next=", allow_redirects=False,
                                   timeout=60, data={"username": self.username,
                                                     "password": info["password"],
                                                     "_xsrf": xsrf})
            if login.status_code != 302:
                raise RuntimeError(f"login answered {login.status_code}")
            self.mark("logged_in_s")
            self.http.get(f"{self.url}{info['spawn_url']}", allow_redirects=False, timeout=60)
            self.mark("requested_s")
            deadline = time.monotonic() + timeout
            headers = {"X-XSRFToken": self.http.cookies.get("_xsrf", "", path="/hub/")}
            while time.monotonic() < deadline:
                model = self.http.get(f"{self.url}/hub/api/users/{self.username}",
                                      headers=headers, timeout=30).json()
                if (model.get("servers") or {}).get("", {}).get("ready"):
                    self.mark("running_s")
                    return RunResult(0, True, self.times["running_s"], detail={
                        "user": self.username, **self.times})
                time.sleep(0.5)
            raise RuntimeError(f"not running after {timeout:.0f} s")
        except (requests.RequestException, RuntimeError, KeyError, ValueError) as exc:
            return RunResult(0, False, error=str(exc)[:200],
                             detail={"user": self.username, **self.times})


class Probe(threading.Thread):
    """GET /hub/api/users/trainer every 0.2 s with the bench service's token."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.url, self.token = url, token
        self.samples: list[float] = []
        self.errors = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        http = requests.Session()
        while not self.stop_event.wait(0.2):
            started = time.perf_counter()
            try:
                ok = http.get(f"{self.url}/hub/api/users/trainer", timeout=10,
                              headers={"Authorization": f"token {self.token}"}).ok
            except requests.RequestException:
                ok = False
            if ok:
                self.samples.append(time.perf_counter() - started)
            else:
                self.errors += 1


def crowd(url: str, code: str, count: int, offset: int, timeout: float) -> list[RunResult]:
    t0 = time.monotonic()
    people = [Participant(url, code, f"Participant {offset + i}", t0) for i in range(count)]
    with ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(lambda p: p.run(timeout), people))
    for i, result in enumerate(results):
        result.run = offset + i
    return results


def remove_leftovers(name: str, timeout: float = 60) -> None:
    """Whatever a failed run left of workshop ``name``: participants' jobs (waited for, as
    Slurm refuses to delete a reservation in use), accounts, the reservation, the export."""
    users = [line.split(":", 1)[0] for line in Path("/etc/passwd").read_text().splitlines()
             if line.startswith(f"ws-{name}-")]
    for user in users:
        subprocess.run(["scancel", "-u", user], capture_output=True, check=False)
    deadline = time.monotonic() + timeout
    while users and time.monotonic() < deadline and set(users) & set(subprocess.run(
            ["squeue", "-h", "-o", "%u"], capture_output=True, text=True,
            check=False).stdout.split()):
        time.sleep(0.5)
    for user in users:
        subprocess.run(["userdel", "--remove", "--force", user], capture_output=True,
                       check=False)
    subprocess.run(["scontrol", "delete", f"ReservationName=ws-{name}"],
                   capture_output=True, check=False)
    shutil.rmtree(Path("/home/trainer/workshop-exports") / name, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.workshop", description=__doc__)
    parser.add_argument("--participants", type=int, default=40)
    parser.add_argument("--port", type=int, default=8360, help="base port (+1, +2 used)")
    parser.add_argument("--nodes", default="gpu1,debug1",
                        help="nodes of the temporary oversubscribed partition")
    parser.add_argument("--cores", type=int, default=2, help="cores the workshop reserves")
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--json-out")
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--keep-state", action="store_true")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="shopfloor-bench-workshop-"))
    scene = Scene(root)
    scene.make(["ours"])
    state_dir = root / "hub"
    state_dir.mkdir(mode=0o700)
    ports = HubPorts(args.port)
    token = secrets.token_hex(24)
    hub = BenchHub("workshop", state_dir, ports,
                   hub_config(scene, state_dir, ports, args.participants, token),
                   job_id_pattern=r"submitted job (\d+)")
    name = f"bench{int(time.time()) % 10000}"
    admin = {"Authorization": f"token {token}"}
    document: dict[str, Any] = {"benchmark": "workshop", "participants": args.participants}
    create_partition(PARTITION, args.nodes)
    try:
        hub.start()
        requests.post(f"{hub.url}/hub/api/users/trainer", headers=admin, timeout=30)
        trainer_token = requests.post(
            f"{hub.url}/hub/api/users/trainer/tokens", headers=admin, timeout=30,
            json={"note": BENCH_TOKEN_NOTE, "expires_in": 3600}).json()["token"]
        trainer = {"Authorization": f"token {trainer_token}"}
        for _ in range(120):
            try:
                if requests.get(f"{hub.url}{PREFIX}/join", timeout=5).ok:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        material = root / "material"
        material.mkdir(mode=0o755)
        (material / "README.md").write_text("# Workshop material\n")
        (material / "README.md").chmod(0o644)
        root.chmod(0o711)
        created = requests.post(f"{hub.url}{PREFIX}/api/workshops", headers=trainer,
                                timeout=60, json={
                                    "name": name, "hours": 1, "capacity": args.participants + 1,
                                    "partition": PARTITION, "cores": args.cores,
                                    "material": str(material)})
        if created.status_code != 201:
            raise SystemExit(f"creating the workshop failed: {created.text[:500]}")
        code = created.json()["code"]
        say(f"workshop {name} created (code {code}); solo participant")
        solo = crowd(hub.url, code, 1, 0, args.timeout)
        say(f"{args.participants} participants at once")
        probe = Probe(hub.url, token)
        probe.start()
        started = time.monotonic()
        runs = crowd(hub.url, code, args.participants, 1, args.timeout)
        all_running = time.monotonic() - started
        probe.stop_event.set()
        probe.join()
        ok = all(r.ok for r in runs)
        say("ending the workshop (export, stop, release, delete accounts)")
        end_started = time.monotonic()
        ended = requests.post(f"{hub.url}{PREFIX}/api/workshops/{name}/end", headers=trainer,
                              json={"accounts": "delete"}, timeout=600)
        end_s = time.monotonic() - end_started
        p95 = percentile(probe.samples, 95)
        blocks = {"solo": summarize("solo (anchor)", solo),
                  "crowd": summarize(f"{args.participants} at once", runs)}
        document.update({
            "sessions": "stand-in single-user servers (benchmarks/standin.py), not JupyterLab",
            "partition": f"{PARTITION} (OverSubscribe=FORCE:100 over {args.nodes}), "
                         f"reservation of {args.cores} cores",
            "arms": blocks,
            "all_running_s": round(all_running, 3) if ok else None,
            "target_s": TARGET_SECONDS,
            "target_met": ok and all_running < TARGET_SECONDS,
            "ratio": {"crowd_p90_over_solo": ratio(blocks["crowd"]["p90"],
                                                   blocks["solo"]["median"])},
            "hub_api_ms": {"p50": round(1000 * (percentile(probe.samples, 50) or 0), 1),
                           "p95": round(1000 * (p95 or 0), 1),
                           "samples": len(probe.samples), "errors": probe.errors},
            "end": {"ok": ended.ok, "seconds": round(end_s, 3),
                    "answer": ended.json() if ended.ok else ended.text[:300]},
        })
        footer = [
            f"all {args.participants} running after {all_running:.1f} s "
            f"(target < {TARGET_SECONDS:g} s: {'met' if document['target_met'] else 'MISSED'})",
            f"hub API p95 during the crowd: {document['hub_api_ms']['p95']} ms",
            f"end of workshop (export + cleanup): {end_s:.1f} s",
            "sessions are stand-in servers, not JupyterLab",
        ]
        emit(document, format_table("workshop join -> running (s)", blocks, footer),
             json_out=args.json_out, table_on_stdout=args.table)
        if ended.ok:
            export = Path(ended.json()["steps"]["export"])
            if re.search(rf"/{name}$", str(export)):
                shutil.rmtree(export, ignore_errors=True)
        return 0 if ok and ended.ok else 1
    finally:
        hub.stop()
        remove_leftovers(name)
        delete_partition(PARTITION)
        if not args.keep_state:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
