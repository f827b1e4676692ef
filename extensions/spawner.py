"""``ShopfloorSpawner``: a batchspawner ``SlurmSpawner`` that users and admins can trust.

Differences from stock batchspawner, and why:

* ``user_options`` from every path (form, ``/hub/spawn?opt-...`` URL, REST) go through the one
  :class:`~shopfloor.resources.RequestPolicy`; the job script is built from the validated,
  typed request only (:mod:`shopfloor.slurm.jobscript`), never by merging raw options into a
  template.
* The server token reaches the job by name through sbatch's ``--export``, never in the script.
* The job id is saved to the hub database as soon as ``sbatch`` returns.
* Status comes from one shared, batched ``squeue`` (:class:`~shopfloor.slurm.jobwatch.JobWatcher`).
* A job that fails, is cancelled or dies before calling back is reported within seconds with
  Slurm's reason and the end of the job log (read as the user: :mod:`shopfloor.userfiles`);
  while pending, progress says why and until when.
* Users see only the user message of an error (:class:`UserSpawnError`); the admin detail
  (command lines, Slurm's full answer) goes to the log.
* The job log folder is private (0700) and jobs are submitted with umask 077.
* The port callback is accepted once per start.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import pwd
import time
from collections.abc import AsyncIterator
from typing import Any

from batchspawner import SlurmSpawner
from jupyterhub.spawner import SpawnException
from traitlets import Any as AnyTrait
from traitlets import Float, Unicode, default

from shopfloor.auth_site import TOKEN_ENV
from shopfloor.extensions import metrics
from shopfloor.extensions.compat import (
    delete_named_server,
    refuse_batchspawner_settings,
    save_spawner_state,
    spawner_log_name,
)
from shopfloor.extensions.context import ShopfloorContext
from shopfloor.extensions.spawn_batching import RecentChecks, StateSaver
from shopfloor.extensions.spawn_cancel import cancel_in_background
from shopfloor.resources import RequestError, ResourceRequest, UserContext
from shopfloor.slurm.jobscript import JobSpec, build_script, session_job_name
from shopfloor.slurm.jobwatch import JobState, JobStatus
from shopfloor.slurm.pending import describe_pending
from shopfloor.slurm.seam import SlurmError
from shopfloor.slurm.starttimeout import describe_start_timeout
from shopfloor.userfiles import private_dir_as_user, tail_as_user

#: Environment variables that are secrets: they travel by name only (sbatch --export).
#: TOKEN_ENV: the provider's tokens the site passes on (auth.oidc.pass_tokens).
SECRET_ENV = ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN", *TOKEN_ENV)

class UserSpawnError(SpawnException):
    """A spawn error whose page, REST answer and progress event show only ``message``.

    JupyterHub shows ``str(exc)`` (which embeds ``log_message``) on the spawn form and in
    progress events unless the exception carries ``jupyterhub_message``; this class always
    does, so the admin detail in ``log_message`` reaches the log only.
    """

    @property
    def jupyterhub_message(self) -> str:
        return self.message


#: What a user sees when slurmctld does not answer at submit time.
SCHEDULER_UNREACHABLE = "The scheduler is unreachable, try again in a minute."
#: Seconds before JupyterHub's start_timeout at which the spawner gives up itself: time to ask
#: Slurm where the job is (half of it at most) and tell the user.
START_TIMEOUT_MARGIN = 5.0

#: Clean-up tasks in flight (the event loop keeps only weak references to tasks).
_BACKGROUND: set[asyncio.Future[None]] = set()
#: Job log folders (user, path) made private lately, shared by all spawners of the hub.
_LOG_DIRS_CHECKED = RecentChecks()
#: The submit-time state saves of all spawners, one commit per burst of submits.
_STATE_SAVER = StateSaver()


class ShopfloorSpawner(SlurmSpawner):
    """Spawn each user's JupyterLab as a Slurm job on a compute node.

    Configure through the site file; ``shopfloor.extensions.install`` sets ``context``.
    """

    context = AnyTrait(
        help="The ShopfloorContext (site, policy, Slurm seam, watchers) shared by all spawners."
    ).tag(config=True)
    python = Unicode(
        help="Python interpreter in the job (must be readable by every user)."
    ).tag(config=True)
    pending_poll_interval = Float(
        1.0, help="Seconds between status checks while the job is pending or starting."
    ).tag(config=True)
    slurm_poll_interval = Float(
        5.0, help="Most seconds a poll may reuse the shared squeue snapshot for."
    ).tag(config=True)
    job_log_dir = Unicode(
        "{home}/.shopfloor/logs", help="Job log folder; {home} and {user} are filled in."
    ).tag(config=True)
    log_dir_recheck_seconds = Float(
        120.0, help="Seconds a user's job log folder, once made private (by a helper process "
        "run as the user), is trusted before a spawn checks it again, e.g. 120; 0: at every "
        "spawn. A job that dies before its server starts makes the next spawn check at once."
    ).tag(config=True)
    state_save_delay = Float(
        0.25, help="Most seconds between sbatch answering and the job id being committed to "
        "the hub database, e.g. 0.25: the saves of spawns submitted within that time share "
        "one commit (a burst of spawns is bound by the hub's commits); 0: one commit each."
    ).tag(config=True)

    request: ResourceRequest | None = None
    #: ``request`` as saved state, made once per request: the hub asks every server's state
    #: for each model of a user it answers (``GET /hub/api/users/NAME`` builds all of them).
    _request_state: tuple[ResourceRequest, dict[str, Any]] | None = None
    node_name = ""
    #: SHA-256 of the token the job was given: the job is recognised by it after a hub
    #: restart, when the hub has issued the server a new token (the hash is not a secret).
    job_token_sha256 = ""
    #: The saved state of a job queued before a hub restart, set by ``reattach``: ``start``
    #: then waits for that job instead of submitting another.
    reattach_state: dict[str, Any] | None = None
    #: The server called back from its job (saved: a restart then polls rather than reattaches)
    job_ready = False
    _port_event: asyncio.Event | None = None
    _pending_message = ""

    def __init__(self, **kwargs: Any) -> None:
        # batchspawner's req_*/batch_*/state_* settings would be silently ignored (the job
        # script comes from the site file): refuse them, naming what to use instead, before
        # traitlets applies them (and complains about their type instead).
        config = kwargs.get("config") or getattr(kwargs.get("parent"), "config", None) or {}
        refuse_batchspawner_settings(config, self.section_names(), given=kwargs)
        super().__init__(**kwargs)

    @default("python")
    def _python_default(self) -> str:
        return self.context.site.hub.python

    @default("apply_user_options")
    def _apply_default(self) -> Any:
        return _apply_user_options

    @default("options_form")
    def _options_form_default(self) -> Any:
        from shopfloor.extensions.spawn_form import render_options_form

        return render_options_form

    # -- who and what ------------------------------------------------------------------

    @property
    def ctx(self) -> ShopfloorContext:
        return self.context

    @property
    def log_name(self) -> str:
        """``user:server``, the prefix of every log line about this server (as JupyterHub's)."""
        return spawner_log_name(self)

    def user_context(self) -> UserContext:
        """The user's name, hub and Unix groups, admin flag: what the policy needs."""
        from shopfloor.extensions.resources_api import user_context_for

        return user_context_for(self.user)

    def options_from_form(self, form_data: dict[str, list[str]]) -> dict[str, Any]:
        """Single-valued fields as strings; validation happens in ``apply_user_options``.

        ``_xsrf`` is the form's own anti-forgery field, checked by the hub, not an option.
        """
        return {k: v[0] if len(v) == 1 else v for k, v in form_data.items() if k != "_xsrf"}

    def options_from_query(self, query_data: dict[str, list[str]]) -> dict[str, Any]:
        return self.options_from_form(query_data)

    async def validate_options(self, options: dict[str, Any]) -> ResourceRequest:
        """Turn raw ``user_options`` into a request, or raise a 400 naming the bad fields.

        A refusal is counted in ``shopfloor_spawn_duration_seconds`` here: JupyterHub never
        calls ``start()`` for a request its ``apply_user_options`` hook refused.
        """
        started = time.monotonic()
        try:
            return await self._validate_options(options)
        except UserSpawnError as exc:
            # The label is a partition of the site file or "invalid", never what was typed.
            asked = str(options.get("partition", "")) if isinstance(options, dict) else ""
            partition = asked if asked in self.ctx.site.partitions else "invalid"
            metrics.observe_spawn(partition, spawn_outcome(exc), time.monotonic() - started)
            if self.name and self.request is None:
                # A named server this refused request created (it never had a valid
                # request): leave nothing behind, or it would count against the limit.
                task = asyncio.ensure_future(self._forget_refused_server())
                _BACKGROUND.add(task)
                task.add_done_callback(_BACKGROUND.discard)
            raise

    async def _forget_refused_server(self) -> None:
        """Delete this never-started named server once JupyterHub has finished failing it."""
        for _ in range(500):  # JupyterHub stops the spawner before it re-raises the refusal
            await asyncio.sleep(0.01)
            if not self.active:
                break
        else:
            self.log.warning("%s: refused server still busy; not deleted", self.log_name)
            return
        try:
            await delete_named_server(self)
        except Exception:
            self.log.exception("%s: could not delete the refused named server", self.log_name)

    async def _validate_options(self, options: dict[str, Any]) -> ResourceRequest:
        try:
            live = await self.ctx.cluster_info.snapshot(user=self.user.name)
        except SlurmError as exc:
            raise UserSpawnError(
                SCHEDULER_UNREACHABLE, reason="slurm_unreachable",
                log_message=f"{self.log_name}: {exc}", status_code=503,
            ) from None
        try:
            return self.ctx.policy.validate(options, self.user_context(), live)
        except RequestError as exc:
            raise UserSpawnError(
                f"Invalid resource request: {exc}", reason="invalid_options",
                log_message=f"{self.log_name}: rejected user_options: {exc}",
            ) from None

    # -- state -------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if self.node_name:
            state["node_name"] = self.node_name
        if self.job_token_sha256:
            state["job_token_sha256"] = self.job_token_sha256
        if self.job_ready:
            state["ready"] = True
        if self.request is not None:
            state["request"] = self._dumped_request(self.request)
        return state

    def _dumped_request(self, request: ResourceRequest) -> dict[str, Any]:
        """``request.model_dump()``, kept while the (frozen) request is the same object.

        A copy each time, so whoever gets the state may change it without touching ours.
        """
        if self._request_state is None or self._request_state[0] is not request:
            self._request_state = (request, request.model_dump())
        return dict(self._request_state[1])

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.node_name = state.get("node_name", "")
        self.job_token_sha256 = state.get("job_token_sha256", "")
        self.job_ready = bool(state.get("ready"))
        if state.get("request"):
            self.request = ResourceRequest.model_validate(state["request"])
        if self.job_id:
            self.ctx.job_watcher.watch(self.job_id)

    def clear_state(self) -> None:
        if self.job_id:
            self.ctx.job_watcher.unwatch(self.job_id)
        super().clear_state()
        self.node_name = ""
        self.job_token_sha256 = ""
        self.job_ready = False

    def _save_state_now(self) -> None:
        """Persist the job id at once: a hub restart must not orphan a pending job."""
        save_spawner_state(self)

    # -- the job -----------------------------------------------------------------------

    def _home(self) -> str:
        try:
            return pwd.getpwnam(self.user.name).pw_dir
        except KeyError:
            raise UserSpawnError(
                f"There is no Unix account {self.user.name!r} on this system; ask your admin.",
                reason="no_unix_user",
            ) from None

    def job_log_path(self) -> str:
        return self.job_log_dir.format(home=self._home(), user=self.user.name)

    def job_env(self) -> tuple[dict[str, str], dict[str, str]]:
        """(plain, secret) environment for the job."""
        env = self.get_env()
        secret = {k: env.pop(k) for k in SECRET_ENV if k in env}
        home = self._home()
        bin_dir = os.path.dirname(self.python)
        # JupyterHub's own variables and the admin's Spawner.environment (SHOPFLOOR_* settings
        # the session reads); nothing else of the hub's process environment.
        plain = {k: str(v) for k, v in env.items()
                 if k.startswith("JUPYTERHUB_") or k in self.environment}
        plain.update(
            HOME=home, USER=self.user.name, LOGNAME=self.user.name, SHELL="/bin/bash",
            PATH=f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", LANG="C.UTF-8",
        )
        return plain, secret

    def job_command(self) -> list[str]:
        """Our launcher (:mod:`shopfloor.session.singleuser`), then the server to run.

        The server is JupyterHub's ``Spawner.cmd`` (``['jupyterhub-singleuser']`` unless the
        admin configured another program); a bare program name is looked up in the job's
        Python environment, next to :attr:`python`.
        """
        server, *server_args = self.cmd or ["jupyterhub-singleuser"]
        if not os.path.isabs(server):
            server = os.path.join(os.path.dirname(self.python), server)
        return [
            self.python, "-m", "shopfloor.session.singleuser",
            server, *server_args, *self.get_args(),
        ]

    def build_job_script(self, request: ResourceRequest) -> tuple[str, dict[str, str]]:
        plain, secret = self.job_env()
        spec = JobSpec(
            name=session_job_name(self.user.name, self.name),
            request=request,
            command=self.job_command(),
            output=f"{self.job_log_path()}/%j.log",
            workdir=self._home(),
            env=plain,
        )
        return build_script(spec), secret

    async def _ensure_log_dir(self) -> None:
        """The job log folder, made as the user and private (0700), even if it was looser."""
        key = (self.user.name, self.job_log_path())
        if _LOG_DIRS_CHECKED.fresh(key, self.log_dir_recheck_seconds):
            return
        problem = await private_dir_as_user(self.user.name, self.job_log_path())
        if problem:
            raise UserSpawnError(
                f"Cannot create your job log folder {self.job_log_path()}; ask your admin.",
                reason="log_dir", log_message=f"{self.log_name}: {problem}",
            )
        _LOG_DIRS_CHECKED.passed(key)

    async def job_log_tail(self, lines: int = 15) -> str:
        """The end of the job's log, read as the user (never as root, never via a link)."""
        if not self.job_id:
            return ""
        return await tail_as_user(
            self.user.name, f"{self.job_log_path()}/{self.job_id}.log", lines=lines)

    # -- lifecycle ---------------------------------------------------------------------

    def owns_job_token(self, token: str) -> bool:
        """True if ``token`` is this server's token, or the one its job was submitted with."""
        if self.api_token and secrets_equal(token, self.api_token):
            return True
        digest = hashlib.sha256(token.encode()).hexdigest()
        if self.job_token_sha256 and secrets_equal(digest, self.job_token_sha256):
            return True
        # Reattaching after a restart: JupyterHub cleared the state before start() restores it.
        saved = (self.reattach_state or {}).get("job_token_sha256", "")
        return bool(saved) and secrets_equal(digest, saved)

    def report_port(self, port: int) -> bool:
        """Record the port the job reported; False if this start already has one.

        Called by the port callback handler with a validated port. A start accepts exactly
        one port: a second callback (another process holding the job's token) is refused.
        """
        if self._port_event is None or self._port_event.is_set():
            return False
        self.port = port
        self._port_event.set()
        return True

    async def start(self) -> tuple[str, int]:
        """Start the session's job and wait for its server; the duration and outcome go to
        ``shopfloor_spawn_duration_seconds`` (queue time included)."""
        started, outcome = time.monotonic(), "failed"
        # Give up a little before JupyterHub's start_timeout does: its own timeout shows the
        # user an empty "Spawn failed:", ours says why the job did not start and what to do.
        budget = asyncio.timeout(max(1.0, self.start_timeout - START_TIMEOUT_MARGIN))
        try:
            async with budget:
                result = await self._start_session()
            outcome = "ready"
            return result
        except TimeoutError:
            if not budget.expired():
                raise
            outcome = "timeout"
            raise await self._start_timeout_error(time.monotonic() - started) from None
        except UserSpawnError as exc:
            outcome = spawn_outcome(exc)
            raise
        except asyncio.CancelledError:
            # JupyterHub cancels start() when start_timeout passes, or when the user cancels.
            took = time.monotonic() - started
            outcome = "timeout" if took >= self.start_timeout - 1 else "cancelled"
            raise
        finally:
            # Without a request, validation failed inside start and validate_options counted it.
            if self.request is not None:
                metrics.observe_spawn(self.request.partition, outcome,
                                      time.monotonic() - started)

    async def _start_timeout_error(self, seconds: float) -> UserSpawnError:
        """The session was not ready within ``start_timeout``: where its job was, and what to
        do (JupyterHub then stops the server, which cancels the job)."""
        info = None
        if self.job_id:
            try:
                # The watcher's last answer will do (a fresh squeue may be slow right now).
                status = await asyncio.wait_for(self.ctx.job_watcher.status(
                    self.job_id, max_age=self.start_timeout), START_TIMEOUT_MARGIN / 2)
                info = status.info
            except TimeoutError:  # Slurm too slow to say: the message says so
                pass
        request = self.request
        message = describe_start_timeout(
            info, seconds, job_id=self.job_id, log_path=f"{self.job_log_path()}/{self.job_id}.log",
            account=request.account if request else None, qos=request.qos if request else None)
        return UserSpawnError(message, reason="start_timeout", log_message=(
            f"{self.log_name}: job {self.job_id} not ready after {seconds:.0f} s "
            f"(hub.start_timeout {self.start_timeout} s): "
            f"{info.state + '/' + info.reason if info else 'state unknown'}"))

    async def _start_session(self) -> tuple[str, int]:
        if self.request is None:
            self.request = await self.validate_options(self.user_options or {})
        self.port = 0
        self._port_event = asyncio.Event()
        if self.reattach_state is not None:
            # JupyterHub cleared our state before start(): restore the job from before the
            # restart and wait for it instead of submitting another.
            state, self.reattach_state = self.reattach_state, None
            self.load_state(state)
            if not await self._job_still_queued():
                raise UserSpawnError(
                    "Your session's job ended while the hub was restarting; start it again.",
                    reason="job_died",
                )
            self.log.info("%s: reattached to job %s", self.log_name, self.job_id)
            self._pending_message = f"Reattached to your queued job {self.job_id}"
        else:
            await self._submit()
        return await self._wait_until_ready()

    async def _job_still_queued(self) -> bool:
        status = await self.ctx.job_watcher.status(self.job_id, max_age=0)
        if status.state is JobState.GONE:
            self.clear_state()
            return False
        return True

    async def _submit(self) -> None:
        request = self.request
        if request is None:  # start() validated it; this keeps the type checker honest
            raise UserSpawnError("No resource request.", reason="invalid_options")
        self._pending_message = "Submitting your session to Slurm"
        await self._ensure_log_dir()
        script, secret = self.build_job_script(request)
        try:
            self.job_id = await self.ctx.slurm.sbatch(
                script, user=self.user.name, secret_env=secret
            )
        except SlurmError as exc:
            if exc.unreachable:
                raise UserSpawnError(
                    SCHEDULER_UNREACHABLE, reason="slurm_unreachable", status_code=503,
                    log_message=f"{self.log_name}: {exc}",
                ) from None
            raise UserSpawnError(
                f"Slurm refused the job: {exc.slurm_message}", reason="sbatch_failed",
                log_message=f"{self.log_name}: {exc}",
            ) from None
        self.log.info("%s: submitted job %s to %s", self.log_name, self.job_id, request.partition)
        self.job_token_sha256 = hashlib.sha256(secret["JUPYTERHUB_API_TOKEN"].encode()).hexdigest()
        self.ctx.job_watcher.watch(self.job_id)
        _STATE_SAVER.save_soon(self, self.state_save_delay)

    async def _wait_until_ready(self) -> tuple[str, int]:
        port_event = self._port_event or asyncio.Event()
        request = self.request
        partition = request.partition if request else "?"
        while True:
            status = await self.ctx.job_watcher.status(
                self.job_id, max_age=self.pending_poll_interval
            )
            if status.state is JobState.GONE:
                raise await self._died_error(status)
            if status.state is JobState.UNKNOWN:
                self._pending_message = (
                    f"Slurm is not answering ({status.error}); still waiting for your job"
                )
            elif status.info and status.info.is_pending:
                live = await self.ctx.cluster_info.snapshot()
                queue = list(live.pending.get(partition, []))
                position = queue.index(self.job_id) + 1 if self.job_id in queue else None
                request = self.request
                self._pending_message = describe_pending(
                    status.info, position, account=request.account if request else None,
                    qos=request.qos if request else None)
            elif status.info and status.info.is_running:
                self.node_name = status.info.batch_host
                self._pending_message = (
                    f"Running on {self.node_name}; waiting for JupyterLab to start"
                )
            if self.port and self.node_name:
                break
            try:
                await asyncio.wait_for(port_event.wait(), self.pending_poll_interval)
            except TimeoutError:
                pass
        self.ip = await self.ctx.node_address(self.node_name)
        await self._wait_for_listener()
        # No save here: JupyterHub stores get_state() (ready included) as start() returns.
        self.job_ready = True
        self.log.info(
            "%s: job %s ready on %s (%s:%s)",
            self.log_name, self.job_id, self.node_name, self.ip, self.port,
        )
        return self.ip, self.port

    async def _wait_for_listener(self, timeout: float | None = None) -> None:
        """Return once the server accepts connections (or its job ends).

        Waits at most ``timeout`` seconds, JupyterHub's ``http_timeout`` unless given (the
        site file's ``hub.http_timeout``).

        JupyterHub's own check backs off exponentially; probing every 0.1 s here saves up to
        seconds per spawn (measured: benchmarks/spawn.py).
        """
        self._pending_message = f"JupyterLab is starting on {self.node_name}"
        deadline = time.monotonic() + (self.http_timeout if timeout is None else timeout)
        last_status = time.monotonic()
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.ip, self.port), timeout=1
                )
            except (OSError, TimeoutError):
                pass
            else:
                writer.close()
                return
            if time.monotonic() - last_status > self.pending_poll_interval:
                last_status = time.monotonic()
                status = await self.ctx.job_watcher.status(
                    self.job_id, max_age=self.pending_poll_interval
                )
                if status.state is JobState.GONE:
                    raise await self._died_error(status)
            await asyncio.sleep(0.1)

    async def _died_error(self, status: JobStatus) -> SpawnException:
        info = status.info
        what = f"ended ({info.state.lower()}, {info.reason})" if info else "left the queue"
        tail = await self.job_log_tail()
        log_path = f"{self.job_log_path()}/{self.job_id}.log"
        message = f"Your session job {self.job_id} {what} before JupyterLab started."
        if tail:
            message += f"\nLast lines of {log_path}:\n{tail}"
        else:
            message += f" Its log would be at {log_path}."
        job_id = self.job_id
        # The folder may be why it died (removed since it was checked): check it next time.
        _LOG_DIRS_CHECKED.forget((self.user.name, self.job_log_path()))
        self.clear_state()
        self._save_state_now()
        return UserSpawnError(
            message, reason="job_died", log_message=f"{self.log_name}: job {job_id} {what}"
        )

    async def poll(self) -> int | None:
        if not self.job_id:
            return 0
        status = await self.ctx.job_watcher.status(self.job_id, max_age=self.slurm_poll_interval)
        if status.state is JobState.ACTIVE:
            return None
        if status.state is JobState.UNKNOWN:
            # Slurm unreachable: keep the server; JupyterHub will poll again.
            self.log.warning("%s: job %s status unknown: %s", self.log_name, self.job_id,
                             status.error)
            return None
        self.log.info("%s: job %s is gone", self.log_name, self.job_id)
        self.clear_state()
        return 1

    async def stop(self, now: bool = False) -> None:
        if not self.job_id:
            return
        job_id = self.job_id
        try:
            # As the user: an unprivileged hub cancels through its sudoers rule.
            await self.ctx.slurm.scancel(job_id, user=self.user.name)
        except SlurmError as exc:
            self.log.warning("%s: scancel %s failed: %s", self.log_name, job_id, exc)
            if exc.unreachable:  # forgotten now, the job would wait (and run) for nobody
                cancel_in_background(self.ctx.slurm, job_id, self.user.name, self.log_name)
        deadline = time.monotonic() + (0 if now else 10)
        while time.monotonic() < deadline:
            status = await self.ctx.job_watcher.status(job_id, max_age=0.5)
            if status.state is JobState.GONE:
                break
            await asyncio.sleep(0.5)
        self.log.info("%s: cancelled job %s", self.log_name, job_id)
        self.clear_state()

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        last = None
        while True:
            message = self._pending_message
            if message and message != last:
                last = message
                yield {"progress": 50 if "Running" in message else 20, "message": message}
            await asyncio.sleep(0.5)


def secrets_equal(a: str, b: str) -> bool:
    """Constant-time comparison of two secrets."""
    return hmac.compare_digest(a.encode(), b.encode())


#: Reasons of a :class:`UserSpawnError` that mean the request was refused (by the policy or by
#: Slurm), not that something broke: the ``refused`` outcome of the spawn metric.
REFUSED_REASONS = ("invalid_options", "sbatch_failed")


def spawn_outcome(exc: UserSpawnError) -> str:
    """``refused`` for a request the hub or Slurm said no to, ``timeout`` for a session not
    ready within ``start_timeout``, else ``failed``."""
    if exc.reason == "start_timeout":
        return "timeout"
    return "refused" if exc.reason in REFUSED_REASONS else "failed"


def _apply_user_options(spawner: ShopfloorSpawner, user_options: dict[str, Any]) -> Any:
    async def apply() -> None:
        spawner.request = await spawner.validate_options(user_options or {})
    return apply()


__all__ = ["SCHEDULER_UNREACHABLE", "ShopfloorSpawner", "UserSpawnError"]
