"""Recording Shopfloor's metrics on JupyterHub's registry (served at ``/hub/metrics``).

The metrics are defined in :mod:`shopfloor.ops.metrics` on ``prometheus_client``'s default
registry, the one JupyterHub's ``/hub/metrics`` serves. The hub side records them through the
small helpers here, which keep every label in a bounded set (an unknown outcome becomes
``other``), so a bug cannot grow the series without limit.

Where each is called:

* the spawner: :func:`observe_spawn` when a spawn ends, ready or not (refused included);
* :func:`watch_context` (from ``install``) makes :func:`observe_slurm_command` the Slurm
  seam's observer (every command), :func:`observe_watch` the job watcher's (each batched
  ``squeue``: poll size and pending sessions by reason), and counts Ray clusters once a minute
  (:func:`count_ray_clusters`);
* the apps service: :func:`observe_app_open`; the workshop service: :func:`observe_workshop_join`.

The apps and workshop services are processes of their own: their metrics are served by
:class:`ServiceMetricsHandler` at ``/services/<name>/metrics`` on the service's address.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from tornado import ioloop, web

from shopfloor.ops import metrics
from shopfloor.slurm.seam import JobInfo, SlurmError

if TYPE_CHECKING:
    from shopfloor.extensions.context import ShopfloorContext

log = logging.getLogger(__name__)

#: Slurm tools the hub runs; any other command name is recorded as ``other``.
SLURM_COMMANDS = ("sbatch", "squeue", "scancel", "sinfo", "scontrol", "sacctmgr", "srun")
#: Environment variable with the bearer token Prometheus sends to the services' metrics.
METRICS_TOKEN_ENV = "SHOPFLOOR_METRICS_TOKEN"

_pending_reasons: set[str] = set()


def _bounded(value: str, allowed: Iterable[str]) -> str:
    return value if value in allowed else "other"


def observe_spawn(partition: str, outcome: str, seconds: float) -> None:
    """A spawn ended after ``seconds``: ``outcome`` is one of ``SPAWN_OUTCOMES``.

    ``partition`` is the validated request's partition (a name from the site file).
    """
    metrics.SPAWN_DURATION.labels(
        partition=partition, outcome=_bounded(outcome, metrics.SPAWN_OUTCOMES)
    ).observe(max(0.0, seconds))


def record_pending(jobs: Iterable[JobInfo]) -> None:
    """Set the pending-session gauge from the jobs the watcher's last ``squeue`` returned.

    Reasons seen before and absent now go to 0 (not away), so a scrape never misses a series.
    """
    counts = Counter((job.reason or "None") for job in jobs if job.is_pending)
    for reason in _pending_reasons - set(counts):
        metrics.PENDING_SESSIONS.labels(reason=reason).set(0)
    for reason, count in counts.items():
        metrics.PENDING_SESSIONS.labels(reason=reason).set(count)
    _pending_reasons.update(counts)


def failure_kind(error: SlurmError) -> str:
    """``timeout`` (the hub gave up), ``unreachable`` (no slurmctld) or ``refused``."""
    if error.returncode == -1 and "timed out" in error.stderr:
        return "timeout"
    return "unreachable" if error.unreachable else "refused"


def observe_slurm_command(command: str, seconds: float, error: SlurmError | None = None) -> None:
    """One Slurm client call took ``seconds``; ``error`` if it failed."""
    name = _bounded(command.rsplit("/", 1)[-1], SLURM_COMMANDS)
    metrics.SLURM_COMMAND_DURATION.labels(command=name).observe(max(0.0, seconds))
    if error is not None:
        metrics.SLURM_COMMAND_FAILURES.labels(command=name, kind=failure_kind(error)).inc()


def observe_poll(jobs: int) -> None:
    """One batched ``squeue`` asked about ``jobs`` jobs."""
    metrics.JOB_POLL_SIZE.observe(jobs)


def observe_watch(jobs_asked: int, jobs: Mapping[str, JobInfo]) -> None:
    """The job watcher's observer: one batched ``squeue`` of ``jobs_asked`` jobs answered
    ``jobs`` (poll size, and the pending sessions among them by reason)."""
    observe_poll(jobs_asked)
    record_pending(jobs.values())


def set_ray_clusters(*, pending: int, running: int) -> None:
    """The Ray clusters on Slurm now (counted from their jobs)."""
    metrics.RAY_CLUSTERS.labels(state="pending").set(pending)
    metrics.RAY_CLUSTERS.labels(state="running").set(running)


def count_ray_clusters(jobs: Iterable[JobInfo]) -> None:
    """Set the Ray cluster gauge from ``squeue``'s jobs: one head job per cluster."""
    from shopfloor.ray.cluster import HEAD_JOB_PREFIX

    heads = [j for j in jobs if j.name.startswith(HEAD_JOB_PREFIX)]
    set_ray_clusters(pending=sum(j.is_pending for j in heads),
                     running=sum(j.is_running for j in heads))


def observe_app_open(*, cold: bool, seconds: float | None = None) -> None:
    """An app page was opened: ``cold`` if its job had to start (``seconds`` until served)."""
    metrics.APP_OPENS.labels(start="cold" if cold else "warm").inc()
    if cold and seconds is not None:
        metrics.APP_COLD_START_DURATION.observe(max(0.0, seconds))


def observe_app_cold_start(seconds: float) -> None:
    """An app's job, started for a visitor, served its first page after ``seconds``."""
    metrics.APP_COLD_START_DURATION.observe(max(0.0, seconds))


def observe_workshop_join(outcome: str) -> None:
    """A workshop join attempt ended: ``outcome`` is one of ``JOIN_OUTCOMES``."""
    metrics.WORKSHOP_JOINS.labels(outcome=_bounded(outcome, metrics.JOIN_OUTCOMES)).inc()


def service_environment() -> dict[str, str]:
    """What a managed service's ``environment`` needs for its metrics: the hub's
    ``$SHOPFLOOR_METRICS_TOKEN``, when set (by value in the service's environment only, never
    on a command line or in a log)."""
    token = os.environ.get(METRICS_TOKEN_ENV, "")
    return {METRICS_TOKEN_ENV: token} if token else {}


class ServiceMetricsHandler(web.RequestHandler):
    """``GET /services/<name>/metrics`` of a hub service: this process's registry.

    Answers only a request with ``Authorization: Bearer $SHOPFLOOR_METRICS_TOKEN``; with the
    variable unset it answers no one (403), so metrics are never open by accident.
    """

    def get(self) -> None:
        expected = os.environ.get(METRICS_TOKEN_ENV, "")
        sent = self.request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
            raise web.HTTPError(403)
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(generate_latest(REGISTRY))


#: Seconds between the hub's counts of Ray clusters (one ``squeue`` of every job each time).
RAY_COUNT_SECONDS = 60.0


def watch_context(ctx: ShopfloorContext) -> None:
    """Record the hub's Slurm traffic: every command through the seam (latency, failures) and
    every batched poll of the job watcher (size, pending sessions by reason); and count the
    Ray clusters every :data:`RAY_COUNT_SECONDS` once the hub's event loop runs."""
    ctx.slurm.observer = observe_slurm_command
    ctx.job_watcher.observer = observe_watch
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # not inside a starting hub (e.g. --generate-config, unit tests)
        return

    async def count() -> None:
        try:
            count_ray_clusters((await ctx.slurm.squeue()).values())
        except SlurmError as exc:  # already counted as a failure by the observer
            log.warning("cannot count Ray clusters: %s", exc)

    ioloop.PeriodicCallback(count, RAY_COUNT_SECONDS * 1000).start()
    ioloop.IOLoop.current().add_callback(count)


def service_metrics_route(service_prefix: str) -> tuple[str, type[ServiceMetricsHandler]]:
    """The tornado route of a service's metrics, e.g. ``/services/apps/metrics``."""
    return (service_prefix.rstrip("/") + "/metrics", ServiceMetricsHandler)


__all__ = [
    "SLURM_COMMANDS",
    "ServiceMetricsHandler",
    "count_ray_clusters",
    "failure_kind",
    "observe_app_cold_start",
    "observe_app_open",
    "observe_poll",
    "observe_slurm_command",
    "observe_spawn",
    "observe_watch",
    "observe_workshop_join",
    "record_pending",
    "service_environment",
    "service_metrics_route",
    "set_ray_clusters",
    "watch_context",
]
