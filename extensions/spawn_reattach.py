"""After a hub restart, pick up sessions whose Slurm job was still queued or starting.

JupyterHub re-checks servers that were *running* when it stopped, but forgets spawns that were
still pending: their job would be orphaned. The spawner saves the job id at submit; once the
hub has started, :func:`reattach_pending` restarts the spawn of every such server, and
``ShopfloorSpawner.start`` reattaches to the queued job instead of submitting a new one.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from shopfloor.extensions.compat import (
    forget_server_record,
    hub_start_future,
    open_hub_database,
    running_hub,
    set_proxy_pending,
    set_spawn_future,
    set_spawn_pending,
    spawner_log_name,
    spawner_rows,
)

log = logging.getLogger("shopfloor.reattach")
_tasks: set[asyncio.Future[Any]] = set()


def _keep(future: asyncio.Future[Any]) -> None:
    _tasks.add(future)
    future.add_done_callback(_tasks.discard)


def detach_unstarted_servers(db_url: str) -> int:
    """Before the hub opens its database: forget the server rows of spawns that never started.

    JupyterHub creates a server row when a spawn begins. After a restart it would poll such a
    server, find nobody listening (the job is still queued) and stop it, cancelling the job.
    Without the row, the hub leaves the spawner alone and :func:`reattach_pending` picks it up.
    Returns how many were detached.
    """
    if db_url.startswith("sqlite:///") and not os.path.exists(db_url[len("sqlite:///"):]):
        return 0
    try:
        session = open_hub_database(db_url)
    except Exception as exc:  # an outdated schema: the hub itself will say what to do
        log.warning("not checking for queued sessions: %s", exc)
        return 0
    detached = 0
    try:
        for row in spawner_rows(session, with_server=True):
            state = row.state or {}
            if state.get("job_id") and not state.get("ready"):
                forget_server_record(session, row)
                detached += 1
        session.commit()
    finally:
        session.close()
    return detached


def schedule_reattach() -> None:
    """Run :func:`reattach_pending` once the hub being configured has started.

    Called from the config file, while JupyterHub initialises inside its event loop.
    """
    app = running_hub()
    if app is None:  # not a hub launch (e.g. --generate-config)
        return
    started = hub_start_future(app)
    if started is None:
        return
    started.add_done_callback(lambda _f: _keep(asyncio.ensure_future(reattach_pending(app))))


def orphaned_spawners(app: Any) -> list[tuple[Any, Any]]:
    """(user, spawner) pairs with a saved job id but no server: spawns the restart cut off."""
    found = []
    for orm_spawner in spawner_rows(app.db, with_server=False):
        if not (orm_spawner.state or {}).get("job_id"):
            continue
        user = app.users[orm_spawner.user]
        spawner = user.spawners[orm_spawner.name]
        if not spawner.pending and spawner.job_id:
            found.append((user, spawner))
    return found


async def reattach_pending(app: Any) -> None:
    for user, spawner in orphaned_spawners(app):
        log.info("%s: job %s was pending when the hub stopped; reattaching",
                 spawner_log_name(spawner), spawner.job_id)
        _keep(asyncio.ensure_future(_finish_spawn(app, user, spawner)))


async def _finish_spawn(app: Any, user: Any, spawner: Any) -> None:
    """Do what JupyterHub's spawn handler does: spawn, then route the proxy to the server."""
    name = spawner.name
    spawner.reattach_state = spawner.get_state()
    set_spawn_pending(spawner, True)  # as JupyterHub's spawn handler does: "pending: spawn"
    spawn = asyncio.ensure_future(user.spawn(name, options=spawner.orm_spawner.user_options))
    # The pending page and progress API follow this future.
    set_spawn_future(spawner, spawn)
    try:
        await spawn
    except Exception as exc:
        log.warning("%s: reattach failed: %s", spawner_log_name(spawner), exc)
        return
    finally:
        spawner.reattach_state = None
        set_spawn_pending(spawner, False)
    set_spawn_future(spawner, None)
    set_proxy_pending(spawner, True)  # not "ready" until the proxy routes to it
    try:
        await app.proxy.add_user(user, name)
    finally:
        set_proxy_pending(spawner, False)

    async def stopped() -> None:
        await app.proxy.delete_user(user, name)
        await user.stop(name)

    spawner.add_poll_callback(stopped)
    log.info("%s: reattached, ready at %s", spawner_log_name(spawner), spawner.server.url)
