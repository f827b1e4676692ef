"""The hub's private state helpers: folders 0700 and files 0600, tightened when looser."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from shopfloor.extensions.install import secure_hub_state
from shopfloor.userfiles import private_dir, private_file


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_existing_loose_state_is_tightened(tmp_path: Path) -> None:
    state = tmp_path / "hub"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    (state / "jupyterhub.log").write_text("x")
    (state / "jupyterhub.log").chmod(0o644)
    (state / "jupyterhub_cookie_secret").write_text("s")
    (state / "jupyterhub_cookie_secret").chmod(0o644)
    secure_hub_state(state)
    assert mode(state) == 0o700
    for name in ("jupyterhub.sqlite", "jupyterhub.log", "jupyterhub_cookie_secret"):
        assert mode(state / name) == 0o600, name
    assert (state / "jupyterhub.log").read_text() == "x"


def test_new_state_folder_leaves_parents_traversable(tmp_path: Path) -> None:
    private_dir(tmp_path / "shopfloor" / "hub")
    assert mode(tmp_path / "shopfloor" / "hub") == 0o700
    assert mode(tmp_path / "shopfloor") & 0o011  # apps and cluster state live beside it


def test_private_file_refuses_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    target.chmod(0o644)
    os.symlink(target, tmp_path / "jupyterhub.log")
    with pytest.raises(OSError):
        private_file(tmp_path / "jupyterhub.log")
    assert mode(target) == 0o644
