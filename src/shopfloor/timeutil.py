"""Walltimes in Slurm's own grammar: the one parser every path uses.

The site file, the spawn form, the hub API, widgets, Ray clusters and apps all turn a walltime
into minutes with :func:`parse_walltime`, and ``sinfo``'s time limits are read with it too, so
``"30:00"`` means 30 minutes everywhere, as it does to ``sbatch --time``.
"""

from __future__ import annotations

import re

#: Slurm's ``--time`` forms (sbatch(1)): ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``,
#: ``D-HH:MM``, ``D-HH:MM:SS``.
_WALLTIME_RE = re.compile(
    r"^(?:(?P<days>\d{1,3})-(?P<dhours>\d{1,2})(?::(?P<dmin>\d{1,2})(?::(?P<dsec>\d{1,2}))?)?"
    r"|(?P<first>\d{1,5})(?::(?P<second>\d{1,2})(?::(?P<third>\d{1,2}))?)?)$"
)
WALLTIME_FORMS = (
    "minutes (90), minutes:seconds (30:00), hours:minutes:seconds (1:30:00), "
    "days-hours (1-12), days-hours:minutes (1-12:30) or days-hours:minutes:seconds (1-12:30:00)"
)


def parse_walltime(value: str) -> int:
    """Minutes in a walltime written as Slurm's ``--time`` takes it.

    ``"90"`` is 90 minutes, ``"30:00"`` 30 minutes (minutes:seconds), ``"1:30:00"`` 90 minutes,
    ``"1-12"`` a day and a half. Seconds round up to the next minute, as Slurm does.
    Raises ``ValueError`` naming the accepted forms for anything else.
    """
    text = str(value).strip()
    match = _WALLTIME_RE.match(text)
    if not match:
        raise ValueError(f"{value!r} is not a walltime; write {WALLTIME_FORMS}")
    parts = match.groupdict()
    if parts["days"] is not None:
        days, hours = int(parts["days"]), int(parts["dhours"])
        minutes, seconds = int(parts["dmin"] or 0), int(parts["dsec"] or 0)
        bounded = {"hours": (hours, 24), "minutes": (minutes, 60), "seconds": (seconds, 60)}
    elif parts["third"] is not None:
        days, hours = 0, int(parts["first"])
        minutes, seconds = int(parts["second"]), int(parts["third"])
        bounded = {"minutes": (minutes, 60), "seconds": (seconds, 60)}
    else:
        days, hours = 0, 0
        minutes, seconds = int(parts["first"]), int(parts["second"] or 0)
        bounded = {"seconds": (seconds, 60)}
    for unit, (amount, limit) in bounded.items():
        if amount >= limit:
            raise ValueError(f"{value!r} is not a walltime: {unit} go up to {limit - 1}")
    return (days * 24 + hours) * 60 + minutes + (1 if seconds else 0)


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
