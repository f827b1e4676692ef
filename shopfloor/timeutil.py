"""Walltimes as people and Slurm write them."""

from __future__ import annotations

import re

_WALLTIME_RE = re.compile(r"^(?:(\d{1,3})-)?(\d{1,4})(?::(\d{1,2}))?(?::(\d{1,2}))?$")


def parse_walltime(value: str) -> int:
    """Minutes in a walltime: ``90`` (minutes), ``1:30`` (h:mm), ``1:30:00``, ``2-00:00:00``.

    Raises ``ValueError`` with the accepted forms for anything else.
    """
    text = str(value).strip()
    match = _WALLTIME_RE.match(text)
    if not match:
        raise ValueError(
            f"{value!r} is not a walltime; write minutes (90), hours:minutes (1:30), "
            "hours:minutes:seconds (1:30:00) or days-hours:minutes:seconds (1-00:00:00)"
        )
    days, first, second, third = match.groups()
    if days is not None and second is None:
        raise ValueError(f"{value!r} is not a walltime; after days write hours:minutes:seconds")
    if second is None:
        minutes = int(first)
    elif third is None:
        minutes = int(first) * 60 + int(second)
    else:
        minutes = int(first) * 60 + int(second) + (1 if int(third) else 0)
    if (second is not None and int(second) >= 60) or (third is not None and int(third) >= 60):
        raise ValueError(f"{value!r} is not a walltime: minutes and seconds go up to 59")
    return minutes + int(days or 0) * 24 * 60


def format_minutes(minutes: int) -> str:
    """Minutes as people read them: ``30 minutes``, ``4 hours``, ``1 day 2 hours``."""
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    parts = []
    for amount, unit in ((days, "day"), (hours, "hour"), (mins, "minute")):
        if amount:
            parts.append(f"{amount} {unit}{'s' if amount != 1 else ''}")
    return " ".join(parts) or "0 minutes"


def slurm_time(minutes: int) -> str:
    """Minutes as Slurm's ``--time`` value (``D-HH:MM:00``)."""
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    return f"{days}-{hours:02d}:{mins:02d}:00"
