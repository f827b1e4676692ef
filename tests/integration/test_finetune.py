"""Fine-tuning for real: Ray Train on a small local Ray "cluster", the packaged models.

The local Ray instance stands in for a Shopfloor Ray cluster (the same code runs there as a
Ray job): 2 CPUs, a 100 MB object store, no dashboard.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shopfloor.finetune.catalog import MINILM_NAME, TINY_LM_NAME, build_demo_catalog
from shopfloor.finetune.recipe import FineTuneJob, Progress, Recipe

pytestmark = pytest.mark.slow

REVIEWS = Path(__file__).parents[2] / "example_notebooks" / "data" / "reviews.csv"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_catalog(tmp_path_factory.mktemp("catalog"))


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    import ray

    ray.init(num_cpus=2, object_store_memory=100 * 1024 * 1024, include_dashboard=False,
             log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def reviews_recipe(tmp_path: Path, catalog: Path, name: str) -> Recipe:
    return Recipe(name=name, data=str(REVIEWS), model=MINILM_NAME, text_column="text",
                  label_column="label", preset="quick", workers=2, runs_dir=str(tmp_path),
                  catalog_dir=str(catalog))


def test_classifier_learns_reviews(tmp_path: Path, catalog: Path, local_ray: None) -> None:
    seen: list[Progress] = []
    job = FineTuneJob(reviews_recipe(tmp_path, catalog, "reviews"),
                      on_progress=lambda p: seen.append(p))
    result = job.run()
    m = result.metrics
    # A real learning signal: always answering the most common label gets under 0.4.
    assert m["majority_baseline"] < 0.4
    assert m["accuracy"] >= 0.8, m
    assert m["macro_f1"] >= 0.75
    assert sum(map(sum, m["confusion_matrix"])) == m["examples"] == 64
    # Progress reached the caller: steps with losses, an ETA while training, then done.
    assert job.progress.phase == "done" and job.progress.step == job.progress.total_steps
    assert len(job.progress.losses) == job.progress.total_steps
    assert seen and result.summary().startswith(f"{m['accuracy']:.0%}")
    # Checkpoints and metrics on the user's storage; the model answers sensibly.
    run = tmp_path / "reviews"
    assert (run / "metrics.json").is_file() and (run / "recipe.json").is_file()
    assert list(run.glob("checkpoint_*"))
    model = result.load()
    assert model.predict("The cake was terrible, a huge disappointment.").label == "negative"
    saved = result.save_as("my-reviews", tmp_path / "my-models")
    card = json.loads((saved / "shopfloor-model.json").read_text())
    assert card["base_model"] == MINILM_NAME and card["metrics"]["accuracy"] == m["accuracy"]


def test_killed_worker_resumes_from_checkpoint(tmp_path: Path, catalog: Path,
                                               local_ray: None) -> None:
    job = FineTuneJob(reviews_recipe(tmp_path, catalog, "killed"))
    job.start()
    deadline = time.monotonic() + 120
    progress_file = tmp_path / "killed" / "progress.jsonl"
    # Wait until Ray Train has registered a checkpoint (its snapshot names one), not merely
    # until the worker wrote it: a worker killed before that restarts from the beginning.
    snapshot = tmp_path / "killed" / "checkpoint_manager_snapshot.json"
    while time.monotonic() < deadline:
        if snapshot.exists() and "checkpoint_" in snapshot.read_text():
            break
        time.sleep(0.1)
    else:
        pytest.fail("no checkpoint within 120 s")
    pid = json.loads(progress_file.read_text().splitlines()[0])["pid"]
    os.kill(pid, signal.SIGKILL)  # the rank-0 training worker dies mid-run
    result = job.wait(timeout=180)
    events = [json.loads(line) for line in progress_file.read_text().splitlines()]
    starts = [e for e in events if e["event"] == "start"]
    assert len(starts) == 2, starts
    timeline = " ".join(f"{e['event']}:{e.get('step')}" for e in events)
    assert starts[1]["resumed"] and starts[1]["step"] >= 5, timeline
    assert starts[1]["pid"] != pid
    assert job.progress.resumed_from == starts[1]["step"]
    assert result.metrics["accuracy"] >= 0.5


def test_instruction_tuning_with_lora_and_rerun_resumes(
    tmp_path: Path, catalog: Path, local_ray: None
) -> None:
    data = tmp_path / "answers.jsonl"
    colours = {"sky": "blue", "grass": "green", "snow": "white", "coal": "black"}
    with data.open("w") as f:
        for i in range(40):
            thing = list(colours)[i % 4]
            f.write(json.dumps({"prompt": f"{i}: colour of {thing}?",
                                "answer": colours[thing]}) + "\n")
    recipe = Recipe(name="colours", data=str(data), model=TINY_LM_NAME, task="causal-lm",
                    text_column="prompt", label_column="answer", method="lora",
                    overrides={"epochs": 2, "batch_size": 8}, workers=1, runs_dir=str(tmp_path),
                    catalog_dir=str(catalog))
    first = FineTuneJob(recipe).run()
    assert first.metrics["perplexity"] > 0
    assert len(first.metrics["samples"]) == 3
    assert isinstance(first.load().answer("colour of sky?"), str)
    # The same recipe again continues from the last checkpoint (here: the end) instead of
    # starting over.
    again = FineTuneJob(recipe)
    again.run()
    assert again.progress.resumed_from == again.progress.total_steps
    # A different recipe under the same name is refused, not mixed with the old run.
    changed = Recipe(**{**recipe.to_json(), "overrides": {"epochs": 3, "batch_size": 8}})
    with pytest.raises(ValueError, match="exists with other settings"):
        FineTuneJob(changed).run()
