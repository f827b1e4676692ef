"""Every private JupyterHub and batchspawner detail Shopfloor relies on, in one place.

JupyterHub has no public API for a few things the hub side needs (restart a spawn after a hub
restart as its own spawn handler would, know when the hub has started, add REST handlers,
manage roles from a handler). Each such use is one function here, named for what it does,
and ``tests/unit/test_compat.py`` checks each against the installed JupyterHub and
batchspawner: after an upgrade, a failing test there names the function to fix.

Nothing else in Shopfloor may touch a ``_private`` attribute of a JupyterHub, batchspawner or
Voila object. (The Voila one lives in the app job, which must not import the hub side:
:mod:`shopfloor.apps.voila_compat`.)

This module also holds the list of batchspawner ``SlurmSpawner`` settings that
``ShopfloorSpawner`` does not use, and refuses them (:func:`refuse_batchspawner_settings`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from sqlalchemy.orm import Session, object_session

log = logging.getLogger("shopfloor.compat")

# -- spawners ---------------------------------------------------------------------------------


def spawner_log_name(spawner: Any) -> str:
    """``user:server`` (or ``user``): JupyterHub's own prefix for log lines about a server.

    Uses ``Spawner._log_name`` so our lines read like JupyterHub's.
    """
    return str(spawner._log_name)


def set_spawn_pending(spawner: Any, pending: bool) -> None:
    """Mark a spawn as under way (``spawner.pending == "spawn"``) or over.

    JupyterHub's spawn handler sets ``Spawner._spawn_pending``; a spawn we start ourselves
    (reattaching after a hub restart) must set it too, or the hub would start a second one.
    """
    spawner._spawn_pending = pending


def set_spawn_future(spawner: Any, future: asyncio.Future[Any] | None) -> None:
    """Hand the hub the future of a spawn we started, or clear it.

    The pending page and the progress API wait on ``Spawner._spawn_future``, and the spawn
    page reads a failed one's exception from it.
    """
    spawner._spawn_future = future


def set_proxy_pending(spawner: Any, pending: bool) -> None:
    """Mark the server as waiting for its proxy route (``Spawner._proxy_pending``).

    JupyterHub's spawn handler sets it between ``start()`` returning and the route being
    added, so that the server is not reported ready before users can reach it.
    """
    spawner._proxy_pending = pending


def save_spawner_state(spawner: Any) -> bool:
    """Write the spawner's state to the hub database now; False if it has no database row.

    JupyterHub saves state only after ``start()`` returns. ``Spawner.db`` is deprecated, so
    the session is found from the spawner's ORM row (``Spawner.orm_spawner``).
    """
    if not stage_spawner_state(spawner):
        return False
    return commit_staged_states([spawner]) == 1


def stage_spawner_state(spawner: Any) -> bool:
    """Put the spawner's ``get_state()`` on its database row without committing; False if it
    has no row in a database session (the next commit of that session writes it)."""
    orm_spawner = getattr(spawner, "orm_spawner", None)
    if orm_spawner is None or object_session(orm_spawner) is None:
        return False
    orm_spawner.state = spawner.get_state()
    return True


def commit_staged_states(spawners: Iterable[Any]) -> int:
    """Stage each spawner's latest state again and commit their sessions (JupyterHub's one
    session, normally), once each; returns how many states were written.

    A failed commit is rolled back (as JupyterHub's own handlers do) and re-raised.
    """
    sessions: dict[int, Session] = {}
    count = 0
    for spawner in spawners:
        if stage_spawner_state(spawner):
            session = object_session(spawner.orm_spawner)
            if session is not None:
                sessions[id(session)] = session
                count += 1
    for session in sessions.values():
        try:
            session.commit()
        except Exception:
            session.rollback()
            raise
    return count


def server_names(user: Any) -> list[str]:
    """Names of every server of a hub user that has a database row, in row order.

    ``user.spawners`` holds only the spawners created in this process; the ORM user's
    ``orm_spawners`` lists all of them, those not loaded since a hub restart included.
    """
    orm_user = getattr(user, "orm_user", None)
    if orm_user is None:
        return list(getattr(user, "spawners", {}))
    return list(orm_user.orm_spawners)


# -- the hub application ------------------------------------------------------------------------


def hub_start_future(app: Any) -> asyncio.Future[Any] | None:
    """The future JupyterHub resolves once it has started; None outside a hub launch.

    ``JupyterHub._start_future`` is made in ``initialize()`` (not for ``--generate-config``)
    and resolved at the end of ``start()``.
    """
    return getattr(app, "_start_future", None)


def running_hub() -> Any | None:
    """The JupyterHub application being launched in this process, or None."""
    from jupyterhub.app import JupyterHub

    if not JupyterHub.initialized():
        return None
    app = JupyterHub.instance()
    return app if hub_start_future(app) is not None else None


def check_when_hub_config_loaded(check: Callable[[Any], None]) -> bool:
    """Run ``check(app)`` once JupyterHub has read every config file, before it serves.

    JupyterHub has no hook between loading its config and starting. It loads the config
    files synchronously inside ``initialize()`` and only then awaits its first coroutine, so
    a callback queued on the event loop from a config file runs after the whole config is
    loaded and before ``start()`` binds any port. If ``check`` raises, the error is logged
    and the hub exits with status 1: an admin sees it at start, not at the first spawn.
    Returns False (and does nothing) outside a hub launch.
    """
    app = running_hub()
    if app is None:
        return False
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # a JupyterHub subcommand that loads the config without a loop
        return False

    def run() -> None:
        try:
            check(app)
        except Exception as exc:
            app.log.critical("%s", exc)
            app.exit(1)

    loop.call_soon(run)
    return True


# -- REST handlers ----------------------------------------------------------------------------


def register_api_handler(path: str, handler: type, *, replace: bool = False) -> bool:
    """Serve ``handler`` at ``/hub<path>`` (``path`` starts with ``/api/``).

    JupyterHub builds its routes from the module list ``jupyterhub.apihandlers.
    default_handlers`` when it starts: an entry added before (from the config file) is
    served. Returns False when the path already has a handler and ``replace`` is not set;
    with ``replace``, whatever handler had the path is dropped.
    """
    from jupyterhub.apihandlers import default_handlers

    present = any(spec[0] == path for spec in default_handlers)
    if present and not replace:
        return False
    default_handlers[:] = [spec for spec in default_handlers if spec[0] != path]
    default_handlers.append((path, handler))
    return True


def register_page_handler(path: str, handler: type) -> bool:
    """Serve the page ``handler`` (a ``jupyterhub.handlers.BaseHandler``) at ``/hub<path>``.

    Like :func:`register_api_handler`, for the page routes JupyterHub builds from
    ``jupyterhub.handlers.default_handlers`` when it starts. Returns False when the path
    already has a handler (the first one stays).
    """
    from jupyterhub import handlers

    if any(spec[0] == path for spec in handlers.default_handlers):
        return False
    handlers.default_handlers.append((path, handler))
    return True


#: Where batchspawner registers its port callback (and where jobs post their port).
BATCHSPAWNER_CALLBACK_PATH = r"/api/batchspawner"


def replace_batchspawner_callback(handler: type) -> None:
    """Serve ``handler`` instead of batchspawner's port callback, at the same path.

    batchspawner registers its handler when ``batchspawner.api`` is imported; it is imported
    here first so that a later import cannot add it back.
    """
    import batchspawner.api  # noqa: F401  (registers its handler; we then take its place)

    register_api_handler(BATCHSPAWNER_CALLBACK_PATH, handler, replace=True)


# -- roles and the hub database (from a handler's ``self.db``) --------------------------------


def is_service(caller: Any, name: str) -> bool:
    """True if a handler's ``current_user`` is the service ``name`` (not a user)."""
    from jupyterhub import orm

    return isinstance(caller, orm.Service) and caller.name == name


def create_role(db: Session, name: str, description: str, scopes: list[str]) -> Any:
    """Create or update a role with these scopes (JupyterHub's ``roles.create_role``)."""
    from jupyterhub import roles

    return roles.create_role(db, {"name": name, "description": description, "scopes": scopes})


def grant_role_to_user(db: Session, username: str, role: Any) -> None:
    """Grant ``role`` to a hub user, creating the user's hub record if there is none yet."""
    from jupyterhub import orm, roles

    user = orm.User.find(db, username)
    if user is None:
        user = orm.User(name=username)
        db.add(user)
        db.commit()
    roles.grant_role(db, user, role)


def delete_role(db: Session, name: str) -> bool:
    """Delete a role; False if there is none of that name."""
    from jupyterhub import roles

    try:
        roles.delete_role(db, name)
    except KeyError:
        return False
    return True


# -- sharing one server with a group's members (JupyterHub 5+ shares, from ``self.db``) -----


def share_with_members(db: Session, owner: str, server: str, group: str,
                       expires_at: Any) -> list[str]:
    """Give each member of hub group ``group`` (but ``owner``) access to ``owner``'s server
    ``server`` until ``expires_at`` (a naive UTC datetime, as JupyterHub stores it), with
    JupyterHub's own ``Share`` and its default scope ``access:servers!server=<owner>/<server>``
    only. Returns the members given access (empty if the group or server does not exist).

    One share per member, not one for the group: JupyterHub 6.1 honours a group's share for
    the hub's own pages but not for OAuth tokens (``scopes.get_scopes_for`` adds only the
    token owner's ``shared_with_me``, not their groups'), so members of a shared group are
    refused by the server itself ("discarding scopes ... not present in roles of owner").
    """
    from jupyterhub import orm

    orm_group = orm.Group.find(db, group)
    orm_spawner = _orm_spawner(db, owner, server)
    if orm_group is None or orm_spawner is None:
        return []
    granted = []
    for member in orm_group.users:
        if member.name == owner:
            continue
        share = orm.Share.grant(db, orm_spawner, member)
        share.expires_at = expires_at
        granted.append(member.name)
    db.commit()
    return sorted(granted)


def unshare_with_users(db: Session, owner: str, server: str, users: Iterable[str]) -> list[str]:
    """End ``users``' shares of ``owner``'s server ``server`` and the OAuth tokens they got
    for it (so a browser that already entered must ask the hub again); returns the users
    whose tokens were ended."""
    from jupyterhub import orm

    orm_spawner = _orm_spawner(db, owner, server)
    if orm_spawner is None:
        return []
    ended = []
    for name in users:
        member = orm.User.find(db, name)
        if member is None or name == owner:
            continue
        orm.Share.revoke(db, orm_spawner, member)
        if not orm_spawner.oauth_client_id:
            continue
        tokens = db.query(orm.APIToken).filter_by(
            user_id=member.id, client_id=orm_spawner.oauth_client_id).all()
        for token in tokens:
            db.delete(token)
        if tokens:
            ended.append(name)
    db.commit()
    return ended


def shared_with(db: Session, owner: str, server: str) -> list[str]:
    """Names of the users and groups (``group:<name>``) ``owner``'s server is shared with."""
    orm_spawner = _orm_spawner(db, owner, server)
    if orm_spawner is None:
        return []
    return sorted(s.user.name if s.user is not None else f"group:{s.group.name}"
                  for s in orm_spawner.shares)


def group_members(db: Session, group: str) -> list[str]:
    """Names of the members of hub group ``group`` (empty if there is no such group)."""
    from jupyterhub import orm

    orm_group = orm.Group.find(db, group)
    return sorted(u.name for u in orm_group.users) if orm_group is not None else []


def sync_owned_groups(db: Session, username: str, names: Iterable[str],
                      owner: str) -> tuple[list[str], list[str], list[str]]:
    """Make ``username``'s membership in the groups ``owner`` owns exactly ``names``.

    A group belongs to ``owner`` when its ``properties["shopfloor_owner"]`` says so; missing
    groups are created that way. Groups anyone else made (workshops, support, ``load_groups``)
    are never joined or left here: those names are returned as skipped. Returns (added,
    removed, skipped), sorted.
    """
    from jupyterhub import orm

    orm_user = orm.User.find(db, username)
    if orm_user is None:
        raise KeyError(username)
    want = set(names)
    added, removed, skipped = [], [], []
    for group in list(orm_user.groups):
        if (group.properties or {}).get("shopfloor_owner") == owner and group.name not in want:
            orm_user.groups.remove(group)
            removed.append(group.name)
    have = {g.name for g in orm_user.groups}
    for name in sorted(want - have):
        group = orm.Group.find(db, name)
        if group is None:
            group = orm.Group(name=name, properties={"shopfloor_owner": owner})
            db.add(group)
        elif (group.properties or {}).get("shopfloor_owner") != owner:
            skipped.append(name)
            continue
        orm_user.groups.append(group)
        added.append(name)
    skipped += sorted(n for n in want & have if (orm.Group.find(db, n).properties or {})
                      .get("shopfloor_owner") != owner)
    db.commit()
    return added, sorted(removed), sorted(skipped)


def _orm_spawner(db: Session, owner: str, server: str) -> Any:
    from jupyterhub import orm

    orm_user = orm.User.find(db, owner)
    if orm_user is None:
        return None
    return orm_user.orm_spawners.get(server)


# -- the hub database before the hub opens it (reattach after a restart) ----------------------


def open_hub_database(db_url: str) -> Session:
    """A session on the hub's database, with JupyterHub's own ORM (the schema must be current)."""
    from jupyterhub import orm

    return orm.new_session_factory(db_url)()


def spawner_rows(db: Session, *, with_server: bool) -> Iterator[Any]:
    """The hub's server rows (``orm.Spawner``) that have (or have no) running-server record."""
    from jupyterhub import orm

    if with_server:
        query = db.query(orm.Spawner).filter(orm.Spawner.server != None)  # noqa: E711
    else:
        query = db.query(orm.Spawner).filter(orm.Spawner.server == None)  # noqa: E711
    yield from query


def forget_server_record(db: Session, row: Any) -> None:
    """Drop the running-server record of a spawner row (the row and its state stay)."""
    server, row.server = row.server, None
    db.delete(server)


async def delete_named_server(spawner: Any) -> None:
    """Delete a named server's record, as ``DELETE /users/:name/servers/:server`` with
    ``remove`` does: ``User._delete_spawner``, then the row and the ``user.spawners`` entry.

    JupyterHub counts every named server against ``named_server_limit_per_user``, stopped or
    not, so a record left by a refused first request would use up a slot.
    """
    user = spawner.user
    await user._delete_spawner(spawner)
    user.db.delete(spawner.orm_spawner)
    user.spawners.pop(spawner.name, None)
    user.db.commit()


# -- batchspawner settings ShopfloorSpawner does not use -------------------------------------

_PARTITIONS = ("`partitions:` and `default_partition:` in the site file "
               "(users choose a partition on the spawn page)")
_GPUS = "`partitions.<name>.default_gpus` and `max_gpus` in the site file"
_COMMANDS = ("`slurm.bin_dir` in the site file (every Slurm command goes through "
             "shopfloor.slurm.seam)")
_STATES = ("nothing: job states come from squeue's own fields "
           "(shopfloor.slurm.jobwatch)")
_SCRIPT = ("the site file's `partitions:` settings: the job script is generated from the "
           "validated request (shopfloor.slurm.jobscript); ask for a site field if one is "
           "missing")

#: Each ``SlurmSpawner`` setting (trait) that ShopfloorSpawner does not use, and what to use
#: instead. ``tests/unit/test_compat.py`` checks that this covers every setting the installed
#: batchspawner adds to JupyterHub's ``Spawner``.
IGNORED_SLURMSPAWNER_SETTINGS: dict[str, str] = {
    "req_partition": _PARTITIONS,
    "req_queue": _PARTITIONS,
    "req_nprocs": "`partitions.<name>.default_cpus` and `max_cpus` in the site file",
    "req_memory": "`partitions.<name>.default_memory_gb` and `max_memory_gb` in the site file",
    "req_ngpus": _GPUS,
    "req_gres": _GPUS,
    "req_runtime": "`partitions.<name>.default_walltime` and `max_walltime` in the site file",
    "req_account": "`group_accounts` in the site file",
    "req_qos": "`partitions.<name>.qos` in the site file",
    "req_reservation": ("a workshop's reservation, or the `reservation` spawn option "
                        "(checked against the live reservation's users)"),
    "req_host": "nothing: Slurm places the job; group nodes into a partition in the site file",
    "req_cluster": "nothing: a hub submits to one Slurm cluster (`slurm.bin_dir`)",
    "req_options": _SCRIPT,
    "req_prologue": _SCRIPT,
    "req_epilogue": _SCRIPT,
    "req_keepvars_extra": "`c.ShopfloorSpawner.environment` (variables given to the job)",
    "req_srun": "nothing: the server runs in the job's batch step, without srun",
    "batch_script": _SCRIPT,
    "batch_submit_cmd": _COMMANDS,
    "batch_query_cmd": _COMMANDS,
    "batch_cancel_cmd": _COMMANDS,
    "exec_prefix": ("nothing: jobs are submitted as the user by shopfloor.slurm.seam; "
                    "`slurm.bin_dir` in the site file picks the commands"),
    "state_pending_re": _STATES,
    "state_running_re": _STATES,
    "state_exechost_re": _STATES,
    "state_exechost_exp": _STATES,
    "state_unknown_re": _STATES,
    "startup_poll_interval": "`slurm.pending_poll_interval` in the site file",
    "batchspawner_singleuser_cmd": ("`c.ShopfloorSpawner.cmd` (the server program; "
                                    "Shopfloor's launcher starts it)"),
}


class IgnoredSettingError(ValueError):
    """A JupyterHub config sets a batchspawner setting that Shopfloor would silently ignore."""


def ignored_settings(config: Mapping[str, Any], sections: Iterable[str]) -> list[tuple[str, str]]:
    """``(section, setting)`` for each ignored batchspawner setting that ``config`` sets."""
    found = []
    for section in sections:
        values = config[section] if section in config else {}
        found += [(section, name) for name in IGNORED_SLURMSPAWNER_SETTINGS if name in values]
    return found


def refuse_batchspawner_settings(config: Mapping[str, Any], sections: Iterable[str],
                                 given: Iterable[str] = ()) -> None:
    """Raise :class:`IgnoredSettingError` naming each ignored setting and its replacement.

    ``sections`` are the config sections that reach the spawner (its class and its bases:
    traitlets applies ``c.Spawner.x`` and ``c.SlurmSpawner.x`` to a subclass too); ``given``
    are keyword arguments passed to the spawner directly.
    """
    lines = [f"  c.{section}.{name}: use {IGNORED_SLURMSPAWNER_SETTINGS[name]}"
             for section, name in ignored_settings(config, sections)]
    lines += [f"  {name}=... (keyword argument): use {IGNORED_SLURMSPAWNER_SETTINGS[name]}"
              for name in given if name in IGNORED_SLURMSPAWNER_SETTINGS]
    if lines:
        raise IgnoredSettingError(
            "Shopfloor does not use these batchspawner settings (they would be silently "
            "ignored); remove them from the JupyterHub config:\n" + "\n".join(lines)
        )


__all__ = [
    "BATCHSPAWNER_CALLBACK_PATH",
    "IGNORED_SLURMSPAWNER_SETTINGS",
    "IgnoredSettingError",
    "check_when_hub_config_loaded",
    "commit_staged_states",
    "create_role",
    "delete_named_server",
    "delete_role",
    "forget_server_record",
    "grant_role_to_user",
    "group_members",
    "hub_start_future",
    "ignored_settings",
    "is_service",
    "open_hub_database",
    "refuse_batchspawner_settings",
    "register_api_handler",
    "register_page_handler",
    "replace_batchspawner_callback",
    "running_hub",
    "save_spawner_state",
    "server_names",
    "set_proxy_pending",
    "set_spawn_future",
    "set_spawn_pending",
    "share_with_members",
    "shared_with",
    "spawner_log_name",
    "spawner_rows",
    "stage_spawner_state",
    "unshare_with_users",
]
