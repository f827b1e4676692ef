"""Version notes ("What changed"): checked, stored per version, listed by the API, CLI and panel."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shopfloor.apps.cli import add_apps_parser, version_lines
from shopfloor.apps.model import NOTE_MAX, AppInputError, AppStore, validate_publish
from shopfloor.site import AppsSettings
from shopfloor.widgets import PublishPanel

NOTEBOOK = Path(__file__).resolve().parents[2] / "example_notebooks" / "slider_app.ipynb"


def check(**raw: Any) -> Any:
    return validate_publish(
        {"notebook": "w/app.ipynb", "title": "Wave", **raw}, home="/home/alice",
        settings=AppsSettings(), user_exists=lambda n: False, group_exists=lambda n: False)


@pytest.mark.parametrize("note", [
    "x" * (NOTE_MAX + 1),          # too long
    "line one\nline two",          # one line only
    "sneaky\u202eright-to-left",   # invisible direction override
    "bell\x07",                    # control character
    42,                            # not text
    ["a list"],
])
def test_bad_notes_are_refused_naming_the_field(note: Any) -> None:
    with pytest.raises(AppInputError) as info:
        check(note=note)
    assert list(info.value.problems) == ["note"]


def test_a_note_is_optional_and_trimmed() -> None:
    assert check().note == ""
    assert check(note=None).note == ""
    assert check(note="  Faster plot  ").note == "Faster plot"
    assert check(note="<b>bold</b> & co").note == "<b>bold</b> & co"  # escaped where shown


@pytest.fixture
def store() -> Iterator[AppStore]:
    folder = Path(tempfile.mkdtemp(prefix="shopfloor-notes-unit-", dir="/tmp"))
    folder.chmod(0o711)
    yield AppStore(folder / "apps", AppsSettings())
    shutil.rmtree(folder)


def test_each_version_keeps_its_note_through_republish_and_rollback(store: AppStore) -> None:
    def read(path: str, limit: int) -> bytes:
        return NOTEBOOK.read_bytes()

    store.publish("alice", check(note="First cut"), {"partition": "cpu"}, read)
    app = store.publish("alice", check(note="Faster plot"), {"partition": "cpu"}, read)
    summary = app.summary()
    assert summary["note"] == "Faster plot"
    assert [(v["version"], v["note"]) for v in summary["history"]] == [
        (1, "First cut"), (2, "Faster plot")]
    back = store.rollback("alice", "wave").summary()
    assert (back["version"], back["note"]) == (1, "First cut")
    assert [v["note"] for v in back["history"]] == ["First cut", "Faster plot"]
    # A store written before notes existed still loads: its versions have none.
    path = store.app_dir("alice", "wave") / "app.json"
    data = json.loads(path.read_text())
    for version in data["versions"]:
        del version["note"]
    path.write_text(json.dumps(data))
    assert [v["note"] for v in store.get("alice", "wave").summary()["history"]] == ["", ""]


def test_cli_sends_the_note_and_lists_versions_newest_first() -> None:
    parser = argparse.ArgumentParser()
    add_apps_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["apps", "publish", "x.ipynb", "--title", "Wave",
                              "--note", "Faster plot"])
    assert args.note == "Faster plot"
    app = {"version": 1, "history": [
        {"version": 1, "created": 0, "title": "Wave", "note": "First cut"},
        {"version": 2, "created": 60, "title": "Wave", "note": ""}]}
    lines = version_lines(app)
    assert lines[0].startswith("  v2") and lines[0].endswith("(no note)")
    assert lines[1].startswith("* v1") and lines[1].endswith("First cut")


class FakeApps:
    def __init__(self) -> None:
        self.sent: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []

    def publish(self, notebook: str, **kw: Any) -> dict[str, Any]:
        self.sent = kw
        number = len(self.history) + 1
        self.history.append({"version": number, "created": 0, "title": kw["title"],
                             "note": kw["note"]})
        return {"owner": "alice", "slug": "wave", "version": number, "note": kw["note"],
                "url": "/services/apps/alice/wave/", "audience_text": "only the owner",
                "history": list(self.history)}

    def rollback(self, owner: str, slug: str) -> dict[str, Any]:
        first = self.history[0]
        return {"version": 1, "note": first["note"], "history": list(self.history)}


def test_panel_sends_what_changed_and_lists_the_versions() -> None:
    client = FakeApps()
    panel = PublishPanel("slider_app.ipynb", client=client)
    panel.title.value = "Wave"
    panel.note.value = "First <cut>"
    panel.publish()
    assert client.sent["note"] == "First <cut>"
    assert panel.note.value == ""  # the next version gets its own note
    assert "First &lt;cut&gt;" in panel.versions.value and "<cut>" not in panel.versions.value
    panel.note.value = "Faster plot"
    panel.publish()
    listed = panel.versions.value
    assert listed.index("v2") < listed.index("v1") and "v2</b> (serving): Faster plot" in listed
    panel.rollback()
    assert "Now serving v1: First &lt;cut&gt;" in panel.status.value
    assert "v1</b> (serving)" in panel.versions.value
