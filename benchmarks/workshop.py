"""Benchmark: N participants join a workshop with its code and start sessions at once.

Run as root from the repository root (the hub creates Unix accounts and submits as them)::

    sudo /opt/shopfloor/venv/bin/python -m benchmarks.workshop --participants 40 --table

One hub of ours (``install(c, site)``, workshop service included) on its own ports. A
trainer creates a workshop with a reservation on a temporary partition ``sfworkshop``
(``OverSubscribe=FORCE:100`` over ``--nodes``, tiny memory per job, deleted at the end).
Then, per arm:

* ``solo``: one participant alone (join → login → start link → usable);
* ``crowd``: ``--participants`` at once, each in its own thread, as a class does when the
  trainer shows the code: ``POST /services/workshop/api/join`` (code + name → Unix account,
  hub user, group, reservation), log in through the hub's login form with the shown
  password, open the workshop's start link (``/hub/spawn?opt-partition=..&opt-reservation=
  ..``), poll until the session is ready, then open ``/user/NAME/lab`` until it is the
  JupyterLab page (*usable*);
* ``admin_one_by_one`` (the anchor): the crowd's servers stopped, an admin starts the same
  users' servers with the stock REST API one after the other, each until its lab answers.

Sessions are real JupyterLab (``--servers real``, the default) or :mod:`benchmarks.standin`
(``--servers standin``; usable = ready). Measured: time from the first join to every session
usable (target: under 60 s), the anchor's total, each participant's times, and the hub API's
p95 latency during the crowd and during the anchor (a probe every 0.2 s). The workshop is
then ended through the service (export, stop, release, delete accounts) and timed too.
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
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
import yaml

from benchmarks import spawn
from benchmarks.anchors import load_average
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
        "max_cpus": 1, "max_memory_gb": 1, "max_walltime": "0:30:00", "default_cpus": 1,
        "default_memory_gb": 0.02, "default_walltime": "0:30:00",
    }
    site["workshops"] = {**site.get("workshops", {}), "creators": ["trainer"],
                         "partitions": [PARTITION], "max_capacity": max(60, participants + 1),
                         "max_cores": 8}
    return site


def hub_config(scene: Scene, state_dir: Path, ports: HubPorts, participants: int,
               token: str, real_servers: bool = True) -> str:
    """The bench hub's config: ours, the workshop service, real JupyterLab or stand-ins."""
    source = state_dir / "site-source.yaml"
    source.write_text(yaml.safe_dump(site_data(scene, state_dir, ports, participants),
                                     sort_keys=False))
    # Real servers: the spawner's own command (jupyterhub-singleuser with JupyterLab).
    command = [] if real_servers else [f"c.ShopfloorSpawner.cmd = [{str(scene.standin)!r}]"]
    return "\n".join([
        spawn.ours_config(state_dir, ports, site_source=source),
        *command,
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

    def __init__(self, url: str, code: str, name: str, t0: float,
                 check_lab: bool = False) -> None:
        self.url, self.code, self.name, self.t0 = url, code, name, t0
        self.check_lab = check_lab
        self.http = requests.Session()
        self.times: dict[str, float] = {}
        self.username = ""
        self.password = ""
        self.spawn_url = ""

    def mark(self, what: str) -> None:
        self.times[what] = round(time.monotonic() - self.t0, 3)

    def run(self, timeout: float) -> RunResult:
        try:
            joined = self.http.post(f"{self.url}{PREFIX}/api/join", timeout=60,
                                    json={"code": self.code, "name": self.name})
            joined.raise_for_status()
            info = joined.json()
            self.username = info["username"]
            self.password, self.spawn_url = info["password"], info["spawn_url"]
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
                    if self.check_lab:
                        lab_answers(self.http, f"{self.url}/user/{self.username}/lab",
                                    deadline)
                        self.mark("lab_answers_s")
                    return RunResult(0, True, self.times["lab_answers_s" if self.check_lab
                                                          else "running_s"], detail={
                        "user": self.username, **self.times})
                time.sleep(0.5)
            raise RuntimeError(f"not running after {timeout:.0f} s")
        except (requests.RequestException, RuntimeError, KeyError, ValueError) as exc:
            return RunResult(0, False, error=str(exc)[:200],
                             detail={"user": self.username, **self.times})


def is_lab_page(status: int, text: str) -> bool:
    """Whether an answer is JupyterLab's page (its config data names the lab app)."""
    return status == 200 and "jupyter-config-data" in text and "JupyterLab" in text


def lab_answers(http: requests.Session, url: str, deadline: float) -> None:
    """Open the user's ``/lab`` (the hub's OAuth redirects included) until it is the page."""
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            page = http.get(url, timeout=30)
            if is_lab_page(page.status_code, page.text):
                return
            last = f"{page.status_code}"
        except requests.RequestException as exc:
            last = type(exc).__name__
        time.sleep(0.2)
    raise RuntimeError(f"JupyterLab did not answer ({last})")


def start_options(spawn_url: str) -> dict[str, str]:
    """The ``user_options`` the start link carries (its ``opt-NAME=value`` parameters)."""
    query = urllib.parse.urlsplit(spawn_url).query
    return {key[4:]: value for key, value in urllib.parse.parse_qsl(query)
            if key.startswith("opt-")}


def admin_one_by_one(url: str, token: str, users: list[str], options: dict[str, str],
                     passwords: dict[str, str], timeout: float) -> list[RunResult]:
    """The anchor: an admin starts each server with the stock REST API, one after the other.

    ``POST /hub/api/users/NAME/server`` with the start link's options, poll the user model
    until ready, then the participant's lab must answer (logged in as that participant), and
    only then the next one. Each run's time counts from the start of the whole sequence.
    """
    admin = {"Authorization": f"token {token}"}
    t0 = time.monotonic()
    results: list[RunResult] = []
    for index, user in enumerate(users):
        started = time.monotonic()
        try:
            reply = requests.post(f"{url}/hub/api/users/{user}/server", headers=admin,
                                  json=options, timeout=60)
            if reply.status_code not in (201, 202):
                raise RuntimeError(f"spawn answered {reply.status_code}: {reply.text[:200]}")
            deadline = started + timeout
            while time.monotonic() < deadline:
                model = requests.get(f"{url}/hub/api/users/{user}", headers=admin,
                                     timeout=30).json()
                if (model.get("servers") or {}).get("", {}).get("ready"):
                    break
                time.sleep(0.5)
            else:
                raise RuntimeError(f"not running after {timeout:.0f} s")
            running = time.monotonic() - started
            http = requests.Session()
            http.get(f"{url}/hub/login", timeout=60)
            http.post(f"{url}/hub/login?next=", allow_redirects=False, timeout=60, data={
                "username": user, "password": passwords[user],
                "_xsrf": http.cookies.get("_xsrf", "", path="/hub/")})
            lab_answers(http, f"{url}/user/{user}/lab", deadline)
            results.append(RunResult(index, True, time.monotonic() - t0, detail={
                "user": user, "running_s": round(running, 3),
                "lab_answers_s": round(time.monotonic() - started, 3)}))
        except (requests.RequestException, RuntimeError, ValueError) as exc:
            results.append(RunResult(index, False, error=str(exc)[:200], detail={"user": user}))
    return results


def stop_servers(url: str, token: str, users: list[str], timeout: float = 120) -> None:
    """Stop these users' servers and wait until the hub says they are gone."""
    admin = {"Authorization": f"token {token}"}
    for user in users:
        requests.delete(f"{url}/hub/api/users/{user}/server", headers=admin, timeout=60)
    deadline = time.monotonic() + timeout
    for user in users:
        while time.monotonic() < deadline:
            model = requests.get(f"{url}/hub/api/users/{user}", headers=admin,
                                 timeout=30).json()
            if not (model.get("servers") or {}).get(""):
                break
            time.sleep(0.5)


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


def crowd(url: str, code: str, count: int, offset: int, timeout: float,
          check_lab: bool = False) -> tuple[list[RunResult], list[Participant]]:
    t0 = time.monotonic()
    people = [Participant(url, code, f"Participant {offset + i}", t0, check_lab)
              for i in range(count)]
    with ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(lambda p: p.run(timeout), people))
    for i, result in enumerate(results):
        result.run = offset + i
    return results, people


def median_gap(runs: list[RunResult], start: str, end: str) -> float | None:
    """Median of ``detail[end] - detail[start]`` over the successful runs that have both."""
    gaps = [r.detail[end] - r.detail[start] for r in runs
            if r.ok and start in r.detail and end in r.detail]
    value = percentile(gaps, 50)
    return None if value is None else round(value, 3)


#: A participant's steps, each from the end of the one before (``joined_s`` from the rush's start).
PHASES = (("join", "", "joined_s"), ("login", "joined_s", "logged_in_s"),
          ("start_link", "logged_in_s", "requested_s"), ("spawn", "requested_s", "running_s"),
          ("lab", "running_s", "lab_answers_s"))


def phases(runs: list[RunResult]) -> dict[str, dict[str, float | None]]:
    """Where the crowd's time goes: median and max of each step, and when the last participant
    finished it (``last_done_s``, from the rush's start): which step the rush waits on."""
    table: dict[str, dict[str, float | None]] = {}
    for phase, start, end in PHASES:
        done = [r.detail for r in runs if r.ok and end in r.detail]
        gaps = [d[end] - (d[start] if start else 0.0) for d in done if not start or start in d]
        table[phase] = {"median": _rounded(percentile(gaps, 50)),
                        "max": _rounded(max(gaps, default=None)),
                        "last_done_s": _rounded(max((d[end] for d in done), default=None))}
    return table


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _latency(probe: Probe) -> dict[str, float | int]:
    """p50/p95 of a probe's samples in ms, with its sample and error counts."""
    return {"p50": round(1000 * (percentile(probe.samples, 50) or 0), 1),
            "p95": round(1000 * (percentile(probe.samples, 95) or 0), 1),
            "samples": len(probe.samples), "errors": probe.errors}


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


def idle_cores(sinfo: str) -> dict[str, int]:
    """Idle CPUs per node from ``sinfo -h -N -o "%N %C"`` (``alloc/idle/other/total``)."""
    idle: dict[str, int] = {}
    for line in sinfo.splitlines():
        node, _, counts = line.strip().partition(" ")
        parts = counts.strip().split("/")
        if node and len(parts) == 4 and parts[1].isdigit():
            # A node in several partitions is listed once per partition, with the same counts.
            idle[node] = int(parts[1])
    return idle


def too_busy(nodes: str, cores: int, sinfo: str) -> str | None:
    """Why the workshop's reservation would wait for other jobs, or ``None`` when it fits.

    With no ``cores`` idle on ``nodes`` the service reserves over running jobs
    (``IGNORE_JOBS``) and every participant waits until those jobs end by their walltime:
    the run would measure other engineers' jobs, not the rush.
    """
    idle = idle_cores(sinfo)
    free = sum(idle.get(node, 0) for node in nodes.split(","))
    if free >= cores:
        return None
    return (f"{nodes} have {free} idle cores, the workshop reserves {cores}: other jobs hold "
            "them (squeue -w " + nodes + "); wait, or pass --nodes/--cores")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.workshop", description=__doc__)
    parser.add_argument("--participants", type=int, default=40)
    parser.add_argument("--port", type=int, default=9660, help="base port (+1, +2 used)")
    parser.add_argument("--nodes", default="gpu1,debug1",
                        help="nodes of the temporary oversubscribed partition")
    parser.add_argument("--cores", type=int, default=2, help="cores the workshop reserves")
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument("--servers", choices=("real", "standin"), default="real",
                        help="real: JupyterLab (jupyterhub-singleuser), usable when /lab "
                        "answers; standin: benchmarks/standin.py, usable when ready")
    parser.add_argument("--no-anchor", action="store_true",
                        help="skip the admin starting the same servers one by one")
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
                   hub_config(scene, state_dir, ports, args.participants, token,
                              real_servers=args.servers == "real"),
                   job_id_pattern=r"submitted job (\d+)")
    name = f"bench{int(time.time()) % 10000}"
    admin = {"Authorization": f"token {token}"}
    real = args.servers == "real"
    document: dict[str, Any] = {"benchmark": "workshop", "participants": args.participants,
                                "load_start": load_average()}
    busy = too_busy(args.nodes, args.cores, subprocess.run(
        ["sinfo", "-h", "-N", "-n", args.nodes, "-o", "%N %C"], capture_output=True,
        text=True, check=False).stdout)
    if busy:
        raise SystemExit(busy)
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
        solo, _ = crowd(hub.url, code, 1, 0, args.timeout, check_lab=real)
        say(f"{args.participants} participants at once")
        probe = Probe(hub.url, token)
        probe.start()
        started = time.monotonic()
        runs, people = crowd(hub.url, code, args.participants, 1, args.timeout,
                             check_lab=real)
        all_running = time.monotonic() - started
        probe.stop_event.set()
        probe.join()
        ok = all(r.ok for r in runs)
        anchor: list[RunResult] = []
        if not args.no_anchor:
            users = [p.username for p in people if p.username]
            say(f"stopping the crowd's servers; the admin starts {len(users)} one by one")
            stop_servers(hub.url, token, users)
            anchor_probe = Probe(hub.url, token)
            anchor_probe.start()
            anchor = admin_one_by_one(hub.url, token, users,
                                      start_options(people[0].spawn_url),
                                      {p.username: p.password for p in people},
                                      args.timeout)
            anchor_probe.stop_event.set()
            anchor_probe.join()
            ok = ok and all(r.ok for r in anchor)
        say("ending the workshop (export, stop, release, delete accounts)")
        end_started = time.monotonic()
        ended = requests.post(f"{hub.url}{PREFIX}/api/workshops/{name}/end", headers=trainer,
                              json={"accounts": "delete"}, timeout=600)
        end_s = time.monotonic() - end_started
        p95 = percentile(probe.samples, 95)
        blocks = {"solo": summarize("solo", solo),
                  "crowd": summarize(f"{args.participants} at once", runs)}
        if anchor:
            blocks["admin_one_by_one"] = summarize("admin REST one by one (anchor)", anchor)
        all_anchor = max((r.seconds or 0 for r in anchor), default=None) if anchor and all(
            r.ok for r in anchor) else None
        document.update({
            "sessions": ("real JupyterLab (jupyterhub-singleuser); usable = GET /user/NAME/lab "
                         "answers the JupyterLab page") if real else
                        "stand-in single-user servers (benchmarks/standin.py), not JupyterLab",
            "anchor_all_usable_s": round(all_anchor, 3) if all_anchor else None,
            # The spawn part alone (start link → usable), comparable with one admin start.
            "crowd_request_to_usable_median_s": median_gap(runs, "requested_s",
                                                           "lab_answers_s" if real
                                                           else "running_s"),
            "anchor_hub_api_ms": _latency(anchor_probe) if anchor else None,
            "load_end": load_average(),
            "partition": f"{PARTITION} (OverSubscribe=FORCE:100 over {args.nodes}), "
                         f"reservation of {args.cores} cores",
            "arms": blocks,
            "crowd_phases_s": phases(runs),
            "all_running_s": round(all_running, 3) if ok else None,
            "target_s": TARGET_SECONDS,
            "target_met": ok and all_running < TARGET_SECONDS,
            "ratio": {"crowd_p90_over_solo": ratio(blocks["crowd"]["p90"],
                                                   blocks["solo"]["median"]),
                      "crowd_all_over_anchor_all": ratio(all_running if ok else None,
                                                         all_anchor)},
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
            "crowd steps, median/max (last done at): " + ", ".join(
                f"{k} {v['median']}/{v['max']} ({v['last_done_s']})"
                for k, v in document["crowd_phases_s"].items()),
            f"end of workshop (export + cleanup): {end_s:.1f} s",
            f"admin one by one (anchor): all usable after "
            f"{document['anchor_all_usable_s']} s; crowd/anchor "
            f"{document['ratio']['crowd_all_over_anchor_all']}",
            "sessions: " + document["sessions"],
            f"load average: start {document['load_start']['load1']}, end "
            f"{document['load_end']['load1']} ({document['load_start']['cpus']} cores)",
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
