"""A guided fine-tuning wizard for people who are not ML engineers (notebook or Voila app).

Eight steps, one screen each: data → model → method & preset → compute → train → evaluate →
try it → save. It is a thin view over :mod:`shopfloor.finetune.recipe` (a :class:`Recipe`, a
:class:`FineTuneJob` with progress callbacks, a :class:`FineTuneResult`): every check and
every number comes from there, and each step can be driven from code::

    wizard = FineTuneWizard()
    wizard.data_path.value = "~/reviews.csv"; wizard.next()   # checked before any compute
    ...
    wizard.start_training()

Uploaded files are saved as new files under ``<runs>/uploads/``; files people choose are
only read, never changed. Inside a hub session the data step also offers the site's datasets
(the hub's catalog, :mod:`shopfloor.finetune.access`): only those the user's groups may use,
with a box to tick where the licence must be accepted; the recipe check refuses the rest.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as w

from shopfloor.finetune.access import SiteCatalog, SiteEntry, check_access, session_catalog
from shopfloor.finetune.catalog import TASKS, ModelCatalog, ModelEntry
from shopfloor.finetune.datasets import Table
from shopfloor.finetune.recipe import (
    METHODS,
    PRESETS,
    FineTuneJob,
    FineTuneResult,
    Hyperparameters,
    Progress,
    Recipe,
    RecipeError,
    my_models_dir,
    read_examples,
    runs_dir,
)
from shopfloor.widgets.common import PanelActions, status_html

STEPS = ("data", "model", "method", "compute", "train", "evaluate", "try", "save")
TITLES = {
    "data": "1. Your data", "model": "2. Choose a model", "method": "3. How to train",
    "compute": "4. Where to train", "train": "5. Train", "evaluate": "6. How good is it?",
    "try": "7. Try it", "save": "8. Save and share",
}
LOCAL = "local"
DELIMITER_CHOICES = [("detect", None), ("comma ,", ","), ("semicolon ;", ";"), ("tab", "\t"),
                     ("bar |", "|")]
_ADVANCED = ("epochs", "learning_rate", "batch_size", "max_length", "train_layers",
             "lora_rank", "holdout")


def table_html(rows: list[dict[str, str]], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(r.get(c, '')[:80])}</td>" for c in columns) + "</tr>"
        for r in rows)
    return f'<table class="sf-preview"><tr>{head}</tr>{body}</table>'


def loss_svg(losses: list[tuple[int, float]], total: int, width: int = 420,
             height: int = 120) -> str:
    """The loss curve as a small inline SVG (no plotting library needed)."""
    if not losses:
        return ""
    top = max(v for _, v in losses) or 1.0
    points = " ".join(f"{width * s / max(total, 1):.1f},{height - height * v / top:.1f}"
                      for s, v in losses)
    return (f'<svg class="sf-loss" width="{width}" height="{height + 16}">'
            f'<polyline fill="none" stroke="#1565c0" stroke-width="2" points="{points}"/>'
            f'<text x="0" y="{height + 14}" font-size="11">loss {losses[-1][1]:.3f} '
            f"(start {losses[0][1]:.3f})</text></svg>")


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "estimating time left…"
    return f"about {seconds:.0f} s left" if seconds < 90 else f"about {seconds / 60:.0f} min left"


def confusion_html(metrics: dict[str, Any]) -> str:
    labels = metrics["labels"]
    head = "".join(f"<th>said {html.escape(n)}</th>" for n in labels)
    rows = "".join(
        f"<tr><th>really {html.escape(n)}</th>"
        + "".join(f"<td>{v}</td>" for v in metrics["confusion_matrix"][i]) + "</tr>"
        for i, n in enumerate(labels))
    return f'<table class="sf-confusion"><tr><th></th>{head}</tr>{rows}</table>'


class FineTuneWizard(PanelActions, w.VBox):
    """The guided fine-tuning wizard. See the module docstring.

    ``catalog``: the model catalog (default: the site's); ``runs``: where runs and uploads go
    (default ``~/shopfloor-runs``); ``my_models``: where "save" puts models (default
    ``~/shopfloor-models``); ``clusters``: returns the Ray clusters to offer as
    compute (default: the user's ready Shopfloor Ray clusters); ``job_factory`` makes the
    :class:`FineTuneJob` (code may pass a subclass); ``site_catalog``: the site's catalog of
    datasets and models (default: this hub session's; none outside a hub).
    """

    def __init__(self, *, catalog: ModelCatalog | None = None, runs: Path | None = None,
                 my_models: Path | None = None,
                 clusters: Callable[[], list[Any]] | None = None,
                 job_factory: Callable[..., FineTuneJob] = FineTuneJob,
                 site_catalog: SiteCatalog | None = None) -> None:
        self.catalog = catalog or ModelCatalog()
        self.site_catalog = site_catalog or session_catalog()
        self.site_entries: dict[str, SiteEntry] = {}
        self.accepted_licences: set[str] = set()
        self.runs = Path(runs) if runs else runs_dir()
        self.my_models = Path(my_models) if my_models else my_models_dir()
        self.clusters = clusters or ready_ray_clusters
        self.job_factory = job_factory
        self.step = STEPS[0]
        self.table: Table | None = None
        self.job: FineTuneJob | None = None
        self.result: FineTuneResult | None = None
        self._lock = threading.RLock()
        self.title = w.HTML()
        self.status = w.HTML()
        self.back_button = self._button("◀ Back", "sf-ft-back", self.back)
        self.next_button = self._button("Next ▶", "sf-ft-next", self.next, "primary")
        self.pages = {
            "data": self._data_page(), "model": self._model_page(),
            "method": self._method_page(), "compute": self._compute_page(),
            "train": self._train_page(), "evaluate": self._evaluate_page(),
            "try": self._try_page(), "save": self._save_page(),
        }
        super().__init__()
        self.add_class("sf-finetune-wizard")
        self._render()

    # -- plumbing ---------------------------------------------------------------------------

    def show(self, text: str, kind: str = "info") -> None:
        self.status.value = status_html(text, kind)

    @property
    def message(self) -> str:
        """The status line as plain text (for code and tests)."""
        return html.unescape(self.status.value.split(">", 1)[-1].rsplit("<", 1)[0])

    def _render(self) -> None:
        self.title.value = f"<h3>{TITLES[self.step]}</h3>"
        index = STEPS.index(self.step)
        self.back_button.disabled = index == 0 or (self.step == "train" and self._training())
        self.next_button.disabled = index == len(STEPS) - 1 or (
            self.step == "train" and self.result is None)
        self.children = [self.title, self.pages[self.step], self.status,
                         w.HBox([self.back_button, self.next_button])]

    def go(self, step: str) -> None:
        if step not in STEPS:
            raise ValueError(f"step must be one of {', '.join(STEPS)}")
        self.step = step
        self.show("")
        enter = getattr(self, f"_enter_{step}", None)
        if enter:
            enter()
        self._render()

    def next(self) -> None:
        """Check this step (plain-language problems stop here) and go to the next one."""
        leave = getattr(self, f"_leave_{self.step}", None)
        if leave:
            leave()
        self.go(STEPS[min(STEPS.index(self.step) + 1, len(STEPS) - 1)])

    def back(self) -> None:
        self.go(STEPS[max(STEPS.index(self.step) - 1, 0)])

    def _training(self) -> bool:
        return self.job is not None and self.job.progress.phase in {"starting", "training",
                                                                    "evaluating"}

    # -- 1. data ----------------------------------------------------------------------------

    def _data_page(self) -> w.Widget:
        self.task = w.ToggleButtons(options=[(t, t) for t in TASKS], value="classification",
                                    description="Task")
        self.task_help = w.HTML()
        self.data_path = w.Text(placeholder="~/data/reviews.csv", description="File",
                                layout=w.Layout(width="70%"))
        self.data_path.add_class("sf-ft-path")
        self.upload_widget = w.FileUpload(accept=".csv,.tsv,.txt,.jsonl", multiple=False,
                                          description="Upload")
        self.upload_widget.observe(self._on_upload, "value")
        self.delimiter = w.Dropdown(options=DELIMITER_CHOICES, value=None,
                                    description="Separator")
        self.text_column = w.Dropdown(options=[], description="Text column")
        self.label_column = w.Dropdown(options=[], description="Label column")
        self.preview = w.HTML()
        self.site_dataset = w.Dropdown(options=[("(my own file)", "")], value="",
                                       description="Site data", layout=w.Layout(width="70%"))
        self.site_dataset.add_class("sf-ft-site-data")
        self.site_dataset.observe(lambda _: self._on_site_dataset(), "value")
        self.licence = w.HTML()
        self.accept_licence = w.Checkbox(False, description="I accept the licence",
                                         layout=w.Layout(display="none"))
        self.accept_licence.add_class("sf-ft-accept")
        self.accept_licence.observe(lambda _: self._on_accept(), "value")
        load = self._button("Preview", "sf-ft-preview", self.load_preview)
        self.task.observe(lambda _: self._task_help(), "value")
        self._task_help()
        return w.VBox([self.task, self.task_help, self.site_dataset, self.licence,
                       self.accept_licence, w.HBox([self.data_path, load]),
                       w.HBox([self.upload_widget, self.delimiter]), self.preview,
                       w.HBox([self.text_column, self.label_column])])

    def offer_site_datasets(self) -> None:
        """List the site's datasets for this task that this user may use (from the hub)."""
        self.site_entries = {}
        if self.site_catalog is not None:
            self.site_entries = {e.name: e for e in self.site_catalog.datasets(self.task.value)}
        self.site_dataset.options = [("(my own file)", ""), *[
            (e.label, e.name) for e in self.site_entries.values()]]
        if self.site_dataset.value not in self.site_entries:
            self.site_dataset.value = ""

    def choose_site_dataset(self, name: str) -> None:
        """Train on the site dataset ``name`` (one of those offered)."""
        if name not in self.site_entries:
            raise RecipeError({"data": f"the site offers you no {self.task.value} dataset "
                                       f"called {name!r}"})
        self.site_dataset.value = name

    def _on_site_dataset(self) -> None:
        entry = self.site_entries.get(self.site_dataset.value)
        self.accept_licence.value = bool(entry and entry.name in self.accepted_licences)
        self.accept_licence.layout.display = "" if entry and entry.accept_licence else "none"
        if entry is None:
            self.licence.value = ""
            return
        need = " You must accept it before training." if entry.accept_licence else ""
        self.licence.value = (f"<i>Licence: {html.escape(entry.licence)}.{need}</i>")
        self.data_path.value = entry.location
        self.attempt(self.load_preview)

    def _on_accept(self) -> None:
        name = self.site_dataset.value
        if not name:
            return
        if self.accept_licence.value:
            self.accepted_licences.add(name)
        else:
            self.accepted_licences.discard(name)

    def _task_help(self) -> None:
        self.task_help.value = f"<i>{html.escape(TASKS[self.task.value])}.</i>"
        self.attempt(self.offer_site_datasets)
        self.label_column.description = ("Label column" if self.task.value == "classification"
                                         else "Answer column")

    def _on_upload(self, change: dict[str, Any]) -> None:
        for item in change["new"] or ():
            self.attempt(lambda item=item: self.upload(item["name"], bytes(item["content"])))

    def upload(self, name: str, content: bytes) -> Path:
        """Keep an uploaded file as a new file under ``<runs>/uploads/`` and choose it."""
        folder = self.runs / "uploads"
        folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(name).name)
        target = folder / (safe or "data.csv")
        counter = 1
        while target.exists():
            target = folder / f"{target.stem.split('~')[0]}~{counter}{target.suffix}"
            counter += 1
        target.write_bytes(content)
        self.data_path.value = str(target)
        self.load_preview()
        return target

    def load_preview(self) -> None:
        """Read the chosen file (read only), show its first rows and offer its columns."""
        self.table = None
        self.preview.value = ""
        probe = self._recipe(text_column=None, label_column=None)
        from shopfloor.finetune.datasets import read_table

        table = read_table(probe.data, probe.delimiter, PRESETS[self.preset.value].limits)
        self.table = table
        self.preview.value = (f"<b>{html.escape(table.path.name)}</b>: {len(table)} rows, "
                              f"columns {html.escape(', '.join(table.columns))}"
                              + table_html(table.preview(5), table.columns))
        options = [("(choose)", None), *[(c, c) for c in table.columns]]
        guess_text = next((c for c in table.columns if c.lower() in
                           {"text", "review", "prompt", "question", "message"}), None)
        guess_label = next((c for c in table.columns if c.lower() in
                            {"label", "category", "class", "answer", "response"}), None)
        self.text_column.options = options
        self.label_column.options = options
        self.text_column.value = guess_text
        self.label_column.value = guess_label

    def _leave_data(self) -> None:
        if self.table is None or str(self.table.path) != str(
                Path(self.data_path.value).expanduser()):
            self.load_preview()
        recipe = self._recipe()
        if self.site_catalog is not None:  # early word; check_recipe enforces it again
            problems = check_access(self.site_catalog, data=recipe.data, model=None,
                                    accepted_licences=recipe.accepted_licences)
            if problems:
                raise RecipeError(problems)
        _, examples = read_examples(recipe, PRESETS[self.preset.value].limits)
        self.data_summary = examples.describe()

    # -- 2. model ---------------------------------------------------------------------------

    def _model_page(self) -> w.Widget:
        self.model = w.RadioButtons(options=[], description="Model",
                                    layout=w.Layout(width="auto"))
        self.model_help = w.HTML()
        self.model.observe(lambda _: self._model_help(), "value")
        return w.VBox([self.model, self.model_help])

    def _enter_model(self) -> None:
        entries = self._usable(self.catalog.models(task=self.task.value))
        self.model_entries = {e.name: e for e in entries}
        self.model.options = [(f"{e.name} — {e.description}", e.name) for e in entries]
        if entries and self.model.value not in self.model_entries:
            self.model.value = entries[0].name
        if not entries:
            self.show(f"The model catalog ({self.catalog.root}) has no {self.task.value} "
                      "model. Ask your admin to add one (shopfloor models build-demo).", "error")
        self._model_help()

    def _usable(self, entries: list[ModelEntry]) -> list[ModelEntry]:
        """Leave out the models the site's catalog does not let this user use."""
        if self.site_catalog is None or not entries:
            return entries
        forms = {e.name: [str(e.path), str(e.path.resolve())] for e in entries}
        verdicts = self.site_catalog.verdicts(p for paths in forms.values() for p in paths)
        return [e for e in entries
                if all(verdicts[p].usable for p in forms[e.name] if p in verdicts)]

    def _model_help(self) -> None:
        entry: ModelEntry | None = getattr(self, "model_entries", {}).get(self.model.value)
        self.model_help.value = f"<i>{html.escape(entry.summary)}</i>" if entry else ""

    def _leave_model(self) -> None:
        if not self.model.value:
            raise RecipeError({"model": "choose one of the models"})

    # -- 3. method, preset, advanced --------------------------------------------------------

    def _method_page(self) -> w.Widget:
        self.name = w.Text("my-model", description="Run name")
        self.method = w.RadioButtons(options=[], description="Method",
                                     layout=w.Layout(width="auto"))
        self.preset = w.ToggleButtons(options=list(PRESETS), value="quick",
                                      description="Preset")
        self.preset_help = w.HTML()
        self.advanced: dict[str, w.Widget] = {
            "epochs": w.BoundedIntText(min=1, max=100, description="Epochs"),
            "learning_rate": w.FloatText(description="Learning rate"),
            "batch_size": w.BoundedIntText(min=1, max=1024, description="Batch size"),
            "max_length": w.BoundedIntText(min=8, max=8192, description="Max tokens"),
            "train_layers": w.BoundedIntText(min=0, max=1000, description="Top layers"),
            "lora_rank": w.BoundedIntText(min=1, max=256, description="LoRA rank"),
            "holdout": w.BoundedFloatText(min=0.05, max=0.5, step=0.05, description="Test share"),
        }
        self.preset.observe(lambda _: self._fill_advanced(), "value")
        box = w.Accordion([w.VBox(list(self.advanced.values()))])
        box.set_title(0, "advanced: the hyperparameters")
        box.selected_index = None
        return w.VBox([self.name, self.method, self.preset, self.preset_help, box])

    def _enter_method(self) -> None:
        methods = METHODS[self.task.value]
        current = self.method.value
        self.method.options = [(f"{m}: {text}", m) for m, text in methods.items()]
        self.method.value = current if current in methods else next(iter(methods))
        if self.name.value == "my-model" and self.table is not None:
            self.name.value = f"{self.table.path.stem}-{self.model.value}"[:64]
        self._fill_advanced()

    def _fill_advanced(self) -> None:
        preset = PRESETS[self.preset.value]
        self.preset_help.value = f"<i>{html.escape(preset.description)}.</i>"
        values = preset.hyperparameters(self.task.value)
        for key, widget in self.advanced.items():
            widget.value = getattr(values, key)

    def hyperparameter_overrides(self) -> dict[str, Any]:
        """The "advanced" values that differ from the preset."""
        base: Hyperparameters = PRESETS[self.preset.value].hyperparameters(self.task.value)
        return {k: self.advanced[k].value for k in _ADVANCED
                if self.advanced[k].value != getattr(base, k)}

    def _leave_method(self) -> None:
        from shopfloor.finetune.recipe import check_recipe

        self.checked = check_recipe(self._recipe(), self.site_catalog)
        self.show(self.checked.describe(), "ok")

    # -- 4. compute -------------------------------------------------------------------------

    def _compute_page(self) -> w.Widget:
        self.compute = w.RadioButtons(options=[], description="Compute",
                                      layout=w.Layout(width="auto"))
        self.workers = w.BoundedIntText(2, min=1, max=64, description="Workers")
        self.use_gpu = w.Checkbox(False, description="Use GPUs (one per worker)")
        return w.VBox([self.compute, self.workers, self.use_gpu])

    def _enter_compute(self) -> None:
        self.cluster_objects = {getattr(c, "name", str(c)): c for c in self.clusters()}
        self.compute.options = [("this session (Ray on this node)", LOCAL)] + [
            (f"Ray cluster {name}", name) for name in self.cluster_objects]
        if self.compute.value not in {LOCAL, *self.cluster_objects}:
            self.compute.value = LOCAL

    # -- 5. train ---------------------------------------------------------------------------

    def _train_page(self) -> w.Widget:
        self.start_button = self._button("Start training", "sf-ft-start", self.start_training,
                                         "success")
        self.bar = w.FloatProgress(0, min=0, max=1, description="Progress")
        self.eta = w.HTML()
        self.chart = w.HTML()
        return w.VBox([self.start_button, w.HBox([self.bar, self.eta]), self.chart])

    def _recipe(self, **changes: Any) -> Recipe:
        data = Path(self.data_path.value).expanduser() if self.data_path.value else Path("")
        if not self.data_path.value:
            raise RecipeError({"data": "choose a file or upload one"})
        settings: dict[str, Any] = {
            "name": self.name.value.strip(), "data": str(data), "task": self.task.value,
            "model": self.model.value or "", "text_column": self.text_column.value,
            "label_column": self.label_column.value, "delimiter": self.delimiter.value,
            "method": self.method.value, "preset": self.preset.value,
            "overrides": self.hyperparameter_overrides(), "workers": self.workers.value,
            "use_gpu": self.use_gpu.value, "runs_dir": str(self.runs),
            "catalog_dir": str(self.catalog.root),
            "accepted_licences": sorted(self.accepted_licences),
        }
        settings.update(changes)
        return Recipe(**settings)

    def start_training(self) -> FineTuneJob:
        """Start the run (in the background) on the chosen compute; progress shows live."""
        if self._training():
            raise RecipeError({"train": "a run is already going"})
        self.result = None
        job = self.job_factory(self._recipe(), on_progress=self._on_progress,
                               site_catalog=self.site_catalog)
        cluster = self.cluster_objects.get(self.compute.value) if self.compute.value != \
            LOCAL else None
        if cluster is None:
            job.check()  # refused here, in words, rather than in the background thread
        self.job = job
        if cluster is None:
            job.start()
        else:
            job_id = job.submit(cluster)
            job.start(lambda: job.wait_submitted(cluster, job_id))
        self.show("Training started: you can watch here, or come back later.")
        self._render()
        return job

    def _on_progress(self, progress: Progress) -> None:
        self.bar.value = progress.fraction
        if progress.phase == "training":
            self.eta.value = (f"step {progress.step} of {progress.total_steps} · "
                              f"{duration_text(progress.eta_seconds)}")
        else:
            self.eta.value = html.escape(progress.message or progress.phase)
        self.chart.value = loss_svg(progress.losses, progress.total_steps)
        if progress.phase == "failed":
            self.show(progress.message, "error")
        job = self.job
        if progress.phase == "done" and job is not None:
            threading.Thread(target=self._finished, args=(job,), daemon=True).start()

    def _finished(self, job: FineTuneJob) -> None:
        try:
            result = job.wait()
        except Exception as exc:  # shown to the user; the job keeps the error too
            self.show(f"Training failed: {exc}", "error")
            return
        with self._lock:
            self.result = result
            self.show(result.summary(), "ok")
            self._render()

    def wait(self, timeout: float | None = None) -> FineTuneResult:
        """Wait for the run started here (for code and notebooks)."""
        if self.job is None:
            raise RecipeError({"train": "no run has been started"})
        self.result = self.job.wait(timeout)
        self._render()
        return self.result

    # -- 6. evaluate ------------------------------------------------------------------------

    def _evaluate_page(self) -> w.Widget:
        self.evaluation = w.HTML()
        return w.VBox([self.evaluation])

    def _enter_evaluate(self) -> None:
        result = self._need_result()
        m = result.metrics
        text = f"<p>{html.escape(result.summary())}</p>"
        if result.recipe.task == "classification":
            text += confusion_html(m)
        else:
            text += table_html([{k: str(v) for k, v in s.items()} for s in m["samples"]],
                               ["prompt", "expected", "answer"])
        self.evaluation.value = text

    def _need_result(self) -> FineTuneResult:
        if self.result is None:
            raise RecipeError({"train": "train a model first (step 5)"})
        return self.result

    # -- 7. try it --------------------------------------------------------------------------

    def _try_page(self) -> w.Widget:
        self.question = w.Text(placeholder="Type a text…", description="Your text",
                               layout=w.Layout(width="70%"))
        self.answer = w.HTML()
        return w.VBox([w.HBox([self.question,
                               self._button("Ask", "sf-ft-ask", self.ask, "primary")]),
                       self.answer])

    def ask(self) -> str:
        """The model's answer to the text typed in "try it"."""
        result = self._need_result()
        if not hasattr(self, "_loaded") or self._loaded[0] is not result:
            self._loaded = (result, result.load())
        reply = self._loaded[1].ask(self.question.value)
        self.answer.value = f"<b>Model:</b> {html.escape(reply)}"
        return reply

    # -- 8. save ----------------------------------------------------------------------------

    def _save_page(self) -> w.Widget:
        self.save_name = w.Text(description="Save as")
        self.saved = w.HTML()
        return w.VBox([w.HBox([self.save_name, self._button("Save to my models",
                                                            "sf-ft-save", self.save)]),
                       self.saved])

    def _enter_save(self) -> None:
        if not self.save_name.value:
            self.save_name.value = self.name.value

    def save(self) -> Path:
        """Copy the model to "my models" and explain how to publish it."""
        folder = self._need_result().save_as(self.save_name.value.strip(), self.my_models)
        self.saved.value = (
            f"Saved to <code>{html.escape(str(folder))}</code>. To let colleagues use it, "
            "publish a notebook that loads it (<code>FineTunedModel(folder, task)</code>) as "
            "an app from the Apps page.")
        self.show("Saved.", "ok")
        return folder


def ready_ray_clusters() -> list[Any]:
    """The user's Shopfloor Ray clusters that are ready to take a job (none outside a hub)."""
    try:
        from shopfloor.ray.cluster import list_clusters

        return [c for c in list_clusters() if c.status().ready]
    except (ImportError, OSError, RuntimeError):
        return []


__all__ = ["FineTuneWizard"]
