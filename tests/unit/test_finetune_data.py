"""Bad input is refused in plain words before any compute, and the user's file is untouched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from shopfloor.finetune.catalog import CARD_FILE, ModelCatalog
from shopfloor.finetune.datasets import (
    DataError,
    classification_examples,
    holdout_split,
    read_table,
)
from shopfloor.finetune.metrics import classification_metrics
from shopfloor.finetune.recipe import PRESETS, Progress, Recipe, RecipeError, check_recipe

REVIEWS = Path(__file__).parents[2] / "example_notebooks" / "data" / "reviews.csv"


def _rows(count: int, labels: tuple[str, ...] = ("good", "bad")) -> list[tuple[str, str]]:
    return [(f"text number {i}", labels[i % len(labels)]) for i in range(count)]


def write_csv(path: Path, rows: list[tuple[str, str]], sep: str = ",",
              header: str = "text,label") -> Path:
    path.write_text("\n".join([header.replace(",", sep), *(f"{t}{sep}{lab}" for t, lab in rows)])
                    + "\n")
    return path


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """A catalog with one classification model card (no weights: checks never load them)."""
    folder = tmp_path / "catalog" / "enc"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / CARD_FILE).write_text(json.dumps({
        "name": "enc", "task": "classification", "licence": "MIT", "description": "an encoder",
        "parameters": 1000}))
    return folder.parent


def recipe_for(data: Path, catalog: Path, **kw: object) -> Recipe:
    settings: dict[str, object] = {"name": "t", "data": str(data), "model": "enc",
                                   "catalog_dir": str(catalog),
                                   "runs_dir": str(data.parent / "runs"), **kw}
    return Recipe(**settings)  # type: ignore[arg-type]


def problems(data: Path, catalog: Path, **kw: object) -> dict[str, str]:
    digest = hashlib.sha256(data.read_bytes()).hexdigest() if data.exists() else None
    mtime = data.stat().st_mtime_ns if data.exists() else None
    with pytest.raises(RecipeError) as info:
        check_recipe(recipe_for(data, catalog, **kw))
    if digest is not None:  # nothing the user gave us is changed
        assert hashlib.sha256(data.read_bytes()).hexdigest() == digest
        assert data.stat().st_mtime_ns == mtime
    assert not (data.parent / "runs").exists(), "no run folder before the data is fine"
    return info.value.problems


def test_good_file_checks_out(tmp_path: Path, catalog: Path) -> None:
    checked = check_recipe(recipe_for(REVIEWS, catalog))
    assert checked.train.label_names == ["negative", "neutral", "positive"]
    assert len(checked.train) + len(checked.test) == 320
    assert "3 classes" in checked.describe()


def test_empty_file(tmp_path: Path, catalog: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert "is empty (0 bytes)" in problems(empty, catalog)["data"]
    blank = tmp_path / "blank.csv"
    blank.write_text("\n\n  \n")
    assert "empty" in problems(blank, catalog)["data"]


def test_header_only(tmp_path: Path, catalog: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_text("text,label\n")
    assert "no rows" in problems(path, catalog)["data"]


def test_wrong_delimiter_is_named(tmp_path: Path, catalog: Path) -> None:
    path = write_csv(tmp_path / "semi.csv", _rows(40), sep=";")
    message = problems(path, catalog, delimiter=",")["delimiter"]
    assert "semicolons" in message and "';'" in message
    # Left to detect it, the same file is fine.
    assert len(check_recipe(recipe_for(path, catalog)).train) > 0


def test_unknown_delimiter_setting(tmp_path: Path, catalog: Path) -> None:
    path = write_csv(tmp_path / "d.csv", _rows(40))
    assert "must be one of" in problems(path, catalog, delimiter="#")["delimiter"]


def test_missing_and_unknown_label_column(tmp_path: Path, catalog: Path) -> None:
    path = write_csv(tmp_path / "d.csv", _rows(40))
    missing = problems(path, catalog, label_column=None)["label_column"]
    assert "choose the column" in missing and "text, label" in missing
    unknown = problems(path, catalog, label_column="category")["label_column"]
    assert "no column 'category'" in unknown and "text, label" in unknown
    assert "no column 'body'" in problems(path, catalog, text_column="body")["text_column"]


def test_blank_labels_name_their_lines(tmp_path: Path, catalog: Path) -> None:
    rows = _rows(40)
    rows[3] = ("no label here", "")
    path = write_csv(tmp_path / "d.csv", rows)
    assert "lines 5" in problems(path, catalog)["label_column"]


def test_non_utf8(tmp_path: Path, catalog: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"text,label\n" + "Très bon café,good\n".encode("latin-1") * 30)
    message = problems(path, catalog)["data"]
    assert "not UTF-8" in message and "line 2" in message and "CSV UTF-8" in message


def test_one_class_only(tmp_path: Path, catalog: Path) -> None:
    path = write_csv(tmp_path / "one.csv", _rows(40, labels=("good",)))
    assert "at least two different labels" in problems(path, catalog)["label_column"]


def test_label_with_a_single_example(tmp_path: Path, catalog: Path) -> None:
    rows = [*_rows(40), ("typo", "god")]
    path = write_csv(tmp_path / "d.csv", rows)
    assert "'god'" in problems(path, catalog)["label_column"]


def test_text_column_as_labels(tmp_path: Path, catalog: Path) -> None:
    path = write_csv(tmp_path / "d.csv", _rows(40))
    message = problems(path, catalog, label_column="text")["label_column"]
    assert "different column" in message


def test_too_few_rows(tmp_path: Path, catalog: Path) -> None:
    path = write_csv(tmp_path / "d.csv", _rows(6))
    assert "at least 10 examples" in problems(path, catalog)["data"]


def test_file_far_larger_than_preset_refused_from_its_size(tmp_path: Path,
                                                          catalog: Path) -> None:
    limit = PRESETS["quick"].limits
    path = tmp_path / "big.csv"
    with path.open("w") as f:
        f.write("text,label\n")
        line = "x" * 200 + ",good\n"
        f.write(line * int(limit.max_megabytes * 1e6 / len(line) + 100))
    message = problems(path, catalog)["data"]
    assert "quick preset" in message and "MB" in message


def test_too_many_rows_for_preset(tmp_path: Path, catalog: Path) -> None:
    path = write_csv(tmp_path / "d.csv", _rows(PRESETS["quick"].limits.max_rows + 1))
    assert "quick preset is made for up to 2,000" in problems(path, catalog)["data"]
    assert check_recipe(recipe_for(path, catalog, preset="balanced"))


def test_ragged_rows_and_quotes_hint(tmp_path: Path, catalog: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,label\n" + "fine,good\n" * 20 + "bad, with comma,bad\n")
    assert "double quotes" in problems(path, catalog)["data"]


def test_jsonl_and_its_errors(tmp_path: Path, catalog: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in _rows(30)))
    assert len(check_recipe(recipe_for(path, catalog)).test) == 6
    path.write_text('{"text": "a", "label": "b"}\nnot json\n')
    assert "line 2 is not valid JSON" in problems(path, catalog)["data"]


def test_unsupported_file_and_missing_file(tmp_path: Path, catalog: Path) -> None:
    xlsx = tmp_path / "d.xlsx"
    xlsx.write_bytes(b"PK")
    assert "CSV" in problems(xlsx, catalog)["data"]
    assert "there is no file" in problems(tmp_path / "nope.csv", catalog)["data"]


def test_recipe_settings_are_checked(tmp_path: Path, catalog: Path) -> None:
    found = problems(REVIEWS, catalog, method="magic", workers=0,
                     overrides={"epochs": 0, "learning_rate": 5.0, "colour": "red"})
    assert set(found) >= {"method", "workers", "overrides"}
    assert "top-layers" in found["method"]
    bad = problems(REVIEWS, catalog, overrides={"epochs": 0})
    assert "epochs" in bad
    assert "no model called 'nope'" in problems(REVIEWS, catalog, model="nope")["model"]
    assert "causal-lm model" in problems(REVIEWS, catalog, task="causal-lm",
                                         label_column=None, method="lora")["model"]
    with pytest.raises(RecipeError) as info:
        check_recipe(Recipe(name="../etc", data=str(REVIEWS), model="enc",
                            catalog_dir=str(catalog)))
    assert "name" in info.value.problems


def test_holdout_keeps_every_label() -> None:
    table = read_table(REVIEWS)
    examples = classification_examples(table, "text", "label")
    train, test = holdout_split(examples, 0.2, seed=1)
    assert len(train) + len(test) == len(examples)
    assert set(test.labels) == set(train.labels) == set(examples.labels)
    assert not set(train.texts) & set(test.texts)
    with pytest.raises(DataError):
        holdout_split(examples, 1.5)


def test_metrics_by_hand() -> None:
    m = classification_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert m["f1_per_class"]["b"] == pytest.approx(0.8)
    assert m["majority_baseline"] == pytest.approx(0.4)


def test_progress_folds_events_and_estimates_time_left() -> None:
    p = Progress()
    p.apply({"event": "start", "step": 0, "total_steps": 10, "workers": 2, "pid": 5})
    for step in range(1, 5):
        p.apply({"event": "step", "step": step, "epoch": 1, "loss": 1.0 / step,
                 "elapsed": 2.0 * step})
    assert p.phase == "training" and p.fraction == pytest.approx(0.4)
    assert p.eta_seconds == pytest.approx(12.0)  # 6 steps left at 2 s each
    p.apply({"event": "start", "step": 2, "total_steps": 10, "resumed": True})
    assert p.resumed_from == 2 and [s for s, _ in p.losses] == [1, 2]
    p.apply({"event": "done", "metrics": {"accuracy": 1.0}})
    assert p.phase == "done" and p.metrics["accuracy"] == 1.0


def test_catalog_lists_and_explains(catalog: Path) -> None:
    entries = ModelCatalog(catalog).models()
    assert [e.name for e in entries] == ["enc"]
    assert "an encoder" in entries[0].summary and "MIT" in entries[0].summary
    assert ModelCatalog(catalog).models(task="causal-lm") == []
    assert ModelCatalog(catalog / "missing").models() == []
