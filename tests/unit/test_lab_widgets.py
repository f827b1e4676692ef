"""The panels the launcher cards open with no argument: ``PublishPanel()``, ``TrainerPanel()``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shopfloor.widgets import PublishPanel
from shopfloor.widgets.apps_publish import notebooks_under
from shopfloor.widgets.workshops_trainer import TrainerPanel


class FakeApps:
    def __init__(self) -> None:
        self.published: list[str] = []

    def publish(self, notebook: str, **kw: Any) -> dict[str, Any]:
        self.published.append(notebook)
        return {"owner": "alice", "slug": "wave", "version": 1,
                "url": "/services/apps/alice/wave/", "audience_text": "only you"}


def _home(tmp_path: Path) -> Path:
    for rel in ("wave.ipynb", "shopfloor-examples/slider_app.ipynb",
                ".ipynb_checkpoints/wave-checkpoint.ipynb", "shopfloor-panels/compute.ipynb",
                "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}")
    return tmp_path


def test_notebooks_under_skips_hidden_and_launcher_notebooks(tmp_path: Path) -> None:
    assert notebooks_under(_home(tmp_path)) == ["shopfloor-examples/slider_app.ipynb",
                                                "wave.ipynb"]
    assert notebooks_under(tmp_path, limit=1) == ["shopfloor-examples/slider_app.ipynb"]


def test_publish_panel_without_a_notebook_asks_which(tmp_path: Path) -> None:
    client = FakeApps()
    panel = PublishPanel(client=client, home=_home(tmp_path))
    assert panel.choose in panel.children
    assert panel.publish() is None and "Choose the notebook" in panel.status.value
    assert client.published == []
    panel.choose.value = "wave.ipynb"
    panel.title.value = "Wave"
    assert panel.publish() is not None
    assert client.published == [str(tmp_path / "wave.ipynb")]
    assert "Published v1" in panel.status.value


def test_publish_panel_with_a_notebook_does_not_ask(tmp_path: Path) -> None:
    panel = PublishPanel(str(tmp_path / "x.ipynb"), client=FakeApps(), home=tmp_path)
    assert panel.choose not in panel.children and panel.notebook.endswith("x.ipynb")


def test_publish_panel_says_when_there_is_nothing_to_publish(tmp_path: Path) -> None:
    panel = PublishPanel(client=FakeApps(), home=tmp_path)
    assert "no notebook" in panel.status.value


class FakeWorkshops:
    def __init__(self, workshops: list[dict[str, Any]]) -> None:
        self.workshops = workshops
        self.asked: list[str] = []

    def list(self) -> list[dict[str, Any]]:
        return self.workshops

    def status(self, name: str) -> dict[str, Any]:
        self.asked.append(name)
        return {"name": name, "title": name.title(), "code": "ABCD-EFGH", "capacity": 3,
                "state": "active", "end": "2030-05-20T11:00:00", "join_url": "/j"}

    def progress(self, name: str) -> list[Any]:
        return []


def test_trainer_panel_without_a_workshop_follows_the_newest_then_the_chosen() -> None:
    client = FakeWorkshops([
        {"name": "intro", "title": "Intro", "start": "2030-05-01T09:00:00"},
        {"name": "deep", "title": "Deep", "start": "2030-06-01T09:00:00"},
    ])
    panel = TrainerPanel(client=client, auto_refresh=False)
    assert [v for _, v in panel.choose.options] == ["deep", "intro"]
    assert panel.workshop == "deep" and "<h3>Deep</h3>" in panel.header.value
    panel.choose.value = "intro"
    assert panel.workshop == "intro" and "<h3>Intro</h3>" in panel.header.value
    assert client.asked == ["deep", "intro"]


def test_trainer_panel_without_workshops_says_how_to_make_one() -> None:
    panel = TrainerPanel(client=FakeWorkshops([]), auto_refresh=False)
    assert "You train no workshops yet" in panel.status.value
    assert panel.header.value == ""
