"""What runs on each training worker: model set-up, the training step, checkpoints, evaluation.

:func:`train_loop_per_worker` is the function Ray Train's ``TorchTrainer`` runs on every
worker (see :mod:`shopfloor.finetune.recipe`). The pieces it is made of (:class:`Trainee`,
:func:`epoch_batches`) are plain PyTorch, so ``benchmarks/finetune.py`` runs the very same
step under ``torchrun`` for comparison.

The same code runs on CPU and GPU: the device comes from Ray Train (or CUDA when there is
one), and on a GPU that supports it the forward pass runs under bf16 autocast.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

PROGRESS_FILE = "progress.jsonl"
MODEL_DIR = "model"
STATE_FILE = "trainer_state.pt"
#: Target modules for LoRA, by model architecture (``config.model_type``).
LORA_TARGETS = {"llama": ["q_proj", "v_proj"], "bert": ["query", "value"]}


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on a GPU that supports it; nothing elsewhere (CPU runs in fp32)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def epoch_batches(
    count: int, batch_size: int, epoch: int, seed: int, rank: int = 0, world: int = 1
) -> list[list[int]]:
    """This worker's batches (example indices) of one epoch: shuffled per epoch, sharded.

    Deterministic in (seed, epoch), so a resumed run sees the batches it would have seen.
    """
    order = list(range(count))
    random.Random(seed * 1000 + epoch).shuffle(order)
    shard = order[rank::world]
    return [shard[i : i + batch_size] for i in range(0, len(shard), batch_size)]


def steps_per_epoch(count: int, batch_size: int, world: int) -> int:
    """Steps every worker takes per epoch (the smallest shard decides, so all stay in step)."""
    return max(1, math.ceil((count // world) / batch_size))


def _apply_method(model: nn.Module, config: dict[str, Any]) -> nn.Module:
    method = config["method"]
    if method == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        task = TaskType.CAUSAL_LM if config["task"] == "causal-lm" else TaskType.SEQ_CLS
        targets = LORA_TARGETS.get(model.config.model_type, ["q_proj", "v_proj"])
        rank = int(config["lora_rank"])
        lora = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                          target_modules=targets, task_type=task)
        return get_peft_model(model, lora)
    if method == "top-layers":
        keep = int(config["train_layers"])
        layers = getattr(getattr(model, "base_model", model), "encoder", None)
        count = len(layers.layer) if layers is not None else 0
        trainable = {f".layer.{i}." for i in range(max(0, count - keep), count)}
        for name, param in model.named_parameters():
            head = not name.startswith(model.base_model_prefix + ".") or ".pooler." in name
            param.requires_grad = head or any(t in name for t in trainable)
    return model


def load_model(config: dict[str, Any]) -> tuple[nn.Module, Any]:
    """The catalog model with the recipe's method applied, and its tokenizer."""
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    path = config["model_path"]
    tokenizer = AutoTokenizer.from_pretrained(path)
    if config["task"] == "classification":
        labels = config["label_names"]
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    return _apply_method(model, config), tokenizer


def answer_prefix(prompt: str) -> str:
    """How a prompt is shown to an instruction-tuned model: the answer follows this text."""
    return f"{prompt}\n### Answer:\n"


class Trainee:
    """A model, its tokenizer and optimizer on one worker, with the training step."""

    def __init__(self, config: dict[str, Any], device: torch.device, world: int = 1) -> None:
        self.config = config
        self.device = device
        model, self.tokenizer = load_model(config)
        self.model = model.to(device)
        self.wrapped: nn.Module = self.model
        if world > 1:
            self.wrapped = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=float(config["learning_rate"]))

    def encode(self, indices: list[int], data: dict[str, list[str]]) -> dict[str, torch.Tensor]:
        """Tokenize the examples ``indices`` of ``data`` into a batch on this device."""
        max_length = int(self.config["max_length"])
        if self.config["task"] == "classification":
            batch = self.tokenizer(
                [data["texts"][i] for i in indices], padding=True, truncation=True,
                max_length=max_length, return_tensors="pt",
            )
            label_ids = {name: i for i, name in enumerate(self.config["label_names"])}
            batch["labels"] = torch.tensor([label_ids[data["labels"][i]] for i in indices])
            return {k: v.to(self.device) for k, v in batch.items()}
        return self._encode_causal(indices, data, max_length)

    def _encode_causal(
        self, indices: list[int], data: dict[str, list[str]], max_length: int
    ) -> dict[str, torch.Tensor]:
        eos = self.tokenizer.eos_token or ""
        targets = data.get("targets") or [""] * len(data["texts"])
        rows, masks = [], []
        for i in indices:
            if targets[i]:
                prefix = answer_prefix(data["texts"][i])
                # Learn the answer only: the prompt's tokens get the label -100 (ignored).
                start = len(self.tokenizer(prefix)["input_ids"])
                text = prefix + targets[i] + eos
            else:
                start, text = 0, data["texts"][i] + eos
            ids = self.tokenizer(text)["input_ids"][:max_length]
            rows.append(ids)
            masks.append([-100 if j < start else t for j, t in enumerate(ids)])
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        labels = torch.tensor([m + [-100] * (width - len(m)) for m in masks])
        return {"input_ids": input_ids.to(self.device), "attention_mask": attention.to(
            self.device), "labels": labels.to(self.device)}

    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        """One optimizer step; returns the batch loss."""
        self.wrapped.train()
        with autocast_for(self.device):
            loss = self.wrapped(**batch).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def state(self, step: int) -> dict[str, Any]:
        """What a checkpoint holds: the trained weights, the optimizer and the step."""
        weights = {n: p.detach().cpu() for n, p in self.model.named_parameters()
                   if p.requires_grad}
        return {"weights": weights, "optimizer": self.optimizer.state_dict(), "step": step}

    def restore(self, state: dict[str, Any]) -> int:
        """Load a checkpoint's state; returns the step to continue from."""
        self.model.load_state_dict(state["weights"], strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        return int(state["step"])

    def save_model(self, folder: Path) -> None:
        """Save the fine-tuned model (LoRA merged in) and tokenizer in Hugging Face format."""
        model = self.model
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)


class ProgressWriter:
    """Appends progress events as JSON lines to the run folder (rank 0 only).

    The run folder is on the user's storage, so whoever watches the run (the notebook that
    started it, or one that submitted it as a Ray job to a cluster) reads the same file.
    """

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.path = run_dir / PROGRESS_FILE
        self.enabled = enabled
        if enabled:
            run_dir.mkdir(parents=True, exist_ok=True)

    def __call__(self, event: str, **data: Any) -> None:
        if self.enabled:
            record = {"event": event, "time": time.time(), **data}
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


def evaluate(trainee: Trainee, test: dict[str, list[str]]) -> dict[str, Any]:
    """Held-out metrics: accuracy, macro F1 and confusion matrix, or perplexity and samples."""
    from shopfloor.finetune.metrics import classification_metrics

    model = trainee.model
    model.eval()
    batch_size = int(trainee.config["batch_size"])
    predictions: list[int] = []
    loss_sum = 0.0
    token_count = 0
    with torch.no_grad(), autocast_for(trainee.device):
        for start in range(0, len(test["texts"]), batch_size):
            indices = list(range(start, min(start + batch_size, len(test["texts"]))))
            batch = trainee.encode(indices, test)
            out = model(**batch)
            if trainee.config["task"] == "classification":
                predictions += out.logits.argmax(-1).tolist()
            else:
                tokens = int((batch["labels"][:, 1:] != -100).sum())
                loss_sum += float(out.loss) * tokens
                token_count += tokens
    if trainee.config["task"] == "classification":
        names = trainee.config["label_names"]
        truth = [names.index(label) for label in test["labels"]]
        return classification_metrics(truth, predictions, names)
    perplexity = math.exp(min(50.0, loss_sum / max(1, token_count)))
    samples = []
    for i, prompt in enumerate(test["texts"][:3]):
        wanted = (test.get("targets") or [""] * len(test["texts"]))[i]
        answer = generate(model, trainee.tokenizer, prompt, trainee.device, bool(wanted))
        samples.append({"prompt": prompt, "expected": wanted, "answer": answer})
    return {"perplexity": perplexity, "samples": samples}


def generate(
    model: nn.Module, tokenizer: Any, prompt: str, device: torch.device,
    instruction: bool = True, max_new_tokens: int = 40,
) -> str:
    """The model's greedy answer to ``prompt`` (or its continuation, for plain-text tuning)."""
    text = answer_prefix(prompt) if instruction else prompt
    inputs = tokenizer(text, return_tensors="pt").to(device)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id)
    answer = out[0][inputs["input_ids"].shape[1]:]
    return str(tokenizer.decode(answer, skip_special_tokens=True)).strip()


@dataclass
class LoopContext:
    """Where the loop runs: rank, world size, device, and how it reports and checkpoints."""

    rank: int
    world: int
    device: torch.device
    report: Callable[[dict[str, Any], Path | None], None]
    checkpoint: Path | None


def run_training(config: dict[str, Any], ctx: LoopContext) -> None:
    """The training loop, independent of who launched the workers."""
    torch.manual_seed(int(config["seed"]))
    run_dir = Path(config["run_dir"])
    progress = ProgressWriter(run_dir, enabled=ctx.rank == 0)
    trainee = Trainee(config, ctx.device, ctx.world)
    train, test = config["train"], config["test"]
    batch_size = int(config["batch_size"])
    per_epoch = steps_per_epoch(len(train["texts"]), batch_size, ctx.world)
    total = per_epoch * int(config["epochs"])
    step = 0
    if ctx.checkpoint is not None:
        step = trainee.restore(torch.load(ctx.checkpoint / STATE_FILE, weights_only=False))
    progress("start", step=step, total_steps=total, resumed=ctx.checkpoint is not None,
             workers=ctx.world, pid=os.getpid(), device=str(ctx.device))
    every = max(1, int(config["checkpoint_every"]))
    started = time.monotonic()
    for step_index in range(step, total):
        epoch, position = divmod(step_index, per_epoch)
        batches = epoch_batches(len(train["texts"]), batch_size, epoch, int(config["seed"]),
                                ctx.rank, ctx.world)
        loss = trainee.train_step(trainee.encode(batches[position], train))
        step = step_index + 1
        elapsed = time.monotonic() - started
        progress("step", step=step, total_steps=total, epoch=epoch + 1, loss=loss,
                 elapsed=elapsed)
        if step % every == 0 or step == total:
            _save_checkpoint(trainee, step, ctx, {"step": step, "loss": loss})
            progress("checkpoint", step=step)
    metrics: dict[str, Any] = {}
    if ctx.rank == 0:
        progress("evaluating", step=step)
        metrics = evaluate(trainee, test)
        trainee.save_model(run_dir / MODEL_DIR)
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
        progress("done", step=step, metrics=metrics)
    ctx.report({"step": step, "done": 1}, None)


def _save_checkpoint(trainee: Trainee, step: int, ctx: LoopContext, metrics: dict[str, Any]
                     ) -> None:
    if ctx.rank != 0:
        ctx.report(metrics, None)
        return
    with tempfile.TemporaryDirectory(prefix="shopfloor-ckpt-") as folder:
        torch.save(trainee.state(step), Path(folder) / STATE_FILE)
        ctx.report(metrics, Path(folder))


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train's entry point on every worker (``TorchTrainer(train_loop_per_worker=...)``)."""
    import ray.train
    import ray.train.torch

    # Models come from the catalog folder: never reach for the Hugging Face hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(max(1, int(config.get("cpus_per_worker", 1))))
    context = ray.train.get_context()
    checkpoint = ray.train.get_checkpoint()

    def report(metrics: dict[str, Any], folder: Path | None) -> None:
        ckpt = ray.train.Checkpoint.from_directory(str(folder)) if folder else None
        ray.train.report(metrics, checkpoint=ckpt)

    def run(ckpt_dir: Path | None) -> None:
        run_training(config, LoopContext(
            rank=context.get_world_rank(), world=context.get_world_size(),
            device=ray.train.torch.get_device(), report=report, checkpoint=ckpt_dir,
        ))

    if checkpoint is None:
        run(None)
    else:
        with checkpoint.as_directory() as folder:
            run(Path(folder))


def iter_progress(path: Path, offset: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
    """Complete progress events after byte ``offset``, each with the offset after it."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            for line in f:
                if not line.endswith(b"\n"):
                    break  # still being written
                offset += len(line)
                yield offset, json.loads(line)
    except FileNotFoundError:
        return


def timed_steps(config: dict[str, Any], rank: int, world: int,
                device: torch.device) -> dict[str, Any]:
    """Time ``config["steps"]`` training steps of the recipe's model on this worker.

    The measurement ``benchmarks/finetune.py`` makes under Ray Train and under ``torchrun``
    alike: the same :class:`Trainee` and batches, two untimed warm-up steps, barriers around
    the timed part. Returns this worker's seconds, throughput and peak resident memory.
    """
    import resource

    import torch.distributed as dist

    torch.manual_seed(int(config["seed"]))
    trainee = Trainee(config, device, world)
    train, batch_size = config["train"], int(config["batch_size"])
    batches = [b for epoch in range(1000)
               for b in epoch_batches(len(train["texts"]), batch_size, epoch,
                                      int(config["seed"]), rank, world)]
    steps, warmup = int(config["steps"]), 2

    def barrier() -> None:
        if world > 1:
            dist.barrier()

    for i in range(warmup):
        trainee.train_step(trainee.encode(batches[i], train))
    barrier()
    started = time.perf_counter()
    for i in range(warmup, warmup + steps):
        trainee.train_step(trainee.encode(batches[i], train))
    barrier()
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"rank": rank, "world": world, "steps": steps, "loop_seconds": seconds,
            "samples_per_s": steps * batch_size * world / seconds,
            "peak_rss_mb": peak_kib / 1024}


def timed_steps_per_worker(config: dict[str, Any]) -> None:
    """:func:`timed_steps` as a Ray Train worker function; writes ``ray-rank<r>.json``."""
    import ray.train
    import ray.train.torch

    torch.set_num_threads(max(1, int(config.get("cpus_per_worker", 1))))
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    result = timed_steps(config, rank, world, ray.train.torch.get_device())
    Path(config["out_dir"], f"ray-rank{rank}.json").write_text(json.dumps(result))
    ray.train.report({"loop_seconds": result["loop_seconds"]})
