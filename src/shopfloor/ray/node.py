"""Job-side launcher of a Ray cluster: one task per node, started by ``srun``.

The batch script of a cluster runs ``srun python -m shopfloor.ray.node --cluster-dir DIR``.
Each task decides its role (:func:`plan_node`: task 0 of the cluster's first job is the head,
every other task a worker), then:

* picks ports that are free on *every* address of the node (Ray binds several of them on
  0.0.0.0 and 127.0.0.1 besides the node address) and starts again with fresh ports when one
  was taken in the meantime;
* makes its own temp folder with an unguessable name (``mkdtemp``: mode 700, created
  atomically, so no other user can make it first) in a root-owned sticky folder;
* the head writes ``head.json`` (address and ports, never the token) into the user's private
  cluster folder *before* starting Ray, so workers start at the same time instead of sleeping;
* runs ``ray start --block`` with token authentication (``RAY_AUTH_MODE=token``, the token
  read by Ray from the 600 file named by ``RAY_AUTH_TOKEN_PATH``);
* the head watches the Jobs API and stops the whole cluster when no Ray job ran for the idle
  timeout, or when the user's session job ends (if asked);
* on SIGTERM (``scancel``, walltime) it stops its Ray processes, kills any that escaped and
  removes its temp folder: nothing is left on the node;
* a head that cannot start writes why into ``stopped.json`` (shown by ``RayCluster.status``)
  and cancels the cluster's jobs.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shopfloor.slurm.seam import SlurmError, SlurmSync

log = logging.getLogger("shopfloor.ray.node")

#: Ports each node picks for itself (``ray start`` option names). Ray's defaults (6379, 8265,
#: 10001, 52365, ...) are fixed numbers that collide when users share nodes.
NODE_PORTS = (
    "node-manager-port", "object-manager-port", "ray-client-server-port",
    "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
    "metrics-export-port",
)
HEAD_PORTS = ("port", "dashboard-port")
#: Ray puts Unix sockets under ``<temp>/session_<date>_<time>_<pid>/sockets/``; a socket path
#: longer than 107 bytes cannot be bound. Ray's longest part: the session folder with a
#: 7-digit pid and the dashboard's longest module socket (``dash_TaskEventsHead``).
RAY_SOCKET_PART = "/session_2026-01-01_00-00-00_000000_1234567/sockets/dash_TaskEventsHead"
#: Longest temp folder: Ray's part and ``/r`` (:data:`RAY_SUBDIR`) must still fit.
MAX_TEMP_DIR_LENGTH = 107 - len(RAY_SOCKET_PART) - 2
#: Start of a node's temp folder name: short, so that ``/tmp/<prefix><user>-<job>-<node>-``
#: and the random part fit in :data:`MAX_TEMP_DIR_LENGTH`.
TEMP_PREFIX = "sfray-"
#: Length of the random part ``tempfile.mkdtemp`` appends to a name.
RANDOM_SUFFIX_LENGTH = 8
#: How many times a node starts Ray with fresh ports after one of its ports was taken.
START_ATTEMPTS = 3
#: How Ray (gRPC, aiohttp, the GCS) says that a port it wanted was taken.
PORT_TAKEN = re.compile(
    r"address already in use|failed to bind|can't bind|errno 98|"
    r"failed to start the grpc server\. the specified port is \d+",
    re.IGNORECASE,
)
#: How Ray says that one of its own processes started too slowly on a busy node: the raylet
#: waits at most 15 s (fixed in Ray) for the dashboard agent's port file and then aborts, and
#: the dashboard gives up on a module process that did not answer in time. Another try on the
#: same node, with the files now in the page cache, usually starts in time.
SLOW_START = re.compile(
    r"timed out waiting for file|module \w+ failed to start|received eof from pipe",
    re.IGNORECASE,
)
#: Lines kept from ``ray start``'s output to explain a failure.
OUTPUT_TAIL_LINES = 60
#: Ray's own temp folder inside the private one: Ray makes its temp folder world-writable
#: (``chmod 777``, "so others can use it"), so it must sit inside a folder only we can enter.
RAY_SUBDIR = "r"
#: Ray's smallest object store (75 MiB) rounded up.
MIN_OBJECT_STORE_BYTES = 78_643_200
CLUSTER_FILE = "cluster.json"
HEAD_FILE = "head.json"
TOKEN_FILE = "auth_token"
STOPPED_FILE = "stopped.json"


class LaunchError(RuntimeError):
    """The node cannot take part in the cluster; the message says why and what to do."""


@dataclass(frozen=True)
class NodePlan:
    """What one ``srun`` task does."""

    role: str  #: "head" or "worker"
    head_job: str  #: job id of the cluster's first job (whose task 0 runs the head)
    index: int  #: node index within this job (Slurm's task id)


def plan_node(env: Mapping[str, str], worker_job_for: str | None = None) -> NodePlan:
    """Decide this task's role from Slurm's environment.

    Task 0 of the cluster's first job is the head. ``worker_job_for`` is set for the extra
    jobs that scale a cluster up: all their tasks are workers of that head job.
    """
    job = env.get("SLURM_JOB_ID", "")
    procid = env.get("SLURM_PROCID", "")
    if not job.isdigit() or not procid.isdigit():
        raise LaunchError("shopfloor.ray.node must run inside a Slurm job step (srun)")
    index = int(procid)
    if worker_job_for:
        return NodePlan("worker", worker_job_for, index)
    return NodePlan("head" if index == 0 else "worker", job, index)


def object_store_bytes(memory_mb: int, fraction: float, min_mb: int) -> int:
    """Object store size for a node with ``memory_mb`` of job memory."""
    wanted = int(memory_mb * fraction) * 1024 * 1024
    return max(wanted, min_mb * 1024 * 1024, MIN_OBJECT_STORE_BYTES)


def task_memory_bytes(memory_mb: int, object_store: int) -> int:
    """Ray's ``memory`` resource: the job's memory on the node less the object store."""
    return max(memory_mb * 1024 * 1024 - object_store, 64 * 1024 * 1024)


def check_temp_root(root: Path) -> None:
    """Refuse a temp root in which another user could move, replace or read our folder.

    It must be a real folder owned by root (or by us) that others cannot write, or that is
    sticky like ``/tmp`` (others may add entries there but not rename or delete ours).
    """
    try:
        info = root.lstat()
    except OSError as exc:
        raise LaunchError(f"ray.temp_root {root} is not usable ({exc.strerror}); "
                          "ask your admin to fix ray.temp_root") from None
    open_to_others = info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX
    if (not stat.S_ISDIR(info.st_mode) or info.st_uid not in (0, os.getuid())
            or open_to_others):
        raise LaunchError(
            f"ray.temp_root {root} must be a folder owned by root that other users cannot "
            "change (sticky like /tmp, or not writable by them); ask your admin to fix it"
        )


def make_temp_dir(root: str, user: str, uid: int, job: str, index: int) -> Path:
    """Create this node's private Ray temp folder under ``root`` and return it.

    The name starts with ``sfray-<user>-<job>-<node>-`` (the uid replaces a name too
    long for Ray's sockets) and ends with a random part: ``mkdtemp`` creates it atomically
    with mode 700 and retries on a name that exists, so a folder or link another user made
    first is never used, and nobody can guess the next name to make it first.
    """
    base = Path(root)
    prefixes = [f"{TEMP_PREFIX}{who}-{job}-{index}-" for who in (user, str(uid))]
    fitting = [p for p in prefixes
               if len(str(base / p)) + RANDOM_SUFFIX_LENGTH <= MAX_TEMP_DIR_LENGTH]
    if not fitting:
        raise LaunchError(
            f"the Ray temp folder under {root!r} would be too long for Ray's socket paths; "
            f"ask your admin to set ray.temp_root to a shorter folder (e.g. /tmp)"
        )
    check_temp_root(base)
    return check_private_dir(Path(tempfile.mkdtemp(prefix=fitting[0], dir=base)))


def check_private_dir(path: Path) -> Path:
    """Return ``path`` if it is a real folder of ours with mode 700; raise otherwise."""
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise LaunchError(f"{path} exists and is not your folder; ask your admin to remove it")
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise LaunchError(f"{path} is open to other users; remove it and start again")
    return path


def pick_ports(names: Iterable[str]) -> dict[str, int]:
    """One port per name, each free on every address of this node at the time of asking.

    Binding the wildcard address makes the kernel skip ports bound on any address (127.0.0.1
    included: a user's kernel or local Ray); Ray itself binds the GCS, raylet and object
    manager on 0.0.0.0 and several agents on 127.0.0.1 as well as the node address. The
    sockets stay open until all are picked, so the ports differ from each other.
    """
    sockets: list[socket.socket] = []
    ports: dict[str, int] = {}
    try:
        for name in names:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("0.0.0.0", 0))
            ports[name] = sock.getsockname()[1]
    finally:
        for sock in sockets:
            sock.close()
    return ports


def ray_start_command(
    ray: str,
    plan: NodePlan,
    address: str,
    ports: Mapping[str, int],
    temp_dir: Path,
    *,
    num_cpus: int,
    num_gpus: int,
    object_store: int,
    memory: int,
    head_address: str = "",
) -> list[str]:
    """The ``ray start`` command line for one node (no secrets: the token is in a file)."""
    cmd = [
        ray, "start", "--block", f"--node-ip-address={address}", f"--temp-dir={temp_dir}",
        f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}",
        f"--object-store-memory={object_store}", f"--memory={memory}",
        "--disable-usage-stats",
        # No autoscaler monitor: a Slurm-sized cluster never autoscales, and the monitor is one
        # more process importing Ray while the dashboard starts, on the head's critical path.
        *(["--no-monitor"] if plan.role == "head" else []),
        # Workers bind ports chosen by the OS instead of Ray's shared 10002-19999 range.
        "--min-worker-port=0", "--max-worker-port=0",
    ]
    cmd += [f"--{name}={port}" for name, port in ports.items()]
    if plan.role == "head":
        cmd += ["--head", "--include-dashboard=true", f"--dashboard-host={address}"]
    else:
        cmd += [f"--address={head_address}"]
    return cmd


def ray_env(base: Mapping[str, str], token_file: Path, temp_dir: Path) -> dict[str, str]:
    """Environment of the Ray processes: token auth on, no usage stats, our temp folder."""
    env = {k: v for k, v in base.items() if k not in {"RAY_AUTH_TOKEN", "RAY_ADDRESS"}}
    env.update(
        RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file),
        RAY_USAGE_STATS_ENABLED="0", TMPDIR=str(temp_dir),
    )
    return env


def write_json_private(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically with mode 600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def wait_for_head(cluster_dir: Path, head_job: str, timeout: float) -> dict[str, Any]:
    """Poll for the head's ``head.json`` of ``head_job`` (written before Ray starts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        head = read_json(cluster_dir / HEAD_FILE)
        if head and str(head.get("job_id")) == head_job:
            return head
        time.sleep(0.1)
    raise LaunchError(f"the head of job {head_job} did not start within {timeout:.0f} s")


def own_processes_mentioning(marker: str, proc: Path = Path("/proc")) -> list[int]:
    """Pids of this user's processes whose command line contains ``marker``."""
    found = []
    me, uid = os.getpid(), os.getuid()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry.name))
    return found


def kill_pids(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class JobsProbe:
    """Asks the head's Jobs API whether any Ray job is pending or running (with the token)."""

    def __init__(self, url: str, token_file: Path) -> None:
        self.url = url.rstrip("/")
        self.token_file = token_file

    def busy(self) -> bool | None:
        """True if a job is active, False if none, None if the API did not answer."""
        token = self.token_file.read_text().strip()
        request = urllib.request.Request(
            f"{self.url}/api/jobs/", headers={"Authorization": f"Bearer {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                jobs = json.loads(response.read() or b"[]")
        except (OSError, ValueError):
            return None
        return any(job.get("status") in {"PENDING", "RUNNING"} for job in jobs)


class IdleWatch:
    """Decides when a head stops its cluster: idle for too long, or the session ended."""

    def __init__(
        self,
        idle_seconds: float,
        busy: Callable[[], bool | None],
        session_alive: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_seconds = idle_seconds
        self.busy = busy
        self.session_alive = session_alive
        self.clock = clock
        self.last_busy = clock()

    def reason_to_stop(self) -> str | None:
        """A reason in users' words, or ``None`` to keep running. Call it periodically."""
        if self.session_alive is not None and not self.session_alive():
            return "the Jupyter session it was tied to ended"
        if self.idle_seconds <= 0:
            return None
        busy = self.busy()
        now = self.clock()
        if busy or busy is None:  # an unanswered probe is not proof of idleness
            self.last_busy = now
            return None
        if now - self.last_busy >= self.idle_seconds:
            minutes = self.idle_seconds / 60
            return f"no Ray job ran for {minutes:g} minutes (idle timeout)"
        return None


def slurm_job_alive(job_id: str, slurm: SlurmSync | None = None) -> bool:
    """True while Slurm lists ``job_id`` as pending or running (errors count as alive)."""
    try:
        job = (slurm or SlurmSync()).squeue([job_id]).get(job_id)
    except SlurmError:
        return True
    return job is not None and (job.is_pending or job.is_running)


class NodeRunner:
    """Runs ``ray start --block`` for one node, keeps the tail of its output, cleans up.

    Ray's output goes on to the job log as before; the last lines are kept so that a failed
    start can be explained (:func:`explain_failure`).
    """

    def __init__(self, cmd: Sequence[str], env: Mapping[str, str], temp_dir: Path) -> None:
        self.cmd = list(cmd)
        self.env = dict(env)
        self.temp_dir = temp_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.output: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
        self._copier: threading.Thread | None = None

    def start(self) -> None:
        log.info("starting: %s", " ".join(self.cmd))
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self._copier = threading.Thread(target=self._copy_output, daemon=True)
        self._copier.start()

    def _copy_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace")
            self.output.append(line)
            sys.stdout.write(line)
            sys.stdout.flush()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop_ray(self, grace: float = 2.0) -> None:
        """Stop Ray's process group and kill whatever still names our temp folder."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        leftovers = own_processes_mentioning(str(self.temp_dir))
        if self.proc is not None:
            leftovers += [self.proc.pid]
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        kill_pids(leftovers, signal.SIGKILL)
        if self._copier is not None:
            self._copier.join(5)

    def stop(self, grace: float = 2.0) -> None:
        """Stop Ray (see :meth:`stop_ray`) and remove the temp folder: nothing is left."""
        self.stop_ray(grace)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _log_lines(logs_dir: Path, limit: int = 65536) -> list[str]:
    """The last ``limit`` bytes of each of Ray's own log files of the latest session."""
    lines: list[str] = []
    try:
        files = sorted(logs_dir.glob("*.err")) + sorted(logs_dir.glob("*.out"))
    except OSError:
        return lines
    for path in files:
        try:
            with path.open("rb") as fh:
                fh.seek(max(0, path.stat().st_size - limit))
                lines += fh.read().decode(errors="replace").splitlines()
        except OSError:
            continue
    return lines


def explain_failure(output: Iterable[str], logs_dir: Path | None) -> tuple[str, bool]:
    """Why Ray stopped, in a user's words, and whether another try may succeed.

    Looks at ``ray start``'s own output first, then at the session's log files (the GCS
    writes its bind error there, not to the terminal). Worth another try: a port Ray needed
    was taken, or one of Ray's processes started too slowly (:data:`SLOW_START`).
    """
    lines = [line.strip() for line in output if line.strip()]
    candidates = lines + (_log_lines(logs_dir) if logs_dir is not None else [])
    for line in candidates:
        if PORT_TAKEN.search(line):
            port = re.search(r"port (?:is )?(\d+)|:(\d+)'", line)
            number = next((g for g in port.groups() if g), "") if port else ""
            which = f" ({number})" if number else ""
            return f"a port Ray needed{which} was already in use on the node", True
    for line in candidates:
        if SLOW_START.search(line):
            return ("Ray's own processes did not start in time on the busy node "
                    f"({line[-160:]})"), True
    errors = [line for line in lines if "Error" in line or "error" in line]
    last = (errors or lines or ["no output"])[-1]
    return f"Ray exited: {last[:300]}", False


def head_restarted(cluster_dir: Path, head: Mapping[str, Any]) -> bool:
    """True when ``head.json`` names another GCS than ``head`` (the head started again).

    A file that cannot be read now (a network file system's hiccup) proves nothing: a worker
    must not leave a running cluster for it.
    """
    now = read_json(cluster_dir / HEAD_FILE)
    if now is None:
        return False
    return (now.get("job_id"), now.get("gcs_port"), now.get("attempt")) != (
        head.get("job_id"), head.get("gcs_port"), head.get("attempt"))


def _supervise(
    runner: NodeRunner, watch: IdleWatch | None, stopping: list[str], check_seconds: float,
    head_moved: Callable[[], bool] | None = None,
) -> str | None:
    """Wait while Ray runs; returns the idle watch's reason to stop, if it fired.

    A worker also returns as soon as ``head_moved`` says its head started again: its own
    raylet would otherwise wait a minute for the old GCS before giving up.
    """
    next_check = time.monotonic() + check_seconds
    while runner.running() and not stopping:
        time.sleep(0.2)
        if head_moved is not None and head_moved():
            return None
        if watch is not None and time.monotonic() >= next_check:
            next_check = time.monotonic() + check_seconds
            reason = watch.reason_to_stop()
            if reason:
                return reason
    return None


def _node_resources(env: Mapping[str, str]) -> tuple[int, int, int]:
    """(CPUs, GPUs, memory MB) of this task's share of the node, from Slurm's environment."""
    cpus = int(env.get("SLURM_CPUS_PER_TASK") or env.get("SLURM_CPUS_ON_NODE") or 1)
    visible = env.get("CUDA_VISIBLE_DEVICES", "")
    gpus = len([d for d in visible.split(",") if d.strip()]) if visible else 0
    memory = int(env.get("SLURM_MEM_PER_NODE") or 1024)
    return cpus, gpus, memory


def run_node(cluster_dir: Path, plan: NodePlan, env: Mapping[str, str]) -> int:
    """Take part in the cluster until Ray stops, the idle watch fires or we are signalled.

    A node whose Ray could not bind a port, or whose Ray processes started too slowly on a
    busy node, starts again with fresh ports (at most :data:`START_ATTEMPTS` tries); a worker
    also starts again, at once, when its head did (that is no failed try of its own). A head
    that fails for good records why in ``stopped.json`` and cancels the cluster.
    """
    from shopfloor.session.singleuser import node_address

    config = read_json(cluster_dir / CLUSTER_FILE)
    if config is None:
        raise LaunchError(f"{cluster_dir / CLUSTER_FILE} is missing or unreadable")
    token_file = cluster_dir / TOKEN_FILE
    if not token_file.is_file():
        raise LaunchError(f"the cluster's token file {token_file} is missing")
    job = env["SLURM_JOB_ID"]
    user = env.get("USER") or str(os.getuid())
    temp_dir = make_temp_dir(config["temp_root"], user, os.getuid(), job, plan.index)
    ray_temp = temp_dir / RAY_SUBDIR
    address = node_address()
    cpus, gpus, memory_mb = _node_resources(env)
    store = object_store_bytes(
        memory_mb, config["object_store_fraction"], config["min_object_store_mb"]
    )
    names = NODE_PORTS + (HEAD_PORTS if plan.role == "head" else ())
    stopping: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        stopping.append(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    session = config.get("session_job")
    session_alive = (lambda: slurm_job_alive(session)) if session else None
    reason = failure = None
    attempt = 0
    try:
        while attempt < START_ATTEMPTS:
            attempt += 1
            ports = pick_ports(names)
            head_address, watch, head = "", None, {}
            if plan.role == "head":
                write_json_private(cluster_dir / HEAD_FILE, {
                    "job_id": job, "node": env.get("SLURMD_NODENAME", ""),
                    "address": address, "gcs_port": ports["port"],
                    "dashboard_port": ports["dashboard-port"], "temp_dir": str(temp_dir),
                    "started": time.time(), "attempt": attempt,
                })
                watch = IdleWatch(
                    config["idle_timeout_minutes"] * 60,
                    JobsProbe(f"http://{address}:{ports['dashboard-port']}", token_file).busy,
                    session_alive,
                )
            else:
                head = wait_for_head(cluster_dir, plan.head_job,
                                     config["ready_timeout_seconds"])
                head_address = f"{head['address']}:{head['gcs_port']}"
            cmd = ray_start_command(
                os.path.join(os.path.dirname(sys.executable), "ray"), plan, address, ports,
                ray_temp, num_cpus=cpus, num_gpus=gpus, object_store=store,
                head_address=head_address, memory=task_memory_bytes(memory_mb, store),
            )
            runner = NodeRunner(cmd, ray_env(env, token_file, temp_dir), temp_dir)
            runner.start()
            moved = functools.partial(head_restarted, cluster_dir, head) if head else None
            try:
                reason = _supervise(runner, watch, stopping, config["idle_check_seconds"],
                                    moved)
            finally:
                runner.stop_ray()
            if reason or stopping:
                failure = None
                break
            if moved is not None and moved():
                log.info("the head started again; joining it")
                failure, attempt = None, attempt - 1
                continue
            failure, retry = explain_failure(
                runner.output, ray_temp / "session_latest" / "logs"
            )
            if not retry or attempt == START_ATTEMPTS:
                break
            log.warning("attempt %d of %d: %s; starting again with other ports",
                        attempt, START_ATTEMPTS, failure)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    if reason:
        log.info("stopping the cluster: %s", reason)
        record_stop(cluster_dir, job, reason, config["job_names"])
    elif failure and plan.role == "head":
        log.error("the head could not run Ray: %s", failure)
        record_stop(cluster_dir, job, f"the head node could not start Ray: {failure}",
                    config["job_names"])
        return 1
    elif plan.role == "head":
        # Without its head the workers are useless: do not let their jobs idle to walltime.
        _cancel_cluster_jobs(config["job_names"][1:])
    elif failure:
        log.error("this worker could not run Ray: %s", failure)
        return 1
    return 0


def record_stop(cluster_dir: Path, job: str, reason: str, job_names: Sequence[str]) -> None:
    """Write why the cluster of head job ``job`` stops (for ``status()``) and cancel it."""
    write_json_private(cluster_dir / STOPPED_FILE, {
        "job_id": job, "reason": reason, "time": time.time(),
    })
    _cancel_cluster_jobs(job_names)


def _cancel_cluster_jobs(names: Sequence[str]) -> None:
    """Cancel all of this user's jobs of the cluster (first job and scale-up workers)."""
    import pwd

    if not names:  # an empty --name would match every job of the user
        return
    user = pwd.getpwuid(os.getuid()).pw_name
    try:
        SlurmSync().cancel_jobs_of(user, names=names)
    except SlurmError as exc:
        log.warning("could not cancel the cluster's jobs: %s", exc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shopfloor.ray.node", description=__doc__)
    parser.add_argument("--cluster-dir", required=True, type=Path)
    parser.add_argument(
        "--worker-for", default=None, help="job id of the head: all tasks are workers"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s raynode %(message)s")
    plan: NodePlan | None = None
    try:
        plan = plan_node(os.environ, args.worker_for)
        log.info("node %s: %s of job %s", os.environ.get("SLURMD_NODENAME"), plan.role,
                 plan.head_job)
        return run_node(args.cluster_dir, plan, os.environ)
    except LaunchError as exc:
        print(f"shopfloor.ray.node: {exc}", file=sys.stderr, flush=True)
        if plan is not None and plan.role == "head":
            config = read_json(args.cluster_dir / CLUSTER_FILE) or {}
            record_stop(args.cluster_dir, plan.head_job, f"the head node could not start: {exc}",
                        config.get("job_names") or [])
        return 2


if __name__ == "__main__":
    sys.exit(main())
