"""The listing of a user's fine-tuned models and runs that their session shows the home page."""

from __future__ import annotations

import json
import os
from pathlib import Path

from shopfloor.finetune.mine import my_models


def card(folder: Path, when: float, **data: object) -> None:
    folder.mkdir(parents=True)
    (folder / "shopfloor-model.json").write_text(json.dumps(data))
    os.utime(folder / "shopfloor-model.json", (when, when))


def test_lists_saved_models_newest_first_and_runs_with_their_state(tmp_path: Path) -> None:
    models, runs = tmp_path / "models", tmp_path / "runs"
    card(models / "old", 1_000, task="classification", base_model="minilm-l6",
         metrics={"accuracy": 0.5}, saved="2025-01-01 10:00")
    card(models / "new", 2_000, task="causal-lm", metrics={"perplexity": 3.2})
    card(models / "broken", 500)
    (models / "broken" / "shopfloor-model.json").write_text("{not json")
    os.utime(models / "broken" / "shopfloor-model.json", (500, 500))
    (models / "huge").mkdir()
    (models / "huge" / "shopfloor-model.json").write_text('{"task": "' + "x" * 70_000 + '"}')
    os.utime(models / "huge" / "shopfloor-model.json", (100, 100))
    (models / "no-card").mkdir()
    (models / "link").symlink_to(models / "old")
    for name, done in (("first", True), ("going", False)):
        (runs / name).mkdir(parents=True)
        (runs / name / "recipe.json").write_text(json.dumps({"task": "classification",
                                                             "model": "minilm-l6"}))
        if done:
            (runs / name / "metrics.json").write_text("{}")
    listing = my_models(models, runs)
    names = [m["name"] for m in listing["models"]]
    assert names[:2] == ["new", "old"] and set(names) == {"new", "old", "broken", "huge"}
    old = next(m for m in listing["models"] if m["name"] == "old")
    assert (old["task"], old["base_model"], old["accuracy"]) == ("classification",
                                                                 "minilm-l6", 0.5)
    assert next(m for m in listing["models"] if m["name"] == "new")["perplexity"] == 3.2
    huge = next(m for m in listing["models"] if m["name"] == "huge")
    assert huge["task"] == "", "a card too large to read is listed without details"
    assert {r["name"]: r["state"] for r in listing["runs"]} == {
        "first": "finished", "going": "not finished"}


def test_nothing_saved_yet(tmp_path: Path) -> None:
    listing = my_models(tmp_path / "missing", tmp_path / "also-missing")
    assert listing["models"] == [] and listing["runs"] == []
