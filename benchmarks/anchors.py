"""Small helpers shared by the benchmarks that compare against an anchor in the same run.

The machine is shared, so absolute times are noisy: each benchmark interleaves its arms
(:func:`rotate` changes which arm goes first from round to round), reports medians and the
spread (:func:`spread`), the median of each phase of a run (:func:`phase_medians`) and the
load average at the start and the end (:func:`load_average`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from benchmarks.report import RunResult, median

T = TypeVar("T")


def rotate(items: Sequence[T], round_index: int) -> list[T]:
    """``items`` starting at position ``round_index`` (mod len): round 0 a b c, round 1 b c a.

    Interleaving alone still favours whichever arm always runs right after another one (a
    warm file cache, a just-freed node); rotating the start spreads that over all arms.
    """
    if not items:
        return []
    shift = round_index % len(items)
    return [*items[shift:], *items[:shift]]


def load_average() -> dict[str, float]:
    """The 1, 5 and 15 minute load averages (what ``uptime`` prints) and the core count."""
    one, five, fifteen = os.getloadavg()
    return {"load1": round(one, 2), "load5": round(five, 2), "load15": round(fifteen, 2),
            "cpus": os.cpu_count() or 0}


def phase_medians(runs: Sequence[RunResult], key: str = "phases") -> dict[str, float | None]:
    """Median per phase over the successful runs whose ``detail[key]`` maps phase → seconds.

    Phases missing from some runs are summarized over the runs that have them; a phase whose
    value is ``None`` in a run (not observed) is left out of that run.
    """
    values: dict[str, list[float]] = {}
    for result in runs:
        phases = result.detail.get(key) if result.ok else None
        if not isinstance(phases, Mapping):
            continue
        for name, seconds in phases.items():
            if isinstance(seconds, (int, float)):
                values.setdefault(name, []).append(float(seconds))
    return {name: _round(median(found)) for name, found in values.items()}


def spread(block: Mapping[str, Any]) -> str:
    """``median (min-max)`` of a :func:`benchmarks.report.summarize` block, for tables."""
    if block.get("median") is None:
        return "-"
    return f"{block['median']:.2f} ({block['min']:.2f}-{block['max']:.2f})"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
