"""Usage per project and user, for admins: ``shopfloor usage`` and ``/hub/api/shopfloor/usage``.

Read live from Slurm (``sshare``: what finished and running jobs used of each account, in
TRES-minutes), so it matches what Slurm enforces.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from shopfloor.slurm.accounting import BUDGET_TRES, TRES_LABELS, AccountingSync, ShareRow


def usage_rows(shares: Iterable[ShareRow]) -> list[dict[str, Any]]:
    """One row per account (``user`` empty, with the grant) and per user of it."""
    rows = []
    for row in shares:
        if row.account == "root":
            continue
        item: dict[str, Any] = {"account": row.account, "user": row.user}
        for tres in BUDGET_TRES:
            item[f"{tres}_used"] = row.used.get(tres, 0) + row.running.get(tres, 0)
            if not row.user:
                item[f"{tres}_granted"] = row.granted.get(tres)
        rows.append(item)
    return rows


def usage_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as a table: ``used / granted`` per TRES for accounts, ``used`` for users."""
    header = ["ACCOUNT", "USER", *(TRES_LABELS[t].upper() for t in BUDGET_TRES)]
    lines = [header]
    for row in rows:
        cells = [row["account"] if not row["user"] else "", row["user"] or "(all)"]
        for tres in BUDGET_TRES:
            used = f"{row[f'{tres}_used']:,}"
            granted = row.get(f"{tres}_granted")
            cells.append(f"{used} / {granted:,}" if granted is not None and not row["user"]
                         else used)
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def main(accounting: AccountingSync, *, as_json: bool = False) -> str:
    """What ``shopfloor usage`` prints."""
    rows = usage_rows(accounting.shares())
    return json.dumps(rows, indent=2) if as_json else usage_table(rows)


def add_usage_parser(sub: Any) -> None:
    """``shopfloor usage [--json]``: use per project and user (admins; reads Slurm)."""
    parser = sub.add_parser("usage", help="CPU and GPU minutes used per project and user")
    parser.add_argument("--json", action="store_true", help="print JSON rows")
    parser.set_defaults(func=_usage_command)


def _usage_command(args: Any) -> int:
    import sys

    from shopfloor.slurm.seam import SlurmError, SlurmSync

    try:
        print(main(AccountingSync(SlurmSync()), as_json=args.json))
    except SlurmError as exc:
        print(f"shopfloor usage: Slurm said: {exc.slurm_message}", file=sys.stderr)
        return 2
    return 0
