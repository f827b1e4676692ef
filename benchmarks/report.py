"""Shared helpers for benchmarks: statistics, the JSON document and the readable table.

A benchmark measures one or more *arms* (for example "our spawner" and "stock batchspawner"),
each a list of :class:`RunResult`. :func:`summarize` turns an arm into the JSON block every
benchmark uses (per-run detail, the successful times, median, p90, failures),
:func:`ratio` compares two medians, :func:`format_table` renders the arms for people
(:func:`format_grid` any table of metrics) and
:func:`emit` prints both (JSON on stdout, the table on stderr; or the table on stdout).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO


@dataclass
class RunResult:
    """One measured run of one arm.

    ``seconds`` is the measured time of a successful run and ``None`` for a failed one;
    ``error`` says why a run failed; ``detail`` holds whatever else the benchmark records
    (job id, node, queue wait ...) and goes into the JSON as it is.
    """

    run: int
    ok: bool
    seconds: float | None = None
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.seconds is not None:
            data["seconds"] = round(self.seconds, 3)
        detail = data.pop("detail")
        return {**data, **detail}


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) with linear interpolation between closest ranks.

    This is numpy's default method, so ``percentile(xs, 50)`` is the median. ``None`` for no
    values: a benchmark whose runs all failed has no time to report.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be between 0 and 100, not {q}")
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float | None:
    """The median, or ``None`` for no values."""
    return percentile(values, 50)


def p90(values: Sequence[float]) -> float | None:
    """The 90th percentile (interpolated; with 3 runs it lies between the 2nd and 3rd)."""
    return percentile(values, 90)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or ``None`` when either is missing or the divisor is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def paired_ratios(
    numerator: Sequence[RunResult], denominator: Sequence[RunResult]
) -> dict[str, Any]:
    """Per-round ratios of two interleaved arms (run *i* of one over run *i* of the other).

    Runs of one round ran seconds apart, so load from other users hits both alike; the
    median of these ratios is steadier than the ratio of medians when the load drifts.
    Rounds where either run failed are left out.
    """
    by_run = {r.run: r.seconds for r in denominator if r.ok and r.seconds}
    ratios = [r.seconds / by_run[r.run] for r in numerator
              if r.ok and r.seconds is not None and r.run in by_run]
    return {
        "rounds": len(ratios),
        "median": _round(median(ratios)),
        "min": _round(min(ratios)) if ratios else None,
        "max": _round(max(ratios)) if ratios else None,
    }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def summarize(label: str, runs: Sequence[RunResult], **extra: Any) -> dict[str, Any]:
    """The JSON block of one arm: its runs, the successful times and their statistics.

    Statistics cover successful runs only; ``failures`` counts the others, whose ``error``
    is in ``runs``. ``extra`` keys (settings of this arm) are added as they are.
    """
    seconds = [r.seconds for r in runs if r.ok and r.seconds is not None]
    return {
        "label": label,
        **extra,
        "runs": [r.to_json() for r in runs],
        "seconds": [round(s, 3) for s in seconds],
        "ok": len(seconds),
        "failures": len(runs) - len(seconds),
        "median": _round(median(seconds)),
        "p90": _round(p90(seconds)),
        "min": _round(min(seconds)) if seconds else None,
        "max": _round(max(seconds)) if seconds else None,
    }


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_table(
    title: str, arms: Mapping[str, Mapping[str, Any]], footer: Sequence[str] = ()
) -> str:
    """A fixed-width table of arms (blocks made by :func:`summarize`), in seconds."""
    header = ("arm", "ok", "median", "p90", "min", "max", "runs (s)")
    rows = [header]
    for arm in arms.values():
        runs = " ".join(
            _cell(r.get("seconds")) if r.get("ok") else "FAIL" for r in arm["runs"]
        )
        rows.append((
            str(arm["label"]), f"{arm['ok']}/{len(arm['runs'])}", _cell(arm["median"]),
            _cell(arm["p90"]), _cell(arm["min"]), _cell(arm["max"]), runs,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = [title]
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:-1], widths[1:], strict=True)]
        lines.append("  ".join([*cells, row[-1]]))
    lines += footer
    return "\n".join(lines) + "\n"


def format_grid(
    title: str,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    footer: Sequence[str] = (),
) -> str:
    """A fixed-width table of text cells (first column left-aligned, the others right).

    For benchmarks whose rows are metrics rather than runs (see ``benchmarks.scale``).
    """
    table = [tuple(header), *(tuple(row) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [title]
    for row in table:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    lines += footer
    return "\n".join(lines) + "\n"


def emit(
    document: Mapping[str, Any],
    table: str,
    *,
    json_out: str | Path | None = None,
    table_on_stdout: bool = False,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> None:
    """Print a benchmark's result: JSON on stdout and the table on stderr.

    With ``table_on_stdout`` the table goes to stdout instead of the JSON (for people; use
    ``json_out`` to keep the JSON too). ``json_out`` also writes the JSON to that file.
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    text = json.dumps(document, indent=2, sort_keys=False) + "\n"
    if json_out:
        Path(json_out).write_text(text)
    if table_on_stdout:
        stdout.write(table)
    else:
        stdout.write(text)
        stderr.write(table)
    stdout.flush()
    stderr.flush()
