"""The guided example notebook runs top to bottom in a real kernel (nbclient), training for real."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from shopfloor.finetune.catalog import build_demo_catalog

EXAMPLES = Path(__file__).parents[2] / "example_notebooks"
NOTEBOOK = EXAMPLES / "finetune_classifier.ipynb"


def _text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out["text"])
            elif "data" in out:
                parts.append(out["data"].get("text/plain", ""))
    return "\n".join(parts)


@pytest.mark.slow
def test_finetune_notebook_top_to_bottom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPFLOOR_MODEL_CATALOG", str(build_demo_catalog(tmp_path / "catalog")))
    monkeypatch.setenv("SHOPFLOOR_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("SHOPFLOOR_MY_MODELS_DIR", str(tmp_path / "my-models"))
    before = (EXAMPLES / "data" / "reviews.csv").read_bytes()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=300,
                   resources={"metadata": {"path": str(EXAMPLES)}}).execute()
    text = _text(nb)
    assert "FineTuneWizard" in text  # the wizard was displayed
    assert "there is no column 'stars'" in text  # the bad-input cell explained itself
    accuracy = re.search(r"accuracy (\d+)%", text)
    assert accuracy and int(accuracy.group(1)) >= 80, text
    assert "→ negative" in text
    saved = re.search(r"saved to (\S+)", text)
    assert saved and Path(saved.group(1)).parent == tmp_path / "my-models"
    assert (tmp_path / "runs" / "reviews-notebook" / "metrics.json").is_file()
    assert (EXAMPLES / "data" / "reviews.csv").read_bytes() == before
