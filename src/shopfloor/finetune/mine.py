"""The fine-tuned models and runs a user owns, as their own session reports them.

Runs as the user (in the session's server extension, :mod:`shopfloor.lab.handlers`): the hub
never reads users' files. Saved models are folders under "my models"
(:func:`shopfloor.finetune.recipe.my_models_dir`, ``~/shopfloor-models``) with a
``shopfloor-model.json`` card written by :meth:`FineTuneResult.save_as`; runs are folders
under :func:`shopfloor.finetune.recipe.runs_dir` (``~/shopfloor-runs``) with a ``recipe.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shopfloor.finetune.catalog import CARD_FILE
from shopfloor.finetune.recipe import RECIPE_FILE, my_models_dir, runs_dir

#: At most this many models and runs are listed (newest first); a card larger than
#: :data:`MAX_CARD_BYTES` is listed without its details.
MAX_ENTRIES = 100
MAX_CARD_BYTES = 64 * 1024


def _read_json(path: Path) -> dict[str, Any]:
    """A small JSON object from ``path``; empty when missing, too large or not an object."""
    try:
        if path.stat().st_size > MAX_CARD_BYTES:
            return {}
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _folders(root: Path, marker: str) -> list[Path]:
    """Sub-folders of ``root`` holding ``marker``, newest first (links are not followed)."""
    try:
        found = [p for p in root.iterdir()
                 if p.is_dir() and not p.is_symlink() and (p / marker).is_file()]
    except OSError:
        return []
    return sorted(found, key=lambda p: (p / marker).stat().st_mtime, reverse=True)[:MAX_ENTRIES]


def my_models(models: Path | None = None, runs: Path | None = None) -> dict[str, Any]:
    """``{"models": [...], "runs": [...]}``: the user's saved models and fine-tuning runs."""
    models = models or my_models_dir()
    runs = runs or runs_dir()
    saved = []
    for folder in _folders(models, CARD_FILE):
        card = _read_json(folder / CARD_FILE)
        metrics = card.get("metrics") if isinstance(card.get("metrics"), dict) else {}
        saved.append({"name": folder.name, "path": str(folder),
                      "task": str(card.get("task", "")),
                      "base_model": str(card.get("base_model", "")),
                      "saved": str(card.get("saved", "")),
                      "accuracy": metrics.get("accuracy"),
                      "perplexity": metrics.get("perplexity")})
    listed = []
    for folder in _folders(runs, RECIPE_FILE):
        recipe = _read_json(folder / RECIPE_FILE)
        listed.append({"name": folder.name, "path": str(folder),
                       "task": str(recipe.get("task", "")), "model": str(recipe.get("model", "")),
                       "state": "finished" if (folder / "metrics.json").is_file() else
                       "not finished"})
    return {"models": saved, "runs": listed, "models_dir": str(models), "runs_dir": str(runs)}


__all__ = ["MAX_ENTRIES", "my_models"]
