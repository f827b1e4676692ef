"""Training data from files people own: read, check and explain, before any compute is spent.

CSV (any of ``,`` ``;`` tab ``|`` between columns) and JSON Lines files are read, never
changed. Every problem is reported in plain words with the setting it concerns
(:class:`DataError.problems` maps a field such as ``label_column`` to a message) and what to
do about it: an empty file, the wrong delimiter, a missing or unknown column, text that is not
UTF-8, a single class, a file far larger than the chosen preset expects.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from shopfloor.errors import ShopfloorError

DELIMITERS = {",": "commas", ";": "semicolons", "\t": "tabs", "|": "vertical bars"}
CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
MIN_EXAMPLES = 10


class ProblemsError(ShopfloorError, ValueError):
    """Something cannot be used as it is. ``problems`` maps each setting to what is wrong."""

    #: One problem per line: these errors are printed in terminals and Ray job logs too.
    problems_separator = "\n"

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__(problems=problems)

    def field_label(self, field: str) -> str:
        """Settings such as ``label_column`` read as "label column" to people."""
        return field.replace("_", " ")


class DataError(ProblemsError):
    """The data cannot be used as it is."""


@dataclass(frozen=True)
class DataLimits:
    """How much data a preset is made for; larger files are refused before training."""

    preset: str
    max_rows: int
    max_megabytes: float


@dataclass
class Table:
    """A file's rows as text, in file order. ``line_numbers[i]`` is row i's line in the file."""

    path: Path
    columns: list[str]
    rows: list[dict[str, str]]
    line_numbers: list[int]
    delimiter: str | None = None

    def preview(self, count: int = 5) -> list[dict[str, str]]:
        return self.rows[:count]

    def __len__(self) -> int:
        return len(self.rows)


def _lines(numbers: list[int], limit: int = 5) -> str:
    shown = ", ".join(str(n) for n in numbers[:limit])
    return shown + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")


def check_size(path: Path, limits: DataLimits) -> None:
    """Refuse a file far larger than the preset expects, from its size alone (no reading)."""
    megabytes = path.stat().st_size / 1e6
    if megabytes > limits.max_megabytes:
        raise DataError({"data": (
            f"{path.name} is {megabytes:,.0f} MB; the {limits.preset} preset is made for files "
            f"up to {limits.max_megabytes:g} MB ({limits.max_rows:,} rows). Choose a larger "
            "preset, or train on a sample of your file first."
        )})


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError({"data": (
            f"{path.name} is not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}). "
            "Save it again as UTF-8 (in Excel: 'CSV UTF-8'; in LibreOffice: character set "
            "'Unicode (UTF-8)') and choose it again."
        )}) from None


def _sniff_delimiter(header: str) -> str:
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _read_csv(path: Path, text: str, delimiter: str | None) -> Table:
    header = text.splitlines()[0] if text.strip() else ""
    if delimiter is not None and delimiter not in DELIMITERS:
        allowed = ", ".join(repr(d) for d in DELIMITERS)
        raise DataError({"delimiter": f"must be one of {allowed}, not {delimiter!r}"})
    chosen = delimiter or _sniff_delimiter(header)
    reader = csv.reader(io.StringIO(text), delimiter=chosen)
    try:
        records = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    except csv.Error as exc:
        raise DataError({"data": f"{path.name} line {reader.line_num}: {exc}"}) from None
    if not records:
        raise DataError({"data": f"{path.name} has no rows, only empty lines."})
    columns = [c.strip() for c in records[0][1]]
    if len(columns) == 1:
        others = [d for d in DELIMITERS if d != chosen and d in header]
        if others:
            raise DataError({"delimiter": (
                f"{path.name} seems to separate columns with {DELIMITERS[others[0]]}, not "
                f"{DELIMITERS[chosen]}: choose {others[0]!r} as the delimiter."
            )})
    if len(set(columns)) != len(columns) or "" in columns:
        raise DataError({"data": (
            f"the first line of {path.name} must name every column once; it is: {header[:120]}"
        )})
    rows, numbers, ragged = [], [], []
    for line, values in records[1:]:
        if len(values) != len(columns):
            ragged.append(line)
            continue
        rows.append({c: v.strip() for c, v in zip(columns, values, strict=True)})
        numbers.append(line)
    if ragged:
        raise DataError({"data": (
            f"{path.name}: lines {_lines(ragged)} do not have {len(columns)} columns like the "
            f"first line. Text containing {DELIMITERS[chosen]} must be in double quotes."
        )})
    return Table(path, columns, rows, numbers, chosen)


def _read_jsonl(path: Path, text: str) -> Table:
    rows, numbers, columns = [], [], {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError({"data": (
                f"{path.name} line {line_no} is not valid JSON ({exc.msg}); each line must be "
                'one object such as {"text": "...", "label": "..."}.'
            )}) from None
        if not isinstance(record, dict):
            raise DataError({"data": f"{path.name} line {line_no} is not a JSON object."})
        columns.update(dict.fromkeys(record))
        rows.append({k: "" if v is None else str(v).strip() for k, v in record.items()})
        numbers.append(line_no)
    return Table(path, list(columns), rows, numbers)


def read_table(
    path: str | Path, delimiter: str | None = None, limits: DataLimits | None = None
) -> Table:
    """Read a CSV or JSON Lines file (read only). ``delimiter`` None means detect it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError({"data": f"there is no file {path}: check the name and folder."})
    suffix = path.suffix.lower()
    if suffix not in CSV_SUFFIXES | JSONL_SUFFIXES:
        raise DataError({"data": (
            f"{path.name}: use a .csv or .jsonl file (save spreadsheets as CSV UTF-8)."
        )})
    if path.stat().st_size == 0:
        raise DataError({"data": f"{path.name} is empty (0 bytes)."})
    if limits is not None:
        check_size(path, limits)
    text = _decode(path, path.read_bytes())
    if not text.strip():
        raise DataError({"data": f"{path.name} is empty (only blank lines)."})
    if suffix in JSONL_SUFFIXES:
        table = _read_jsonl(path, text)
    else:
        table = _read_csv(path, text, delimiter or ("\t" if suffix == ".tsv" else None))
    if not table.rows:
        raise DataError({"data": f"{path.name} has column names but no rows of data."})
    return table


@dataclass
class Examples:
    """Validated examples for one task.

    Classification: ``texts`` and ``labels`` (label names); ``label_names`` sorted.
    Causal LM: ``texts`` are prompts, ``targets`` the wanted answers ('' for plain text).
    """

    task: str
    texts: list[str]
    labels: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)

    @property
    def label_names(self) -> list[str]:
        return sorted(set(self.labels))

    def class_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.labels).items()))

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: list[int]) -> Examples:
        return Examples(
            self.task,
            [self.texts[i] for i in indices],
            [self.labels[i] for i in indices] if self.labels else [],
            [self.targets[i] for i in indices] if self.targets else [],
        )

    def describe(self) -> str:
        """One plain sentence about the data, for the wizard."""
        if self.task == "classification":
            counts = ", ".join(f"{k}: {v}" for k, v in self.class_counts().items())
            return f"{len(self)} examples in {len(self.label_names)} classes ({counts})."
        return f"{len(self)} examples of prompts and answers."


def _column(table: Table, value: str | None, field_name: str, what: str) -> dict[str, str]:
    columns = ", ".join(table.columns)
    if not value:
        return {field_name: f"choose the column with {what}; the columns are: {columns}"}
    if value not in table.columns:
        return {field_name: (
            f"there is no column {value!r} in {table.path.name}; the columns are: {columns}"
        )}
    return {}


def _blank_rows(table: Table, column: str) -> list[int]:
    return [n for row, n in zip(table.rows, table.line_numbers, strict=True) if not row[column]]


def _check_rows(table: Table, limits: DataLimits | None) -> dict[str, str]:
    if len(table) < MIN_EXAMPLES:
        return {"data": (
            f"{table.path.name} has {len(table)} rows; fine-tuning needs at least "
            f"{MIN_EXAMPLES} examples (a few hundred is better)."
        )}
    if limits is not None and len(table) > limits.max_rows:
        return {"data": (
            f"{table.path.name} has {len(table):,} rows; the {limits.preset} preset is made "
            f"for up to {limits.max_rows:,}. Choose a larger preset, or train on a sample first."
        )}
    return {}


def classification_examples(
    table: Table, text_column: str | None, label_column: str | None,
    limits: DataLimits | None = None,
) -> Examples:
    """Texts and their labels; raises :class:`DataError` with every problem found."""
    problems = {
        **_column(table, text_column, "text_column", "the texts"),
        **_column(table, label_column, "label_column", "the labels (categories)"),
    }
    if not problems and text_column == label_column:
        problems["label_column"] = "must be a different column from text_column"
    if problems:
        raise DataError(problems)
    text_column, label_column = str(text_column), str(label_column)  # checked just above
    for column, name in ((text_column, "text_column"), (label_column, "label_column")):
        blank = _blank_rows(table, column)
        if blank:
            problems[name] = (
                f"{len(blank)} rows have an empty {column!r} (lines {_lines(blank)}): fill "
                "them in or remove them."
            )
    problems.update(_check_rows(table, limits))
    if problems:
        raise DataError(problems)
    labels = [row[label_column] for row in table.rows]
    counts = Counter(labels)
    if len(counts) < 2:
        raise DataError({"label_column": (
            f"every row has the label {labels[0]!r}: a classifier needs examples of at least "
            "two different labels."
        )})
    rare = sorted(name for name, count in counts.items() if count < 2)
    if rare:
        raise DataError({"label_column": (
            f"the labels {', '.join(map(repr, rare))} have only one example each; give at "
            "least two examples of every label (or fix a typo in the label)."
        )})
    if len(counts) > len(table) // 2:
        raise DataError({"label_column": (
            f"{label_column!r} has {len(counts)} different values in {len(table)} rows: it does "
            "not look like a column of categories. Choose the column with the labels."
        )})
    return Examples("classification", [row[text_column] for row in table.rows], labels)


def instruction_examples(
    table: Table, prompt_column: str | None, response_column: str | None = None,
    limits: DataLimits | None = None,
) -> Examples:
    """Prompts and answers (or plain texts when ``response_column`` is None)."""
    problems = _column(table, prompt_column, "text_column", "the prompts or texts")
    if response_column:
        problems.update(_column(table, response_column, "label_column", "the answers"))
    if problems:
        raise DataError(problems)
    prompt_column = str(prompt_column)  # checked just above
    blank = _blank_rows(table, prompt_column)
    if blank:
        problems["text_column"] = f"{len(blank)} rows are empty (lines {_lines(blank)})."
    problems.update(_check_rows(table, limits))
    if problems:
        raise DataError(problems)
    targets = [row[response_column] for row in table.rows] if response_column else []
    return Examples("causal-lm", [row[prompt_column] for row in table.rows], targets=targets)


def holdout_split(
    examples: Examples, fraction: float, seed: int = 0
) -> tuple[Examples, Examples]:
    """Split into (train, held-out); classification keeps each label's share in both."""
    if not 0 < fraction < 1:
        raise DataError({"holdout": f"must be between 0 and 1, not {fraction}"})
    rng = random.Random(seed)
    groups: dict[str, list[int]] = {}
    for i in range(len(examples)):
        key = examples.labels[i] if examples.labels else ""
        groups.setdefault(key, []).append(i)
    train, test = [], []
    for indices in groups.values():
        rng.shuffle(indices)
        cut = max(1, round(len(indices) * fraction))
        test += indices[:cut]
        train += indices[cut:]
    return examples.subset(sorted(train)), examples.subset(sorted(test))


__all__ = [
    "DataError",
    "DataLimits",
    "Examples",
    "Table",
    "check_size",
    "classification_examples",
    "holdout_split",
    "instruction_examples",
    "read_table",
]
