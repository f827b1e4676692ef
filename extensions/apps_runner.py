"""Runs published apps as Slurm jobs: start on first visit, track, stop when idle.

One :class:`AppRunner` lives in the apps service. Each running app has a :class:`Run` with a
fresh random secret that only the service and the job know (it reaches the job by name through
sbatch ``--export``, never in a script, command line, URL or log). The job reports its port
back with that secret; the service then proxies viewers to ``NodeAddr:port`` and adds the secret
to every request. A run is stopped (``scancel``) after ``apps.idle_stop_minutes`` without viewer
activity; the next visit starts a new one.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import pwd
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from shopfloor.accounts.info import AccountsInfo
from shopfloor.apps.job import SECRET_HEADER
from shopfloor.apps.jobstart import SECRET_ENV
from shopfloor.apps.model import App, AppStore
from shopfloor.apps.shared_static import KEY as STATIC_KEY
from shopfloor.extensions import metrics
from shopfloor.resources import RequestError, RequestPolicy, UserContext
from shopfloor.site import SiteConfig
from shopfloor.slurm.clusterinfo import ClusterInfo
from shopfloor.slurm.jobscript import JobSpec, build_script
from shopfloor.slurm.jobwatch import JobState, JobWatcher
from shopfloor.slurm.pending import describe_pending
from shopfloor.slurm.seam import Slurm, SlurmError
from shopfloor.timeutil import parse_walltime
from shopfloor.userfiles import private_dir_as_user

log = logging.getLogger(__name__)
#: Seconds after a failed start during which visits show the failure instead of retrying.
RETRY_AFTER = 15.0
#: Seconds a kernel given to a viewer may stay without a connected page (a reload, a network
#: hiccup, a page that never connected) before the service shuts it down.
UNCONNECTED_GRACE = 60.0
#: The start-up phases an app job may report with its port (seconds since its process began),
#: and the largest value accepted: the job is the owner's code, so nothing else is kept.
JOB_TIMINGS = ("imports_s", "kernel_ahead_s", "voila_ready_s", "listening_s", "pool_warm_s",
               "kernel_ahead_unused_s")
_MAX_TIMING = 3600.0


@dataclass
class KernelClaim:
    """A kernel the service gave to one viewer: only that viewer may reach it."""

    viewer: str  #: ``user:<name>`` or ``anonymous:<browser id>``
    sockets: int = 0  #: open kernel websockets
    last_seen: float = field(default_factory=time.monotonic)

    def unconnected_for(self, now: float) -> float:
        """Seconds without a connected page (0 while one is connected)."""
        return 0.0 if self.sockets > 0 else now - self.last_seen


@dataclass
class Run:
    """One app job: where it is and whether it serves yet."""

    key: str
    version: int
    secret: str
    state: str = "starting"  #: starting | ready | failed | stopped
    message: str = "Submitting the app to Slurm"
    job_id: str = ""
    #: The Slurm account the job charges (the owner's choice, validated at this start).
    account: str | None = None
    node: str = ""
    address: str = ""
    port: int = 0
    submitted: float = field(default_factory=time.monotonic)
    ready_after: float | None = None  #: seconds from submit to serving
    failed_at: float = 0.0
    last_activity: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None
    #: Kernel id -> the viewer it was given to (placeholders while a page renders).
    kernels: dict[str, KernelClaim] = field(default_factory=dict)
    #: Seconds from submit at which the service saw each step: ``submitted`` (sbatch
    #: returned), ``running`` (Slurm said so), ``port`` (the job's callback), ``ready``.
    phases: dict[str, float] = field(default_factory=dict)
    #: The job's own start-up phases (:data:`JOB_TIMINGS`), as it reported them.
    job_timings: dict[str, float] = field(default_factory=dict)
    #: The key of the static files the job's Voila serves (:mod:`shopfloor.apps.shared_static`),
    #: as it reported it with its port; pages use the shared files when it is the service's.
    static_key: str = ""
    #: Set when the job reports its port or the state or message changes (wakes waiters).
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def upstream(self) -> str:
        return f"http://{self.address}:{self.port}"

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def mark(self, phase: str) -> None:
        """Record the first time ``phase`` was reached (seconds since submit)."""
        self.phases.setdefault(phase, round(time.monotonic() - self.submitted, 3))

    def set_state(self, state: str, message: str) -> None:
        """Change the state and wake whoever waits for a change (the progress page)."""
        self.state, self.message = state, message
        self.wake()

    def say(self, message: str) -> None:
        """Change the message the progress page shows (waking it when it differs)."""
        if message != self.message:
            self.message = message
            self.wake()

    def wake(self) -> None:
        """Wake whoever waits in :meth:`wait_change`."""
        self.changed.set()
        self.changed = asyncio.Event()

    async def wait_change(self, timeout: float) -> None:
        """Return when the state changes or after ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self.changed.wait(), timeout)
        except TimeoutError:
            pass

    def owns(self, kernel_id: str, viewer: str) -> bool:
        """Whether ``kernel_id`` was given to ``viewer`` (unknown ids belong to nobody)."""
        claim = self.kernels.get(kernel_id)
        return claim is not None and claim.viewer == viewer

    def over_capacity(self, viewer: str, per_viewer: int, per_app: int) -> str | None:
        """Why ``viewer`` may not have one more kernel here, in the viewer's words, or None."""
        mine = sum(1 for c in self.kernels.values() if c.viewer == viewer)
        if mine >= per_viewer:
            return (f"You have this app open {mine} times, the most allowed; close one of its "
                    "pages (or wait a minute) and reload.")
        if len(self.kernels) >= per_app:
            return (f"This app serves as many viewers as it can ({per_app}); try again in a "
                    "few minutes.")
        return None


class AppRunner:
    """Starts, proxies-for and stops app jobs for one apps service."""

    def __init__(self, site: SiteConfig, store: AppStore, callback_base: str,
                 slurm: Slurm | None = None) -> None:
        self.site = site
        self.settings = site.apps
        self.store = store
        self.callback_base = callback_base.rstrip("/")
        self.slurm = slurm or Slurm(bin_dir=site.slurm.bin_dir, env=site.slurm.environment())
        self.watcher = JobWatcher(self.slurm)
        # With accounting, snapshots carry the owners' associations: without them the one
        # resource model could not check the account an app charges (at publish and start).
        self.cluster = ClusterInfo(
            self.slurm, site.slurm.info_cache_seconds,
            accounts=AccountsInfo(self.slurm, site.accounting.cache_seconds)
            if site.accounting.enabled else None)
        self.policy = RequestPolicy(site)
        self.runs: dict[str, Run] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        #: Job names carry a tag of this store, so two hubs on one cluster never touch each
        #: other's app jobs.
        self.tag = hashlib.sha256(str(store.root).encode()).hexdigest()[:6]

    # -- names and scripts -------------------------------------------------------------

    def job_name(self, app: App) -> str:
        return f"shopfloor-app-{self.tag}-{app.owner}-{app.slug}"[:120]

    def base_url(self, app: App) -> str:
        return self.base_url_of(app.key)

    async def validated_request(self, app: App, owner: UserContext) -> Any:
        """The stored compute request, checked again against today's policy and cluster."""
        live = await self.cluster.snapshot(user=owner.name)
        return self.policy.validate(_as_options(app.version().request), owner, live)

    def job_script(self, app: App, request: Any) -> str:
        home = pwd.getpwnam(app.owner).pw_dir
        python = self.site.hub.python
        snapshot = self.store.snapshot_dir(app)
        version = app.version()
        log_dir = self.site.slurm.job_log_dir.format(home=home, user=app.owner)
        env = {
            "HOME": home, "USER": app.owner, "LOGNAME": app.owner, "SHELL": "/bin/bash",
            "PATH": f"{os.path.dirname(python)}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
        }
        command = [
            python, "-m", "shopfloor.apps.jobstart", "--notebook", str(snapshot / version.notebook),
            "--base-url", self.base_url(app),
            "--callback", f"{self.callback_base}/api/callback/{app.owner}/{app.slug}",
            "--pool-size", str(self.settings.pool_size),
        ]
        spec = JobSpec(name=self.job_name(app), request=request, command=command,
                       output=f"{log_dir}/app-%j.log", workdir=str(snapshot), env=env)
        return build_script(spec)

    # -- lifecycle ---------------------------------------------------------------------

    def run_for(self, app: App) -> Run | None:
        run = self.runs.get(app.key)
        if run and run.version != app.current:
            return None
        return run

    def ensure_started(self, app: App, owner: UserContext) -> tuple[Run, bool]:
        """The app's run, starting one if none serves the current version (True if new)."""
        run = self.runs.get(app.key)
        if run and run.version == app.current and run.state in ("starting", "ready"):
            return run, False
        if run and run.state == "failed" and time.monotonic() - run.failed_at < RETRY_AFTER:
            return run, False  # a reload right after a failure shows it, not a new job
        if run:
            self._forget(run)
            if run.job_id:
                self._background(self._cancel(run))
        run = Run(key=app.key, version=app.current, secret=secrets.token_urlsafe(32))
        self.runs[app.key] = run
        run.task = asyncio.ensure_future(self._start(app, owner, run))
        return run, True

    async def _start(self, app: App, owner: UserContext, run: Run) -> None:
        try:
            request = await self.validated_request(app, owner)
            run.account = request.account
            home = pwd.getpwnam(app.owner).pw_dir
            await _private_dir_as(app.owner, self.site.slurm.job_log_dir.format(
                home=home, user=app.owner))
            run.job_id = await self.slurm.sbatch(
                self.job_script(app, request), user=app.owner,
                secret_env={SECRET_ENV: run.secret},
            )
            run.mark("submitted")
            log.info("apps: %s v%s submitted as job %s on %s", app.key, run.version,
                     run.job_id, request.partition)
            await self._wait_ready(run, request.partition)
        except RequestError as exc:
            self._fail(run, f"The app's compute request is no longer allowed: {exc}. "
                       "Its owner must publish it again.")
        except SlurmError as exc:
            self._fail(run, f"Slurm refused the app's job: {exc.slurm_message}")
        except TimeoutError:
            self._fail(run, f"The app did not start within {self.settings.start_timeout} s; "
                       "try again in a minute, or ask its owner to check the job log.")
            await self._cancel(run)

    def _fail(self, run: Run, message: str) -> None:
        log.warning("apps: %s failed to start: %s", run.key, message)
        run.failed_at = time.monotonic()
        run.set_state("failed", message)

    async def _wait_ready(self, run: Run, partition: str) -> None:
        deadline = time.monotonic() + self.settings.start_timeout
        while time.monotonic() < deadline:
            # Once the job has called back it runs: ask Slurm afresh for its node.
            fresh = run.port and not run.node
            status = await self.watcher.status(run.job_id, max_age=0 if fresh else 0.5)
            if status.state is JobState.GONE:
                self._fail(run, f"The app's job {run.job_id} ended before it served "
                           "(its owner finds the log in ~/.shopfloor/logs).")
                return
            info = status.info
            if info and info.is_pending:
                run.say(describe_pending(info, None, account=run.account))
            elif info and info.is_running:
                run.node = info.batch_host
                run.say(f"Starting Voila on {run.node}")
                run.mark("running")
                if not run.address:
                    # Now, while the job starts Python, rather than after its callback.
                    run.address = await self.slurm.node_address(run.node)
            if run.port and run.address:
                if await self._answers(run):
                    run.mark("ready")
                    run.set_state("ready", "Ready")
                    run.ready_after = time.monotonic() - run.submitted
                    metrics.observe_app_cold_start(run.ready_after)
                    run.touch()
                    log.info("apps: %s ready on %s:%s after %.1f s", run.key, run.address,
                             run.port, run.ready_after)
                    return
            # The job's callback wakes this at once; otherwise look at Slurm again soon.
            await run.wait_change(0.25)
        raise TimeoutError

    async def _answers(self, run: Run) -> bool:
        try:
            await AsyncHTTPClient().fetch(
                f"{run.upstream}/services/apps/{run.key}/voila/static/", method="HEAD",
                headers={SECRET_HEADER: run.secret}, request_timeout=5, raise_error=False,
            )
        except OSError:
            return False
        except HTTPClientError:
            return True
        return True

    def callback(self, key: str, secret: str, port: Any, timings: Any = None,
                 static_key: Any = None) -> bool:
        """The job reports its port; accepted only with this run's secret and an int port,
        which a later report cannot change. ``timings`` (the job's start-up phases) keeps
        only the names of :data:`JOB_TIMINGS` with plain numbers from 0 to an hour;
        ``static_key`` only a key's shape, and only the first one."""
        run = self.runs.get(key)
        if run is None or not hmac.compare_digest(secret.encode(), run.secret.encode()):
            return False
        if isinstance(port, bool) or not isinstance(port, int) or not 1024 <= port <= 65535:
            return False
        if run.port and port != run.port:
            return False  # the proxy's target is fixed once reported
        if isinstance(timings, dict):
            for name in JOB_TIMINGS:
                value = timings.get(name)
                if (isinstance(value, int | float) and not isinstance(value, bool)
                        and 0 <= value <= _MAX_TIMING):
                    run.job_timings[name] = round(float(value), 3)
        if (not run.static_key and isinstance(static_key, str)
                and STATIC_KEY.fullmatch(static_key)):
            run.static_key = static_key
        if not run.port:
            run.port = port
            run.mark("port")
            run.wake()
        return True

    async def stop(self, key: str) -> None:
        run = self.runs.pop(key, None)
        if run:
            self._forget(run)
            await self._cancel(run)

    def _forget(self, run: Run) -> None:
        run.set_state("stopped", run.message)
        if run.task and not run.task.done():
            run.task.cancel()
        if self.runs.get(run.key) is run:
            del self.runs[run.key]

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _cancel(self, run: Run) -> None:
        if not run.job_id:
            return
        try:
            # As the owner: an unprivileged service cancels through the hub's sudoers rule.
            await self.slurm.scancel(run.job_id, user=run.key.split("/", 1)[0])
            log.info("apps: cancelled job %s of %s", run.job_id, run.key)
        except SlurmError as exc:
            log.warning("apps: scancel %s failed: %s", run.job_id, exc)
        self.watcher.unwatch(run.job_id)

    async def stop_idle(self) -> list[str]:
        """Stop every run without viewer activity for ``idle_stop_minutes``; also the dead."""
        stopped = []
        limit = self.settings.idle_stop_minutes * 60
        for run in list(self.runs.values()):
            idle = time.monotonic() - run.last_activity
            if run.state == "ready" and run.job_id:
                status = await self.watcher.status(run.job_id, max_age=5)
                if status.state is JobState.GONE:
                    log.info("apps: job %s of %s is gone", run.job_id, run.key)
                    self.runs.pop(run.key, None)
                    continue
            if run.state in ("ready", "failed") and idle > limit:
                log.info("apps: %s idle for %.0f s: stopping job %s", run.key, idle, run.job_id)
                await self.stop(run.key)
                stopped.append(run.key)
        return stopped

    async def reclaim_kernels(self, grace: float = UNCONNECTED_GRACE) -> list[str]:
        """Shut down viewers' kernels that have had no connected page for ``grace`` seconds
        (a closed tab whose goodbye never arrived, a page fetched and never opened), so they
        stop counting against the caps and stop costing memory on the node."""
        reclaimed = []
        now = time.monotonic()
        for run in list(self.runs.values()):
            if run.state != "ready":
                continue
            for kernel_id, claim in list(run.kernels.items()):
                if claim.unconnected_for(now) <= grace:
                    continue
                run.kernels.pop(kernel_id, None)
                reclaimed.append(kernel_id)
                try:
                    await AsyncHTTPClient().fetch(
                        f"{run.upstream}{self.base_url_of(run.key)}voila/api/shutdown/"
                        f"{kernel_id}", method="POST", body=b"",
                        headers={SECRET_HEADER: run.secret}, request_timeout=10,
                        raise_error=False)
                except OSError:
                    pass  # the job is gone: its kernels went with it
        if reclaimed:
            log.info("apps: shut down %d kernel(s) without a connected page", len(reclaimed))
        return reclaimed

    @staticmethod
    def base_url_of(key: str) -> str:
        return f"/services/apps/{key}/"

    async def cancel_leftovers(self) -> None:
        """Cancel app jobs of this store left by an earlier service process (secrets lost)."""
        try:
            jobs = await self.slurm.squeue()
        except SlurmError as exc:
            log.warning("apps: cannot list leftover jobs: %s", exc)
            return
        prefix = f"shopfloor-app-{self.tag}-"
        for job in jobs.values():
            if job.name.startswith(prefix) and not job.is_finished:
                log.info("apps: cancelling leftover app job %s (%s)", job.job_id, job.name)
                try:
                    await self.slurm.scancel(job.job_id, user=job.user)
                except SlurmError as exc:
                    log.warning("apps: scancel %s failed: %s", job.job_id, exc)

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(key) for key in list(self.runs)))


def _as_options(request: dict[str, Any]) -> dict[str, Any]:
    """A stored ResourceRequest dict back into raw options for :meth:`RequestPolicy.validate`."""
    options = {k: v for k, v in request.items() if v is not None and k != "walltime_minutes"}
    if "walltime_minutes" in request:
        options["walltime"] = str(request["walltime_minutes"])
    return options


def compute_options(raw: dict[str, Any], settings: Any) -> dict[str, Any]:
    """A publish request's ``compute`` with the site's app defaults filled in."""
    options = dict(raw)
    if settings.partition and "partition" not in options:
        options["partition"] = settings.partition
    if options.get("partition") == settings.partition or "partition" not in options:
        # The app defaults fit the app partition; other partitions keep their own defaults.
        options.setdefault("cpus", settings.cpus)
        options.setdefault("memory_gb", settings.memory_gb)
        options.setdefault("walltime", str(parse_walltime(settings.walltime)))
    return options


async def _private_dir_as(user: str, path: str) -> None:
    """Make the job log folder as its owner, private to them (0700) even if it existed: the
    app's log names its node and port."""
    problem = await private_dir_as_user(user, path)
    if problem:
        raise SlurmError(["install", "-d", "-m", "0700", path], 1, "", problem)
