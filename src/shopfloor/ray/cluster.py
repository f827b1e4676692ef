"""Ray clusters on Slurm, from a notebook or any Python code running as the user.

A cluster is one Slurm job (head + workers, started by ``srun`` with
:mod:`shopfloor.ray.node`), plus one extra one-node job per worker added with
:meth:`RayCluster.scale`. It is safe on shared nodes and cleans up after itself:

* every node picks free ports at start and uses its own temp folder (mode 700);
* token authentication is on: the token lives only in a 600 file in the user's private
  cluster folder (``~/.shopfloor/ray/<name>/auth_token``), never in scripts, logs or URLs;
* the cluster stops at its walltime, after the site's idle timeout without Ray jobs, and
  (optionally) when the Jupyter session that made it ends.

::

    from shopfloor.ray.cluster import RayCluster
    cluster = RayCluster.create("demo", {"partition": "cpu", "nodes": 2, "cpus": 1,
                                         "memory_gb": 1, "walltime": "30"})
    cluster.wait_ready()
    job = cluster.submit("python -c 'import ray; ray.init(); print(ray.cluster_resources())'")
    for chunk in cluster.follow_logs(job):
        print(chunk, end="")
    cluster.stop()

Options are checked by the hub's one resource model (``POST /hub/api/shopfloor/validate``);
code without a hub (tests, scripts) may pass an already-validated
:class:`~shopfloor.resources.ResourceRequest`.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import requests

from shopfloor.errors import ShopfloorError
from shopfloor.ray.node import (
    CLUSTER_FILE,
    HEAD_FILE,
    STOPPED_FILE,
    TOKEN_FILE,
    read_json,
    write_json_private,
)
from shopfloor.resources import RequestError, ResourceRequest
from shopfloor.session.hubslurm import HubSlurm, session_slurm
from shopfloor.site import RaySettings
from shopfloor.slurm.jobscript import JobSpec, build_script
from shopfloor.slurm.pending import describe_pending
from shopfloor.slurm.seam import JobInfo, SlurmError, SlurmSync

T = TypeVar("T")

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,29}$")
#: Slurm job names: the first job of cluster ``x`` and its scale-up workers.
HEAD_JOB_PREFIX = "shopfloor-ray-"
WORKER_JOB_PREFIX = "shopfloor-raywk-"


class RayClusterError(ShopfloorError, RuntimeError):
    """Something the user asked for cannot be done; the message says why and what to do."""


def check_name(name: str) -> str:
    """A cluster name: lowercase letters, digits and '-', at most 30 characters."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise RayClusterError(
            f"name: {name!r} is not allowed; use lowercase letters, digits and '-' "
            "(at most 30 characters), for example 'training-1'"
        )
    return name


def _home() -> Path:
    return Path(pwd.getpwuid(os.getuid()).pw_dir)


def _user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def state_root(settings: RaySettings) -> Path:
    """The user's private folder of Ray clusters (created with mode 700)."""
    root = Path(settings.state_dir.format(home=_home(), user=_user()))
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    root.chmod(0o700)
    return root


def fetch_settings(hub: Any | None) -> RaySettings:
    """The site's Ray settings from the hub (``GET /shopfloor/ray``); defaults without one."""
    if hub is None:
        return RaySettings()
    return RaySettings.model_validate(hub.get_json("/shopfloor/ray"))


def default_hub() -> Any | None:
    """The session's hub client (:class:`shopfloor.session.hubapi.Hub`), or ``None`` outside one."""
    if not (os.environ.get("JUPYTERHUB_API_URL") and os.environ.get("JUPYTERHUB_API_TOKEN")):
        return None
    from shopfloor.session.hubapi import Hub

    return Hub()


@dataclass(frozen=True)
class ClusterStatus:
    """What a cluster is doing now, for people (``message``) and for code (the rest).

    ``phase`` is one of ``pending`` (queued in Slurm), ``starting`` (running, Ray not yet
    answering with every node), ``ready`` (Jobs API answers, all nodes joined), ``degraded``
    (ready once, but a node or worker job was lost), ``stopped``.
    """

    phase: str
    message: str
    nodes_expected: int = 0
    nodes_alive: int = 0
    cpus: float = 0
    gpus: float = 0
    object_store_bytes: int = 0
    jobs: tuple[JobInfo, ...] = ()
    lost_workers: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        return self.phase == "ready"


@dataclass
class RayCluster:
    """One of the user's Ray clusters, by name. Use :meth:`create` or :func:`list_clusters`."""

    name: str
    settings: RaySettings = field(default_factory=RaySettings)
    #: Slurm as this session reads it: job state from the hub's shared snapshot.
    slurm: SlurmSync = field(default_factory=session_slurm)
    root: Path | None = None

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.root is None:
            self.root = state_root(self.settings)

    def __repr__(self) -> str:
        return f"RayCluster({self.name!r})"

    # -- files ----------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return Path(self.root or state_root(self.settings)) / self.name

    @property
    def token_file(self) -> Path:
        """The 600 file holding this cluster's auth token (read it, never print it)."""
        return self.directory / TOKEN_FILE

    def config(self) -> dict[str, Any]:
        data = read_json(self.directory / CLUSTER_FILE)
        if data is None:
            raise RayClusterError(f"there is no Ray cluster named {self.name!r}")
        return data

    @property
    def account(self) -> str | None:
        """The Slurm account every job of this cluster charges (head and workers alike: the
        validated request's), or None before it was created."""
        config = read_json(self.directory / CLUSTER_FILE) or {}
        return (config.get("request") or {}).get("account")

    def _save(self, config: Mapping[str, Any]) -> None:
        write_json_private(self.directory / CLUSTER_FILE, config)

    def head(self) -> dict[str, Any] | None:
        """Where the head runs (address and ports), once its job started; else ``None``."""
        head = read_json(self.directory / HEAD_FILE)
        config = read_json(self.directory / CLUSTER_FILE) or {}
        if head and str(head.get("job_id")) == str(config.get("head_job")):
            return head
        return None

    @property
    def dashboard_address(self) -> str | None:
        """``http://NodeAddr:port`` of the head's dashboard and Jobs API (needs the token)."""
        head = self.head()
        return f"http://{head['address']}:{head['dashboard_port']}" if head else None

    @property
    def dashboard_url(self) -> str | None:
        """The dashboard through the user's own Jupyter server (adds the token server-side).

        A path under ``JUPYTERHUB_SERVICE_PREFIX``; ``None`` outside a Jupyter session.
        """
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX")
        if not prefix:
            return None
        return f"{prefix.rstrip('/')}/shopfloor/ray/{self.name}/dashboard/"

    def auth_header(self) -> dict[str, str]:
        """The Authorization header for this cluster (for proxies: never print or log it)."""
        try:
            token = self.token_file.read_text().strip()
        except OSError:
            raise RayClusterError(
                f"cannot read this cluster's token file {self.token_file}"
            ) from None
        return {"Authorization": f"Bearer {token}"}

    # -- creation ---------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        name: str,
        options: ResourceRequest | Mapping[str, Any],
        *,
        hub: Any | None = None,
        idle_timeout_minutes: int | None = None,
        stop_with_session: bool = False,
        settings: RaySettings | None = None,
        slurm: SlurmSync | None = None,
        root: Path | None = None,
        python: str = sys.executable,
    ) -> RayCluster:
        """Submit a new cluster; returns at once (use :meth:`wait_ready` or :meth:`status`).

        ``options`` are raw resource options (checked by the hub: partition, nodes, cpus per
        node, memory_gb per node, gpus per node, walltime, and ``account``/``qos``: one of the
        user's own, the default account where none is named) or a validated request. The
        account holds for every job of the cluster, workers added by :meth:`scale` too.
        ``idle_timeout_minutes`` may only shorten the site's idle timeout.
        ``stop_with_session`` ties the cluster to the Jupyter session running this code.
        """
        check_name(name)
        hub = hub if hub is not None else (None if settings else default_hub())
        settings = settings or fetch_settings(hub)
        if isinstance(options, ResourceRequest):
            request = options
        elif hub is None:
            raise RayClusterError(
                "cannot check these options without the hub; run this in a Shopfloor "
                "session, or pass a validated ResourceRequest"
            )
        else:
            request = hub.validate(dict(options))
        idle = settings.idle_timeout_minutes
        if idle_timeout_minutes is not None:
            if idle_timeout_minutes < 1 or (idle and idle_timeout_minutes > idle):
                most = f"at most {idle}" if idle else "1 or more"
                raise RequestError({
                    "idle_timeout_minutes": f"the site allows {most} minutes; you asked for "
                    f"{idle_timeout_minutes}"
                })
            idle = idle_timeout_minutes
        session_job = None
        if stop_with_session:
            session_job = os.environ.get("SLURM_JOB_ID")
            if not session_job:
                raise RayClusterError(
                    "stop_with_session needs a Jupyter session running as a Slurm job"
                )
        cluster = cls(name, settings=settings, slurm=slurm or session_slurm(), root=root)
        cluster._submit_new(request, idle, session_job, python)
        return cluster

    def _submit_new(
        self, request: ResourceRequest, idle: int, session_job: str | None, python: str
    ) -> None:
        active = [j for j in self.jobs() if not j.is_finished]
        if active:
            raise RayClusterError(
                f"a Ray cluster named {self.name!r} is already running (job "
                f"{active[0].job_id}); stop it or choose another name"
            )
        directory = self.directory
        directory.mkdir(mode=0o700, exist_ok=True)
        directory.chmod(0o700)
        (directory / "logs").mkdir(mode=0o700, exist_ok=True)
        for stale in (HEAD_FILE, STOPPED_FILE, TOKEN_FILE):
            (directory / stale).unlink(missing_ok=True)
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        s = self.settings
        config: dict[str, Any] = {
            "name": self.name, "created": time.time(), "request": request.model_dump(),
            "python": python, "head_job": None, "workers": [], "scaled_down": [],
            "job_names": [HEAD_JOB_PREFIX + self.name, WORKER_JOB_PREFIX + self.name],
            "idle_timeout_minutes": idle, "idle_check_seconds": s.idle_check_seconds,
            "object_store_fraction": s.object_store_fraction,
            "min_object_store_mb": s.min_object_store_mb, "temp_root": s.temp_root,
            "ready_timeout_seconds": s.ready_timeout_seconds, "session_job": session_job,
        }
        self._save(config)
        config["head_job"] = self._sbatch(HEAD_JOB_PREFIX + self.name, request, python, None)
        self._save(config)

    def job_script(
        self, job_name: str, request: ResourceRequest, python: str, worker_for: str | None
    ) -> str:
        """The batch script of the first job (``worker_for=None``) or of a worker job."""
        command = [
            "srun", "--ntasks-per-node=1", "--kill-on-bad-exit=0",
            python, "-m", "shopfloor.ray.node", "--cluster-dir", str(self.directory),
        ]
        if worker_for:
            command += ["--worker-for", worker_for]
        bin_dir = os.path.dirname(python)
        env = {
            "HOME": str(_home()), "USER": _user(), "LOGNAME": _user(), "LANG": "C.UTF-8",
            "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        spec = JobSpec(
            name=job_name, request=request, command=command,
            output=f"{self.directory}/logs/%j.log", workdir=str(_home()), env=env,
        )
        return build_script(spec)

    def _sbatch(
        self, job_name: str, request: ResourceRequest, python: str, worker_for: str | None
    ) -> str:
        script = self.job_script(job_name, request, python, worker_for)
        try:
            return self.slurm.sbatch(script)
        except SlurmError as exc:
            raise RayClusterError(f"Slurm refused the job: {exc.slurm_message}") from None

    # -- state ------------------------------------------------------------------------------

    def jobs(self, *, fresh: bool = False) -> list[JobInfo]:
        """This cluster's Slurm jobs that Slurm still lists (first job, then workers).

        Inside a session they come from the hub's shared snapshot (a few seconds old at
        most); ``fresh`` asks Slurm itself, for a decision that must see a job that ended
        a moment ago (:meth:`scale` replacing a lost worker).
        """
        config = read_json(self.directory / CLUSTER_FILE) or {}
        # Naming the jobs lets a cached reader (HubSlurm) answer from a snapshot that
        # includes a job submitted a moment ago.
        known = [str(j) for j in [config.get("head_job"), *config.get("workers", [])] if j]
        squeue = self.slurm.squeue
        if fresh and isinstance(self.slurm, HubSlurm):  # Slurm's own answer, not the hub's
            squeue = partial(SlurmSync.squeue, self.slurm)
        try:
            mine = squeue(known or None, user=_user())
        except SlurmError as exc:
            raise RayClusterError(f"Slurm is not answering: {exc.slurm_message}") from None
        names = {HEAD_JOB_PREFIX + self.name, WORKER_JOB_PREFIX + self.name}
        found = [j for j in mine.values() if j.name in names]
        return sorted(found, key=lambda j: (j.name != HEAD_JOB_PREFIX + self.name,
                                            int(j.job_id)))

    def _ray_get(self, path: str, timeout: float = 3.0) -> Any:
        address = self.dashboard_address
        if address is None:
            return None
        try:
            response = requests.get(
                address + path, headers=self.auth_header(), timeout=timeout
            )
        except requests.RequestException:
            return None
        return response.json() if response.status_code == 200 else None

    def ray_nodes(self) -> list[dict[str, Any]] | None:
        """Ray's view of its nodes (state API), or ``None`` while the head is not answering."""
        data = self._ray_get("/api/v0/nodes?detail=true&limit=1000")
        if not data:
            return None
        return list(data.get("data", {}).get("result", {}).get("result", []))

    def status(self) -> ClusterStatus:
        """Ask Slurm and Ray where the cluster stands (one squeue, two HTTP calls)."""
        config = self.config()
        jobs = self.jobs()
        by_id = {j.job_id: j for j in jobs}
        head_job = by_id.get(str(config.get("head_job")))
        if head_job is None or head_job.is_finished:
            stopped = read_json(self.directory / STOPPED_FILE) or {}
            reason = stopped.get("reason") if str(stopped.get("job_id")) == str(
                config.get("head_job")) else None
            return ClusterStatus("stopped", f"Stopped: {reason}." if reason else "Stopped.",
                                 jobs=tuple(jobs))
        request = ResourceRequest.model_validate(config["request"])
        if head_job.is_pending:
            return ClusterStatus("pending", describe_pending(
                head_job, None, account=request.account, qos=request.qos), jobs=tuple(jobs))
        # Workers still queued count too: "ready" means every node asked for has joined.
        active_workers = [by_id[w] for w in config["workers"]
                          if w in by_id and not by_id[w].is_finished]
        lost = tuple(w for w in config["workers"]
                     if w not in config["scaled_down"]
                     and (w not in by_id or by_id[w].is_finished))
        expected = request.nodes + len(active_workers)
        nodes = self.ray_nodes()
        if nodes is None:
            return ClusterStatus(
                "starting", f"Running on {head_job.nodes}; waiting for Ray to answer.",
                nodes_expected=expected, jobs=tuple(jobs), lost_workers=lost,
            )
        alive = [n for n in nodes if n.get("state") == "ALIVE"]
        totals: dict[str, float] = {}
        for node in alive:
            for key, value in (node.get("resources_total") or {}).items():
                totals[key] = totals.get(key, 0) + float(value)
        # Ray lists a lost node as DEAD for a long time: once enough nodes are alive again
        # (scaled back up), the dead one no longer makes the cluster degraded.
        dead = len(nodes) - len(alive) if len(alive) < expected else 0
        if len(alive) >= expected and not lost:
            phase, message = "ready", f"Ready: {len(alive)} node(s)."
        elif lost or dead:
            phase = "degraded"
            parts = []
            if lost:
                parts.append(f"worker job(s) {', '.join(lost)} ended")
            if dead:
                parts.append(f"{dead} node(s) left the cluster")
            message = "Degraded: " + "; ".join(parts) + f"; {len(alive)} node(s) alive."
        else:
            phase = "starting"
            message = f"Starting: {len(alive)} of {expected} node(s) joined."
        return ClusterStatus(
            phase, message, nodes_expected=expected, nodes_alive=len(alive),
            cpus=totals.get("CPU", 0), gpus=totals.get("GPU", 0),
            object_store_bytes=int(totals.get("object_store_memory", 0)),
            jobs=tuple(jobs), lost_workers=lost,
        )

    def wait_ready(
        self, timeout: float = 300, poll: float = 0.25, full_every: float = 2.0
    ) -> ClusterStatus:
        """Block until :meth:`status` is ``ready``; raise with the last status otherwise.

        The full :meth:`status` (Slurm and Ray) is read at most every ``full_every`` seconds;
        in between, every ``poll`` seconds, only the head's state API is asked whether all
        nodes joined (one HTTP call), so waiting costs Slurm nothing per poll and the
        start-up's CPU goes to Ray.
        """
        deadline = time.monotonic() + timeout
        status: ClusterStatus | None = None
        next_full = 0.0
        while True:
            if (status is None or time.monotonic() >= next_full
                    or self._all_joined(status.nodes_expected)):
                status = self.status()
                next_full = time.monotonic() + full_every
                if status.ready:
                    return status
                if status.phase == "stopped":
                    raise RayClusterError(
                        f"the cluster stopped before it was ready ({status.message}); "
                        f"its log is in {self.directory / 'logs'}"
                    )
            if time.monotonic() > deadline:
                raise RayClusterError(f"not ready after {timeout:.0f} s: {status.message}")
            time.sleep(poll)

    def _all_joined(self, expected: int) -> bool:
        """True when Ray lists at least ``expected`` (> 0) nodes alive (one HTTP call)."""
        nodes = self.ray_nodes() if expected > 0 else None
        return nodes is not None and sum(n.get("state") == "ALIVE" for n in nodes) >= expected

    # -- scaling ----------------------------------------------------------------------------

    def scale(self, nodes: int, *, hub: Any | None = None) -> list[str]:
        """Grow or shrink the cluster to ``nodes`` nodes; returns the worker jobs submitted.

        Growing submits one-node worker jobs (same partition and sizes) that join the head,
        after the hub's resource model accepted the whole cluster at its new size (a
        :class:`~shopfloor.resources.RequestError` naming the field otherwise; ``hub``
        defaults to the session's). Shrinking cancels the newest of them. The first job's
        nodes always stay. Worker jobs that ended behind our back (lost) are dropped from
        the cluster here, so that scaling back up makes it whole again.
        """
        config = self.config()
        request = ResourceRequest.model_validate(config["request"])
        if not isinstance(nodes, int) or isinstance(nodes, bool) or nodes < request.nodes:
            raise RequestError({
                "nodes": f"this cluster started with {request.nodes} node(s) and cannot have "
                f"fewer; you asked for {nodes}. Stop it to free everything."
            })
        active = {j.job_id for j in self.jobs(fresh=True) if not j.is_finished}
        workers = [w for w in config["workers"] if w in active]
        gone = [w for w in config["workers"] if w not in active]
        if gone:
            config["workers"] = workers
            config.setdefault("lost", []).extend(
                w for w in gone if w not in config["scaled_down"]
            )
            self._save(config)
        current = request.nodes + len(workers)
        submitted = []
        if nodes > current:
            self._check_size(request, nodes, hub)
            worker_request = request.model_copy(update={"nodes": 1})
            for _ in range(nodes - current):
                job = self._sbatch(WORKER_JOB_PREFIX + self.name, worker_request,
                                   config["python"], str(config["head_job"]))
                submitted.append(job)
                config["workers"].append(job)
                self._save(config)
        excess = current - nodes
        for job in reversed(workers[-excess:] if excess > 0 else []):
            config["scaled_down"].append(job)
            self._save(config)
            self._scancel(job)
        return submitted

    def _check_size(self, request: ResourceRequest, nodes: int, hub: Any | None) -> None:
        """Ask the hub's one resource model whether the cluster may have ``nodes`` nodes."""
        hub = hub if hub is not None else default_hub()
        if hub is None:
            raise RayClusterError(
                "cannot check a bigger cluster without the hub; run this in a Shopfloor "
                "session, or pass hub="
            )
        hub.validate(dict(request.as_options(), nodes=nodes))

    def _scancel(self, job_id: str) -> None:
        try:
            self.slurm.scancel(job_id)
        except SlurmError as exc:
            raise RayClusterError(f"could not cancel job {job_id}: {exc.slurm_message}") from None

    # -- jobs -------------------------------------------------------------------------------

    def job_client(self) -> Any:
        """A Ray ``JobSubmissionClient`` for this cluster, with the auth header set."""
        from ray.job_submission import JobSubmissionClient

        address = self.dashboard_address
        if address is None:
            raise RayClusterError("the cluster is not running yet; wait until it is ready")
        return JobSubmissionClient(address, headers=self.auth_header())

    def submit(self, entrypoint: str, *, runtime_env: Mapping[str, Any] | None = None) -> str:
        """Submit a Ray job (a shell command run on the head); returns its submission id."""
        return self.job_client().submit_job(
            entrypoint=entrypoint, runtime_env=dict(runtime_env or {}) or None
        )

    def job_status(self, job_id: str) -> str:
        """``PENDING``, ``RUNNING``, ``SUCCEEDED``, ``FAILED`` or ``STOPPED``."""
        return str(self.job_client().get_job_status(job_id).value)

    def job_logs(self, job_id: str) -> str:
        return str(self.job_client().get_job_logs(job_id))

    def follow_logs(self, job_id: str, poll: float = 0.5, timeout: float = 3600) -> Iterator[str]:
        """Yield new log text of a job as it appears, until the job ends."""
        client = self.job_client()
        seen = 0
        deadline = time.monotonic() + timeout
        while True:
            status = str(client.get_job_status(job_id).value)
            logs = str(client.get_job_logs(job_id))
            if len(logs) > seen:
                yield logs[seen:]
                seen = len(logs)
            if status in {"SUCCEEDED", "FAILED", "STOPPED"} or time.monotonic() > deadline:
                return
            time.sleep(poll)

    # -- stopping ---------------------------------------------------------------------------

    def stop(self, wait: float = 30) -> None:
        """Cancel every job of the cluster and wait until Slurm has let them go."""
        jobs = [j for j in self.jobs() if not j.is_finished]
        for job in jobs:
            self._scancel(job.job_id)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(not j.is_finished for j in self.jobs()):
            time.sleep(0.25)

    def forget(self) -> None:
        """Delete the state folder (token included) of a stopped cluster."""
        if any(not j.is_finished for j in self.jobs()):
            raise RayClusterError(f"{self.name!r} is still running; stop it first")
        import shutil

        shutil.rmtree(self.directory, ignore_errors=True)


def list_clusters(
    settings: RaySettings | None = None, slurm: SlurmSync | None = None, root: Path | None = None
) -> list[RayCluster]:
    """The user's clusters (from their state folder), newest first; survives kernel restarts."""
    settings = settings or RaySettings()
    base = root or state_root(settings)
    slurm = slurm or session_slurm()
    found = []
    for directory in base.iterdir():
        if (directory / CLUSTER_FILE).is_file() and _NAME_RE.match(directory.name):
            found.append((directory.stat().st_mtime, directory.name))
    return [
        RayCluster(name, settings=settings, slurm=slurm, root=base)
        for _, name in sorted(found, reverse=True)
    ]


__all__ = ["ClusterStatus", "RayCluster", "RayClusterError", "list_clusters"]
