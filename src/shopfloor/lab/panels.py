"""The small notebooks behind the launcher cards: one hidden code cell that shows a panel.

A card click asks the server for its notebook (:func:`write_panel_notebook`), opens it and
runs it, so the panel appears with no code typed. The notebooks are ordinary files in
``~/shopfloor-panels/``: a user may keep one, copy the code, or rerun it. They are marked in
their metadata (``shopfloor.panel``); a card rewrites only a file that carries its mark and
differs, and never a file the user made under that name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

from shopfloor.lab.examples import write_private

MARK = "shopfloor"


@dataclass(frozen=True)
class PanelCard:
    """A launcher card that opens a panel in a notebook."""

    name: str  #: URL name, e.g. ``compute``
    title: str  #: file name stem and heading, e.g. ``Compute``
    intro: str  #: one line above the panel
    code: str  #: the cell that shows the panel


PANEL_CARDS: dict[str, PanelCard] = {card.name: card for card in (
    PanelCard("compute", "Compute", "Partitions, your sessions and batch runs.",
              "from shopfloor.widgets import ComputePanel\n\nComputePanel()"),
    PanelCard("ray", "Ray cluster", "Start, scale and stop a Ray cluster on Slurm.",
              "from shopfloor.widgets import RayClusterPanel\n\nRayClusterPanel()"),
    PanelCard("finetune", "Fine-tune a model",
              "Fine-tune a model on your own data, step by step.",
              "from shopfloor.widgets import FineTuneWizard\n\nFineTuneWizard()"),
    PanelCard("publish", "Publish as app", "Publish one of your notebooks as an app.",
              "from shopfloor.widgets import PublishPanel\n\nPublishPanel()"),
    PanelCard("workshops", "Workshops", "Your workshops: participants' progress and sessions.",
              "from shopfloor.widgets import TrainerPanel\n\nTrainerPanel()"),
)}


class PanelError(ValueError):
    """A request for a card that does not exist or a notebook that cannot be published."""


def _publish_card(notebook: str, root_dir: Path) -> PanelCard:
    """The Publish card for one notebook (``notebook`` relative to the server's root)."""
    path = (root_dir / notebook).resolve()
    if not notebook.endswith(".ipynb") or root_dir.resolve() not in path.parents:
        raise PanelError(f"{notebook!r} is not a notebook in your files")
    stem = re.sub(r"[^\w.-]+", "-", path.stem).strip("-") or "notebook"
    # json.dumps writes a valid Python string literal for any path (quotes, unicode).
    return PanelCard("publish", f"Publish {stem}", f"Publish {path.name} as an app.",
                     "from shopfloor.widgets import PublishPanel\n\n"
                     f"PublishPanel({json.dumps(str(path))})")


def panel_notebook(card: PanelCard) -> nbformat.NotebookNode:
    """The notebook of one card: a heading and one code cell whose input is folded away."""
    nb = nbformat.v4.new_notebook()
    heading = nbformat.v4.new_markdown_cell(
        f"### {card.title}\n{card.intro} *This notebook is written by the Shopfloor launcher; "
        "save a copy under another name to keep changes.*")
    cell = nbformat.v4.new_code_cell(card.code)
    cell.metadata["jupyter"] = {"source_hidden": True}
    nb.cells = [heading, cell]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata[MARK] = {"panel": card.name}
    # Deterministic ids, so the same card writes the same bytes (no "file changed" prompts).
    for i, c in enumerate(nb.cells):
        c["id"] = f"shopfloor-{card.name}-{i}"
    return nb


def _is_ours(path: Path) -> bool:
    try:
        return MARK in json.loads(path.read_text()).get("metadata", {})
    except (OSError, ValueError, AttributeError):
        return False


def write_panel_notebook(name: str, root_dir: Path, panels_dir: Path,
                         notebook: str | None = None) -> Path:
    """Write (or keep) the notebook of card ``name``; returns its path.

    ``notebook`` (Publish only) is the notebook to publish, relative to ``root_dir``.
    """
    if name not in PANEL_CARDS:
        raise PanelError(f"there is no Shopfloor card {name!r}")
    card = PANEL_CARDS[name]
    if notebook:
        if name != "publish":
            raise PanelError(f"the {card.title} card takes no notebook")
        card = _publish_card(notebook, root_dir)
    text = nbformat.writes(panel_notebook(card)) + "\n"
    panels_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for n in range(100):
        path = panels_dir / (f"{card.title}.ipynb" if n == 0 else f"{card.title} ({n}).ipynb")
        if not path.exists():
            write_private(path, text.encode())
            return path
        if _is_ours(path):
            if path.read_text() != text:
                write_private(path, text.encode())
            return path
    raise PanelError(f"too many files named like {card.title!r} in {panels_dir}")
