"""The fine-tuning wizard driven step by step from Python (no browser, no kernel).

Training is replaced by a job that replays progress events (the real Ray Train run is tested
in tests/integration/test_finetune.py and by the example notebook); every check the wizard
makes before training is the real one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from shopfloor.finetune.catalog import CARD_FILE, ModelCatalog
from shopfloor.finetune.recipe import PRESETS, FineTuneJob, FineTuneResult
from shopfloor.widgets import FineTuneWizard

REVIEWS = Path(__file__).parents[2] / "example_notebooks" / "data" / "reviews.csv"


class EchoModel:
    def ask(self, text: str) -> str:
        return "positive (90% sure)" if "great" in text else "negative (80% sure)"


class ReplayResult(FineTuneResult):
    def load(self) -> EchoModel:  # type: ignore[override]
        return EchoModel()


class ReplayJob(FineTuneJob):
    """Checks for real, then replays the progress a 4-step run would report."""

    def run(self) -> FineTuneResult:
        checked = self.check()
        self._claim_run_dir()
        self._on_event({"event": "start", "step": 0, "total_steps": 4, "workers": 2, "pid": 1})
        for step in range(1, 5):
            self._on_event({"event": "step", "step": step, "epoch": 1, "loss": 1.0 / step,
                            "elapsed": float(step)})
        names = checked.train.label_names
        metrics = {"accuracy": 0.9, "macro_f1": 0.88, "majority_baseline": 0.37,
                   "examples": 64, "labels": names,
                   "confusion_matrix": [[20, 1, 0], [2, 18, 0], [0, 3, 20]]}
        (self.run_dir / "model").mkdir()
        (self.run_dir / "model" / "config.json").write_text("{}")
        self._on_event({"event": "done", "step": 4, "metrics": metrics})
        self.result = ReplayResult(self.recipe, self.run_dir, metrics)
        return self.result


@pytest.fixture
def wizard(tmp_path: Path) -> FineTuneWizard:
    folder = tmp_path / "catalog" / "enc"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / CARD_FILE).write_text(json.dumps({
        "name": "enc", "task": "classification", "licence": "MIT",
        "description": "a small encoder for short texts", "parameters": 1000}))
    return FineTuneWizard(catalog=ModelCatalog(folder.parent), runs=tmp_path / "runs",
                          my_models=tmp_path / "my-models",
                          clusters=lambda: [], job_factory=ReplayJob)


def test_bad_files_stop_at_the_data_step(wizard: FineTuneWizard, tmp_path: Path) -> None:
    assert not wizard.attempt(wizard.next)
    assert wizard.step == "data" and "choose a file" in wizard.message
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    wizard.data_path.value = str(empty)
    assert not wizard.attempt(wizard.next)
    assert wizard.step == "data" and "empty (0 bytes)" in wizard.message
    one = tmp_path / "one.csv"
    one.write_text("text,label\n" + "".join(f"row {i},good\n" for i in range(20)))
    wizard.data_path.value = str(one)
    assert not wizard.attempt(wizard.next)
    assert "at least two different labels" in wizard.message
    assert not (tmp_path / "runs").exists(), "nothing is written or started"


def test_wizard_step_by_step(wizard: FineTuneWizard, tmp_path: Path) -> None:
    original = hashlib.sha256(REVIEWS.read_bytes()).hexdigest()
    # 1. data: an upload is kept as a new file; columns are guessed; the preview shows rows.
    kept = wizard.upload("my reviews.csv", REVIEWS.read_bytes())
    assert kept == tmp_path / "runs" / "uploads" / "my_reviews.csv"
    assert not wizard.attempt(lambda: wizard.upload("my reviews.csv", b"x\n"))
    assert "no rows" in wizard.message  # the bad upload is checked at once ...
    assert kept.read_bytes() == REVIEWS.read_bytes()  # ... and never overwrites another
    assert (kept.parent / "my_reviews~1.csv").read_bytes() == b"x\n"
    wizard.data_path.value = str(REVIEWS)
    wizard.load_preview()
    assert (wizard.text_column.value, wizard.label_column.value) == ("text", "label")
    assert "320 rows" in wizard.preview.value and "<table" in wizard.preview.value
    wizard.label_column.value = None
    assert not wizard.attempt(wizard.next)
    assert "label column: choose the column" in wizard.message
    wizard.label_column.value = "label"
    assert wizard.attempt(wizard.next), wizard.message
    # 2. model: from the catalog, with its one-line explanation.
    assert wizard.step == "model"
    assert wizard.model.value == "enc"
    assert "a small encoder for short texts" in wizard.model_help.value
    assert wizard.attempt(wizard.next)
    # 3. method and preset; the hyperparameters are visible and can be changed.
    assert wizard.step == "method"
    assert wizard.method.value == "top-layers"
    quick = PRESETS["quick"].classification
    assert wizard.advanced["epochs"].value == quick.epochs
    wizard.preset.value = "balanced"
    assert wizard.advanced["max_length"].value == PRESETS["balanced"].classification.max_length
    wizard.preset.value = "quick"
    wizard.advanced["epochs"].value = quick.epochs + 1
    assert wizard.hyperparameter_overrides() == {"epochs": quick.epochs + 1}
    wizard.name.value = "../bad"
    assert not wizard.attempt(wizard.next) and "name" in wizard.message
    wizard.name.value = "reviews-enc"
    assert wizard.attempt(wizard.next), wizard.message
    # 4. compute: this session's Ray when no cluster is ready.
    assert wizard.step == "compute"
    assert [v for _, v in wizard.compute.options] == ["local"]
    assert wizard.attempt(wizard.next)
    # 5. train: can't go on before a result; progress bar, time left and loss curve update.
    assert wizard.step == "train" and wizard.next_button.disabled
    seen: list[str] = []
    wizard.eta.observe(lambda change: seen.append(change["new"]), "value")
    assert wizard.attempt(wizard.start_training)
    result = wizard.wait(timeout=30)
    assert wizard.bar.value == 1.0
    assert any("step 3 of 4" in text and "left" in text for text in seen), seen
    assert "<polyline" in wizard.chart.value
    assert result.recipe.overrides == {"epochs": quick.epochs + 1}
    assert not wizard.next_button.disabled
    # 6. evaluate: accuracy in words and a confusion matrix.
    assert wizard.attempt(wizard.next)
    assert "90% of 64" in wizard.evaluation.value and "really negative" in wizard.evaluation.value
    # 7. try it.
    assert wizard.attempt(wizard.next)
    wizard.question.value = "A great cake"
    assert wizard.attempt(wizard.ask) and "positive" in wizard.answer.value
    # 8. save to "my models", with a word on publishing.
    assert wizard.attempt(wizard.next) and wizard.step == "save"
    wizard.save_name.value = "bakery-reviews"
    saved: list[Any] = []
    assert wizard.attempt(lambda: saved.append(wizard.save()))
    assert saved[0] == tmp_path / "my-models" / "bakery-reviews"
    assert (saved[0] / "shopfloor-model.json").is_file()
    assert "publish" in wizard.saved.value
    assert not wizard.attempt(wizard.save) and "exists already" in wizard.message
    assert hashlib.sha256(REVIEWS.read_bytes()).hexdigest() == original


def test_evaluate_before_training_is_refused(wizard: FineTuneWizard) -> None:
    assert not wizard.attempt(lambda: wizard.go("evaluate"))
    assert "train a model first" in wizard.message
