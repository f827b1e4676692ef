"""Idle sessions end: JupyterHub's ``jupyterhub-idle-culler`` as a hub service.

A forgotten session keeps its Slurm job, and so its allocation, until the walltime runs out.
The site file's ``idle`` section says after how many idle minutes a session stops, per
partition (idle GPUs cost most, so a GPU partition gets a shorter limit). The maintained
culler has one timeout per process; its documented ``cull_arbiter_hook`` decides per server,
so one culler serves every partition: :class:`PartitionArbiter` reads the partition from the
server's ``user_options`` (default: the site's initial partition) and applies that
partition's limit. Stopping the server is JupyterHub's ``DELETE``, which calls the spawner's
``stop()``, which cancels the Slurm job.

The service holds the narrowest scopes the culler needs: list users, read their servers
(``user_options`` and activity included) and stop servers; it cannot start servers, read
tokens or touch users. Named servers are stopped, not removed: their owners see them stopped.

The session learns its own limit from ``$SHOPFLOOR_IDLE_MINUTES`` (and the warning lead from
``$SHOPFLOOR_IDLE_WARN_MINUTES``): JupyterLab warns before the culler acts
(:mod:`shopfloor.lab`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from shopfloor.site import SiteConfig

SERVICE_NAME = "idle-culler"
#: What the culler does through the hub API: list users, read servers (their activity and
#: user_options), stop servers. The culler's own documentation asks for exactly these
#: (``admin:users`` only when it also deletes users, which Shopfloor never asks of it).
CULLER_SCOPES = ("list:users", "read:users:activity", "read:servers", "delete:servers")
IDLE_MINUTES_ENV = "SHOPFLOOR_IDLE_MINUTES"
IDLE_WARN_ENV = "SHOPFLOOR_IDLE_WARN_MINUTES"


class PartitionArbiter:
    """The culler's ``cull_arbiter_hook``: each server's idle limit from its partition."""

    def __init__(self, minutes: Mapping[str, int], default_minutes: int,
                 default_partition: str) -> None:
        self.minutes = dict(minutes)
        self.default_minutes = default_minutes
        self.default_partition = default_partition

    def limit_seconds(self, server: Mapping[str, Any]) -> int:
        """The idle limit of ``server`` (a hub API server model), in seconds."""
        options = server.get("user_options") or {}
        partition = options.get("partition") if isinstance(options, dict) else None
        if not isinstance(partition, str) or not partition:
            partition = self.default_partition
        return self.minutes.get(partition, self.default_minutes) * 60

    def __call__(self, *, inactive: timedelta, inactive_limit: int,
                 server: Mapping[str, Any], **_: Any) -> bool:
        # inactive_limit is the culler's one --timeout (the shortest limit, so that it looks
        # often enough); the server's own partition decides here.
        return inactive.total_seconds() >= self.limit_seconds(server)


def culler_command(site: SiteConfig) -> list[str]:
    """The service's command line: this module's :func:`main` with the site's limits."""
    idle = site.idle
    shortest = min([idle.idle_minutes, *idle.partition_minutes.values()])
    return [
        sys.executable, "-m", "shopfloor.extensions.idle_culler",
        f"--idle-minutes={idle.idle_minutes}",
        *(f"--partition-minutes={name}={minutes}"
          for name, minutes in sorted(idle.partition_minutes.items())),
        f"--default-partition={site.initial_partition}",
        # The culler's own options: its timeout only sets how often it may need to look.
        f"--timeout={shortest * 60}",
        f"--cull-every={idle.check_seconds}",
    ]


def idle_minutes_env(spawner: Any) -> str:
    """``$SHOPFLOOR_IDLE_MINUTES`` of a session: its partition's idle limit (a spawner
    ``environment`` value JupyterHub calls with the spawner; the request is validated by then).
    """
    site = spawner.ctx.site
    partition = spawner.request.partition if spawner.request else site.initial_partition
    return str(site.idle.minutes_for(partition))


def install_idle_culler(c: Any, site: SiteConfig) -> None:
    """Add the culler service, its role, and the sessions' idle variables (if enabled)."""
    if not site.idle.enabled:
        return
    configured = c.JupyterHub
    services = [s for s in (configured.services if "services" in configured else [])
                if s.get("name") != SERVICE_NAME]
    c.JupyterHub.services = [*services, {"name": SERVICE_NAME,
                                         "command": culler_command(site)}]
    roles = [r for r in (configured.load_roles if "load_roles" in configured else [])
             if r.get("name") != SERVICE_NAME]
    c.JupyterHub.load_roles = [*roles, {
        "name": SERVICE_NAME,
        "description": "Stops sessions idle longer than the site's limit.",
        "scopes": list(CULLER_SCOPES),
        "services": [SERVICE_NAME],
    }]
    c.ShopfloorSpawner.environment.update({
        IDLE_MINUTES_ENV: idle_minutes_env,
        IDLE_WARN_ENV: str(site.idle.warn_minutes),
    })


def parse_partition_minutes(values: Sequence[str]) -> dict[str, int]:
    """``["gpu=30"]`` -> ``{"gpu": 30}``; raises ``ValueError`` naming a bad item."""
    limits = {}
    for item in values:
        name, _, minutes = item.partition("=")
        if not name or not minutes.isdigit() or int(minutes) < 1:
            raise ValueError(f"--partition-minutes wants PARTITION=MINUTES, e.g. gpu=30; "
                             f"got {item!r}")
        limits[name] = int(minutes)
    return limits


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``jupyterhub-idle-culler`` with a :class:`PartitionArbiter` (the service's command).

    Takes ``--idle-minutes``, ``--partition-minutes NAME=MINUTES`` (repeatable) and
    ``--default-partition``; every other option goes to the culler (``--timeout``,
    ``--cull-every``, ...).
    """
    from jupyterhub_idle_culler import IdleCuller

    parser = argparse.ArgumentParser(prog="shopfloor-idle-culler")
    parser.add_argument("--idle-minutes", type=int, required=True)
    parser.add_argument("--partition-minutes", action="append", default=[])
    parser.add_argument("--default-partition", required=True)
    ours, theirs = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        limits = parse_partition_minutes(ours.partition_minutes)
    except ValueError as exc:
        parser.error(str(exc))
    culler = IdleCuller.instance()
    culler.initialize(theirs)
    # No config file: the site file is the one place of settings (and the culler would look
    # for idle_culler_config.py in its working folder).
    culler.config_file = ""
    culler.cull_arbiter_hook = PartitionArbiter(limits, ours.idle_minutes,
                                                ours.default_partition)
    culler.start()


if __name__ == "__main__":
    main()
