"""The notebooks behind the Shopfloor launcher cards (one hidden cell that shows a panel)."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from shopfloor.lab.panels import PANEL_CARDS, PanelError, write_panel_notebook


@pytest.mark.parametrize("card", sorted(PANEL_CARDS))
def test_each_card_writes_a_runnable_notebook(card: str, tmp_path: Path) -> None:
    path = write_panel_notebook(card, tmp_path, tmp_path / "shopfloor-panels")
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) == 1 and code[0].metadata["jupyter"]["source_hidden"]
    ast.parse(code[0].source)
    assert "from shopfloor.widgets import" in code[0].source
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert path.stat().st_mode & 0o077 == 0


def test_a_second_click_keeps_the_same_file(tmp_path: Path) -> None:
    first = write_panel_notebook("compute", tmp_path, tmp_path / "p")
    mtime = first.stat().st_mtime_ns
    again = write_panel_notebook("compute", tmp_path, tmp_path / "p")
    assert again == first and again.stat().st_mtime_ns == mtime  # no "file changed" prompt


def test_a_users_file_of_that_name_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "Compute.ipynb").write_text("my notebook")
    path = write_panel_notebook("compute", tmp_path, tmp_path / "p")
    assert path.name == "Compute (1).ipynb"
    assert (tmp_path / "p" / "Compute.ipynb").read_text() == "my notebook"


def test_publish_names_the_notebook_as_a_python_string(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    name = 'work/it\'s "quoted".ipynb'
    path = write_panel_notebook("publish", tmp_path, tmp_path / "p", notebook=name)
    code = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    call = ast.parse(code.source).body[-1].value
    assert isinstance(call, ast.Call) and call.func.id == "PublishPanel"
    assert call.args[0].value == str((tmp_path / name).resolve())
    assert path.name.startswith("Publish it")


@pytest.mark.parametrize(("card", "notebook", "message"), [
    ("nope", None, "no Shopfloor card"),
    ("compute", "a.ipynb", "takes no notebook"),
    ("publish", "../outside.ipynb", "not a notebook in your files"),
    ("publish", "/etc/passwd", "not a notebook in your files"),
    ("publish", "notes.txt", "not a notebook in your files"),
])
def test_bad_requests_are_refused(card: str, notebook: str | None, message: str,
                                  tmp_path: Path) -> None:
    with pytest.raises(PanelError, match=message):
        write_panel_notebook(card, tmp_path / "home", tmp_path / "home" / "p", notebook)
