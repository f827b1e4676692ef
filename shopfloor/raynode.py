"""Job-side launcher of a Ray cluster: one task per node, started by ``srun``.

The batch script of a cluster runs ``srun python -m shopfloor.raynode --cluster-dir DIR``.
Each task decides its role (:func:`plan_node`: task 0 of the cluster's first job is the head,
every other task a worker), then:

* picks free ports on its own node address (no collision with other users or clusters sharing
  the node) and makes its own temp folder (mode 700, owned by the user, refused if someone
  else made it first);
* the head writes ``head.json`` (address and ports, never the token) into the user's private
  cluster folder *before* starting Ray, so workers start at the same time instead of sleeping;
* runs ``ray start --block`` with token authentication (``RAY_AUTH_MODE=token``, the token
  read by Ray from the 600 file named by ``RAY_AUTH_TOKEN_PATH``);
* the head watches the Jobs API and stops the whole cluster when no Ray job ran for the idle
  timeout, or when the user's session job ends (if asked);
* on SIGTERM (``scancel``, walltime) it stops its Ray processes, kills any that escaped and
  removes its temp folder: nothing is left on the node.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("shopfloor.raynode")

#: Ports each node picks for itself (``ray start`` option names). Ray's defaults (6379, 8265,
#: 10001, 52365, ...) are fixed numbers that collide when users share nodes.
NODE_PORTS = (
    "node-manager-port", "object-manager-port", "ray-client-server-port",
    "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
    "metrics-export-port",
)
HEAD_PORTS = ("port", "dashboard-port")
#: Ray puts Unix sockets under ``<temp>/session_<date>_<time>_<pid>/sockets/``; a socket path
#: longer than 107 bytes cannot be bound. 64 bytes are left for Ray's part, 2 for ``/r``.
MAX_TEMP_DIR_LENGTH = 107 - 64 - 2
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
        raise LaunchError("shopfloor.raynode must run inside a Slurm job step (srun)")
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


def temp_dir_for(root: str, user: str, uid: int, job: str, index: int) -> Path:
    """This node's Ray temp folder; the uid replaces a name too long for Ray's sockets."""
    for who in (user, str(uid)):
        path = Path(root) / f"shopfloor-ray-{who}-{job}-{index}"
        if len(str(path)) <= MAX_TEMP_DIR_LENGTH:
            return path
    raise LaunchError(
        f"the Ray temp folder under {root!r} would be too long for Ray's socket paths; "
        f"ask your admin to set ray.temp_root to a shorter folder (e.g. /tmp)"
    )


def make_private_dir(path: Path) -> Path:
    """Create ``path`` with mode 700, or accept it only if it is ours, private and real.

    Temp folder names are predictable (user and job id), so another user could create one
    first; we refuse to use a folder that is a link, belongs to someone else or is open.
    """
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise LaunchError(f"{path} exists and is not your folder; ask your admin to remove it")
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise LaunchError(f"{path} is open to other users; remove it and start again")
    return path


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


def slurm_job_alive(job_id: str) -> bool:
    """True while Slurm lists ``job_id`` as pending or running (errors count as alive)."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%T"],
            capture_output=True, text=True, timeout=30, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return True
    if out.returncode != 0:
        return "Invalid job id" not in out.stderr
    return out.stdout.strip() in {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING"}


class NodeRunner:
    """Runs ``ray start --block`` for one node and guarantees clean-up."""

    def __init__(self, cmd: Sequence[str], env: Mapping[str, str], temp_dir: Path) -> None:
        self.cmd = list(cmd)
        self.env = dict(env)
        self.temp_dir = temp_dir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log.info("starting: %s", " ".join(self.cmd))
        self.proc = subprocess.Popen(self.cmd, env=self.env, start_new_session=True)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 2.0) -> None:
        """Stop Ray's process group, kill whatever still names our temp folder, remove it."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        marker = str(self.temp_dir)
        leftovers = own_processes_mentioning(marker)
        if self.proc is not None:
            leftovers += [self.proc.pid]
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        kill_pids(leftovers, signal.SIGKILL)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _node_resources(env: Mapping[str, str]) -> tuple[int, int, int]:
    """(CPUs, GPUs, memory MB) of this task's share of the node, from Slurm's environment."""
    cpus = int(env.get("SLURM_CPUS_PER_TASK") or env.get("SLURM_CPUS_ON_NODE") or 1)
    visible = env.get("CUDA_VISIBLE_DEVICES", "")
    gpus = len([d for d in visible.split(",") if d.strip()]) if visible else 0
    memory = int(env.get("SLURM_MEM_PER_NODE") or 1024)
    return cpus, gpus, memory


def run_node(cluster_dir: Path, plan: NodePlan, env: Mapping[str, str]) -> int:
    """Take part in the cluster until Ray stops, the idle watch fires or we are signalled."""
    from shopfloor.extensions.singleuser import free_port, node_address

    config = read_json(cluster_dir / CLUSTER_FILE)
    if config is None:
        raise LaunchError(f"{cluster_dir / CLUSTER_FILE} is missing or unreadable")
    token_file = cluster_dir / TOKEN_FILE
    if not token_file.is_file():
        raise LaunchError(f"the cluster's token file {token_file} is missing")
    job = env["SLURM_JOB_ID"]
    user = env.get("USER") or str(os.getuid())
    temp_dir = make_private_dir(
        temp_dir_for(config["temp_root"], user, os.getuid(), job, plan.index)
    )
    ray_temp = temp_dir / RAY_SUBDIR
    address = node_address()
    cpus, gpus, memory_mb = _node_resources(env)
    store = object_store_bytes(
        memory_mb, config["object_store_fraction"], config["min_object_store_mb"]
    )
    names = NODE_PORTS + (HEAD_PORTS if plan.role == "head" else ())
    ports = {name: free_port(address) for name in names}
    head_address = ""
    if plan.role == "head":
        write_json_private(cluster_dir / HEAD_FILE, {
            "job_id": job, "node": env.get("SLURMD_NODENAME", ""), "address": address,
            "gcs_port": ports["port"], "dashboard_port": ports["dashboard-port"],
            "temp_dir": str(temp_dir), "started": time.time(),
        })
    else:
        head = wait_for_head(cluster_dir, plan.head_job, config["ready_timeout_seconds"])
        head_address = f"{head['address']}:{head['gcs_port']}"
    cmd = ray_start_command(
        os.path.join(os.path.dirname(sys.executable), "ray"), plan, address, ports, ray_temp,
        num_cpus=cpus, num_gpus=gpus, object_store=store, head_address=head_address,
        memory=task_memory_bytes(memory_mb, store),
    )
    runner = NodeRunner(cmd, ray_env(env, token_file, temp_dir), temp_dir)
    stopping: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        stopping.append(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    watch = None
    if plan.role == "head":
        session = config.get("session_job")
        watch = IdleWatch(
            config["idle_timeout_minutes"] * 60,
            JobsProbe(f"http://{address}:{ports['dashboard-port']}", token_file).busy,
            (lambda: slurm_job_alive(session)) if session else None,
        )
    runner.start()
    next_check = time.monotonic() + config["idle_check_seconds"]
    reason = None
    try:
        while runner.running() and not stopping:
            time.sleep(0.2)
            if watch is not None and time.monotonic() >= next_check:
                next_check = time.monotonic() + config["idle_check_seconds"]
                reason = watch.reason_to_stop()
                if reason:
                    break
    finally:
        runner.stop()
    if reason:
        log.info("stopping the cluster: %s", reason)
        write_json_private(cluster_dir / STOPPED_FILE, {
            "job_id": job, "reason": reason, "time": time.time(),
        })
        _cancel_cluster_jobs(config["job_names"])
    elif plan.role == "head":
        # Without its head the workers are useless: do not let their jobs idle to walltime.
        _cancel_cluster_jobs(config["job_names"][1:])
    return 0


def _cancel_cluster_jobs(names: Sequence[str]) -> None:
    """Cancel all of this user's jobs of the cluster (first job and scale-up workers)."""
    import pwd

    user = pwd.getpwuid(os.getuid()).pw_name
    subprocess.run(["scancel", "--name", ",".join(names), "-u", user], check=False, timeout=30)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shopfloor.raynode", description=__doc__)
    parser.add_argument("--cluster-dir", required=True, type=Path)
    parser.add_argument(
        "--worker-for", default=None, help="job id of the head: all tasks are workers"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s raynode %(message)s")
    try:
        plan = plan_node(os.environ, args.worker_for)
        log.info("node %s: %s of job %s", os.environ.get("SLURMD_NODENAME"), plan.role,
                 plan.head_job)
        return run_node(args.cluster_dir, plan, os.environ)
    except LaunchError as exc:
        print(f"shopfloor.raynode: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
