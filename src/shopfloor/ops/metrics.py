"""Shopfloor's Prometheus metrics: the definitions, on ``prometheus_client``'s default registry.

JupyterHub serves that registry at ``/hub/metrics``, so every metric here appears there once
this module is imported in the hub process (``shopfloor.extensions.metrics`` imports it and
holds the recording helpers). Pure ``prometheus_client``: no JupyterHub import, so a service
process can import it too. Label values are bounded sets (partitions of the site file,
Slurm's tool names and pending reasons, fixed outcomes): never user names or job ids.

Names and meanings are documented, with example alert rules, in ``docs/deploy.md``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: Spawn durations run from seconds (an idle node) to the queue's hours.
SPAWN_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600)
#: Slurm client calls take milliseconds; seconds mean slurmctld is struggling.
SLURM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: Jobs in one batched squeue: one hub watches from a handful to thousands.
POLL_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
#: An app's cold start is a Slurm job plus Voila's start.
APP_START_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300)

#: Outcomes of a spawn (``outcome`` label of :data:`SPAWN_DURATION`): ``refused`` is a request
#: the resource policy or Slurm said no to, ``failed`` one that broke on the way.
SPAWN_OUTCOMES = ("ready", "refused", "failed", "timeout", "cancelled")
#: Outcomes of a workshop join (``outcome`` label of :data:`WORKSHOP_JOINS`).
JOIN_OUTCOMES = ("joined", "rejoined", "wrong_code", "invalid", "full", "closed",
                 "rate_limited")
#: Failure kinds of a Slurm command (``kind`` label of :data:`SLURM_COMMAND_FAILURES`).
FAILURE_KINDS = ("refused", "unreachable", "timeout")

SPAWN_DURATION = Histogram(
    "shopfloor_spawn_duration_seconds",
    "Seconds from a session's spawn request to its end state (ready, or why not), by "
    "partition and outcome; queue time included.",
    ["partition", "outcome"],
    buckets=SPAWN_BUCKETS,
)
PENDING_SESSIONS = Gauge(
    "shopfloor_pending_sessions",
    "Sessions whose Slurm job is pending now, by Slurm's pending reason (Priority, "
    "Resources, ReqNodeNotAvail, ...), from the hub's last batched squeue.",
    ["reason"],
)
SLURM_COMMAND_DURATION = Histogram(
    "shopfloor_slurm_command_duration_seconds",
    "Seconds each Slurm client call from the hub took, by command (sbatch, squeue, ...).",
    ["command"],
    buckets=SLURM_BUCKETS,
)
SLURM_COMMAND_FAILURES = Counter(
    "shopfloor_slurm_command_failures",
    "Slurm client calls from the hub that failed, by command and kind: refused (Slurm said "
    "no), unreachable (slurmctld did not answer), timeout (the hub gave up).",
    ["command", "kind"],
)
JOB_POLL_SIZE = Histogram(
    "shopfloor_job_poll_size",
    "Jobs asked about in one batched squeue of the hub's job watcher.",
    buckets=POLL_BUCKETS,
)
RAY_CLUSTERS = Gauge(
    "shopfloor_ray_clusters",
    "Ray clusters users run on Slurm now, by state (pending, running).",
    ["state"],
)
APP_OPENS = Counter(
    "shopfloor_app_opens",
    "App pages opened, by start: cold (the app's Slurm job had to start) or warm (it ran).",
    ["start"],
)
APP_COLD_START_DURATION = Histogram(
    "shopfloor_app_cold_start_seconds",
    "Seconds from an app's first visit to its page being served when its job had to start.",
    buckets=APP_START_BUCKETS,
)
WORKSHOP_JOINS = Counter(
    "shopfloor_workshop_joins",
    "Workshop join attempts, by outcome (joined, rejoined, wrong_code, invalid (a bad "
    "name), full, closed (the workshop ended), rate_limited).",
    ["outcome"],
)

__all__ = [
    "APP_COLD_START_DURATION",
    "APP_OPENS",
    "FAILURE_KINDS",
    "JOB_POLL_SIZE",
    "JOIN_OUTCOMES",
    "PENDING_SESSIONS",
    "RAY_CLUSTERS",
    "SLURM_COMMAND_DURATION",
    "SLURM_COMMAND_FAILURES",
    "SPAWN_DURATION",
    "SPAWN_OUTCOMES",
    "WORKSHOP_JOINS",
]
