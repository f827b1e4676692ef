"""Each private JupyterHub, batchspawner and Voila detail we use, against the installed versions.

One test per function of ``extensions/compat.py`` (and ``shopfloor.apps.voila_compat``). They
import the real classes: after an upgrade, a failure says which detail changed and which
function to fix.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jupyterhub.handlers.base
import jupyterhub.handlers.pages
import pytest
from jupyterhub import orm
from jupyterhub.apihandlers import default_handlers
from jupyterhub.app import JupyterHub
from jupyterhub.spawner import LocalProcessSpawner, Spawner
from sqlalchemy.orm import Session

from shopfloor.extensions import compat

JUPYTERHUB = f"jupyterhub {version('jupyterhub')}"
BATCHSPAWNER = f"batchspawner {version('batchspawner')}"
VOILA = f"voila {version('voila')}"


def changed(package: str, what: str, where: str) -> str:
    """The message of a failed check: what the upgrade changed and where we use it."""
    return f"{package} {what}; see {where}"


def require_class_attribute(cls: type, name: str, where: str) -> None:
    if name not in vars(cls):
        pytest.fail(changed(JUPYTERHUB, f"no longer has {cls.__name__}.{name}",
                            f"extensions/compat.py:{where}"))


def require_source(obj: Any, text: str, package: str, where: str) -> None:
    if text not in inspect.getsource(obj):
        name = getattr(obj, "__qualname__", getattr(obj, "__name__", obj))
        pytest.fail(changed(package, f"no longer has `{text}` in {name}", where))


def spawner(row: orm.Spawner | None = None) -> Spawner:
    """A real JupyterHub spawner of user ada (its name comes from its database row)."""
    return LocalProcessSpawner(user=SimpleNamespace(name="ada"), orm_spawner=row)


@pytest.fixture()
def db(tmp_path: Path) -> Iterator[Session]:
    """A real, empty hub database (JupyterHub's own schema), opened as install() does."""
    session = compat.open_hub_database(f"sqlite:///{tmp_path / 'jupyterhub.sqlite'}")
    yield session
    session.close()


def add_user(db: Session, name: str, servers: dict[str, bool]) -> orm.User:
    """A hub user with spawner rows; ``servers`` maps a server name to "has a server record"."""
    user = orm.User(name=name)
    db.add(user)
    db.commit()
    for server_name, running in servers.items():
        row = orm.Spawner(user=user, name=server_name)
        if running:
            row.server = orm.Server(ip="127.0.0.1", port=8888)
        db.add(row)
    db.commit()
    return user


# -- spawners -------------------------------------------------------------------------------


def test_spawner_log_name(db: Session) -> None:
    where = "extensions/compat.py:spawner_log_name"
    rows = add_user(db, "ada", {"gpu": False, "": False}).orm_spawners
    try:
        names = (compat.spawner_log_name(spawner(rows["gpu"])),
                 compat.spawner_log_name(spawner(rows[""])))
    except AttributeError:
        pytest.fail(changed(JUPYTERHUB, "no longer has Spawner._log_name", where))
    assert names == ("ada:gpu", "ada"), changed(
        JUPYTERHUB, f"Spawner._log_name now gives {names}, not ('ada:gpu', 'ada')", where)


def test_set_spawn_pending() -> None:
    require_class_attribute(Spawner, "_spawn_pending", "set_spawn_pending")
    s = spawner()
    compat.set_spawn_pending(s, True)
    assert s.pending == "spawn", changed(
        JUPYTERHUB, "Spawner.pending no longer follows _spawn_pending",
        "extensions/compat.py:set_spawn_pending")
    assert s.active
    compat.set_spawn_pending(s, False)
    assert s.pending is None


async def test_set_spawn_future() -> None:
    where = "extensions/compat.py:set_spawn_future"
    require_class_attribute(Spawner, "_spawn_future", "set_spawn_future")
    # The spawn page takes a failed spawn's error from it, the progress API waits on it.
    require_source(jupyterhub.handlers.pages, "spawner._spawn_future.exception()", JUPYTERHUB,
                   where)
    s = spawner()
    failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    failed.set_exception(RuntimeError("job died"))
    compat.set_spawn_future(s, failed)
    assert s._failed, changed(JUPYTERHUB, "Spawner._failed no longer reads _spawn_future",
                              where)
    compat.set_spawn_future(s, None)
    assert not s._failed


def test_set_proxy_pending() -> None:
    where = "extensions/compat.py:set_proxy_pending"
    require_class_attribute(Spawner, "_proxy_pending", "set_proxy_pending")
    # We do what JupyterHub's own spawn handler does between start() and the proxy route.
    require_source(jupyterhub.handlers.base, "spawner._proxy_pending = True", JUPYTERHUB, where)
    s = spawner()
    compat.set_proxy_pending(s, True)
    assert s._proxy_pending is True
    compat.set_proxy_pending(s, False)
    assert s._proxy_pending is False


def test_save_spawner_state(db: Session, tmp_path: Path) -> None:
    user = add_user(db, "ada", {"gpu": False})

    class Saving(LocalProcessSpawner):
        def get_state(self) -> dict[str, Any]:
            return {"job_id": "42"}

    s = Saving(user=SimpleNamespace(name="ada"), orm_spawner=user.orm_spawners["gpu"])
    assert compat.save_spawner_state(s), changed(
        JUPYTERHUB, "Spawner.orm_spawner is no longer a row of a database session",
        "extensions/compat.py:save_spawner_state")
    # Committed: another session sees it.
    other = compat.open_hub_database(f"sqlite:///{tmp_path / 'jupyterhub.sqlite'}")
    row = orm.User.find(other, "ada").orm_spawners["gpu"]
    assert row.state == {"job_id": "42"}
    other.close()
    assert not compat.save_spawner_state(spawner())  # no row: nothing to save


def test_server_names(db: Session) -> None:
    user = add_user(db, "ada", {"": False, "gpu": True})
    try:
        names = compat.server_names(SimpleNamespace(orm_user=user, spawners={}))
    except AttributeError:
        pytest.fail(changed(JUPYTERHUB, "orm.User no longer has orm_spawners",
                            "extensions/compat.py:server_names"))
    assert sorted(names) == ["", "gpu"]
    assert compat.server_names(SimpleNamespace(spawners={"x": None})) == ["x"]


# -- the hub application --------------------------------------------------------------------


def test_hub_start_future() -> None:
    where = "extensions/compat.py:hub_start_future"
    require_source(JupyterHub.initialize, "self._start_future = asyncio.Future()", JUPYTERHUB,
                   where)
    require_source(JupyterHub.start, "self._start_future.set_result(", JUPYTERHUB, where)
    assert compat.hub_start_future(SimpleNamespace()) is None
    started: Any = object()
    assert compat.hub_start_future(SimpleNamespace(_start_future=started)) is started


def test_check_when_hub_config_loaded() -> None:
    """JupyterHub loads its config files before its first await: our queued check runs then.

    (``tests/integration/test_hub_settings.py`` starts a real hub with a refused setting.)
    """
    where = "extensions/compat.py:check_when_hub_config_loaded"
    source = inspect.getsource(JupyterHub.initialize)
    loaded = source.find("self.load_config_file(")
    first_await = source.find("await ")
    if loaded < 0 or not 0 < loaded < first_await:
        pytest.fail(changed(JUPYTERHUB, "no longer loads its config before its first await in "
                            "JupyterHub.initialize", where))
    require_source(JupyterHub.initialize, "self._start_future = asyncio.Future()", JUPYTERHUB,
                   where)
    assert compat.running_hub() is None  # not a hub launch: nothing is queued
    assert compat.check_when_hub_config_loaded(lambda app: None) is False


# -- REST handlers --------------------------------------------------------------------------


@pytest.fixture()
def saved_handlers() -> Iterator[None]:
    before = list(default_handlers)
    yield
    default_handlers[:] = before


class _Handler:
    pass


class _Other:
    pass


def test_register_api_handler(saved_handlers: None) -> None:
    # JupyterHub builds its API routes from this module list when it starts.
    require_source(JupyterHub.init_handlers, "apihandlers.default_handlers", JUPYTERHUB,
                   "extensions/compat.py:register_api_handler")
    path = r"/api/shopfloor/compat-test"
    assert compat.register_api_handler(path, _Handler)
    assert not compat.register_api_handler(path, _Other)  # taken: kept
    assert [h for p, h, *_ in default_handlers if p == path] == [_Handler]
    assert compat.register_api_handler(path, _Other, replace=True)
    assert [h for p, h, *_ in default_handlers if p == path] == [_Other]


def test_replace_batchspawner_callback(saved_handlers: None) -> None:
    import batchspawner.api

    where = "extensions/compat.py:replace_batchspawner_callback"
    registered = f'default_handlers.append((r"{compat.BATCHSPAWNER_CALLBACK_PATH}"'
    require_source(batchspawner.api, registered, BATCHSPAWNER, where)
    compat.replace_batchspawner_callback(_Handler)
    assert [h for p, h, *_ in default_handlers if p == compat.BATCHSPAWNER_CALLBACK_PATH] == [
        _Handler]


# -- roles and the hub database -------------------------------------------------------------


def test_is_service(db: Session) -> None:
    service = orm.Service(name="workshop")
    db.add(service)
    db.commit()
    assert compat.is_service(service, "workshop")
    assert not compat.is_service(service, "apps")
    assert not compat.is_service(add_user(db, "workshop", {}), "workshop")


def test_create_role(db: Session) -> None:
    try:
        role = compat.create_role(db, "workshop-trainer-x", "Trainers", ["admin-ui"])
    except (AttributeError, TypeError) as exc:
        pytest.fail(changed(JUPYTERHUB, f"roles.create_role changed: {exc}",
                            "extensions/compat.py:create_role"))
    assert orm.Role.find(db, "workshop-trainer-x") is role
    assert role.scopes == ["admin-ui"]


def test_grant_role_to_user(db: Session) -> None:
    role = compat.create_role(db, "workshop-trainer-x", "Trainers", ["admin-ui"])
    compat.grant_role_to_user(db, "ada", role)  # no hub record yet: made
    add_user(db, "bob", {})
    compat.grant_role_to_user(db, "bob", role)
    assert sorted(u.name for u in role.users) == ["ada", "bob"]


def test_delete_role(db: Session) -> None:
    compat.create_role(db, "workshop-trainer-x", "Trainers", ["admin-ui"])
    assert compat.delete_role(db, "workshop-trainer-x")
    assert orm.Role.find(db, "workshop-trainer-x") is None
    assert not compat.delete_role(db, "workshop-trainer-x"), changed(
        JUPYTERHUB, "roles.delete_role no longer raises KeyError for a missing role",
        "extensions/compat.py:delete_role")


def test_open_hub_database(db: Session) -> None:
    assert db.query(orm.User).count() == 0  # JupyterHub made its schema


def test_spawner_rows(db: Session) -> None:
    add_user(db, "ada", {"": False, "gpu": True})
    assert [r.name for r in compat.spawner_rows(db, with_server=True)] == ["gpu"]
    assert [r.name for r in compat.spawner_rows(db, with_server=False)] == [""]


def test_forget_server_record(db: Session) -> None:
    add_user(db, "ada", {"gpu": True})
    row = next(compat.spawner_rows(db, with_server=True))
    row.state = {"job_id": "42"}
    compat.forget_server_record(db, row)
    db.commit()
    assert db.query(orm.Server).count() == 0
    kept = next(compat.spawner_rows(db, with_server=False))
    assert kept.state == {"job_id": "42"}


# -- pages and shares (the front door: extensions/home.py, extensions/support.py) ----------


def test_register_page_handler() -> None:
    from jupyterhub import handlers

    require_source(JupyterHub.init_handlers, "handlers.default_handlers", JUPYTERHUB,
                   "extensions/compat.py:register_page_handler")
    before = list(handlers.default_handlers)
    try:
        assert compat.register_page_handler(r"/compat-test", _Handler)
        assert not compat.register_page_handler(r"/compat-test", _Other)  # the first stays
        assert [h for p, h, *_ in handlers.default_handlers if p == r"/compat-test"] == [
            _Handler]
    finally:
        handlers.default_handlers[:] = before


def _shared_server(db: Session) -> orm.Spawner:
    """ada's server "work" (with its OAuth client), and a group "support" of bob and ada."""
    ada = add_user(db, "ada", {"work": True})
    bob, eve = add_user(db, "bob", {}), add_user(db, "eve", {})
    row = ada.orm_spawners["work"]
    client = orm.OAuthClient(identifier="jupyterhub-user-ada-work")
    db.add(client)
    row.oauth_client = client
    db.add(orm.Group(name="support", users=[bob, ada]))
    db.commit()
    for user in (bob, eve):  # each entered the server once: an OAuth token for its client
        db.add(orm.APIToken(user=user, client_id=client.identifier, hashed=f"h-{user.name}",
                            prefix=user.name[:4], scopes=[]))
    db.commit()
    return row


def test_share_with_members_and_unshare(db: Session) -> None:
    from datetime import datetime, timedelta

    row = _shared_server(db)
    until = datetime.utcnow() + timedelta(hours=1)
    # The owner, though in the group, gets no share of their own server; eve is not in it.
    assert compat.share_with_members(db, "ada", "work", "support", until) == ["bob"]
    assert compat.shared_with(db, "ada", "work") == ["bob"]
    share = row.shares[0]
    assert share.scopes == ["access:servers!server=ada/work"] and share.expires_at == until
    assert compat.group_members(db, "support") == ["ada", "bob"]
    assert compat.share_with_members(db, "ada", "work", "nobody", until) == []
    assert compat.share_with_members(db, "ada", "gone", "support", until) == []
    # Ending it drops the share and bob's token for that server; eve's token is not touched.
    assert compat.unshare_with_users(db, "ada", "work", ["bob"]) == ["bob"]
    assert compat.shared_with(db, "ada", "work") == []
    holders = sorted(t.user.name for t in db.query(orm.APIToken).filter_by(
        client_id="jupyterhub-user-ada-work"))
    assert holders == ["eve"]


def test_group_shares_do_not_reach_oauth_tokens() -> None:
    """Why share_with_members shares per member: JupyterHub adds only a token owner's own
    shares to its scopes, not their groups'. When this fails, one group share may do."""
    from jupyterhub import scopes

    require_source(scopes.get_scopes_for, "for share in owner.shared_with_me", JUPYTERHUB,
                   "extensions/compat.py:share_with_members")
    source = inspect.getsource(scopes.get_scopes_for)
    token_part = source[source.index("isinstance(orm_object, orm.APIToken)"):
                        source.index("token_scopes = set(orm_object.scopes)")]
    assert "groups" not in token_part, changed(
        JUPYTERHUB, "now adds group shares to OAuth tokens' scopes",
        "extensions/compat.py:share_with_members (a group share may now suffice)")


# -- Voila (the app job) --------------------------------------------------------------------


async def test_preheated_kernel_tasks(tmp_path: Path) -> None:
    from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
    from voila.app import Voila
    from voila.voila_kernel_manager import voila_kernel_manager_factory

    from shopfloor.apps.voila_compat import preheated_kernel_tasks

    where = "src/shopfloor/apps/voila_compat.py:preheated_kernel_tasks"
    preheating = voila_kernel_manager_factory(AsyncMappingKernelManager, True, 2)
    # An empty root folder: Voila preheats nothing of its own.
    manager = preheating(parent=Voila(root_dir=str(tmp_path)))
    # The tasks are made at once and start a kernel after the delay: none starts here (and
    # a future stands in for the kernel start, which is never awaited).
    manager._initialize = lambda *args, **kwargs: asyncio.get_running_loop().create_future()
    manager.fill_if_needed(delay=3600, notebook_name="app.ipynb")
    tasks = preheated_kernel_tasks(manager)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert len(tasks) == 2 and all(isinstance(t, asyncio.Task) for t in tasks), changed(
        VOILA, "no longer keeps its preheated kernels' tasks in VoilaKernelManager._pools",
        where)
    plain = voila_kernel_manager_factory(AsyncMappingKernelManager, False, 0)
    assert preheated_kernel_tasks(plain(parent=Voila(root_dir=str(tmp_path)))) == []


def test_delete_named_server(db: Session) -> None:
    """``delete_named_server`` relies on ``User._delete_spawner`` (what the REST API's
    ``remove`` uses) and then drops the row and the ``user.spawners`` entry itself."""
    from jupyterhub.user import User

    require_class_attribute(User, "_delete_spawner", "delete_named_server")
    if not inspect.iscoroutinefunction(User._delete_spawner):
        pytest.fail(changed(JUPYTERHUB, "User._delete_spawner is no longer a coroutine",
                            "extensions/compat.py:delete_named_server"))
    row_user = add_user(db, "ada", {"refused": False})
    row = row_user.orm_spawners["refused"]
    deleted: list[Any] = []

    async def delete_spawner(spawner: Any) -> None:
        deleted.append(spawner)

    user = SimpleNamespace(db=db, spawners={}, _delete_spawner=delete_spawner)
    target = SimpleNamespace(user=user, name="refused", orm_spawner=row)
    user.spawners["refused"] = target
    asyncio.run(compat.delete_named_server(target))
    assert deleted == [target] and user.spawners == {}
    assert db.query(orm.Spawner).filter_by(name="refused").count() == 0
