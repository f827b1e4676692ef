"""``shopfloor workshop create|status|accounts|end``: the workshop Python API on the command line.

Uses ``$JUPYTERHUB_API_TOKEN`` (inside a session) or ``--token-file``; the service URL from
``$SHOPFLOOR_WORKSHOP_URL``, ``--url`` or the hub API URL (``$JUPYTERHUB_API_URL``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from shopfloor.workshops.client import WorkshopClient, WorkshopError


def _client(args: argparse.Namespace) -> WorkshopClient:
    token = Path(args.token_file).read_text().strip() if args.token_file else None
    return WorkshopClient(args.url, token)


def _create(client: WorkshopClient, args: argparse.Namespace) -> None:
    settings: dict[str, Any] = {
        "title": args.title, "start": args.start, "end": args.end, "hours": args.hours,
        "capacity": args.capacity, "partition": args.partition, "cores": args.cores,
        "nodes": args.nodes, "material": args.material, "trainers": args.trainer or None,
    }
    info = client.create(args.name, **{k: v for k, v in settings.items() if v is not None})
    print(f"workshop {info['name']} created: {info['start']} to {info['end']}, "
          f"{info['capacity']} places on {info['partition']}"
          + (f", reservation {info['reservation']}" if info["reservation"] else ""))
    print(f"  join code:  {info['code']}")
    print(f"  join page:  {info['join_url']}")
    print(f"  start link: {info['spawn_url']}")


def _status(client: WorkshopClient, args: argparse.Namespace) -> None:
    info = client.status(args.name)
    rows = client.progress(args.name)
    if args.json:
        print(json.dumps({"workshop": info, "participants": [vars(r) for r in rows]},
                         indent=1))
        return
    print(f"{info['name']} ({info['title']}): {info['state']}, {len(rows)}/{info['capacity']}"
          f" joined, code {info['code']}, until {info['end']}")
    for row in rows:
        flag = f"STUCK ({row.why_stuck})" if row.stuck else ""
        print(f"  {row.username:18} {row.name[:20]:20} {row.step or '-':16} "
              f"done={row.steps_done:<3} failed={row.errors:<3} {row.server:9} {flag}")


def _accounts(client: WorkshopClient, args: argparse.Namespace) -> None:
    csv_text = Path(args.csv).read_text() if args.csv else None
    sys.stdout.write(client.accounts(args.name, count=args.count, csv=csv_text))


def _end(client: WorkshopClient, args: argparse.Namespace) -> None:
    report = client.end(args.name, "disable" if args.disable else "delete")
    print(f"workshop {args.name} ended; exports in {report['steps'].get('export', '?')}")


def run_workshop(args: argparse.Namespace) -> int:
    """Entry of ``shopfloor workshop``: refusals are printed field by field, exit code 2."""
    actions = {"create": _create, "status": _status, "accounts": _accounts, "end": _end}
    try:
        actions[args.workshop_action](_client(args), args)
    except WorkshopError as exc:
        print(f"shopfloor workshop: {exc}", file=sys.stderr)
        for field, message in exc.problems.items():
            print(f"  {field}: {message}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"shopfloor workshop: {exc}", file=sys.stderr)
        return 2
    return 0


def add_workshop_parser(sub: Any) -> None:
    """Add ``shopfloor workshop ...`` to the main parser's sub-commands."""
    parser = sub.add_parser("workshop", help="run a workshop (trainers)")
    parser.add_argument("--url", help="workshop service URL (default: beside the hub API)")
    parser.add_argument("--token-file", help="file with your hub API token "
                        "(default $JUPYTERHUB_API_TOKEN)")
    actions = parser.add_subparsers(dest="workshop_action", required=True)
    create = actions.add_parser("create", help="create a workshop and its reservation")
    create.add_argument("name", help="2-12 lowercase letters and digits, e.g. intro25")
    create.add_argument("--title")
    create.add_argument("--start", help="'now' (default) or a time such as 2025-05-20T09:00")
    create.add_argument("--end", help="end time (or --hours)")
    create.add_argument("--hours", type=float, help="length in hours (default 2)")
    create.add_argument("--capacity", type=int, help="most participants (default 20)")
    create.add_argument("--partition", help="partition for sessions and the reservation")
    create.add_argument("--cores", type=int, help="reserve this many cores")
    create.add_argument("--nodes", type=int, help="reserve this many whole nodes")
    create.add_argument("--material", help="folder or git URL copied into each home")
    create.add_argument("--trainer", action="append", help="a co-trainer (repeatable)")
    status = actions.add_parser("status", help="the workshop and each participant's progress")
    status.add_argument("name")
    status.add_argument("--json", action="store_true")
    accounts = actions.add_parser("accounts", help="make logins in advance; prints a CSV")
    accounts.add_argument("name")
    group = accounts.add_mutually_exclusive_group(required=True)
    group.add_argument("--count", type=int, help="this many accounts")
    group.add_argument("--csv", help="a roster CSV with a 'name' column")
    end = actions.add_parser("end", help="export everyone's work, then clean up")
    end.add_argument("name")
    end.add_argument("--disable", action="store_true",
                     help="lock the accounts instead of deleting them")
    parser.set_defaults(func=run_workshop)
