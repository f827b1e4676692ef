"""Recording Shopfloor's metrics on JupyterHub's registry (served at ``/hub/metrics``).

The metrics are defined in :mod:`shopfloor.ops.metrics` on ``prometheus_client``'s default
registry, the one JupyterHub's ``/hub/metrics`` serves. The hub side records them through the
small helpers here, which keep every label in a bounded set (an unknown outcome becomes
``other``), so a bug cannot grow the series without limit.

Where each is called (see ``/work/notes/ops-integration.md`` until the calls are wired):

* the spawner: :func:`observe_spawn` when a spawn ends, ready or not;
* the job watcher: :func:`observe_watch` per batched ``squeue`` (poll size, and the pending
  sessions by reason); the cluster view: :func:`count_ray_clusters` from its ``squeue``;
* the Slurm seam: :func:`observe_slurm_command` per command (as the seam's observer);
* the apps service: :func:`observe_app_open`; the workshop service: :func:`observe_workshop_join`.

The apps and workshop services are processes of their own: their metrics are served by
:class:`ServiceMetricsHandler` at ``/services/<name>/metrics`` on the service's address.
"""

from __future__ import annotations

import hmac
import os
from collections import Counter
from collections.abc import Iterable, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from tornado import web

from shopfloor.ops import metrics
from shopfloor.slurm.seam import JobInfo, SlurmError

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


def observe_workshop_join(outcome: str) -> None:
    """A workshop join attempt ended: ``outcome`` is one of ``JOIN_OUTCOMES``."""
    metrics.WORKSHOP_JOINS.labels(outcome=_bounded(outcome, metrics.JOIN_OUTCOMES)).inc()


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


def service_metrics_route(service_prefix: str) -> tuple[str, type[ServiceMetricsHandler]]:
    """The tornado route of a service's metrics, e.g. ``/services/apps/metrics``."""
    return (service_prefix.rstrip("/") + "/metrics", ServiceMetricsHandler)


__all__ = [
    "SLURM_COMMANDS",
    "ServiceMetricsHandler",
    "count_ray_clusters",
    "failure_kind",
    "observe_app_open",
    "observe_poll",
    "observe_slurm_command",
    "observe_spawn",
    "observe_watch",
    "observe_workshop_join",
    "record_pending",
    "service_metrics_route",
    "set_ray_clusters",
]
