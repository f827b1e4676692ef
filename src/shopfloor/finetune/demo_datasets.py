"""The demo's two small datasets, made offline from templates (nothing is downloaded).

``shopfloor models build-demo`` writes them beside the model catalog, in
``/opt/shopfloor/datasets`` by default, readable by everyone; the demo site file lists them
in its ``catalog.datasets`` section:

* ``reviews.csv``: short product reviews (``text``, ``label``: positive, negative or neutral),
  for classification;
* ``support-replies.jsonl``: customer questions and a helpdesk's answers (``question``,
  ``answer``), for text generation.

The same seed gives the same files, so a fine-tuning result can be compared across runs.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
from pathlib import Path

DEFAULT_DATASETS_DIR = "/opt/shopfloor/datasets"
REVIEWS_FILE = "reviews.csv"
REPLIES_FILE = "support-replies.jsonl"

_THINGS = ("the bread", "the chair", "the printer", "the delivery", "the website",
           "the packaging", "the support line", "this coffee", "the tea", "my order")
_OPENINGS = ("", "Overall, ", "To be clear, ", "Honestly, ", "Well, ", "I must say ", "Today ")
_PHRASES = {
    "positive": ("is wonderful.", "exceeded my expectations.", "is great value for money.",
                 "was a real pleasure.", "was excellent."),
    "negative": ("is the worst I have had.", "stopped working after a day.",
                 "is awful, I want a refund.", "was rude and slow.", "is useless."),
    "neutral": ("is available in blue.", "was ordered last week.", "comes in two sizes.",
                "arrived on Tuesday.", "is made in the region."),
}
_QUESTIONS = (
    ("Where is my order {n}?", "Order {n} left our warehouse yesterday; you will get a "
     "tracking link by e-mail today."),
    ("Can I return the {item}?", "Yes: you can return the {item} within 30 days. Print the "
     "label from your account and drop the parcel at any post office."),
    ("The {item} arrived broken.", "We are sorry the {item} arrived broken. Send us a photo "
     "and we will ship a new one at no cost."),
    ("How do I change my delivery address for order {n}?", "Open order {n} in your account, "
     "choose 'Delivery' and enter the new address before it ships."),
    ("Do you sell the {item} in other colours?", "The {item} comes in blue, grey and green; "
     "choose the colour on its product page."),
)
_ITEMS = ("chair", "printer", "kettle", "lamp", "desk", "backpack", "coffee grinder", "toaster")


def reviews(rows: int = 320, seed: int = 0) -> list[dict[str, str]]:
    """Labelled reviews, balanced over the three labels."""
    rng = random.Random(seed)
    labels = list(_PHRASES)
    out = []
    for i in range(rows):
        label = labels[i % len(labels)]
        opening = rng.choice(_OPENINGS)
        thing = rng.choice(_THINGS)
        text = f"{opening}{thing} {rng.choice(_PHRASES[label])}"
        out.append({"text": text[0].upper() + text[1:], "label": label})
    rng.shuffle(out)
    return out


def support_replies(rows: int = 200, seed: int = 0) -> list[dict[str, str]]:
    """Questions and answers in one helpdesk's style."""
    rng = random.Random(seed)
    out = []
    for _ in range(rows):
        question, answer = rng.choice(_QUESTIONS)
        values = {"n": str(rng.randint(10000, 99999)), "item": rng.choice(_ITEMS)}
        out.append({"question": question.format(**values), "answer": answer.format(**values)})
    return out


def build_demo_datasets(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Write both datasets into ``root`` (readable by everyone: jobs run as the users)."""
    folder = Path(root or DEFAULT_DATASETS_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["text", "label"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(reviews())
    files = {REVIEWS_FILE: text.getvalue(),
             REPLIES_FILE: "".join(json.dumps(r) + "\n" for r in support_replies())}
    written = []
    for name, content in files.items():
        path = folder / name
        tmp = folder / f".{name}.tmp"
        tmp.write_text(content)
        tmp.chmod(0o644)
        os.replace(tmp, path)
        written.append(path)
    return written


__all__ = ["DEFAULT_DATASETS_DIR", "build_demo_datasets", "reviews", "support_replies"]
