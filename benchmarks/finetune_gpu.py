"""GPU check: tokens/s of Shopfloor's training step against a plain Hugging Face Trainer.

Run from the repository root on a machine with a CUDA GPU, in one command::

    /opt/shopfloor/venv/bin/python -m benchmarks.finetune_gpu --json-out /tmp/ft-gpu.json

Both arms train the same model (``--model``: a catalog name or a Hugging Face model folder;
default the catalog's MiniLM classifier) on the same data (``example_notebooks/data/
reviews.csv``, repeated to have enough batches), one GPU, bf16 autocast with fp32 weights
(what ``shopfloor.finetune.trainloop.autocast_for`` does and what ``TrainingArguments(bf16=
True)`` does), AdamW, the same batch size, ``max_length`` and learning rate, for each method
of ``--methods`` (``full``: every weight; ``lora``: LoRA adapters as the recipes apply them):

* ``ours``: :class:`shopfloor.finetune.trainloop.Trainee` and its ``train_step``, the loop
  Ray Train runs on each worker (one worker, so no DDP);
* ``hf_trainer``: ``transformers.Trainer`` on the same model, loaded by the same
  ``load_model`` (so LoRA is the same PEFT configuration), batches padded per batch like ours.

Measured per run: ``--steps`` timed optimizer steps after ``--warmup`` untimed ones, with
``torch.cuda.synchronize()`` at both ends; tokens = the non-padding tokens of the timed
batches. Reported: tokens/s per arm and method (median, min, max over ``--runs``, arms
interleaved with the first arm alternating), ``ratio.ours_over_hf_<method>`` (above 1: ours
processes more tokens per second), peak GPU memory. JSON on stdout, a table on stderr.

Without a CUDA device it refuses (exit status 3) before loading anything: CPU figures would
say nothing about the GPU path. ``--allow-cpu`` runs it anyway, in fp32, to check the script.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.anchors import load_average, rotate, spread
from benchmarks.report import RunResult, emit, format_grid, ratio, summarize

REPO = Path(__file__).resolve().parents[1]
REVIEWS = REPO / "example_notebooks" / "data" / "reviews.csv"
METHODS = ("full", "lora")
ARMS = ("ours", "hf_trainer")
NO_CUDA = "no CUDA device: run this on a GPU machine (or pass --allow-cpu to check the script)"
#: Exit status when no GPU is there (2 is argparse's own for bad arguments).
EXIT_NO_CUDA = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; ``--methods`` is checked against :data:`METHODS`."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.finetune_gpu",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm-l6",
                        help="a model of the demo catalog or a Hugging Face model folder")
    parser.add_argument("--methods", default="full,lora", type=_methods,
                        help="comma-separated, from: " + ", ".join(METHODS))
    parser.add_argument("--runs", type=_positive, default=3)
    parser.add_argument("--steps", type=_positive, default=50, help="timed steps per run")
    parser.add_argument("--warmup", type=_positive, default=5, help="untimed steps first")
    parser.add_argument("--batch-size", type=_positive, default=32)
    parser.add_argument("--max-length", type=_positive, default=128)
    parser.add_argument("--lora-rank", type=_positive, default=8)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--allow-cpu", action="store_true",
                        help="run without a GPU (fp32; only to check the script)")
    parser.add_argument("--json-out", help="also write the JSON here")
    parser.add_argument("--table", action="store_true", help="table on stdout, not JSON")
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise argparse.ArgumentTypeError(
            f"choose from {', '.join(METHODS)}, not {', '.join(unknown) or repr(text)}")
    return methods


def cuda_available() -> bool:
    """Whether PyTorch sees a CUDA device."""
    import torch

    return bool(torch.cuda.is_available())


# -- the shared set-up ------------------------------------------------------------------------


def model_config(args: argparse.Namespace, method: str, catalog_root: Path) -> dict[str, Any]:
    """The worker configuration of :mod:`shopfloor.finetune.trainloop` for one method."""
    from shopfloor.finetune.catalog import ModelCatalog, build_demo_catalog
    from shopfloor.finetune.recipe import Recipe, check_recipe

    path = Path(args.model)
    if path.is_dir():
        card = json.loads((path / "shopfloor-model.json").read_text()) if (
            path / "shopfloor-model.json").is_file() else {"task": "causal-lm"}
        catalog_dir, name = path.parent, path.name
        task = card["task"]
    else:
        catalog_dir = build_demo_catalog(catalog_root)
        name = args.model
        task = ModelCatalog(catalog_dir).get(name).task
    recipe = Recipe(name="gpu-bench", data=str(REVIEWS), model=name, task=task, method=method,
                    catalog_dir=str(catalog_dir), workers=1,
                    overrides={"batch_size": args.batch_size, "max_length": args.max_length,
                               "lora_rank": args.lora_rank,
                               "learning_rate": args.learning_rate})
    if task != "classification":
        recipe.label_column = None
    checked = check_recipe(recipe)
    hyper = checked.hyperparameters
    return {
        "task": task, "method": method, "model_path": str(checked.model.path), "seed": 0,
        "label_names": checked.train.label_names if task == "classification" else [],
        "batch_size": hyper.batch_size, "max_length": hyper.max_length,
        "lora_rank": hyper.lora_rank, "learning_rate": hyper.learning_rate,
        "train_layers": hyper.train_layers,
        "train": {"texts": checked.train.texts, "labels": checked.train.labels,
                  "targets": checked.train.targets},
    }


def batches(config: dict[str, Any], count: int) -> list[list[int]]:
    """``count`` batches of example indices, cycling through the shuffled training set."""
    from shopfloor.finetune.trainloop import epoch_batches

    size = len(config["train"]["texts"])
    found: list[list[int]] = []
    epoch = 0
    while len(found) < count:
        found += [b for b in epoch_batches(size, int(config["batch_size"]), epoch, 0)
                  if len(b) == int(config["batch_size"])]
        epoch += 1
    return found[:count]


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mib(device: Any) -> float | None:
    import torch

    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def _reset_peak(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# -- the arms ---------------------------------------------------------------------------------


def run_ours(config: dict[str, Any], plan: list[list[int]], warmup: int, device: Any
             ) -> dict[str, Any]:
    """Shopfloor's loop: ``Trainee.train_step`` on each batch; returns tokens and seconds."""
    import torch

    from shopfloor.finetune.trainloop import Trainee

    torch.manual_seed(0)
    _reset_peak(device)
    trainee = Trainee(config, device, world=1)
    train = config["train"]
    for indices in plan[:warmup]:
        trainee.train_step(trainee.encode(indices, train))
    _sync(device)
    tokens = 0
    started = time.perf_counter()
    for indices in plan[warmup:]:
        batch = trainee.encode(indices, train)
        tokens += int(batch["attention_mask"].sum())
        trainee.train_step(batch)
    _sync(device)
    seconds = time.perf_counter() - started
    result = {"tokens": tokens, "seconds": seconds, "peak_mib": _peak_mib(device)}
    del trainee
    return result


def run_hf_trainer(config: dict[str, Any], plan: list[list[int]], warmup: int, device: Any,
                   out_dir: Path) -> dict[str, Any]:
    """A plain ``transformers.Trainer`` on the same model, batches in the same order."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from shopfloor.finetune.trainloop import Trainee

    torch.manual_seed(0)
    _reset_peak(device)
    # Trainee only to tokenize exactly as ours does; the Trainer gets its own fresh model.
    encoder = Trainee.__new__(Trainee)
    encoder.config, encoder.device = config, torch.device("cpu")
    from shopfloor.finetune.trainloop import load_model

    model, encoder.tokenizer = load_model(config)
    train = config["train"]
    examples = [encoder.encode(indices, train) for indices in plan]
    tokens_per_batch = [int(b["attention_mask"].sum()) for b in examples]

    class Batches(torch.utils.data.Dataset):  # type: ignore[type-arg]
        """One item per pre-built batch, so the Trainer's batches are ours, in order."""

        def __len__(self) -> int:
            return len(examples)

        def __getitem__(self, index: int) -> dict[str, Any]:
            return examples[index]

    marks: dict[str, float] = {}

    class Clock(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == warmup:
                _sync(device)
                marks["start"] = time.perf_counter()
            elif state.global_step == len(examples):
                _sync(device)
                marks["end"] = time.perf_counter()

    arguments = TrainingArguments(
        output_dir=str(out_dir), per_device_train_batch_size=1, max_steps=len(examples),
        learning_rate=float(config["learning_rate"]), bf16=device.type == "cuda",
        optim="adamw_torch", lr_scheduler_type="constant", warmup_steps=0,
        logging_strategy="no", save_strategy="no", report_to=[], seed=0,
        dataloader_num_workers=0, disable_tqdm=True, use_cpu=device.type != "cuda",
        remove_unused_columns=False,
    )
    trainer = Trainer(model=model, args=arguments, train_dataset=Batches(),
                      data_collator=lambda items: items[0], callbacks=[Clock()])
    # A dataset of pre-built batches must be read in order, like ours.
    trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(Batches())
    trainer.train()
    result = {"tokens": sum(tokens_per_batch[warmup:]),
              "seconds": marks["end"] - marks["start"], "peak_mib": _peak_mib(device)}
    del trainer, model
    return result


def measure(args: argparse.Namespace, device: Any) -> dict[str, list[RunResult]]:
    """Every (method, arm) over ``--runs`` rounds, interleaved; tokens/s as the value."""
    results: dict[str, list[RunResult]] = {}
    with tempfile.TemporaryDirectory(prefix="shopfloor-bench-ft-gpu-") as work:
        for method in args.methods:
            config = model_config(args, method, Path(work) / "catalog")
            plan = batches(config, args.warmup + args.steps)
            for run in range(1, args.runs + 1):
                for arm in rotate(list(ARMS), run - 1):
                    key = f"{arm}_{method}"
                    try:
                        if arm == "ours":
                            raw = run_ours(config, plan, args.warmup, device)
                        else:
                            raw = run_hf_trainer(config, plan, args.warmup, device,
                                                 Path(work) / f"hf-{run}")
                        rate = raw["tokens"] / raw["seconds"]
                        result = RunResult(run, True, rate, detail={
                            "tokens": raw["tokens"], "loop_s": round(raw["seconds"], 3),
                            "peak_gpu_mib": raw["peak_mib"]})
                    except Exception as exc:  # recorded with its reason; the others go on
                        result = RunResult(run, False, error=f"{type(exc).__name__}: {exc}"[:400])
                    results.setdefault(key, []).append(result)
                    print(f"{key} run {run}: {result.seconds or result.error}", flush=True,
                          file=sys.stderr)
    return results


def document_for(args: argparse.Namespace, results: dict[str, list[RunResult]],
                 device_name: str) -> dict[str, Any]:
    """The JSON document: blocks (values are tokens/s), ratios per method, the settings."""
    blocks = {key: summarize(key, runs, unit="tokens/s") for key, runs in results.items()}
    ratios = {f"ours_over_hf_{m}": ratio(blocks.get(f"ours_{m}", {}).get("median"),
                                         blocks.get(f"hf_trainer_{m}", {}).get("median"))
              for m in args.methods}
    return {
        "benchmark": "finetune_gpu", "device": device_name, "host": platform.node(),
        "model": args.model, "methods": args.methods, "steps": args.steps,
        "warmup": args.warmup, "batch_size": args.batch_size, "max_length": args.max_length,
        "precision": "bf16 autocast" if device_name != "cpu" else "fp32 (cpu check only)",
        "arms": blocks, "ratio": ratios, "load": load_average(),
    }


def table_for(document: dict[str, Any]) -> str:
    """Tokens/s per method and arm: median (min-max), the ratio and peak GPU memory."""
    rows = []
    for method in document["methods"]:
        ours = document["arms"].get(f"ours_{method}", {})
        hf = document["arms"].get(f"hf_trainer_{method}", {})
        value = document["ratio"].get(f"ours_over_hf_{method}")
        peaks = [r.get("peak_gpu_mib") for b in (ours, hf) for r in b.get("runs", [])]
        rows.append((method, spread(ours) if ours else "-", spread(hf) if hf else "-",
                     f"{value:.2f}" if value else "-",
                     str(max((p for p in peaks if p is not None), default="-"))))
    return format_grid(
        f"Tokens/s on {document['device']} ({document['precision']}), model "
        f"{document['model']}: median (min-max)",
        ("method", "ours", "HF Trainer", "ours/HF", "peak GPU MiB"), rows,
        ["ours/HF above 1: our loop processes more tokens per second."])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.allow_cpu and not cuda_available():
        print(NO_CUDA, file=sys.stderr)
        return EXIT_NO_CUDA
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    results = measure(args, device)
    document = document_for(args, results, name)
    emit(document, table_for(document), json_out=args.json_out, table_on_stdout=args.table)
    return 1 if any(not r.ok for runs in results.values() for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
