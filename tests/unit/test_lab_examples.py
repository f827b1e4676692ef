"""Examples copied into the user's home at a session's start, never over the user's edits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shopfloor.lab.config import packaged_examples
from shopfloor.lab.examples import MANIFEST, copy_examples


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "v1"
    (src / "data").mkdir(parents=True)
    (src / "slider_app.ipynb").write_text("slider v1")
    (src / "data" / "reviews.csv").write_text("text,label\n")
    (src / ".ipynb_checkpoints").mkdir()
    (src / ".ipynb_checkpoints" / "x.ipynb").write_text("cache")
    (src / "__init__.py").write_text('"""shopfloor.examples"""')
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"")
    return src


def test_first_start_copies_everything_private(source: Path, tmp_path: Path) -> None:
    home = tmp_path / "home" / "shopfloor-examples"
    report = copy_examples(source, home, "0.1.0")
    assert sorted(report.copied) == ["data/reviews.csv", "slider_app.ipynb"]
    assert (home / "slider_app.ipynb").read_text() == "slider v1"
    assert not (home / ".ipynb_checkpoints").exists()
    assert (home / "slider_app.ipynb").stat().st_mode & 0o077 == 0
    assert json.loads((home / MANIFEST).read_text())["version"] == "0.1.0"
    again = copy_examples(source, home, "0.1.0")
    assert again.copied == [] and sorted(again.unchanged) == ["data/reviews.csv",
                                                              "slider_app.ipynb"]


def test_an_unedited_copy_follows_the_new_version(source: Path, tmp_path: Path) -> None:
    home = tmp_path / "ex"
    copy_examples(source, home, "0.1.0")
    (source / "slider_app.ipynb").write_text("slider v2")
    report = copy_examples(source, home, "0.2.0")
    assert report.updated == ["slider_app.ipynb"]
    assert (home / "slider_app.ipynb").read_text() == "slider v2"


def test_a_new_version_goes_beside_the_users_edits(source: Path, tmp_path: Path) -> None:
    home = tmp_path / "ex"
    copy_examples(source, home, "0.1.0")
    (home / "slider_app.ipynb").write_text("my edits")
    (source / "slider_app.ipynb").write_text("slider v2")
    report = copy_examples(source, home, "0.2.0")
    assert report.beside == ["slider_app.v0.2.0.ipynb"]
    assert (home / "slider_app.ipynb").read_text() == "my edits"
    assert (home / "slider_app.v0.2.0.ipynb").read_text() == "slider v2"
    # The next start changes nothing (and does not add a second copy).
    report = copy_examples(source, home, "0.2.0")
    assert report.beside == [] and report.copied == [] and report.updated == []
    assert (home / "slider_app.ipynb").read_text() == "my edits"


def test_a_users_own_file_of_that_name_is_kept(source: Path, tmp_path: Path) -> None:
    home = tmp_path / "ex"
    home.mkdir()
    (home / "slider_app.ipynb").write_text("mine, made before")
    report = copy_examples(source, home, "0.1.0")
    assert report.beside == ["slider_app.v0.1.0.ipynb"]
    assert (home / "slider_app.ipynb").read_text() == "mine, made before"


def test_a_deleted_example_stays_deleted_until_a_new_version(source: Path,
                                                             tmp_path: Path) -> None:
    home = tmp_path / "ex"
    copy_examples(source, home, "0.1.0")
    (home / "slider_app.ipynb").unlink()
    assert copy_examples(source, home, "0.1.0").left_deleted == ["slider_app.ipynb"]
    assert not (home / "slider_app.ipynb").exists()
    (source / "slider_app.ipynb").write_text("slider v2")
    assert copy_examples(source, home, "0.2.0").copied == ["slider_app.ipynb"]


def test_no_source_copies_nothing(tmp_path: Path) -> None:
    report = copy_examples(tmp_path / "missing", tmp_path / "ex", "0.1.0")
    assert report.summary() == "no examples"
    assert not (tmp_path / "ex").exists()


def test_the_installed_package_ships_the_examples() -> None:
    source = Path(packaged_examples())
    assert (source / "slider_app.ipynb").is_file() and (source / "data" / "reviews.csv").is_file()
