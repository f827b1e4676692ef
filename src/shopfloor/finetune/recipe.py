"""Fine-tuning recipes: your data + a catalog model + a preset, trained with Ray Train.

The plain objects behind the guided wizard (``shopfloor.widgets.FineTuneWizard``), usable
from code::

    from shopfloor.finetune.recipe import FineTuneJob, Recipe

    recipe = Recipe(name="reviews", data="~/reviews.csv", model="minilm-l6",
                    text_column="text", label_column="label", preset="quick")
    job = FineTuneJob(recipe, on_progress=print)
    job.check()            # reads and checks the data and model; no compute spent
    result = job.run()     # Ray Train TorchTrainer on the current Ray cluster (or a local one)
    result.metrics["accuracy"], result.load().predict("Lovely bread!")

Two tasks: ``classification`` (an encoder such as MiniLM gets a classification head; train
the top layers, all weights, or LoRA adapters) and ``causal-lm`` (instruction tuning of a
causal LM: prompt and answer columns; LoRA or all weights). Checkpoints, progress and metrics
go to ``~/shopfloor-runs/<name>/``; running a recipe with the same name again resumes from
its last checkpoint, and a failed worker is restarted from it (``max_failures``).

The same recipe runs as a Ray job on a Shopfloor Ray cluster:
``python -m shopfloor.finetune.recipe run ~/shopfloor-runs/<name>/recipe.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shopfloor.finetune.access import SiteCatalog, check_access, session_catalog
from shopfloor.finetune.catalog import CatalogError, ModelCatalog, ModelEntry
from shopfloor.finetune.datasets import (
    DataError,
    DataLimits,
    Examples,
    ProblemsError,
    Table,
    classification_examples,
    holdout_split,
    instruction_examples,
    read_table,
)

RUNS_ENV = "SHOPFLOOR_RUNS_DIR"
MY_MODELS_ENV = "SHOPFLOOR_MY_MODELS_DIR"
DEFAULT_RUNS_DIR = "~/shopfloor-runs"
DEFAULT_MY_MODELS_DIR = "~/shopfloor-models"
RECIPE_FILE = "recipe.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

METHODS: dict[str, dict[str, str]] = {
    "classification": {
        "top-layers": "train the classification head and the top layers (fast, robust)",
        "full": "train every weight (slowest; best with lots of data)",
        "lora": "train small LoRA adapters inside the model (few weights, low memory)",
    },
    "causal-lm": {
        "lora": "train small LoRA adapters inside the model (few weights, low memory)",
        "full": "train every weight (needs the most memory)",
    },
}


class RecipeError(ProblemsError):
    """A recipe cannot run as it is."""


@dataclass(frozen=True)
class Hyperparameters:
    """The knobs of a run; presets fill them, "advanced" shows and changes them."""

    epochs: int
    learning_rate: float
    batch_size: int
    max_length: int
    train_layers: int
    lora_rank: int
    holdout: float = 0.2
    checkpoint_every: int = 5

    def check(self) -> dict[str, str]:
        """Plain-language problems with these values (empty when all are fine)."""
        bounds = {"epochs": (1, 100), "batch_size": (1, 1024), "max_length": (8, 8192),
                  "train_layers": (0, 1000), "lora_rank": (1, 256),
                  "checkpoint_every": (1, 1_000_000)}
        problems = {}
        for name, (low, high) in bounds.items():
            value = getattr(self, name)
            if not isinstance(value, int) or not low <= value <= high:
                problems[name] = f"must be a whole number from {low} to {high}, not {value!r}"
        if not 0 < self.learning_rate <= 1:
            problems["learning_rate"] = f"must be above 0 and at most 1, not {self.learning_rate}"
        if not 0.05 <= self.holdout <= 0.5:
            problems["holdout"] = f"must be between 0.05 and 0.5, not {self.holdout}"
        return problems


@dataclass(frozen=True)
class Preset:
    """A named set of hyperparameters and the data size it is made for."""

    name: str
    description: str
    limits: DataLimits
    classification: Hyperparameters
    causal_lm: Hyperparameters

    def hyperparameters(self, task: str) -> Hyperparameters:
        return self.classification if task == "classification" else self.causal_lm


PRESETS: dict[str, Preset] = {
    "quick": Preset(
        "quick", "a first result in a minute or two: few passes over up to 2,000 examples",
        DataLimits("quick", 2_000, 2),
        Hyperparameters(2, 1e-4, 16, 48, 2, 4, checkpoint_every=5),
        Hyperparameters(3, 3e-3, 16, 96, 0, 8, checkpoint_every=5),
    ),
    "balanced": Preset(
        "balanced", "a solid model for up to 20,000 examples (minutes to an hour)",
        DataLimits("balanced", 20_000, 20),
        Hyperparameters(3, 5e-5, 16, 128, 4, 8, checkpoint_every=50),
        Hyperparameters(3, 1e-3, 16, 256, 0, 16, checkpoint_every=50),
    ),
    "thorough": Preset(
        "thorough", "the best quality for up to 200,000 examples (hours; use a GPU)",
        DataLimits("thorough", 200_000, 200),
        Hyperparameters(5, 3e-5, 32, 256, 1000, 16, checkpoint_every=200),
        Hyperparameters(5, 5e-4, 16, 512, 0, 32, checkpoint_every=200),
    ),
}


def runs_dir() -> Path:
    """Where runs go: ``$SHOPFLOOR_RUNS_DIR`` or ``~/shopfloor-runs``."""
    return Path(os.environ.get(RUNS_ENV) or DEFAULT_RUNS_DIR).expanduser()


def my_models_dir() -> Path:
    """Where saved models go: ``$SHOPFLOOR_MY_MODELS_DIR`` or ``~/shopfloor-models``."""
    return Path(os.environ.get(MY_MODELS_ENV) or DEFAULT_MY_MODELS_DIR).expanduser()


@dataclass
class Recipe:
    """Everything a fine-tuning run needs, as plain values (saved as ``recipe.json``)."""

    name: str
    data: str
    model: str
    task: str = "classification"
    text_column: str | None = "text"
    label_column: str | None = "label"
    delimiter: str | None = None
    method: str | None = None
    preset: str = "quick"
    overrides: dict[str, Any] = field(default_factory=dict)
    workers: int = 2
    cpus_per_worker: int = 1
    use_gpu: bool = False
    seed: int = 0
    max_failures: int = 1
    runs_dir: str | None = None
    catalog_dir: str | None = None
    #: Site datasets/models whose licence the user accepted (by catalog name).
    accepted_licences: list[str] = field(default_factory=list)

    @property
    def chosen_method(self) -> str:
        return self.method or ("top-layers" if self.task == "classification" else "lora")

    @property
    def run_dir(self) -> Path:
        return (Path(self.runs_dir).expanduser() if self.runs_dir else runs_dir()) / self.name

    def hyperparameters(self) -> Hyperparameters:
        """The preset's values for this task, with ``overrides`` applied."""
        base = PRESETS[self.preset].hyperparameters(self.task)
        known = {f.name for f in dataclasses.fields(Hyperparameters)}
        return dataclasses.replace(base, **{k: v for k, v in self.overrides.items()
                                            if k in known})

    def problems(self) -> dict[str, str]:
        """Problems with the settings themselves (not the data or model files)."""
        problems: dict[str, str] = {}
        if not _NAME_RE.match(self.name):
            problems["name"] = ("use 1-64 letters, digits, '.', '_' or '-', starting with a "
                                f"letter or digit (not {self.name!r})")
        if self.task not in METHODS:
            problems["task"] = f"must be one of {', '.join(METHODS)}, not {self.task!r}"
            return problems
        if self.chosen_method not in METHODS[self.task]:
            problems["method"] = (f"for {self.task} choose one of "
                                  f"{', '.join(METHODS[self.task])}, not {self.method!r}")
        if self.preset not in PRESETS:
            problems["preset"] = f"must be one of {', '.join(PRESETS)}, not {self.preset!r}"
            return problems
        unknown = set(self.overrides) - {f.name for f in dataclasses.fields(Hyperparameters)}
        if unknown:
            problems["overrides"] = f"unknown settings: {', '.join(sorted(unknown))}"
        problems.update(self.hyperparameters().check())
        if not 1 <= self.workers <= 64:
            problems["workers"] = f"must be from 1 to 64, not {self.workers}"
        if not 1 <= self.cpus_per_worker <= 128:
            problems["cpus_per_worker"] = f"must be from 1 to 128, not {self.cpus_per_worker}"
        if not 0 <= self.max_failures <= 10:
            problems["max_failures"] = f"must be from 0 to 10, not {self.max_failures}"
        return problems

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Recipe:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise RecipeError({"recipe": f"unknown settings: {', '.join(sorted(unknown))}"})
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        return cls.from_json(json.loads(Path(path).expanduser().read_text()))


@dataclass
class CheckedRecipe:
    """A recipe whose data and model were read and found usable."""

    recipe: Recipe
    model: ModelEntry
    table: Table
    train: Examples
    test: Examples
    hyperparameters: Hyperparameters

    def describe(self) -> str:
        return (f"{self.train.describe()} {len(self.test)} more are kept aside to test the "
                f"model. Model: {self.model.name}; method: {self.recipe.chosen_method}; "
                f"preset: {self.recipe.preset}.")


def read_examples(recipe: Recipe, limits: DataLimits | None = None) -> tuple[Table, Examples]:
    """Read and check the recipe's data file (it is never changed)."""
    table = read_table(recipe.data, recipe.delimiter, limits)
    if recipe.task == "classification":
        return table, classification_examples(
            table, recipe.text_column, recipe.label_column, limits)
    return table, instruction_examples(table, recipe.text_column, recipe.label_column, limits)


def check_recipe(recipe: Recipe, site_catalog: SiteCatalog | None = None) -> CheckedRecipe:
    """Check settings, model and data before any compute; raises :class:`RecipeError`.

    Inside a hub session (or with ``site_catalog``) the site catalog's rules apply too: a
    model or dataset the user's groups may not use is refused, and so is a dataset whose
    licence must be accepted until its name is in ``recipe.accepted_licences``.
    """
    problems = recipe.problems()
    if problems:
        raise RecipeError(problems)
    try:
        model = ModelCatalog(recipe.catalog_dir).get(recipe.model)
    except CatalogError as exc:
        raise RecipeError({"model": str(exc)}) from None
    if model.task != recipe.task:
        raise RecipeError({"model": (
            f"{model.name} is a {model.task} model; choose a {recipe.task} model for this task")})
    site_catalog = site_catalog or session_catalog()
    if site_catalog is not None:
        problems = check_access(site_catalog, data=recipe.data, model=model.path,
                                accepted_licences=recipe.accepted_licences)
        if problems:
            raise RecipeError(problems)
    hyper = recipe.hyperparameters()
    try:
        table, examples = read_examples(recipe, PRESETS[recipe.preset].limits)
        train, test = holdout_split(examples, hyper.holdout, recipe.seed)
    except DataError as exc:
        raise RecipeError(exc.problems) from None
    if len(train) < recipe.workers * hyper.batch_size // 4:
        raise RecipeError({"workers": (
            f"{len(train)} training examples are too few for {recipe.workers} workers with "
            f"batches of {hyper.batch_size}: use fewer workers or a smaller batch size")})
    return CheckedRecipe(recipe, model, table, train, test, hyper)


# --- progress ---------------------------------------------------------------------------------


@dataclass
class Progress:
    """What a run is doing, folded from its progress events; given to ``on_progress``."""

    phase: str = "waiting"  # waiting, starting, training, evaluating, done, failed
    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)
    elapsed: float = 0.0
    resumed_from: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    worker_pid: int | None = None
    _rate_start: tuple[float, int] | None = None

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the pace since this (re)start, or None before two steps."""
        if self._rate_start is None or self.phase != "training":
            return None
        seconds, first = self._rate_start
        done = self.step - first
        if done < 1 or self.elapsed <= seconds:
            return None
        return (self.total_steps - self.step) * (self.elapsed - seconds) / done

    def apply(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "start":
            self.phase, self.step = "training", int(event["step"])
            self.total_steps = int(event["total_steps"])
            self.worker_pid = event.get("pid")
            self._rate_start = None
            if event.get("resumed"):
                self.resumed_from = self.step
                self.losses = [(s, v) for s, v in self.losses if s <= self.step]
            self.message = (f"resumed from step {self.step}" if event.get("resumed")
                            else f"training on {event.get('workers')} workers")
        elif kind == "step":
            self.step, self.epoch = int(event["step"]), int(event["epoch"])
            self.elapsed = float(event["elapsed"])
            self.losses.append((self.step, float(event["loss"])))
            if self._rate_start is None:
                self._rate_start = (self.elapsed, self.step)
        elif kind == "evaluating":
            self.phase, self.message = "evaluating", "testing on the held-out examples"
        elif kind == "done":
            self.phase, self.metrics = "done", dict(event.get("metrics") or {})
            self.message = "finished"


class ProgressWatcher(threading.Thread):
    """Follows a run's ``progress.jsonl`` and calls back on every change."""

    def __init__(self, path: Path, callback: Callable[[dict[str, Any]], None],
                 interval: float = 0.25) -> None:
        super().__init__(daemon=True, name="shopfloor-progress")
        self.path, self.callback, self.interval = path, callback, interval
        self.offset = path.stat().st_size if path.exists() else 0
        self._stop_event = threading.Event()

    def poll(self) -> None:
        from shopfloor.finetune.trainloop import iter_progress

        for offset, event in iter_progress(self.path, self.offset):
            self.offset = offset
            self.callback(event)

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.poll()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)
        self.poll()


# --- results ----------------------------------------------------------------------------------


@dataclass
class Prediction:
    """A classifier's answer: the label and the probability of every label."""

    label: str
    scores: dict[str, float]


class FineTunedModel:
    """A fine-tuned model loaded from its folder, ready to answer."""

    def __init__(self, folder: str | Path, task: str) -> None:
        import torch
        from transformers import (
            AutoModelForCausalLM,
            AutoModelForSequenceClassification,
            AutoTokenizer,
        )

        self.folder, self.task = Path(folder), task
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        loader = AutoModelForSequenceClassification if task == "classification" else (
            AutoModelForCausalLM)
        self.model = loader.from_pretrained(self.folder).eval()
        self._torch = torch

    def predict(self, text: str) -> Prediction:
        """The label for ``text`` (classification models)."""
        with self._torch.no_grad():
            logits = self.model(**self.tokenizer(text, return_tensors="pt",
                                                  truncation=True)).logits[0]
        probs = logits.softmax(-1).tolist()
        names = self.model.config.id2label
        scores = {str(names[i]): p for i, p in enumerate(probs)}
        return Prediction(max(scores, key=lambda k: scores[k]), scores)

    def answer(self, prompt: str, max_new_tokens: int = 40) -> str:
        """The model's answer to ``prompt`` (instruction-tuned causal LMs)."""
        from shopfloor.finetune.trainloop import generate

        return generate(self.model, self.tokenizer, prompt, self._torch.device("cpu"),
                        max_new_tokens=max_new_tokens)

    def ask(self, text: str) -> str:
        """Either kind of model, as one line of text (the wizard's "try it")."""
        if self.task == "classification":
            p = self.predict(text)
            return f"{p.label} ({p.scores[p.label]:.0%} sure)"
        return self.answer(text)


@dataclass
class FineTuneResult:
    """A finished run: where it is, its held-out metrics, and its model."""

    recipe: Recipe
    run_dir: Path
    metrics: dict[str, Any]

    @property
    def model_dir(self) -> Path:
        return self.run_dir / "model"

    def load(self) -> FineTunedModel:
        return FineTunedModel(self.model_dir, self.recipe.task)

    def summary(self) -> str:
        """The result in one plain sentence."""
        m = self.metrics
        if self.recipe.task == "classification":
            return (f"{m['accuracy']:.0%} of {m['examples']} held-out examples right "
                    f"(macro F1 {m['macro_f1']:.2f}; always guessing the most common label "
                    f"would get {m['majority_baseline']:.0%}).")
        return f"Perplexity on held-out examples: {m['perplexity']:.1f} (lower is better)."

    def save_as(self, name: str, folder: str | Path | None = None) -> Path:
        """Copy the model to "my models" (``~/shopfloor-models/<name>``) with a card."""
        if not _NAME_RE.match(name):
            raise RecipeError({"name": "use letters, digits, '.', '_' or '-' (at most 64)"})
        target = Path(folder).expanduser() if folder else my_models_dir()
        target = target / name
        if target.exists():
            raise RecipeError({"name": f"{target} exists already: choose another name"})
        shutil.copytree(self.model_dir, target)
        card = {"name": name, "task": self.recipe.task, "base_model": self.recipe.model,
                "data": Path(self.recipe.data).name, "method": self.recipe.chosen_method,
                "preset": self.recipe.preset, "metrics": self.metrics,
                "saved": time.strftime("%Y-%m-%d %H:%M"), "run_dir": str(self.run_dir)}
        (target / "shopfloor-model.json").write_text(json.dumps(card, indent=1) + "\n")
        return target


# --- running ----------------------------------------------------------------------------------


def ensure_ray(num_cpus: int) -> None:
    """Connect to the Ray cluster this process belongs to, or start a small local one.

    Inside a Ray job (or with ``RAY_ADDRESS`` set) this joins that cluster; otherwise it
    starts Ray on this machine with only ``num_cpus`` CPUs and a 100 MB object store.
    """
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, object_store_memory=100 * 1024 * 1024,
                 include_dashboard=False, log_to_driver=False)


class FineTuneJob:
    """One fine-tuning run of a :class:`Recipe`, with progress callbacks.

    ``on_progress(progress)`` is called (from a background thread) whenever the run reports
    a step, a checkpoint, a resume or its result.
    """

    def __init__(self, recipe: Recipe,
                 on_progress: Callable[[Progress], None] | None = None, *,
                 site_catalog: SiteCatalog | None = None) -> None:
        self.recipe = recipe
        self.site_catalog = site_catalog
        self.progress = Progress()
        self._listeners: list[Callable[[Progress], None]] = [on_progress] if on_progress else []
        self.checked: CheckedRecipe | None = None
        self.result: FineTuneResult | None = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def run_dir(self) -> Path:
        return self.recipe.run_dir

    def add_listener(self, callback: Callable[[Progress], None]) -> None:
        self._listeners.append(callback)

    def _notify(self) -> None:
        for callback in self._listeners:
            callback(self.progress)

    def _on_event(self, event: dict[str, Any]) -> None:
        self.progress.apply(event)
        self._notify()

    def check(self) -> CheckedRecipe:
        """Read and check data and model; raises :class:`RecipeError`. Spends no compute."""
        self.checked = check_recipe(self.recipe, self.site_catalog)
        return self.checked

    def _claim_run_dir(self) -> None:
        """Write recipe.json; a run of the same name must have the same recipe to resume."""
        path = self.run_dir / RECIPE_FILE
        # Folders written out in full: a Ray job on a cluster must find the same ones.
        mine = {**self.recipe.to_json(), "runs_dir": str(self.run_dir.parent),
                "catalog_dir": str(ModelCatalog(self.recipe.catalog_dir).root)}
        if path.exists():
            theirs = json.loads(path.read_text())
            free = {"workers", "max_failures", "accepted_licences"}
            changed = sorted(k for k in mine if k not in free and theirs.get(k) != mine[k])
            if changed:
                raise RecipeError({"name": (
                    f"a run called {self.recipe.name!r} exists with other settings "
                    f"({', '.join(changed)}); choose another name to start afresh")})
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(mine, indent=1) + "\n")

    def train_config(self, checked: CheckedRecipe) -> dict[str, Any]:
        """The configuration every worker gets (plain values only)."""
        hyper = dataclasses.asdict(checked.hyperparameters)

        def data(examples: Examples) -> dict[str, list[str]]:
            return {"texts": examples.texts, "labels": examples.labels,
                    "targets": examples.targets}

        return {**hyper, "task": self.recipe.task, "method": self.recipe.chosen_method,
                "model_path": str(checked.model.path), "seed": self.recipe.seed,
                "label_names": checked.train.label_names if self.recipe.task ==
                "classification" else [], "run_dir": str(self.run_dir),
                "cpus_per_worker": self.recipe.cpus_per_worker,
                "train": data(checked.train), "test": data(checked.test)}

    def run(self) -> FineTuneResult:
        """Check, then train with Ray Train and evaluate; blocks until done."""
        from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        from shopfloor.finetune.trainloop import train_loop_per_worker

        self.progress = Progress(phase="starting", message="checking your data and model")
        self._notify()
        checked = self.check()
        self._claim_run_dir()
        recipe = self.recipe
        ensure_ray(recipe.workers * recipe.cpus_per_worker)
        watcher = ProgressWatcher(self.run_dir / "progress.jsonl", self._on_event)
        watcher.start()
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config=self.train_config(checked),
            scaling_config=ScalingConfig(
                num_workers=recipe.workers, use_gpu=recipe.use_gpu,
                resources_per_worker={"CPU": recipe.cpus_per_worker}),
            run_config=RunConfig(
                name=recipe.name, storage_path=str(self.run_dir.parent),
                failure_config=FailureConfig(max_failures=recipe.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=2)),
        )
        try:
            trainer.fit()
        except Exception as exc:
            self.progress.phase = "failed"
            self.progress.message = f"training failed: {exc}"
            self._notify()
            raise
        finally:
            watcher.stop()
        metrics = json.loads((self.run_dir / "metrics.json").read_text())
        self.result = FineTuneResult(recipe, self.run_dir, metrics)
        return self.result

    def submit(self, cluster: Any) -> str:
        """Run as a Ray job on a Shopfloor Ray cluster (:class:`shopfloor.ray.cluster.RayCluster`).

        Checks first (no compute spent on bad input), writes ``recipe.json`` to the run folder
        and submits ``python -m shopfloor.finetune.recipe run <recipe.json>``; returns the job id.
        Progress arrives through the run folder, which the cluster's nodes share with this
        session; :meth:`wait_submitted` follows it to the end.
        """
        self.check()
        self._claim_run_dir()
        entrypoint = (f"{shlex.quote(sys.executable)} -m shopfloor.finetune.recipe run "
                      f"{shlex.quote(str(self.run_dir / RECIPE_FILE))}")
        return str(cluster.submit(entrypoint))

    def wait_submitted(self, cluster: Any, job_id: str, timeout: float = 24 * 3600,
                       poll: float = 1.0) -> FineTuneResult:
        """Follow a submitted run's progress until its Ray job ends; returns its result."""
        watcher = ProgressWatcher(self.run_dir / "progress.jsonl", self._on_event)
        watcher.offset = 0
        self.progress = Progress(phase="starting", message=f"Ray job {job_id} submitted")
        watcher.start()
        deadline = time.monotonic() + timeout
        try:
            while (status := cluster.job_status(job_id)) not in {"SUCCEEDED", "FAILED",
                                                                  "STOPPED"}:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Ray job {job_id} still {status} after {timeout} s")
                time.sleep(poll)
        finally:
            watcher.stop()
        if status != "SUCCEEDED":
            self.progress.phase = "failed"
            self.progress.message = f"the Ray job {job_id} ended {status}; see its logs"
            self._notify()
            raise RecipeError({"compute": self.progress.message})
        metrics = json.loads((self.run_dir / "metrics.json").read_text())
        self.result = FineTuneResult(self.recipe, self.run_dir, metrics)
        return self.result

    def start(self, work: Callable[[], FineTuneResult] | None = None) -> threading.Thread:
        """Run (or ``work``) in a background thread (for notebooks); see :meth:`wait`."""

        def target() -> None:
            try:
                (work or self.run)()
            except Exception as exc:  # kept for wait() and shown by the wizard
                self.error = exc

        self.error = None
        self._thread = threading.Thread(target=target, daemon=True, name="shopfloor-finetune")
        self._thread.start()
        return self._thread

    def wait(self, timeout: float | None = None) -> FineTuneResult:
        """Wait for :meth:`start`'s run; re-raises its error."""
        if self._thread is not None:
            self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        if self.result is None:
            raise TimeoutError(f"the run {self.recipe.name!r} is still going")
        return self.result


def main(argv: list[str] | None = None) -> int:
    """``python -m shopfloor.finetune.recipe run RECIPE.json``: run a recipe (e.g. as a Ray job)."""
    parser = argparse.ArgumentParser(prog="python -m shopfloor.finetune.recipe")
    parser.add_argument("action", choices=["run", "check"])
    parser.add_argument("recipe", help="a recipe.json file")
    args = parser.parse_args(argv)
    try:
        job = FineTuneJob(Recipe.load(args.recipe), on_progress=_print_progress)
        if args.action == "check":
            print(job.check().describe())
            return 0
        print(job.run().summary(), flush=True)
    except (RecipeError, OSError, json.JSONDecodeError) as exc:
        print(f"shopfloor.finetune.recipe: {exc}", file=sys.stderr)
        return 2
    return 0


def _print_progress(progress: Progress) -> None:
    if progress.losses and progress.phase == "training":
        print(f"step {progress.step}/{progress.total_steps} loss {progress.losses[-1][1]:.4f}",
              flush=True)
    elif progress.message:
        print(progress.message, flush=True)


__all__ = [
    "METHODS",
    "PRESETS",
    "CheckedRecipe",
    "FineTuneJob",
    "FineTuneResult",
    "FineTunedModel",
    "Hyperparameters",
    "Prediction",
    "Preset",
    "Progress",
    "Recipe",
    "RecipeError",
    "check_recipe",
    "ensure_ray",
]

if __name__ == "__main__":
    sys.exit(main())
