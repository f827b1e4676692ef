"""Scale: hundreds of sessions on one hub, Shopfloor's spawner against stock batchspawner.

Run from the repository root, as root (the hubs submit jobs as the user and Slurm's
partition is changed for the run)::

    python -m benchmarks.scale --servers 300

For each arm in turn (ours, then stock) it starts a JupyterHub of its own, spawns
``--servers`` named servers of one user (``alice``: ``/users/alice/servers/s001`` ...) as
Slurm jobs on a temporary, oversubscribed partition, waits until all are ready, and then
measures over ``--window`` seconds: ``squeue`` calls per second (every call is counted by a
wrapper placed where each hub finds ``squeue``), the hub process's CPU, and the latency of
the hub's REST API. The jobs run a stand-in single-user server (:mod:`benchmarks.standin`)
instead of JupyterLab; the hubs, spawners and Slurm are the real ones. Everything the
benchmark made (hubs, jobs, their logs, the partition) is removed on exit, also on errors and
Ctrl-C. See ``benchmarks/README.md`` for how to read the result.

``--bursts N`` measures only the spawn burst, fairly: N rounds, each one burst per arm with
the arms alternated and the first arm rotating, a fresh hub and database per burst and the
same database settings for both (``--sqlite-wal``); it reports the median burst per arm and
ours over stock.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pwd
import secrets
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import requests
import yaml

from benchmarks import spawn
from benchmarks.anchors import load_average, rotate
from benchmarks.hubprocess import VENV_PYTHON, BenchHub, HubError, HubPorts
from benchmarks.hubprofile import HubProfiler
from benchmarks.report import emit, format_grid, median, p90, percentile, ratio
from shopfloor.slurm.seam import Slurm, SlurmError

REPO = Path(__file__).resolve().parents[1]
STANDIN = REPO / "benchmarks" / "standin.py"
USER = "alice"
PARTITION = "sfbench"
#: Memory per job: 16 MB for stock (``--mem=16M``) and our model's floor, 0.01 GiB (11 MB),
#: so that 300 jobs fit the demo nodes' 4000 MB each (``CR_CPU_Memory``).
STOCK_MEMORY = "16M"
OURS_MEMORY_GB = 0.01
WALLTIME_MINUTES = 30
#: Targets of the issue: stock makes at least this many times more squeue calls ...
TARGET_SQUEUE_RATIO = 20.0
#: ... and our hub answers its REST API with a p95 below this, at 300 servers.
TARGET_P95_MS = 100.0
#: API requests the benchmark times during the window, alternating: the user's model (it
#: lists every server) and who-am-I (token lookup only, the call each server's auth makes).
PROBES = {"user_model": f"/users/{USER}", "whoami": "/user"}
PROBE_RATE = 5.0  # requests per second, all probes together
READY_POLL_S = 1.0
SLURM = Slurm()


def say(message: str) -> None:
    print(f"benchmarks.scale: {message}", file=sys.stderr, flush=True)


# -- pure parts: counting, CPU, latency, spawn bookkeeping --------------------------------


def count_calls(lines: Iterable[str], start: float, end: float) -> int:
    """Calls logged in ``[start, end)``: one epoch timestamp per line (bad lines skipped)."""
    count = 0
    for line in lines:
        try:
            stamp = float(line.split()[0])
        except (IndexError, ValueError):
            continue
        if start <= stamp < end:
            count += 1
    return count


@dataclass(frozen=True)
class CpuTimes:
    """CPU seconds of a process (``own``) and of its waited-for children (``children``)."""

    own: float
    children: float


def parse_proc_stat(text: str, ticks_per_second: float) -> CpuTimes:
    """``utime+stime`` and ``cutime+cstime`` from a ``/proc/<pid>/stat`` line.

    The command name (field 2) is in parentheses and may contain spaces, so fields are
    counted from the last ``)``: state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    """
    rest = text.rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in rest[11:15])
    return CpuTimes((utime + stime) / ticks_per_second, (cutime + cstime) / ticks_per_second)


def cpu_times(pid: int) -> CpuTimes | None:
    """The CPU times of ``pid`` now, or ``None`` if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return parse_proc_stat(text, os.sysconf("SC_CLK_TCK"))


def cpu_percent(before: CpuTimes | None, after: CpuTimes | None, seconds: float) -> dict[str, Any]:
    """CPU used between two readings, as percent of one core (own and children)."""
    if before is None or after is None or seconds <= 0:
        return {"own": None, "children": None}
    return {
        "own": round(100 * (after.own - before.own) / seconds, 1),
        "children": round(100 * (after.children - before.children) / seconds, 1),
    }


def parse_vmrss(status_text: str) -> float | None:
    """Resident memory in MB from a ``/proc/<pid>/status`` text (its ``VmRSS:`` line)."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            try:
                return round(int(parts[1]) / 1024, 1)  # the kernel reports kB
            except (IndexError, ValueError):
                return None
    return None


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` in MB, or ``None`` if it is gone."""
    try:
        return parse_vmrss(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None


def count_ready(servers: Mapping[str, Mapping[str, Any]]) -> int:
    """How many of a user's servers the hub reports ready."""
    return sum(1 for model in servers.values() if model.get("ready"))


def latency_summary(samples: Sequence[float | None]) -> dict[str, Any]:
    """Count, errors (``None`` samples), p50/p95/max in milliseconds of request times."""
    ok = [s * 1000 for s in samples if s is not None]

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value, 1)

    return {
        "requests": len(samples),
        "errors": len(samples) - len(ok),
        "p50_ms": ms(percentile(ok, 50)),
        "p95_ms": ms(percentile(ok, 95)),
        "max_ms": ms(max(ok)) if ok else None,
    }


def server_names(count: int) -> list[str]:
    """``s001``, ``s002``, ... (zero-padded so that they sort in spawn order)."""
    width = max(3, len(str(count)))
    return [f"s{i:0{width}d}" for i in range(1, count + 1)]


@dataclass
class SpawnTracker:
    """Which servers are still to spawn, spawning, ready or failed.

    At most ``concurrency`` spawns are in flight; :meth:`update` reads the hub's ``servers``
    model (name → ``{"ready": ..., "pending": ...}``) and moves servers on.
    """

    names: Sequence[str]
    concurrency: int
    timeout: float
    queued: deque[str] = field(init=False)
    in_flight: dict[str, float] = field(default_factory=dict)
    ready: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    #: When (``now`` of :meth:`update`) the last server was seen ready.
    last_ready_at: float | None = None

    def __post_init__(self) -> None:
        self.queued = deque(self.names)

    def next_batch(self) -> list[str]:
        """Names to POST now, keeping at most ``concurrency`` spawns in flight."""
        room = max(0, self.concurrency - len(self.in_flight))
        return [self.queued.popleft() for _ in range(min(room, len(self.queued)))]

    def posted(self, name: str, now: float) -> None:
        self.in_flight[name] = now

    def refused(self, name: str, why: str, retry: bool) -> None:
        """The POST was refused: try again later (``retry``) or count it as failed."""
        if retry:
            self.queued.appendleft(name)
        else:
            self.failed[name] = why

    def update(self, servers: Mapping[str, Mapping[str, Any]], now: float) -> None:
        for name, posted in list(self.in_flight.items()):
            model = servers.get(name)
            if model is not None and model.get("ready"):
                self.ready[name] = now - posted
                self.last_ready_at = now
            elif model is None:
                self.failed[name] = "spawn failed (the hub no longer lists the server)"
            elif now - posted > self.timeout:
                self.failed[name] = f"not ready within {self.timeout:g} s"
            else:
                continue
            del self.in_flight[name]

    def give_up(self, why: str) -> None:
        """Count every server not ready yet as failed (the spawn phase ran out of time)."""
        for name in [*self.in_flight, *self.queued]:
            self.failed[name] = why
        self.in_flight.clear()
        self.queued.clear()

    @property
    def done(self) -> bool:
        return not self.queued and not self.in_flight

    def progress(self) -> str:
        return (f"{len(self.ready)}/{len(self.names)} ready, {len(self.in_flight)} spawning, "
                f"{len(self.failed)} failed")


# -- the scene: partition, counting wrappers, stand-in -------------------------------------


@dataclass(frozen=True)
class Scene:
    """The files both hubs use, in a folder that the job user may read (but not list)."""

    root: Path

    @property
    def public(self) -> Path:
        """Readable by the job user: the stand-in wrapper, the squeue wrappers, the counts."""
        return self.root / "public"

    @property
    def standin(self) -> Path:
        return self.public / "standin"

    def bin_dir(self, arm: str) -> Path:
        return self.public / f"bin-{arm}"

    def counter(self, arm: str) -> Path:
        return self.public / "counts" / f"{arm}.squeue"

    def make(self, arms: Sequence[str]) -> None:
        """Write the stand-in wrapper and, per arm, a bin folder whose ``squeue`` counts calls.

        Stock runs ``squeue`` as the user (``sudo -u``), so the count files are writable by
        all; they live in this run's own temporary folder and go with it.
        """
        self.root.chmod(0o711)
        (self.public / "counts").mkdir(parents=True)
        for path in (self.public, self.public / "counts"):
            path.chmod(0o755)
        self.standin.write_text(standin_wrapper(VENV_PYTHON, STANDIN, version("jupyterhub")))
        self.standin.chmod(0o755)
        for arm in arms:
            make_counting_bin(self.bin_dir(arm), self.counter(arm))

    def calls(self, arm: str, start: float, end: float) -> int:
        try:
            lines = self.counter(arm).read_text().splitlines()
        except OSError:
            return 0
        return count_calls(lines, start, end)


def standin_wrapper(python: Path, standin: Path, hub_version: str) -> str:
    """An executable script running :mod:`benchmarks.standin` (exec-able and ``run_path``-able)."""
    return "\n".join([
        f"#!{python}",
        "# Generated by benchmarks.scale: the stand-in single-user server.",
        "import runpy",
        "import sys",
        "",
        f"sys.argv[1:1] = [{'--hub-version=' + hub_version!r}]",
        f"runpy.run_path({str(standin)!r}, run_name='__main__')",
        "",
    ])


def counting_squeue(real: str, counter: Path) -> str:
    """A ``squeue`` that appends the time of each call to ``counter``, then runs ``real``."""
    return (f"#!/bin/bash\n# Generated by benchmarks.scale: count squeue calls.\n"
            f"printf '%s\\n' \"$EPOCHREALTIME\" >> {str(counter)!r}\n"
            f"exec {real} \"$@\"\n")


#: Every Slurm tool our hub may run from ``slurm.bin_dir`` (accounting adds sacctmgr and
#: sshare where the cluster has slurmdbd); only ``squeue`` is counted.
SLURM_TOOLS = ("sbatch", "scancel", "sinfo", "scontrol", "squeue", "sacctmgr", "sshare", "sacct")
OPTIONAL_TOOLS = ("sacctmgr", "sshare", "sacct")


def make_counting_bin(folder: Path, counter: Path) -> None:
    """A Slurm bin folder: counting ``squeue``, links to the real other tools."""
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    counter.touch()
    counter.chmod(0o666)
    for tool in SLURM_TOOLS:
        real = shutil.which(tool)
        if real is None:
            if tool in OPTIONAL_TOOLS:
                continue
            raise SystemExit(f"{tool} is not on PATH: is Slurm installed?")
        if tool == "squeue":
            (folder / tool).write_text(counting_squeue(real, counter))
            (folder / tool).chmod(0o755)
        else:
            (folder / tool).symlink_to(real)


def partition_exists(name: str) -> bool:
    try:
        SLURM.run_sync(["scontrol", "show", "partition", name])
    except SlurmError:
        return False
    return True


def jobs_in_partition(name: str) -> list[str]:
    """Ids of the jobs Slurm still lists in partition ``name`` (any state)."""
    out = SLURM.run_sync(["squeue", "-h", "--states=all", "-p", name, "-o", "%i"])
    return out.split()


def create_partition(name: str, nodes: str) -> None:
    """The benchmark's oversubscribed partition (100 jobs per CPU; memory still counted)."""
    if partition_exists(name):
        if jobs_in_partition(name):
            raise SystemExit(f"partition {name} exists and has jobs: another benchmark is "
                             f"running, or an earlier one left them (scancel -p {name})")
        say(f"deleting partition {name} left by an earlier run")
        SLURM.run_sync(["scontrol", "delete", f"PartitionName={name}"])
    SLURM.run_sync(["scontrol", "create", f"PartitionName={name}", f"Nodes={nodes}",
                    "OverSubscribe=FORCE:100", "MaxTime=60", "State=UP"])


def delete_partition(name: str) -> None:
    """Cancel what is left in the partition (only the benchmark uses it), then delete it."""
    if not partition_exists(name):
        return
    leftover = jobs_in_partition(name)
    if leftover:
        spawn.cancel_jobs(leftover)
        spawn.wait_jobs_gone(leftover, timeout=60)
    SLURM.run_sync(["scontrol", "delete", f"PartitionName={name}"])


def slurmctld_pid() -> int | None:
    """slurmctld's pid from its pid file (Slurm's own setting), or ``None``."""
    try:
        out = SLURM.run_sync(["scontrol", "show", "config"])
    except SlurmError:
        return None
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "SlurmctldPidFile":
            try:
                return int(Path(value.strip()).read_text().split()[0])
            except (OSError, ValueError, IndexError):
                return None
    return None


# -- configuration of the two hubs --------------------------------------------------------


def bench_lines(servers: int, concurrency: int, token: str) -> list[str]:
    """Config lines both hubs share: room for the servers, an admin service for the driver.

    ``slow_spawn_timeout = 0`` makes ``POST .../servers/<name>`` answer at once (202) instead
    of waiting up to 10 s for the spawn, so that one loop can keep many spawns in flight.
    """
    return [
        "# benchmarks.scale: room for many named servers, and the driver's admin service.",
        "c.JupyterHub.allow_named_servers = True",
        f"c.JupyterHub.named_server_limit_per_user = {servers + 10}",
        f"c.JupyterHub.concurrent_spawn_limit = {max(100, 2 * concurrency)}",
        "c.JupyterHub.active_server_limit = 0",
        "c.JupyterHub.cleanup_servers = False",
        "c.JupyterHub.tornado_settings.update({'slow_spawn_timeout': 0})",
        f"c.JupyterHub.services.append({{'name': 'bench', 'api_token': {token!r}}})",
        "c.JupyterHub.load_roles.append({'name': 'bench-admin', 'services': ['bench'], "
        "'scopes': ['admin:users', 'admin:servers']})",
        "",
    ]


def bench_site(scene: Scene, source: Path = spawn.DEMO_SITE, sqlite_wal: bool = True
               ) -> dict[str, Any]:
    """The demo site, plus the benchmark's partition and the counting Slurm bin folder."""
    site = yaml.safe_load(source.read_text())
    site["hub"]["sqlite_wal"] = sqlite_wal
    site["slurm"]["bin_dir"] = str(scene.bin_dir("ours"))
    site["partitions"][PARTITION] = {
        "description": "benchmarks.scale only: oversubscribed, tiny jobs.",
        "max_cpus": 1,
        "max_memory_gb": 0.1,
        "max_walltime": f"0:{WALLTIME_MINUTES}:00",
        "default_cpus": 1,
        "default_memory_gb": OURS_MEMORY_GB,
        "default_walltime": f"0:{WALLTIME_MINUTES}:00",
    }
    return site


def ours_config(
    scene: Scene, state_dir: Path, ports: HubPorts, servers: int, concurrency: int, token: str,
    sqlite_wal: bool = True,
) -> str:
    """Our hub: ``install(c, site)`` as :mod:`benchmarks.spawn` does, on the bench site."""
    source = state_dir / "site-source.yaml"
    source.write_text(yaml.safe_dump(bench_site(scene, sqlite_wal=sqlite_wal),
                                     sort_keys=False))
    return "\n".join([
        spawn.ours_config(state_dir, ports, site_source=source),
        f"c.ShopfloorSpawner.cmd = [{str(scene.standin)!r}]",
        "# benchmarks.scale: the apps service is left out (see notes): not started, it made",
        "# the hub wait ~30 s for its URL at every start, which the restart figure measures.",
        "c.JupyterHub.services = [s for s in c.JupyterHub.services if s.get('name') != 'apps']",
        "for _role in c.JupyterHub.load_roles:",
        "    if 'apps' in _role.get('services', []):",
        "        _role['services'] = [s for s in _role['services'] if s != 'apps']",
        *bench_lines(servers, concurrency, token),
    ])


def stock_query_cmd(squeue: Path) -> str:
    """Stock batchspawner's own ``batch_query_cmd``, with ``squeue`` at ``squeue``'s path."""
    from batchspawner import SlurmSpawner

    default = SlurmSpawner.class_traits()["batch_query_cmd"].default_value
    if not default.startswith("squeue "):
        raise RuntimeError(f"unexpected batchspawner batch_query_cmd: {default!r}")
    return f"{squeue} {default.removeprefix('squeue ')}"


def stock_config(
    scene: Scene, state_dir: Path, ports: HubPorts, servers: int, concurrency: int, token: str,
    srun: str, sqlite_wal: bool = True,
) -> str:
    """Stock ``SlurmSpawner`` as :mod:`benchmarks.spawn` configures it, on the bench partition.

    The stand-in replaces both ``batchspawner-singleuser`` (it reports the port the same
    way) and ``jupyterhub-singleuser``. With ``sqlite_wal`` its SQLite database is opened
    exactly as ours is with ``hub.sqlite_wal`` (the same ``db_kwargs``), so that both arms
    run on the same database settings.
    """
    wal = [
        "# benchmarks.scale: the same database settings as our hub (hub.sqlite_wal).",
        "from shopfloor.ops.database import wal_connector",
        "c.JupyterHub.db_kwargs = {'creator': wal_connector(c.JupyterHub.db_url)}",
    ] if sqlite_wal else []
    return "\n".join([
        spawn.stock_config(state_dir, ports, USER, srun),
        *wal,
        "# benchmarks.scale: tiny jobs on the bench partition, the stand-in server.",
        f"c.SlurmSpawner.req_partition = {PARTITION!r}",
        f"c.SlurmSpawner.req_memory = {STOCK_MEMORY!r}",
        f"c.SlurmSpawner.req_runtime = '0:{WALLTIME_MINUTES}:00'",
        "c.SlurmSpawner.batchspawner_singleuser_cmd = ''",
        f"c.Spawner.cmd = [{str(scene.standin)!r}, '--report-port']",
        f"c.SlurmSpawner.batch_query_cmd = {stock_query_cmd(scene.bin_dir('stock') / 'squeue')!r}",
        *bench_lines(servers, concurrency, token),
    ])


# -- one arm: spawn all, measure, tear down -----------------------------------------------


@dataclass
class Arm:
    """One hub under test and what was measured on it."""

    key: str
    label: str
    hub: BenchHub
    user_options: dict[str, Any]
    job_log: Callable[[str, str], Path]  #: (home, job id) → the job's log file
    token: str
    result: dict[str, Any] = field(default_factory=dict)
    session: requests.Session = field(default_factory=requests.Session)

    def api(self, method: str, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 30)
        headers = {"Authorization": f"token {self.token}"}
        return self.session.request(method, f"{self.hub.url}/hub/api{path}", headers=headers,
                                    **kw)

    def servers(self) -> dict[str, dict[str, Any]]:
        resp = self.api("GET", f"/users/{USER}")
        resp.raise_for_status()
        return resp.json().get("servers") or {}

    def start(self) -> None:
        self.hub.start()
        resp = self.api("POST", f"/users/{USER}")
        if resp.status_code not in (201, 409):
            raise HubError(f"{self.key} hub: cannot create user {USER}: {resp.status_code} "
                           f"{resp.text[:200]}; see {self.hub.log_file}")

    def spawn_all(self, names: Sequence[str], concurrency: int, timeout: float,
                  phase_timeout: float) -> SpawnTracker:
        """POST every server (at most ``concurrency`` in flight) until all are ready."""
        tracker = SpawnTracker(names, concurrency, timeout)
        deadline = time.monotonic() + phase_timeout
        last_report = time.monotonic()
        while not tracker.done:
            if time.monotonic() > deadline:
                tracker.give_up(f"spawn phase ran out of time ({phase_timeout:g} s)")
                break
            for name in tracker.next_batch():
                self._post(tracker, name)
            time.sleep(READY_POLL_S)
            try:
                tracker.update(self.servers(), time.monotonic())
            except (OSError, ValueError) as exc:
                say(f"{self.key}: cannot read the servers ({exc}); retrying")
            if self.hub.exited() is not None:
                tracker.give_up(f"the hub exited with {self.hub.exited()}")
            if time.monotonic() - last_report > 15:
                last_report = time.monotonic()
                say(f"{self.key}: {tracker.progress()}")
        return tracker

    def _post(self, tracker: SpawnTracker, name: str) -> None:
        body = {"user_options": self.user_options}
        try:
            resp = self.api("POST", f"/users/{USER}/servers/{name}", json=body)
        except OSError as exc:
            tracker.refused(name, f"POST failed: {exc}", retry=False)
            return
        if resp.status_code in (201, 202):
            tracker.posted(name, time.monotonic())
        else:
            tracker.refused(name, f"POST answered {resp.status_code}: {resp.text[:200]}",
                            retry=resp.status_code == 429)

    def probe(self, path: str) -> float | None:
        """Seconds one authenticated GET takes, or ``None`` if it failed."""
        started = time.perf_counter()
        try:
            resp = self.api("GET", path, timeout=10)
        except OSError:
            return None
        return time.perf_counter() - started if resp.status_code == 200 else None

    def browser(self, password: str) -> requests.Session:
        """A session logged in as ``USER`` through the login form (pages take no tokens)."""
        client = spawn.hub_client_class()(self.hub.url)
        client.login(USER, password)
        return client.http

    def page_time(self, browser: requests.Session, path: str) -> float | None:
        """Seconds a hub page (``/hub/...``) takes to render; ``None`` unless it answers 200."""
        started = time.perf_counter()
        try:
            resp = browser.get(f"{self.hub.url}{path}", timeout=30, allow_redirects=False)
        except OSError:
            return None
        return time.perf_counter() - started if resp.status_code == 200 else None

    def close(self, job_ids: Sequence[str]) -> None:
        spawn._try(self.hub.stop)
        spawn._try(spawn.cancel_jobs, list(job_ids))


def measure_window(arm: Arm, scene: Scene, seconds: float) -> dict[str, Any]:
    """squeue calls, hub (and slurmctld) CPU and API latency over ``seconds``."""
    hub_pid = arm.hub.process.pid if arm.hub.process else -1
    ctld_pid = slurmctld_pid() or -1
    samples: dict[str, list[float | None]] = {key: [] for key in PROBES}
    probes = list(PROBES.items())
    start_epoch, start = time.time(), time.monotonic()
    hub_before, ctld_before = cpu_times(hub_pid), cpu_times(ctld_pid)
    next_at, sent = start, 0
    while time.monotonic() < start + seconds:
        key, path = probes[sent % len(probes)]
        sent += 1
        samples[key].append(arm.probe(path))
        next_at += 1 / PROBE_RATE
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.monotonic()  # behind schedule (a slow answer): no burst after it
    elapsed = time.monotonic() - start
    hub_after, ctld_after = cpu_times(hub_pid), cpu_times(ctld_pid)
    calls = scene.calls(arm.key, start_epoch, start_epoch + elapsed)
    return {
        "seconds": round(elapsed, 1),
        "hub_rss_mb": rss_mb(hub_pid),
        "squeue_calls": calls,
        "squeue_calls_per_s": round(calls / elapsed, 3),
        "hub_cpu_percent": cpu_percent(hub_before, hub_after, elapsed),
        "slurmctld_cpu_percent": cpu_percent(ctld_before, ctld_after, elapsed)["own"],
        "latency": {key: latency_summary(values) for key, values in samples.items()},
    }


#: Pages timed after the window (as the user, with a token): the home page lists every
#: server; the spawn page renders the options form (ours only: stock has no form, and its
#: spawn page would start a server).
PAGE_SAMPLES = 5


def measure_pages(arm: Arm, credentials: Path) -> dict[str, Any]:
    """p50/p95/max of the home page and (ours) a new named server's spawn page, as ``USER``
    logged in through the login form with the demo password."""
    pages = {"home": "/hub/home"}
    if arm.key == "ours":
        pages["spawn_page"] = f"/hub/spawn/{USER}/pagecheck"
    try:
        password = json.loads(credentials.read_text())[USER]
        browser = arm.browser(password)
    except (OSError, ValueError, KeyError, AssertionError) as exc:  # the client asserts login
        return {"error": f"cannot log in as {USER} ({type(exc).__name__}: {exc}); pages "
                f"need the demo password in {credentials}"}
    return {name: latency_summary([arm.page_time(browser, path) for _ in range(PAGE_SAMPLES)])
            for name, path in pages.items()}


def measure_restart(arm: Arm, expected: int, timeout: float) -> dict[str, Any]:
    """Stop the hub (sessions keep running), start it again, time until all are ready again.

    ``hub_answers_s``: until its API answers through the proxy; ``all_known_s``: until
    ``GET /users/alice`` lists ``expected`` ready servers (JupyterHub polls every server at
    start-up and drops those whose poll says they are gone).
    """
    arm.hub.stop()
    started = time.monotonic()
    arm.hub.start(timeout=timeout)
    answers = time.monotonic() - started
    ready = 0
    while time.monotonic() - started < timeout:
        try:
            ready = count_ready(arm.servers())
        except (OSError, ValueError):
            ready = 0
        if ready >= expected:
            break
        time.sleep(0.25)
    known = time.monotonic() - started
    return {
        "expected": expected,
        "ready_after": ready,
        "hub_answers_s": round(answers, 2),
        "all_known_s": round(known, 2) if ready >= expected else None,
        "hub_rss_mb_after": rss_mb(arm.hub.process.pid) if arm.hub.process else None,
    }


def run_arm(arm: Arm, scene: Scene, args: argparse.Namespace) -> None:
    """Start the hub, spawn every server, measure the window, stop it all. Fills ``result``."""
    names = server_names(args.servers)
    result = arm.result
    say(f"starting the {arm.key} hub at {arm.hub.url} (log {arm.hub.log_file})")
    arm.start()
    profiler = None
    if args.profile and arm.hub.process is not None:
        profiler = HubProfiler(arm.hub.process.pid, arm.hub.state_dir / "spawn-profile.txt")
        profiler.start()
    spawn_epoch, spawn_start = time.time(), time.monotonic()
    try:
        tracker = arm.spawn_all(names, args.concurrency, args.spawn_timeout, args.phase_timeout)
    finally:
        if profiler is not None:
            result["spawn_profile"] = profiler.stop()
    spawn_seconds = time.monotonic() - spawn_start
    spawn_calls = scene.calls(arm.key, spawn_epoch, time.time())
    times = list(tracker.ready.values())
    result["spawn"] = {
        "requested": len(names),
        "ready": len(tracker.ready),
        "failed": len(tracker.failed),
        "seconds": round(spawn_seconds, 1),
        "per_server_median_s": _round(median(times), 2),
        "per_server_p90_s": _round(p90(times), 2),
        "squeue_calls": spawn_calls,
        "squeue_calls_per_s": round(spawn_calls / spawn_seconds, 2) if spawn_seconds else None,
        "errors": dict(list(tracker.failed.items())[:10]),
    }
    say(f"{arm.key}: spawn phase over in {spawn_seconds:.0f} s: {tracker.progress()}")
    if not tracker.ready:
        return
    time.sleep(args.settle)
    say(f"{arm.key}: measuring for {args.window:g} s with {len(tracker.ready)} servers")
    window = measure_window(arm, scene, args.window)
    try:
        running = sum(1 for m in arm.servers().values() if m.get("ready"))
    except (OSError, ValueError):
        running = None
    result["window"] = {"servers_ready_at_start": len(tracker.ready),
                        "servers_ready_at_end": running, **window}
    result["pages"] = measure_pages(arm, args.credentials)
    if args.restart:
        say(f"{arm.key}: restarting the hub with {running} sessions running")
        result["restart"] = measure_restart(arm, running or 0, args.restart_timeout)
        say(f"{arm.key}: restart: {result['restart']}")
    say(f"{arm.key}: {window['squeue_calls_per_s']} squeue calls/s, hub CPU "
        f"{window['hub_cpu_percent']['own']} %, user model p95 "
        f"{window['latency']['user_model']['p95_ms']} ms")


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def remove_job_logs(arm: Arm, job_ids: Sequence[str], home: str) -> None:
    """Delete the job logs of the benchmark's own jobs (they are the user's files)."""
    for job_id in job_ids:
        arm.job_log(home, job_id).unlink(missing_ok=True)


# -- alternated bursts: the spawn phase only, arms taking turns ---------------------------


def run_burst(arm: Arm, args: argparse.Namespace) -> dict[str, Any]:
    """Start the arm's fresh hub, spawn ``--servers`` servers, and time the spawn phase.

    The hub, its jobs and its database are new for every burst, so each burst of each arm
    starts from the same state; the hub is stopped and its jobs are gone before the next.
    """
    names = server_names(args.servers)
    arm.start()
    profiler = None
    if args.profile and arm.hub.process is not None:
        profiler = HubProfiler(arm.hub.process.pid, arm.hub.state_dir / "spawn-profile.txt")
        profiler.start()
    load_start = load_average()["load1"]
    hub_pid = arm.hub.process.pid if arm.hub.process else -1
    cpu_before, started = cpu_times(hub_pid), time.monotonic()
    try:
        tracker = arm.spawn_all(names, args.concurrency, args.spawn_timeout, args.phase_timeout)
    finally:
        seconds = time.monotonic() - started
        cpu_after = cpu_times(hub_pid)
        profile = profiler.stop() if profiler is not None else None
    times = list(tracker.ready.values())
    last_ready = None if tracker.last_ready_at is None else tracker.last_ready_at - started
    burst: dict[str, Any] = {
        "seconds": round(seconds, 1),
        "last_ready_s": _round(last_ready, 1),
        "ready": len(tracker.ready),
        "failed": len(tracker.failed),
        "per_server_median_s": _round(median(times), 2),
        "per_server_p90_s": _round(p90(times), 2),
        "hub_cpu_s": (None if cpu_before is None or cpu_after is None
                      else round(cpu_after.own - cpu_before.own, 1)),
        "hub_children_cpu_s": (None if cpu_before is None or cpu_after is None
                               else round(cpu_after.children - cpu_before.children, 1)),
        "load_start": load_start,
        "load_end": load_average()["load1"],
        "errors": dict(list(tracker.failed.items())[:5]),
    }
    if profile is not None:
        burst["profile"] = profile
    return burst


def summarize_bursts(bursts: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """Median, min and max burst seconds per arm over bursts where every server got ready,
    and ours over stock: the ratio of medians and the per-round (paired) ratios."""
    summary: dict[str, Any] = {}
    for key, runs in bursts.items():
        ok = [b["seconds"] for b in runs if not b.get("failed") and b.get("ready")]
        summary[key] = {
            "bursts": len(runs), "complete": len(ok), "median_s": _round(median(ok), 1),
            "min_s": min(ok) if ok else None, "max_s": max(ok) if ok else None,
            "last_ready_median_s": _round(median(
                [b["last_ready_s"] for b in runs if b.get("last_ready_s") is not None]), 1),
            "hub_cpu_median_s": _round(median(
                [b["hub_cpu_s"] for b in runs if b.get("hub_cpu_s") is not None]), 1),
        }
    ours, stock = bursts.get("ours", []), bursts.get("stock", [])
    paired = [a["seconds"] / b["seconds"] for a, b in zip(ours, stock, strict=False)
              if not a.get("failed") and not b.get("failed") and b["seconds"]]
    summary["ratio_ours_over_stock"] = _round(ratio(
        summary.get("ours", {}).get("median_s"), summary.get("stock", {}).get("median_s")), 3)
    summary["paired_ours_over_stock"] = {
        "values": [round(x, 3) for x in paired], "median": _round(median(paired), 3),
    }
    return summary


def run_alternated(scene: Scene, args: argparse.Namespace, home: str) -> dict[str, Any]:
    """``--bursts`` rounds; each round runs one burst per arm, the first arm rotating."""
    bursts: dict[str, list[dict[str, Any]]] = {key: [] for key in args.arm_keys}
    for round_index in range(args.bursts):
        for key in rotate(args.arm_keys, round_index):
            arm = make_arm(key, scene, args, tag=f"-{round_index + 1}")
            say(f"round {round_index + 1}/{args.bursts}: {key} burst of {args.servers}")
            try:
                burst = run_burst(arm, args)
            finally:
                with spawn.uninterruptible():
                    job_ids = arm.hub.job_ids()
                    arm.close(job_ids)
                    spawn._try(spawn.wait_jobs_gone, job_ids, 120)
            burst["round"] = round_index + 1
            bursts[key].append(burst)
            say(f"{key}: {burst['ready']}/{args.servers} ready in {burst['seconds']} s "
                f"(load {burst['load_start']} -> {burst['load_end']})")
            if not args.keep_state and not burst["failed"]:
                remove_job_logs(arm, job_ids, home)
                shutil.rmtree(arm.hub.state_dir, ignore_errors=True)
    return {"bursts": bursts, "summary": summarize_bursts(bursts)}


def bursts_table(document: Mapping[str, Any]) -> str:
    """One row per burst, then the medians and the ratio."""
    rows = []
    for key, runs in document["bursts"].items():
        for b in runs:
            rows.append((str(b["round"]), key, f"{b['ready']}/{document['servers']}",
                         f"{b['seconds']:g}", str(b.get("last_ready_s")),
                         str(b.get("hub_cpu_s")),
                         f"{b['load_start']}-{b['load_end']}"))
    s = document["summary"]
    footer = [f"{k}: median {s[k]['median_s']} s (min {s[k]['min_s']}, max {s[k]['max_s']})"
              for k in document["bursts"]]
    footer.append(f"ours/stock: ratio of medians {s['ratio_ours_over_stock']}, per round "
                  f"{s['paired_ours_over_stock']['values']} (median "
                  f"{s['paired_ours_over_stock']['median']})")
    title = (f"scale bursts: {document['servers']} sessions, {document['concurrency']} in "
             f"flight, arms alternated (host {document['host']}, {document['cpus']} CPUs)")
    return format_grid(title, ("round", "arm", "ready", "burst s", "last ready s", "hub CPU s",
                                "load"),
                       rows, footer)


# -- the document --------------------------------------------------------------------------


def notes(args: argparse.Namespace) -> list[str]:
    return [
        f"Each arm runs {args.servers} named servers of {USER} (one hub user; jobs run as a "
        "real Unix user) as Slurm jobs, spawned with at most "
        f"{args.concurrency} spawns in flight. The jobs run benchmarks/standin.py instead "
        "of JupyterLab: it reports its port the way each arm's launcher does (ours: "
        "shopfloor.session.singleuser; stock: the same POST as batchspawner-singleuser), "
        "answers HTTP and reports activity like jupyterhub-singleuser. The hubs, spawners "
        "and Slurm are real.",
        f"Capacity: a temporary partition {PARTITION} (Nodes={args.nodes}, "
        "OverSubscribe=FORCE:100, MaxTime=60) is created for the run and deleted after it. "
        "Memory stays a consumable resource (CR_CPU_Memory, 4000 MB per node), so each job "
        f"asks for very little: stock --mem={STOCK_MEMORY}, ours memory_gb={OURS_MEMORY_GB} "
        "(11 MB; the floor of our resource model was lowered from 0.1 to 0.01 GiB for this).",
        "squeue calls are counted by a wrapper that logs each call and execs the real squeue: "
        "first in our hub's slurm.bin_dir, and stock's batch_query_cmd (its own default "
        "command with the wrapper's path; it still runs through exec_prefix, sudo -u user). "
        "Every squeue either hub runs is counted, including the cluster snapshots ours takes.",
        "Poll settings are each side's own: stock polls every server every "
        "Spawner.poll_interval = 30 s (JupyterHub's default) and every 0.5 s per pending "
        "spawn; ours is installed by install() from the demo site: JupyterHub polls each "
        "server every 10 s, which reads one shared squeue snapshot at most slurm.poll_interval"
        " = 5 s old (one `squeue -j id1,id2,...` for all), and pending spawns share one at "
        "most 0.5 s old. Expected steady state: stock servers/30 calls/s, ours 0.2/s.",
        "hub_cpu_percent.own is the hub process's utime+stime over the window in percent of "
        "one core; .children is what its finished child processes used (sudo, squeue, ...), "
        "from cutime+cstime. slurmctld_cpu_percent is the controller's own CPU (other users "
        "of the shared cluster add to it).",
        f"Latency: {PROBE_RATE:g} requests/s during the window, alternating "
        f"GET /hub/api/users/{USER} (the model lists every server: the heavy one, used for the "
        "target) and GET /hub/api/user (who-am-I), through the hub's proxy with an admin "
        "service token. The window starts after all servers are ready plus --settle seconds.",
        "Our hub's 'apps' service (published notebooks) is left out of the config: it is a "
        "process of its own, calls no squeue while no app runs, and it outlived its hub when "
        "the hub was stopped (it did not exit within 20 s of JupyterHub's stop); defined but "
        "not started, it made the hub wait ~30 s for its URL at every start.",
        "Both hubs use slow_spawn_timeout = 0 (POST returns at once) and cleanup_servers = "
        "False; the benchmark stops each hub and then cancels exactly the jobs it submitted. "
        "Stock's req_srun is '" + args.stock_srun + "' (batchspawner's default is 'srun'; "
        "the server in the batch script spares 300 job steps and does not change what the "
        "hub does).",
    ]


def targets(ours: Mapping[str, Any], stock: Mapping[str, Any], servers: int) -> dict[str, Any]:
    """The issue's targets, checked against this run's figures."""
    ours_rate = ours.get("window", {}).get("squeue_calls_per_s")
    stock_rate = stock.get("window", {}).get("squeue_calls_per_s")
    reduction = ratio(stock_rate, ours_rate)
    p95 = ours.get("window", {}).get("latency", {}).get("user_model", {}).get("p95_ms")
    return {
        "at_servers": servers,
        "squeue_reduction": {
            "want_at_least": TARGET_SQUEUE_RATIO,
            "got": _round(reduction, 1),
            "met": reduction is not None and reduction >= TARGET_SQUEUE_RATIO,
        },
        "ours_hub_p95_ms": {
            "want_below": TARGET_P95_MS,
            "got": p95,
            "met": p95 is not None and p95 < TARGET_P95_MS,
        },
    }


def build_document(
    arms: Sequence[Arm], args: argparse.Namespace, started: datetime, context: dict[str, Any]
) -> dict[str, Any]:
    blocks = {arm.key: {"label": arm.label, **arm.result} for arm in arms}
    ours, stock = blocks.get("ours", {}), blocks.get("stock", {})

    def window_ratio(*keys: str) -> float | None:
        def get(block: Mapping[str, Any]) -> Any:
            value: Any = block.get("window", {})
            for key in keys:
                value = value.get(key) if isinstance(value, Mapping) else None
            return value
        return _round(ratio(get(stock), get(ours)), 2)

    return {
        "benchmark": "scale",
        "measures": "squeue calls/s, hub CPU and hub API latency with N sessions running",
        "servers": args.servers,
        "window_s": args.window,
        "concurrency": args.concurrency,
        "partition": {"name": PARTITION, "nodes": args.nodes, "oversubscribe": "FORCE:100"},
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now().isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        **context,
        "ours": ours,
        "stock": stock,
        "ratio_stock_over_ours": {
            "squeue_calls_per_s": window_ratio("squeue_calls_per_s"),
            "hub_cpu_own": window_ratio("hub_cpu_percent", "own"),
            "hub_cpu_children": window_ratio("hub_cpu_percent", "children"),
            "user_model_p95": window_ratio("latency", "user_model", "p95_ms"),
        },
        "targets": targets(ours, stock, args.servers),
        "versions": spawn.versions(),
        "notes": notes(args),
    }


def table_for(document: Mapping[str, Any]) -> str:
    """Rows of metrics, columns ours / stock / stock÷ours."""
    def get(arm: str, *keys: str) -> Any:
        value: Any = document.get(arm, {})
        for key in keys:
            value = value.get(key) if isinstance(value, Mapping) else None
        return value

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:g}" if isinstance(value, float) else str(value)

    rows_spec = [
        ("servers ready / requested", None),
        ("spawn phase, s", ("spawn", "seconds")),
        ("spawn phase squeue calls/s", ("spawn", "squeue_calls_per_s")),
        ("squeue calls/s (window)", ("window", "squeue_calls_per_s")),
        ("hub CPU % of a core", ("window", "hub_cpu_percent", "own")),
        ("hub children CPU %", ("window", "hub_cpu_percent", "children")),
        ("slurmctld CPU %", ("window", "slurmctld_cpu_percent")),
        ("GET users/alice p50 ms", ("window", "latency", "user_model", "p50_ms")),
        ("GET users/alice p95 ms", ("window", "latency", "user_model", "p95_ms")),
        ("GET user p50 ms", ("window", "latency", "whoami", "p50_ms")),
        ("GET user p95 ms", ("window", "latency", "whoami", "p95_ms")),
        ("hub RSS MB", ("window", "hub_rss_mb")),
        ("home page p50 ms", ("pages", "home", "p50_ms")),
        ("spawn page p50 ms", ("pages", "spawn_page", "p50_ms")),
        ("restart: hub answers, s", ("restart", "hub_answers_s")),
        ("restart: all sessions known, s", ("restart", "all_known_s")),
    ]
    rows = []
    for label, keys in rows_spec:
        if keys is None:
            ours = f"{get('ours', 'spawn', 'ready')}/{get('ours', 'spawn', 'requested')}"
            stock = f"{get('stock', 'spawn', 'ready')}/{get('stock', 'spawn', 'requested')}"
            rows.append((label, ours, stock, ""))
            continue
        a, b = get("ours", *keys), get("stock", *keys)
        both = isinstance(a, int | float) and isinstance(b, int | float)
        rows.append((label, cell(a), cell(b), cell(_round(ratio(b, a), 1)) if both else "-"))
    t = document["targets"]
    footer = [
        f"targets at {t['at_servers']} servers: squeue stock/ours >= "
        f"{t['squeue_reduction']['want_at_least']:g} -> {cell(t['squeue_reduction']['got'])} "
        f"({'met' if t['squeue_reduction']['met'] else 'NOT met'}); our hub p95 < "
        f"{t['ours_hub_p95_ms']['want_below']:g} ms -> {cell(t['ours_hub_p95_ms']['got'])} "
        f"({'met' if t['ours_hub_p95_ms']['met'] else 'NOT met'})",
    ]
    if document.get("interrupted"):
        footer.append("INTERRUPTED: partial results")
    title = (f"scale: {document['servers']} sessions per arm, {document['window_s']:g} s "
             f"window (host {document['host']}, {document['cpus']} CPUs)")
    return format_grid(title, ("metric", "ours", "stock", "stock/ours"), rows, footer)


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale",
        description="squeue calls, hub CPU and hub API latency with many sessions: "
        "Shopfloor's spawner against stock batchspawner on the local Slurm cluster (run as "
        "root, from the repository root).",
    )
    parser.add_argument("--servers", type=int, default=300, help="sessions per arm (300)")
    parser.add_argument("--window", type=float, default=60,
                        help="seconds measured once all sessions are ready (60)")
    parser.add_argument("--settle", type=float, default=5,
                        help="seconds between the last ready session and the window (5)")
    parser.add_argument("--concurrency", type=int, default=20,
                        help="spawns in flight at a time (20)")
    parser.add_argument("--spawn-timeout", type=float, default=180,
                        help="seconds one spawn may take before it counts as failed (180)")
    parser.add_argument("--phase-timeout", type=float, default=420,
                        help="seconds the whole spawn phase of an arm may take (420)")
    parser.add_argument("--nodes", default="gpu1,debug1",
                        help="nodes of the benchmark's partition (gpu1,debug1: the default "
                        "cpu partition stays free for other users of the cluster)")
    parser.add_argument("--ours-port", type=int, default=8350,
                        help="public port of our hub; +1 hub API, +2 proxy API (8350)")
    parser.add_argument("--stock-port", type=int, default=8450,
                        help="public port of the stock hub; +1 hub API, +2 proxy API (8450)")
    parser.add_argument("--stock-srun", default="",
                        help="stock req_srun ('': server in the batch script, as ours)")
    parser.add_argument("--arms", default="ours,stock",
                        help="which arms to run, in order (ours,stock)")
    parser.add_argument("--credentials", type=Path, default=spawn.DEMO_CREDENTIALS,
                        help="JSON file of passwords by user, to time the pages as "
                        f"{USER} ({spawn.DEMO_CREDENTIALS})")
    parser.add_argument("--no-restart", dest="restart", action="store_false",
                        help="skip restarting each hub after the window (timed until every "
                        "session is known again)")
    parser.add_argument("--restart-timeout", type=float, default=300,
                        help="seconds a restarted hub may take to know every session (300)")
    parser.add_argument("--profile", action="store_true",
                        help="sample each hub's Python stacks with py-spy during the spawn "
                        "phase; the busiest functions go into the JSON (spawn_profile)")
    parser.add_argument("--sqlite-wal", choices=("on", "off"), default="on",
                        help="both hubs' SQLite in write-ahead-log mode (on: our default, "
                        "hub.sqlite_wal; stock gets the same db_kwargs) or SQLite's "
                        "rollback journal (off: JupyterHub's default) (on)")
    parser.add_argument("--bursts", type=int, default=0,
                        help="alternated mode: this many rounds of one spawn burst per arm "
                        "(ours, stock; the first arm rotating), a fresh hub and database per "
                        "burst, no window; reports median burst times and ours/stock (0: "
                        "the classic one-arm-after-the-other run with window and restart)")
    parser.add_argument("--json-out", type=Path, help="also write the JSON document here")
    parser.add_argument("--table", action="store_true",
                        help="print the table on stdout instead of the JSON")
    parser.add_argument("--keep-state", action="store_true",
                        help="keep the hubs' folders and the job logs (kept anyway on failures)")
    args = parser.parse_args(argv)
    if args.profile and not HubProfiler.available():
        parser.error("--profile needs py-spy on PATH (pip install py-spy)")
    arms = [a for a in args.arms.split(",") if a]
    if args.servers < 1 or args.window <= 0 or args.concurrency < 1 or args.bursts < 0:
        parser.error("--servers and --concurrency must be at least 1, --window above 0")
    if not arms or any(a not in ("ours", "stock") for a in arms):
        parser.error("--arms is a comma-separated list of ours and stock")
    args.arm_keys = arms
    return args


def make_arm(key: str, scene: Scene, args: argparse.Namespace, tag: str = "") -> Arm:
    """One arm's hub, in a fresh state folder ``<key><tag>`` (a new database each time)."""
    state_dir = scene.root / f"{key}{tag}"
    state_dir.mkdir(mode=0o700)
    token = secrets.token_hex(32)
    if key == "ours":
        ports = HubPorts(args.ours_port)
        config = ours_config(scene, state_dir, ports, args.servers, args.concurrency, token,
                             args.sqlite_wal == "on")
        hub = BenchHub("ours", state_dir, ports, config, job_id_pattern=r"submitted job (\d+) to ")
        options = {"partition": PARTITION, "cpus": 1, "memory_gb": OURS_MEMORY_GB,
                   "walltime": str(WALLTIME_MINUTES)}
        return Arm("ours", "ours (ShopfloorSpawner)", hub, options,
                   lambda home, job: Path(home, ".shopfloor", "logs", f"{job}.log"), token)
    ports = HubPorts(args.stock_port)
    config = stock_config(scene, state_dir, ports, args.servers, args.concurrency, token,
                          args.stock_srun, args.sqlite_wal == "on")
    hub = BenchHub("stock", state_dir, ports, config,
                   job_id_pattern=r"Job submitted\. output: (\d+)")
    return Arm("stock", "stock (batchspawner.SlurmSpawner)", hub, {},
               lambda home, job: Path(home, f"jupyterhub_slurmspawner_{job}.log"), token)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("run as root: the hubs submit jobs as the user (sudo) and the "
                         "benchmark creates a Slurm partition")
    if shutil.which("configurable-http-proxy") is None:
        raise SystemExit("configurable-http-proxy is not on PATH (npm install -g it)")
    home = pwd.getpwnam(USER).pw_dir
    started = datetime.now()
    scene = Scene(Path(tempfile.mkdtemp(prefix="shopfloor-bench-scale-", dir="/tmp")))
    scene.make(args.arm_keys)
    context: dict[str, Any] = {"active_jobs_on_cluster_at_start": spawn.active_job_count()}
    if args.bursts:
        return main_bursts(scene, args, home, started, context)
    arms: list[Arm] = []
    interrupted = hub_failed = False
    try:
        with spawn.terminate_as_interrupt():
            create_partition(PARTITION, args.nodes)
            for key in args.arm_keys:
                arm = make_arm(key, scene, args)
                arms.append(arm)
                try:
                    run_arm(arm, scene, args)
                finally:
                    with spawn.uninterruptible():
                        job_ids = arm.hub.job_ids()
                        say(f"{arm.key}: stopping the hub and cancelling its "
                            f"{len(job_ids)} jobs")
                        arm.close(job_ids)
                        spawn._try(spawn.wait_jobs_gone, job_ids, 90)
                        arm.result["jobs_submitted"] = len(job_ids)
                        if not args.keep_state and not arm.result.get("spawn", {}).get("failed"):
                            remove_job_logs(arm, job_ids, home)
    except HubError as exc:
        hub_failed = True
        say(str(exc))
    except KeyboardInterrupt:
        interrupted = True
        say("interrupted; cleaning up")
    finally:
        with spawn.uninterruptible():
            spawn._try(delete_partition, PARTITION)
    failed = interrupted or hub_failed or any(
        a.result.get("spawn", {}).get("failed") or "window" not in a.result for a in arms
    )
    if failed or args.keep_state:
        say(f"state and logs kept in {scene.root}")
        context["state_dir"] = str(scene.root)
    else:
        shutil.rmtree(scene.root, ignore_errors=True)
    if interrupted:
        context["interrupted"] = True
    document = build_document(arms, args, started, context)
    emit(document, table_for(document), json_out=args.json_out, table_on_stdout=args.table)
    return 130 if interrupted else 2 if hub_failed else 1 if failed else 0


def main_bursts(scene: Scene, args: argparse.Namespace, home: str, started: datetime,
                context: dict[str, Any]) -> int:
    """``--bursts``: alternated spawn bursts, cleaned up on every exit like :func:`main`."""
    result: dict[str, Any] = {"bursts": {}, "summary": {}}
    interrupted = hub_failed = False
    try:
        with spawn.terminate_as_interrupt():
            create_partition(PARTITION, args.nodes)
            result = run_alternated(scene, args, home)
    except HubError as exc:
        hub_failed = True
        say(str(exc))
    except KeyboardInterrupt:
        interrupted = True
        say("interrupted; cleaning up")
    finally:
        with spawn.uninterruptible():
            spawn._try(delete_partition, PARTITION)
    failed = interrupted or hub_failed or not result["bursts"] or any(
        b.get("failed") for runs in result["bursts"].values() for b in runs)
    if failed or args.keep_state:
        say(f"state and logs kept in {scene.root}")
        context["state_dir"] = str(scene.root)
    else:
        shutil.rmtree(scene.root, ignore_errors=True)
    document = {
        "benchmark": "scale-bursts",
        "measures": "seconds until every one of N sessions asked at once is ready, arms "
                    "alternated",
        "servers": args.servers, "concurrency": args.concurrency, "rounds": args.bursts,
        "sqlite_wal": args.sqlite_wal,
        "arm_order": [rotate(args.arm_keys, i) for i in range(args.bursts)],
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now().isoformat(timespec="seconds"),
        "host": platform.node(), "cpus": os.cpu_count(), **context,
        **result,
        "versions": spawn.versions(),
        "notes": [
            "Each burst: a fresh hub (new state folder and SQLite database, JupyterHub's "
            "default connection settings in both arms), POST --servers named servers with at "
            "most --concurrency in flight, poll GET /users/alice every second until all are "
            "ready; seconds = first POST to the poll that saw the last one ready. Then the "
            "hub is stopped and its jobs cancelled and gone before the next burst.",
            "Rounds alternate the arms and rotate which goes first, so load from other users "
            "of the machine hits both arms alike; per-round ratios pair bursts minutes apart.",
            "hub_cpu_s: the hub process's own CPU seconds during the burst; "
            "hub_children_cpu_s: its finished children (sudo, sbatch, squeue, helpers).",
        ],
    }
    if interrupted:
        document["interrupted"] = True
    table = bursts_table(document) if result["bursts"] else "no bursts"
    emit(document, table, json_out=args.json_out, table_on_stdout=args.table)
    return 130 if interrupted else 2 if hub_failed else 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
