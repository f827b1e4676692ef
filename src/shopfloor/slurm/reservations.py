"""Slurm reservations as ``scontrol show reservation`` reports them, and their parser."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shopfloor.slurm.seam import expand_hostlist


@dataclass(frozen=True)
class Reservation:
    """A Slurm reservation as ``scontrol show reservation`` reports it.

    ``users``, ``groups`` and ``accounts`` are Slurm's access lists; a name starting with
    ``-`` is excluded ("everyone but"). ``nodes`` are the reserved nodes: they, not
    ``partition`` (which Slurm fills with the default partition when none was given), say
    which partitions the reservation can serve.
    """

    name: str
    partition: str | None
    users: frozenset[str]
    start: datetime | None
    end: datetime | None
    state: str = "ACTIVE"
    groups: frozenset[str] = frozenset()
    accounts: frozenset[str] = frozenset()
    nodes: frozenset[str] = frozenset()



def parse_reservations(text: str) -> dict[str, Reservation]:
    """Parse ``scontrol -o show reservation`` output."""
    out: dict[str, Reservation] = {}
    for line in text.splitlines():
        fields = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
        name = fields.get("ReservationName")
        if not name:
            continue
        out[name] = Reservation(
            name=name,
            partition=None if fields.get("PartitionName") in (None, "(null)")
            else fields["PartitionName"],
            users=_name_list(fields.get("Users")),
            start=_parse_dt(fields.get("StartTime")),
            end=_parse_dt(fields.get("EndTime")),
            state=fields.get("State", "ACTIVE"),
            groups=_name_list(fields.get("Groups")),
            accounts=_name_list(fields.get("Accounts")),
            nodes=expand_hostlist(fields.get("Nodes", "")),
        )
    return out


def _name_list(value: str | None) -> frozenset[str]:
    """A comma-separated Slurm list; ``(null)`` and blanks are empty."""
    if not value or value == "(null)":
        return frozenset()
    return frozenset(v for v in value.split(",") if v)


def _parse_dt(value: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None
