"""Batched per-spawn work: the log-folder check cache and coalesced state commits, on a real
JupyterHub database; and SQLite's write-ahead-log mode as the hub opens its database."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from jupyterhub import orm
from jupyterhub.spawner import LocalProcessSpawner
from sqlalchemy import text
from sqlalchemy.orm import Session

from shopfloor.extensions import compat
from shopfloor.extensions.spawn_batching import RecentChecks, StateSaver
from shopfloor.ops import database
from shopfloor.site import SiteConfig, parse_site

DEMO = Path(__file__).resolve().parents[2] / "hub_config" / "demo_site.yaml"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_check_is_trusted_for_its_seconds_then_again_required() -> None:
    clock = Clock()
    checks = RecentChecks(clock)
    key = ("alice", "/home/alice/.shopfloor/logs")
    assert not checks.fresh(key, 120)
    checks.passed(key)
    clock.now += 119
    assert checks.fresh(key, 120)
    assert not checks.fresh(("bob", "/home/bob/.shopfloor/logs"), 120)  # per user and path
    clock.now += 2
    assert not checks.fresh(key, 120)


def test_zero_seconds_checks_every_time_and_forget_revokes() -> None:
    checks = RecentChecks(Clock())
    checks.passed("k")
    assert not checks.fresh("k", 0)
    assert checks.fresh("k", 60)
    checks.forget("k")
    checks.forget("never-seen")  # no error
    assert not checks.fresh("k", 60)


# -- coalesced state saves, on JupyterHub's own schema ----------------------------------------


@pytest.fixture()
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "jupyterhub.sqlite"


@pytest.fixture()
def db(db_path: Path) -> Iterator[Session]:
    session = compat.open_hub_database(f"sqlite:///{db_path}")
    yield session
    session.close()


class JobSpawner(LocalProcessSpawner):
    """A real spawner whose state is a job id."""

    job_id = ""

    def get_state(self) -> dict[str, Any]:
        return {"job_id": self.job_id} if self.job_id else {}


def spawners(db: Session, count: int) -> list[JobSpawner]:
    user = orm.User(name="ada")
    db.add(user)
    db.commit()
    rows = [orm.Spawner(user=user, name=f"s{i}") for i in range(count)]
    db.add_all(rows)
    db.commit()
    return [JobSpawner(user=SimpleNamespace(name="ada"), orm_spawner=row) for row in rows]


def saved_states(db_path: Path) -> dict[str, Any]:
    """What another connection (a restarted hub) reads from the database."""
    other = compat.open_hub_database(f"sqlite:///{db_path}")
    try:
        return {row.name: row.state for row in orm.User.find(other, "ada").orm_spawners.values()}
    finally:
        other.close()


async def test_states_of_a_burst_share_one_commit_that_follows_within_the_delay(
    db: Session, db_path: Path,
) -> None:
    saver = StateSaver()
    many = spawners(db, 3)
    for i, spawner in enumerate(many):
        spawner.job_id = str(1000 + i)
        assert saver.save_soon(spawner, 0.2)
    assert saver.commits == 0
    assert all(not state for state in saved_states(db_path).values())  # not yet committed
    many[2].job_id = "2002"  # changed before the commit: its latest state is written
    await asyncio.sleep(0.4)
    assert saver.commits == 1 and saver.saved == 3
    assert saved_states(db_path) == {
        "s0": {"job_id": "1000"}, "s1": {"job_id": "1001"}, "s2": {"job_id": "2002"}}


async def test_zero_delay_commits_at_once_and_a_rowless_spawner_is_refused(
    db: Session, db_path: Path,
) -> None:
    saver = StateSaver()
    (one,) = spawners(db, 1)
    one.job_id = "7"
    assert saver.save_soon(one, 0)
    assert saved_states(db_path) == {"s0": {"job_id": "7"}}
    rowless = JobSpawner(user=SimpleNamespace(name="ada"), orm_spawner=None)
    assert not saver.save_soon(rowless, 0.1)
    assert saver.commits == 1


async def test_a_hub_commit_in_between_already_carries_the_staged_state(
    db: Session, db_path: Path,
) -> None:
    saver = StateSaver()
    (one,) = spawners(db, 1)
    one.job_id = "8"
    saver.save_soon(one, 30)
    db.commit()  # JupyterHub commits for its own reasons meanwhile
    assert saved_states(db_path) == {"s0": {"job_id": "8"}}
    saver.flush()


async def test_a_failed_commit_is_rolled_back_and_logged_not_raised(
    db: Session, caplog: pytest.LogCaptureFixture,
) -> None:
    saver = StateSaver()
    (one,) = spawners(db, 1)
    one.job_id = "9"
    saver.save_soon(one, 30)
    # Another writer holds the database: the commit fails at once ("database is locked").
    db.connection().exec_driver_sql("PRAGMA busy_timeout = 0")
    blocker = compat.open_hub_database(str(db.get_bind().url))
    blocker.connection().exec_driver_sql("BEGIN EXCLUSIVE")
    try:
        saver.flush()
    finally:
        blocker.rollback()
        blocker.close()
    assert saver.commits == 0
    assert "could not save the state of 1 starting server(s)" in caplog.text
    db.execute(text("SELECT 1"))  # the session is usable again (rolled back)


# -- SQLite in write-ahead-log mode --------------------------------------------------------


def site_with(**hub: Any) -> SiteConfig:
    data = yaml.safe_load(DEMO.read_text())
    data["hub"].update(hub)
    return parse_site(data)


def test_wal_only_for_a_sqlite_file_and_only_when_the_site_wants_it(tmp_path: Path) -> None:
    assert set(database.engine_kwargs(site_with(state_dir=str(tmp_path)))) == {"creator"}
    assert database.engine_kwargs(site_with(state_dir=str(tmp_path), sqlite_wal=False)) == {}
    assert database.engine_kwargs(
        site_with(db_url="postgresql://shopfloor@db:5432/jupyterhub")) == {}


def test_jupyterhub_opens_its_database_in_wal_mode_and_the_log_files_stay_private(
    tmp_path: Path,
) -> None:
    """Through JupyterHub's own session factory, with the db_kwargs install() sets."""
    site = site_with(state_dir=str(tmp_path))
    db_file = tmp_path / "jupyterhub.sqlite"
    db_file.touch(mode=0o600)  # as install()'s secure_hub_state makes it
    old_umask = os.umask(0o022)
    try:
        factory = orm.new_session_factory(site.hub.database_url, **database.engine_kwargs(site))
        session = factory()
        session.add(orm.User(name="ada"))
        session.commit()
        mode = session.execute(text("PRAGMA journal_mode")).scalar()
        synchronous = session.execute(text("PRAGMA synchronous")).scalar()
        foreign_keys = session.execute(text("PRAGMA foreign_keys")).scalar()
    finally:
        os.umask(old_umask)
    assert mode == "wal"
    assert synchronous == 2  # FULL: a committed job id survives a power cut
    assert foreign_keys == 1  # JupyterHub's own connect hook still runs
    for name in ("jupyterhub.sqlite-wal", "jupyterhub.sqlite-shm"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    session.close()
    # Another process (a restarted hub, `jupyterhub upgrade-db`) reads what was committed.
    other = compat.open_hub_database(site.hub.database_url)
    assert orm.User.find(other, "ada") is not None
    other.close()
