"""Spawn latency: Shopfloor's spawner against stock batchspawner on the same Slurm cluster.

Run from the repository root, as root (the hubs authenticate with PAM and submit as users)::

    python -m benchmarks.spawn --runs 5

It starts two JupyterHubs of its own (own state folders under /tmp, own ports): one
configured as a site would install Shopfloor (``install(c, site)`` with the demo site file),
one with stock ``batchspawner.SlurmSpawner``. As ``alice`` it times, on each hub in turn
(ours, stock, ours, stock, ...), ``POST /hub/api/users/alice/server`` until the hub reports
``servers[""].ready``; then it stops the server and waits until its job has left the queue
before the next run. Optionally it also times plain ``jupyter lab`` started as alice on this
machine (no hub, no Slurm): the floor any spawner stands on.

Output: a JSON document on stdout (per-run times, median, p90, ratios) and a table on
stderr; see ``benchmarks/README.md`` for how to read them. Both hubs, their proxies and every
job they submitted are stopped on exit, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import importlib.util
import json
import os
import platform
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import requests
import yaml

from benchmarks.hubprocess import VENV_PYTHON, BenchHub, HubError, HubPorts, proxy_config_lines
from benchmarks.report import (
    RunResult,
    emit,
    format_table,
    median,
    paired_ratios,
    ratio,
    summarize,
)
from benchmarks.timeline import (
    LAB_MARKS,
    OURS_MARKS,
    SEGMENT_MEANING,
    STOCK_MARKS,
    Mark,
    breakdown,
    find_marks,
    largest,
    median_breakdown,
    slurmctld_lines,
)
from shopfloor.slurm.seam import Slurm, SlurmError

if TYPE_CHECKING:
    from hubclient import HubClient

REPO = Path(__file__).resolve().parents[1]
DEMO_SITE = REPO / "hub_config" / "demo_site.yaml"
DEMO_CREDENTIALS = Path("/var/lib/shopfloor/hub/demo-credentials.json")
VENV_BIN = VENV_PYTHON.parent
#: What each hub is asked for: the same job on both (cpu partition, 1 CPU, 1 GiB, 30 min).
OURS_OPTIONS = {"partition": "cpu", "cpus": 1, "memory_gb": 1, "walltime": "30"}
STOCK_OPTIONS: dict[str, Any] = {}
#: How often the benchmark asks the hub whether the server is ready (seconds).
POLL_INTERVAL = 0.1

HUB_START_RE = re.compile(r"User \S+ took ([\d.]+) seconds to start")
#: Jupyter Server's "listening" line in a job log, with its local timestamp.
SERVER_UP_RE = re.compile(
    r"^\[I (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) ServerApp\] Jupyter Server \S+ is running at",
    re.MULTILINE,
)


def notes(stock_srun: str) -> list[str]:
    """What a reader of the JSON must know to trust and compare the figures."""
    srun = (
        "Stock runs its server in a job step (req_srun='srun', batchspawner's default); ours "
        "execs it in the batch script."
        if stock_srun else
        "Stock was told req_srun='' (server in the batch script, as ours); batchspawner's "
        "default is 'srun'."
    )
    return [
        "Time is measured in this process with a monotonic clock, from sending "
        "POST /hub/api/users/<user>/server to the first GET /hub/api/users/<user> that shows "
        f"servers[''].ready; the hub is asked every {POLL_INTERVAL} s, so times are good to "
        "about 0.1 s. hub_says_s is the hub's own 'took N seconds to start' for comparison.",
        "Both hubs ask for the same job (partition cpu, 1 CPU, 1 GiB, 30 minutes) and run the "
        "same Python environment (/opt/shopfloor/venv). Runs alternate ours, stock, lab to "
        "spread noise; before each run the previous job has left the queue.",
        "Stock batchspawner needed one change to work here: c.SlurmSpawner.state_exechost_exp"
        " = '127.0.0.1'. It connects to the node *name* squeue prints (%B, e.g. node1), which "
        "does not resolve on this machine (nodes are loopback addresses 127.0.2.x, their "
        "NodeAddr); its server binds 0.0.0.0 (batchspawner's default ip), so 127.0.0.1 "
        "reaches it on every node. Ours connects to the node's NodeAddr. " + srun,
        "server_listening_s is when the job log says 'Jupyter Server ... is running at', "
        "counted from the POST (same machine, same clock): the spawner's own part. The rest, "
        "up to 'seconds', is the hub noticing: once start() returns (both spawners return "
        "when the job reports its port, before the server listens) JupyterHub polls the "
        "server with full-jitter exponential backoff (waits drawn from 0 to 0.2*2^n s, at most "
        "5 s), which adds up to a few seconds of noise to both alike.",
        "queue_wait_s is Slurm's StartTime - SubmitTime (whole seconds): it tells queueing on "
        "a busy cluster from the spawners' own cost.",
        "jupyter_lab_alone is plain `jupyter lab` started as the user on this machine (no hub, "
        "no Slurm), until an authenticated GET /api/status answers: the floor under both.",
        "Our launcher keeps the server's process from importing rfc3987_syntax (jsonschema's "
        "iri format checker, unused by Jupyter, 1-1.6 s of imports here: "
        "shopfloor.session.singleuser.skip_unused_slow_imports); stock and jupyter lab alone "
        "still import it. breakdown: seconds between timestamped log lines of the hub and "
        "the job (benchmarks.timeline); ratio.paired: medians of per-round ratios.",
        "Before the runs the benchmark writes the bytecode of Shopfloor's own packages "
        "(compileall, what `pip install` does; bytecode_compiled lists the folders). In an "
        "editable checkout a module edited since it was last imported by root is otherwise "
        "compiled from source at every server start (jobs run as the user, who cannot "
        "save the result): a cost no installed site has, paid by every arm alike (all load "
        "our server extensions), and one that changes from run to run while files change.",
    ]


# -- configuration of the two hubs ------------------------------------------------------


def ours_config(state_dir: Path, ports: HubPorts, site_source: Path = DEMO_SITE) -> str:
    """``jupyterhub_config.py`` installing Shopfloor from a copy of the demo site file."""
    site = yaml.safe_load(site_source.read_text())
    site["hub"].update(
        bind_url=f"http://127.0.0.1:{ports.public}",
        hub_bind_url=f"http://127.0.0.1:{ports.hub_api}",
        state_dir=str(state_dir),
    )
    site_file = state_dir / "site.yaml"
    site_file.write_text(yaml.safe_dump(site, sort_keys=False))
    return "\n".join([
        "# Generated by benchmarks.spawn: Shopfloor installed as a site does it.",
        "from shopfloor.extensions.install import install",
        "",
        "c = get_config()  # noqa: F821",
        f"install(c, {str(site_file)!r})",
        *proxy_config_lines(state_dir, ports),
        "",
    ])


def stock_config(state_dir: Path, ports: HubPorts, user: str, srun: str = "srun") -> str:
    """``jupyterhub_config.py`` for stock batchspawner ``SlurmSpawner`` on the same job.

    The only setting that is not a plain request or path is ``state_exechost_exp``: see
    :func:`notes`.
    """
    venv = str(VENV_BIN)
    lines = [
        "# Generated by benchmarks.spawn: stock batchspawner SlurmSpawner.",
        "c = get_config()  # noqa: F821",
        f"c.JupyterHub.bind_url = 'http://127.0.0.1:{ports.public}'",
        f"c.JupyterHub.hub_bind_url = 'http://127.0.0.1:{ports.hub_api}'",
        f"c.JupyterHub.db_url = {'sqlite:///' + str(state_dir / 'jupyterhub.sqlite')!r}",
        f"c.JupyterHub.cookie_secret_file = {str(state_dir / 'jupyterhub_cookie_secret')!r}",
        "c.JupyterHub.authenticator_class = 'pam'",
        "c.PAMAuthenticator.open_sessions = False",
        f"c.Authenticator.allowed_users = {{{user!r}}}",
        "c.JupyterHub.spawner_class = 'batchspawner.SlurmSpawner'",
        # The same limits and landing page as Shopfloor's install().
        "c.Spawner.start_timeout = 300",
        "c.Spawner.http_timeout = 120",
        "c.Spawner.default_url = '/lab'",
        f"c.Spawner.cmd = [{venv + '/jupyterhub-singleuser'!r}]",
        f"c.SlurmSpawner.batchspawner_singleuser_cmd = {venv + '/batchspawner-singleuser'!r}",
        "c.SlurmSpawner.exec_prefix = 'sudo -E -u {username}'",
        "c.SlurmSpawner.req_partition = 'cpu'",
        "c.SlurmSpawner.req_runtime = '0:30:00'",
        "c.SlurmSpawner.req_memory = '1G'",
        "c.SlurmSpawner.req_nprocs = '1'",
        f"c.SlurmSpawner.req_srun = {srun!r}",
        "c.SlurmSpawner.state_exechost_exp = '127.0.0.1'",
        *proxy_config_lines(state_dir, ports),
        "",
    ]
    return "\n".join(lines)


def compile_bytecode() -> list[str]:
    """Write the bytecode of Shopfloor's own packages, as ``pip install`` does; their folders.

    See :func:`notes`: jobs run as the user, who cannot write ``__pycache__`` in an editable
    checkout, so without this a recently edited module is compiled at every server start.
    """
    roots: list[str] = []
    for name in ("shopfloor", "shopfloor.extensions", "shopfloor.widgets"):
        spec = importlib.util.find_spec(name)  # imports the parent package only
        if spec is not None and spec.submodule_search_locations:
            roots += [r for r in spec.submodule_search_locations if r not in roots]
    for root in roots:
        compileall.compile_dir(root, quiet=1)
    return roots


# -- Slurm: the jobs the benchmark made -------------------------------------------------


SLURM = Slurm()


def active_jobs(job_ids: list[str]) -> list[str]:
    """Those of ``job_ids`` that Slurm still lists as pending, running or completing."""
    if not job_ids:
        return []
    jobs = asyncio.run(SLURM.squeue(job_ids))
    return [job_id for job_id, info in jobs.items() if not info.is_finished]


def wait_jobs_gone(job_ids: list[str], timeout: float) -> bool:
    """Wait until none of ``job_ids`` is active; cancel them if they outstay ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not active_jobs(job_ids):
            return True
        time.sleep(0.25)
    cancel_jobs(job_ids)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not active_jobs(job_ids):
            return False
        time.sleep(0.5)
    return False


#: Job ids per ``scancel``: Slurm cancels them one by one (1000 took longer than the call's
#: timeout on the 2-core demo, and the rest were left running).
CANCEL_CHUNK = 100


def cancel_jobs(job_ids: list[str]) -> None:
    """``scancel`` those of ``job_ids`` still active (never anyone else's jobs)."""
    active = active_jobs(job_ids)
    if active:
        shown = ", ".join(active[:10]) + (f" and {len(active) - 10} more" if len(active) > 10
                                          else "")
        say(f"cancelling leftover job(s) {shown}")
        for start in range(0, len(active), CANCEL_CHUNK):
            SLURM.run_sync(["scancel", *active[start:start + CANCEL_CHUNK]])


def job_detail(job_id: str) -> dict[str, Any]:
    """Node, log file and queue wait (StartTime - SubmitTime, whole seconds) of a job."""
    try:
        out = SLURM.run_sync(["scontrol", "-o", "show", "job", job_id])
    except SlurmError:
        return {}
    fields = dict(tok.split("=", 1) for tok in out.split() if "=" in tok)
    detail: dict[str, Any] = {"node": fields.get("BatchHost"), "job_log": fields.get("StdOut")}
    try:
        submit = datetime.fromisoformat(fields["SubmitTime"])
        start = datetime.fromisoformat(fields["StartTime"])
        detail["queue_wait_s"] = (start - submit).total_seconds()
    except (KeyError, ValueError):
        pass
    return detail


def slurmctld_log_tail(max_bytes: int = 4 << 20) -> str:
    """The end of Slurm's controller log (``SlurmctldLogFile``), "" where it cannot be read.

    Only for the breakdown's "schedule" mark; on a site where the benchmark cannot read the
    controller's log that segment is simply missing and "job start" spans both.
    """
    global _SLURMCTLD_LOG
    if _SLURMCTLD_LOG is None:
        try:
            config = SLURM.run_sync(["scontrol", "show", "config"])
            found = re.search(r"^SlurmctldLogFile\s*=\s*(/\S+)", config, re.MULTILINE)
            _SLURMCTLD_LOG = found.group(1) if found else ""
        except SlurmError:
            _SLURMCTLD_LOG = ""
    if not _SLURMCTLD_LOG:
        return ""
    try:
        with open(_SLURMCTLD_LOG, "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - max_bytes))
            return log.read().decode(errors="replace")
    except OSError:
        return ""


_SLURMCTLD_LOG: str | None = None


def server_listening_at(job_log: str | None) -> float | None:
    """Epoch time at which the job's Jupyter Server said it was listening, from its log."""
    if not job_log:
        return None
    try:
        text = Path(job_log).read_text(errors="replace")
    except OSError:
        return None
    match = SERVER_UP_RE.search(text)
    if match is None:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()


def active_job_count() -> int:
    """Pending and running jobs on the cluster (other users' jobs are noise); -1 if unknown."""
    try:
        out = SLURM.run_sync(["squeue", "-h", "--states=PENDING,RUNNING", "-o", "%i"])
    except SlurmError:
        return -1
    return len(out.split())


# -- the arms: what is measured ---------------------------------------------------------


def say(message: str) -> None:
    print(f"benchmarks.spawn: {message}", file=sys.stderr, flush=True)


class Arm(Protocol):
    """One thing the benchmark times, run after run."""

    key: str  #: its key in the JSON document
    label: str  #: its name in the table
    runs: list[RunResult]
    warmup: list[RunResult]

    def measure(self, run: int, timeout: float) -> RunResult:
        """Time one run, leave nothing behind, never take much longer than ``timeout``."""
        ...

    def close(self) -> None:
        """Stop whatever the arm still runs (called once, also after errors)."""
        ...


def hub_client_class() -> type[HubClient]:
    """The test suite's hub client (logs in through the form, as a browser does)."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    from hubclient import HubClient

    return HubClient


@dataclass
class SpawnArm:
    """A spawner under test: its own hub, what the user asks it for, and its runs."""

    key: str
    label: str
    hub: BenchHub
    user_options: dict[str, Any]
    marks: tuple[Mark, ...] = ()  #: where its time goes (benchmarks.timeline)
    runs: list[RunResult] = field(default_factory=list)
    warmup: list[RunResult] = field(default_factory=list)
    client: HubClient | None = None
    token: str = ""
    user: str = ""

    def start(self, user: str, password: str) -> None:
        """Start the hub, log in as ``user`` through the login form and get an API token."""
        self.hub.start()
        self.client = hub_client_class()(self.hub.url)
        try:
            self.client.login(user, password)
            self.token = self.client.token()
        except (AssertionError, OSError, ValueError) as exc:  # the client asserts the login
            raise HubError(
                f"cannot log in as {user} on the {self.key} hub ({exc}); check --credentials "
                f"and {self.hub.log_file}"
            ) from None
        self.user = user

    def _api(self, method: str, path: str, **kw: Any) -> Any:
        if self.client is None:
            raise RuntimeError("start() the arm first")
        kw.setdefault("timeout", 30)
        return self.client.api(method, path, token=self.token, **kw)

    def server_model(self) -> dict[str, Any] | None:
        resp = self._api("GET", f"/users/{self.user}")
        resp.raise_for_status()
        return resp.json().get("servers", {}).get("")

    def measure(self, run: int, timeout: float) -> RunResult:
        """Time one spawn, then stop the server and wait until its job has left the queue."""
        if self.hub.exited() is not None:
            return RunResult(run, False, error=f"the {self.key} hub exited with "
                             f"{self.hub.exited()}; see {self.hub.log_file}")
        log_start = self.hub.log_size()
        posted_at = time.time()
        result = self._spawn(run, timeout, log_start)
        job_ids = self.hub.job_ids(log_start)
        if job_ids:
            result.detail["job_id"] = job_ids[-1]
            if result.ok:
                result.detail.update(job_detail(job_ids[-1]))
                listening = server_listening_at(result.detail.get("job_log"))
                if listening is not None:
                    result.detail["server_listening_s"] = round(listening - posted_at, 3)
                result.detail["breakdown"] = self._breakdown(
                    posted_at, result, self._log_since(log_start))
        hub_says = HUB_START_RE.findall(self._log_since(log_start))
        if hub_says:
            result.detail["hub_says_s"] = float(hub_says[-1])
        started = time.monotonic()
        stop_error = self._stop(timeout=60)
        try:
            if not wait_jobs_gone(job_ids, timeout=60):
                stop_error = stop_error or f"job(s) {', '.join(job_ids)} had to be cancelled"
        except SlurmError as exc:
            stop_error = stop_error or f"cannot check the job's end: {exc}"
        result.detail["stop_s"] = round(time.monotonic() - started, 3)
        if stop_error:
            result.detail["stop_error"] = stop_error
        return result

    def _spawn(self, run: int, timeout: float, log_start: int) -> RunResult:
        body = {"user_options": self.user_options}
        started = time.monotonic()
        try:
            resp = self._api("POST", f"/users/{self.user}/server", json=body, timeout=timeout)
            if resp.status_code not in (201, 202):
                return RunResult(run, False, error=f"POST answered {resp.status_code}: "
                                 f"{resp.text[:300]}")
            while time.monotonic() - started < timeout:
                model = self.server_model()
                if model and model.get("ready"):
                    return RunResult(run, True, seconds=time.monotonic() - started)
                if model is None:
                    return RunResult(run, False, error="spawn failed: "
                                     + self._log_problems(log_start))
                time.sleep(POLL_INTERVAL)
        except requests.Timeout:
            pass  # the POST waits for the spawn (up to slow_spawn_timeout): same as not ready
        except (OSError, ValueError) as exc:  # requests' errors are OSErrors; bad JSON
            return RunResult(run, False, error=f"hub request failed: {exc}")
        return RunResult(run, False, error=f"not ready within {timeout:g} s")

    def _breakdown(self, posted_at: float, result: RunResult, hub_log: str
                   ) -> dict[str, float | None]:
        """Seconds per segment of this spawn, from the hub's log and the job's log."""
        job_log = result.detail.get("job_log")
        try:
            job_text = Path(job_log).read_text(errors="replace") if job_log else ""
        except OSError:
            job_text = ""
        ctld = slurmctld_lines(slurmctld_log_tail(), str(result.detail.get("job_id", "")))
        times = find_marks(self.marks, {"hub": hub_log, "job": job_text, "slurmctld": ctld})
        return breakdown(posted_at, times, posted_at + (result.seconds or 0))

    def _log_since(self, offset: int) -> str:
        return self.hub.log_text().encode()[offset:].decode(errors="replace")

    def _log_problems(self, since: int) -> str:
        lines = [ln for ln in self._log_since(since).splitlines() if ln.startswith(("[E", "[W"))]
        return " | ".join(lines[-3:])[-600:] or f"(nothing logged; see {self.hub.log_file})"

    def _stop(self, timeout: float) -> str | None:
        """Stop the server; ``None`` once it is gone, else what went wrong."""
        try:
            resp = self._api("DELETE", f"/users/{self.user}/server", timeout=timeout)
            if resp.status_code not in (202, 204, 400, 404):
                return f"DELETE answered {resp.status_code}: {resp.text[:200]}"
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.server_model() is None:
                    return None
                time.sleep(0.2)
        except (OSError, ValueError) as exc:
            return f"hub request failed while stopping: {exc}"
        return f"server still listed {timeout:.0f} s after DELETE"

    def close(self) -> None:
        """Cancel every job this hub submitted, stop the hub and its proxy, cancel again."""
        _try(cancel_jobs, self.hub.job_ids())
        _try(self.hub.stop)
        _try(cancel_jobs, self.hub.job_ids())


@dataclass
class LabAloneArm:
    """``jupyter lab`` started directly as the user on this machine (no hub, no Slurm)."""

    user: str
    log_dir: Path
    key: str = "jupyter_lab_alone"
    label: str = "jupyter lab alone"
    runs: list[RunResult] = field(default_factory=list)
    warmup: list[RunResult] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    def measure(self, run: int, timeout: float) -> RunResult:
        """Time ``jupyter lab`` from process start to an authenticated ``/api/status``."""
        account = pwd.getpwnam(self.user)
        port = _free_port()
        token = secrets.token_hex(16)  # reaches the server by environment, never argv
        env = {
            "HOME": account.pw_dir, "USER": self.user, "LOGNAME": self.user,
            "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
            "JUPYTER_TOKEN": token,
        }
        cmd = [str(VENV_BIN / "jupyter"), "lab", "--no-browser", "--ip=127.0.0.1",
               f"--port={port}", "--ServerApp.port_retries=0"]
        log_path = self.log_dir / f"lab-alone-{run}.log"
        started, started_at = time.monotonic(), time.time()
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                cmd, cwd=account.pw_dir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, user=account.pw_uid,
                group=account.pw_gid, extra_groups=os.getgrouplist(self.user, account.pw_gid),
            )
        try:
            while time.monotonic() - started < timeout:
                if self.process.poll() is not None:
                    return RunResult(run, False, error=f"jupyter lab exited with "
                                     f"{self.process.returncode}; see {log_path}")
                if _lab_answers(port, token):
                    seconds = time.monotonic() - started
                    times = find_marks(LAB_MARKS, {"job": log_path.read_text(errors="replace")})
                    return RunResult(run, True, seconds=seconds, detail={
                        "breakdown": breakdown(started_at, times, started_at + seconds)})
                time.sleep(POLL_INTERVAL)
            return RunResult(run, False, error=f"not answering within {timeout:.0f} s")
        finally:
            self.close()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _lab_answers(port: int, token: str) -> bool:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/status", headers={"Authorization": f"token {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _try(func: Any, *args: Any) -> None:
    """Run one cleanup step; a failure is reported and the other steps still run."""
    try:
        func(*args)
    except (OSError, SlurmError, subprocess.SubprocessError) as exc:
        say(f"cleanup step {getattr(func, '__name__', func)} failed: {exc}")


# -- the benchmark ----------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.spawn",
        description="Spawn request to server ready: Shopfloor's spawner against stock "
        "batchspawner SlurmSpawner on the local Slurm cluster (run as root, from the "
        "repository root).",
    )
    parser.add_argument("--runs", type=int, default=10, help="measured runs per arm (10)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="unmeasured runs per arm first, so that neither side's first "
                        "measured run pays for a cold file cache (1)")
    parser.add_argument("--timeout", type=float, default=120,
                        help="seconds a spawn may take before it counts as failed (120)")
    parser.add_argument("--user", default="alice", help="user who spawns (alice)")
    parser.add_argument("--credentials", type=Path, default=DEMO_CREDENTIALS,
                        help=f"JSON file of passwords by user ({DEMO_CREDENTIALS})")
    parser.add_argument("--ours-port", type=int, default=8300,
                        help="public port of our hub; +1 hub API, +2 proxy API (8300)")
    parser.add_argument("--stock-port", type=int, default=8400,
                        help="public port of the stock hub; +1 hub API, +2 proxy API (8400)")
    parser.add_argument("--stock-srun", default="srun",
                        help="stock req_srun: 'srun' (batchspawner's default) runs the server "
                        "in a job step; '' runs it in the batch script, as ours does")
    parser.add_argument("--no-lab-alone", dest="lab_alone", action="store_false",
                        help="skip timing plain `jupyter lab` started as the user")
    parser.add_argument("--json-out", type=Path, help="also write the JSON document here")
    parser.add_argument("--table", action="store_true",
                        help="print the table on stdout instead of the JSON")
    parser.add_argument("--keep-state", action="store_true",
                        help="keep the hubs' state folders and logs (kept anyway on failures)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or args.timeout <= 0:
        parser.error("--runs must be at least 1, --warmup at least 0, --timeout above 0")
    return args


def password_for(user: str, path: Path) -> str:
    try:
        return json.loads(path.read_text())[user]
    except (OSError, ValueError, KeyError):
        raise SystemExit(
            f"no password for {user} in {path}: run `shopfloor demo` (it creates the demo "
            "users and that file) or pass --credentials"
        ) from None


def versions() -> dict[str, str]:
    found = {}
    for package in ("jupyterhub", "batchspawner", "jupyterlab", "jupyter_server", "shopfloor"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    try:
        found["slurm"] = SLURM.run_sync(["sinfo", "-V"]).strip()
    except SlurmError:
        found["slurm"] = "unknown"
    return found


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt so that ``finally`` blocks clean up."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def uninterruptible() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM while cleaning up (cleanup is bounded in time)."""
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_rounds(arms: list[Arm], rounds: int, timeout: float, warmup: bool) -> None:
    """Round by round, one run of each arm in turn (ours, stock, lab, ours, ...)."""
    kind = "warm-up" if warmup else "run"
    for number in range(1, rounds + 1):
        for arm in arms:
            result = arm.measure(number, timeout)
            (arm.warmup if warmup else arm.runs).append(result)
            seconds = round(result.seconds or 0, 3)  # as the JSON and the table round it
            outcome = f"{seconds:.2f} s" if result.ok else f"FAILED: {result.error}"
            say(f"{arm.key} {kind} {number}/{rounds}: {outcome}")


def build_document(
    arms: list[Arm], args: argparse.Namespace, started: datetime, context: dict[str, Any]
) -> dict[str, Any]:
    """The JSON document: one block per arm, the ratios of medians, settings and notes."""
    blocks: dict[str, Any] = {}
    for arm in arms:
        extra: dict[str, Any] = {}
        if isinstance(arm, SpawnArm):
            extra["user_options"] = arm.user_options
            listening = [r.detail["server_listening_s"] for r in arm.runs
                         if r.ok and "server_listening_s" in r.detail]
            extra["server_listening_median"] = _round3(median(listening))
        segments = [r.detail["breakdown"] for r in arm.runs if r.ok and "breakdown" in r.detail]
        if segments:
            extra["breakdown_median"] = median_breakdown(segments)
            extra["largest_segment"] = largest(extra["breakdown_median"])
        blocks[arm.key] = summarize(
            arm.label, arm.runs, **extra, warmup=[r.to_json() for r in arm.warmup]
        )
    ours, stock = blocks["ours"]["median"], blocks["stock"]["median"]
    return {
        "benchmark": "spawn",
        "measures": f"seconds from POST /hub/api/users/{args.user}/server to servers[''].ready",
        "user": args.user,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now().isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "runs_per_arm": args.runs,
        "warmup_per_arm": args.warmup,
        "order": "interleaved, each round: " + ", ".join(a.key for a in arms),
        "timeout_s": args.timeout,
        **context,
        "ours": blocks["ours"],
        "stock": blocks["stock"],
        "jupyter_lab_alone": blocks.get("jupyter_lab_alone"),
        "ratio": {
            "of": "medians",
            "ours_over_lab_alone": _round3(ratio(
                ours, (blocks.get("jupyter_lab_alone") or {}).get("median"))),
            "stock_over_ours": _round3(ratio(stock, ours)),
            "ours_over_stock": _round3(ratio(ours, stock)),
            "paired": paired_block(arms),
            "server_listening_stock_over_ours": _round3(ratio(
                blocks["stock"]["server_listening_median"],
                blocks["ours"]["server_listening_median"],
            )),
        },
        "stock_req_srun": args.stock_srun,
        "versions": versions(),
        "notes": notes(args.stock_srun),
    }


def paired_block(arms: list[Arm]) -> dict[str, Any]:
    """Per-round ratios: ours over stock and ours over jupyter lab alone (when timed)."""
    runs = {arm.key: arm.runs for arm in arms}
    block = {
        "of": "median (min-max) of per-round ratios, run i of one arm over run i of the other",
        "ours_over_stock": paired_ratios(runs["ours"], runs["stock"]),
    }
    if "jupyter_lab_alone" in runs:
        block["ours_over_lab_alone"] = paired_ratios(runs["ours"], runs["jupyter_lab_alone"])
    return block


def _round3(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def table_for(document: dict[str, Any]) -> str:
    """The readable summary of :func:`build_document`'s result."""
    arms = {k: document[k] for k in ("ours", "stock", "jupyter_lab_alone") if document.get(k)}
    r = document["ratio"]
    footer = [
        f"ratio of medians: stock/ours = {_fmt(r['stock_over_ours'])}, "
        f"ours/stock = {_fmt(r['ours_over_stock'])}  (stock/ours above 1: ours is faster)",
        "server listening (job log), median: "
        f"ours {_fmt(document['ours']['server_listening_median'])} s, "
        f"stock {_fmt(document['stock']['server_listening_median'])} s; the rest is the hub's "
        "randomised polling",
    ]
    footer.append(f"ours / jupyter lab alone = {_fmt(r.get('ours_over_lab_alone'))}")
    for key, paired in (r.get("paired") or {}).items():
        if isinstance(paired, dict):
            footer.append(f"per-round {key.replace('_', ' ')}: median {_fmt(paired['median'])} "
                          f"(min {_fmt(paired['min'])}, max {_fmt(paired['max'])}, "
                          f"{paired['rounds']} rounds)")
    footer += breakdown_lines(arms)
    load = document.get("load_average")
    if load:
        footer.append(f"load average (1 min) at start {load.get('start')}, end {load.get('end')}")
    if document.get("interrupted"):
        footer.append("INTERRUPTED: partial results")
    title = (f"spawn request -> server ready, seconds ({document['runs_per_arm']} runs per "
             f"arm after {document['warmup_per_arm']} warm-up; user {document['user']}, "
             f"host {document['host']})")
    return format_table(title, arms, footer)


def breakdown_lines(arms: dict[str, Any]) -> list[str]:
    """One line per segment: each arm's median seconds, the arm's largest segment starred."""
    names: list[str] = []
    for block in arms.values():
        names += [n for n in block.get("breakdown_median") or {} if n not in names]
    if not names:
        return []
    keys = list(arms)
    lines = ["where the time goes, median seconds per segment (" + " | ".join(keys) + "):"]
    for name in names:
        cells = []
        for key in keys:
            value = (arms[key].get("breakdown_median") or {}).get(name)
            star = "*" if arms[key].get("largest_segment") == name else ""
            cells.append("-" if value is None else f"{value:.2f}{star}")
        lines.append(f"  {SEGMENT_MEANING.get(name, name):58} " + " | ".join(cells))
    return lines


def load_average() -> float | None:
    """The 1-minute load average (other engineers' work on the shared machine)."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def make_arms(args: argparse.Namespace, state_dir: Path) -> list[Arm]:
    """Our hub, the stock hub and (optionally) plain jupyter lab, each with its own folder."""
    ours_dir, stock_dir = state_dir / "ours", state_dir / "stock"
    ours_dir.mkdir(mode=0o700)
    stock_dir.mkdir(mode=0o700)
    ours_ports, stock_ports = HubPorts(args.ours_port), HubPorts(args.stock_port)
    ours = BenchHub("ours", ours_dir, ours_ports, ours_config(ours_dir, ours_ports),
                    job_id_pattern=r"submitted job (\d+) to ")
    stock = BenchHub("stock", stock_dir, stock_ports,
                     stock_config(stock_dir, stock_ports, args.user, args.stock_srun),
                     job_id_pattern=r"Job submitted\. output: (\d+)")
    arms: list[Arm] = [
        SpawnArm("ours", "ours (ShopfloorSpawner)", ours, dict(OURS_OPTIONS), OURS_MARKS),
        SpawnArm("stock", "stock (batchspawner.SlurmSpawner)", stock, dict(STOCK_OPTIONS),
                 STOCK_MARKS),
    ]
    if args.lab_alone:
        arms.append(LabAloneArm(args.user, state_dir))
    return arms


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("run as root: the hubs use PAM and submit jobs as the user (sudo)")
    if shutil.which("configurable-http-proxy") is None:
        raise SystemExit("configurable-http-proxy is not on PATH (npm install -g it)")
    password = password_for(args.user, args.credentials)
    started = datetime.now()
    state_dir = Path(tempfile.mkdtemp(prefix="shopfloor-bench-spawn-", dir="/tmp"))
    # Traversable, not listable: our hub's apps service keeps its store beside the hub's
    # (private) state folder and refuses to start unless app owners can reach it.
    state_dir.chmod(0o711)
    context: dict[str, Any] = {"active_jobs_on_cluster_at_start": active_job_count(),
                               "load_average": {"start": load_average()},
                               "bytecode_compiled": compile_bytecode()}
    arms = make_arms(args, state_dir)
    interrupted = hub_failed = False
    try:
        with terminate_as_interrupt():
            for arm in arms:
                if isinstance(arm, SpawnArm):
                    say(f"starting the {arm.key} hub at {arm.hub.url} (log {arm.hub.log_file})")
                    arm.start(args.user, password)
            if args.warmup:
                run_rounds(arms, args.warmup, args.timeout, warmup=True)
            run_rounds(arms, args.runs, args.timeout, warmup=False)
    except HubError as exc:
        hub_failed = True
        say(str(exc))
        return 2
    except KeyboardInterrupt:
        interrupted = True
        say("interrupted; cleaning up")
    finally:
        with uninterruptible():
            for arm in arms:
                arm.close()
        failed = interrupted or hub_failed or any(not r.ok for a in arms for r in a.runs)
        if failed or args.keep_state:
            say(f"state and logs kept in {state_dir}")
        else:
            shutil.rmtree(state_dir, ignore_errors=True)
    context["state_dir"] = str(state_dir) if failed or args.keep_state else None
    context["load_average"]["end"] = load_average()
    if interrupted:
        context["interrupted"] = True
    document = build_document(arms, args, started, context)
    emit(document, table_for(document), json_out=args.json_out, table_on_stdout=args.table)
    return 130 if interrupted else 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
