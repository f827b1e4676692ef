"""The spawner's job-log-folder check, made as the real user through sudo and the helper,
and trusted for ``log_dir_recheck_seconds`` (a burst of one user's spawns runs it once)."""

from __future__ import annotations

import pwd
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from shopfloor.extensions import spawner as spawner_module
from shopfloor.extensions.spawner import ShopfloorSpawner

pytestmark = [pytest.mark.cluster]


@pytest.fixture()
def log_dir() -> Iterator[Path]:
    path = Path(f"/home/alice/.shopfloor-test-burst-{secrets.token_hex(4)}")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def spawner_for(path: Path, recheck: float) -> ShopfloorSpawner:
    return ShopfloorSpawner(user=SimpleNamespace(name="alice"), python="/usr/bin/python3",
                            job_log_dir=str(path), log_dir_recheck_seconds=recheck)


async def test_log_folder_is_made_private_once_then_trusted_until_rechecked(
    log_dir: Path,
) -> None:
    await spawner_for(log_dir, 60)._ensure_log_dir()
    info = log_dir.stat()
    assert stat.S_IMODE(info.st_mode) == 0o700
    assert info.st_uid == pwd.getpwnam("alice").pw_uid  # made as the user, not as root
    # The user loosens their own folder: within the recheck time the next spawn (any
    # spawner of the hub) trusts the earlier check and runs no helper ...
    log_dir.chmod(0o755)
    await spawner_for(log_dir, 60)._ensure_log_dir()
    assert stat.S_IMODE(log_dir.stat().st_mode) == 0o755
    # ... a spawner that rechecks every time tightens it again, as do the spawns after a
    # job died before its server started (the check is forgotten then).
    await spawner_for(log_dir, 0)._ensure_log_dir()
    assert stat.S_IMODE(log_dir.stat().st_mode) == 0o700
    log_dir.chmod(0o755)
    spawner_module._LOG_DIRS_CHECKED.forget(("alice", str(log_dir)))
    await spawner_for(log_dir, 60)._ensure_log_dir()
    assert stat.S_IMODE(log_dir.stat().st_mode) == 0o700


async def test_a_failed_check_is_not_remembered(log_dir: Path) -> None:
    # A plain file where the folder should be: the helper (as alice) cannot make it.
    log_dir.write_text("not a folder")
    shutil.chown(log_dir, "alice")
    with pytest.raises(spawner_module.UserSpawnError) as refused:
        await spawner_for(log_dir, 60)._ensure_log_dir()
    assert refused.value.jupyterhub_message.startswith("Cannot create your job log folder")
    assert not spawner_module._LOG_DIRS_CHECKED.fresh(("alice", str(log_dir)), 60)
    log_dir.unlink()
    await spawner_for(log_dir, 60)._ensure_log_dir()
    assert log_dir.is_dir()
