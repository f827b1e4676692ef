"""``shopfloor apps publish|list|rollback|unpublish``: the Python API on the command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from shopfloor.apps.client import AppsClient, AppsError


def _app_ref(text: str) -> tuple[str, str]:
    owner, _, slug = text.partition("/")
    if not slug:
        raise argparse.ArgumentTypeError(f"{text!r}: name the app as OWNER/APP (e.g. alice/wave)")
    return owner, slug


def _compute(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("partition", "cpus", "memory_gb", "gpus", "walltime", "account", "qos")
    return {k: getattr(args, k) for k in keys if getattr(args, k) is not None}


def _run(args: argparse.Namespace) -> int:
    client = AppsClient.from_env()
    if args.apps_action == "publish":
        result: Any = client.publish(
            args.notebook, title=args.title, description=args.description, slug=args.slug,
            audience=args.audience, names=args.names or [], compute=_compute(args),
            files=args.files or [], thumbnail=args.thumbnail, note=args.note,
        )
        print(f"published {result['owner']}/{result['slug']} v{result['version']}: "
              f"{result['url']} ({result['audience_text']})")
    elif args.apps_action == "list":
        apps = client.list(args.filter, args.search)
        if args.json:
            print(json.dumps(apps, indent=1))
        for app in [] if args.json else apps:
            print(f"{app['owner']}/{app['slug']:24} v{app['version']:<3} "
                  f"{app['audience_text']:28} {app['title']}")
    elif args.apps_action == "versions":
        owner, slug = args.app
        app = client.get(owner, slug)
        if args.json:
            print(json.dumps(app["history"], indent=1))
        for line in [] if args.json else version_lines(app):
            print(line)
    elif args.apps_action == "rollback":
        owner, slug = args.app
        app = client.rollback(owner, slug, args.to)
        note = f": {app['note']}" if app.get("note") else ""
        print(f"{owner}/{slug} now serves v{app['version']}{note}")
    else:
        owner, slug = args.app
        client.unpublish(owner, slug)
        print(f"{owner}/{slug} unpublished")
    return 0


def version_lines(app: dict[str, Any]) -> list[str]:
    """One line per version, newest first: number, date, note; the served one marked."""
    lines = []
    for item in sorted(app.get("history", []), key=lambda v: -v["version"]):
        mark = "*" if item["version"] == app["version"] else " "
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(item["created"]))
        lines.append(f"{mark} v{item['version']:<3} {when}  {item['note'] or '(no note)'}")
    return lines


def run_apps(args: argparse.Namespace) -> int:
    """Entry of ``shopfloor apps``: refusals are printed field by field, exit code 2."""
    try:
        return _run(args)
    except AppsError as exc:
        print(f"shopfloor apps: {exc}", file=sys.stderr)
        for field, message in exc.problems.items():
            print(f"  {field}: {message}", file=sys.stderr)
        return 2


def add_apps_parser(sub: Any) -> None:
    """Add ``apps`` to the ``shopfloor`` command's subcommands."""
    apps = sub.add_parser("apps", help="publish notebooks as apps (run inside a session)")
    actions = apps.add_subparsers(dest="apps_action", required=True)
    publish = actions.add_parser("publish", help="publish a notebook as a new app version")
    publish.add_argument("notebook")
    publish.add_argument("--title", required=True)
    publish.add_argument("--description", default="")
    publish.add_argument("--slug", help="URL name (default: from the title)")
    publish.add_argument("--audience", default="private",
                         choices=["private", "users", "groups", "hub", "public"])
    publish.add_argument("--names", nargs="*", help="users or groups to share with")
    publish.add_argument("--files", nargs="*", help="files next to the notebook the app needs")
    publish.add_argument("--thumbnail", help="PNG/JPEG image (default: first figure output)")
    publish.add_argument("--note", default="",
                         help="what changed in this version, one line (shown in version lists)")
    publish.add_argument("--partition")
    publish.add_argument("--cpus")
    publish.add_argument("--memory-gb", dest="memory_gb")
    publish.add_argument("--gpus")
    publish.add_argument("--walltime")
    publish.add_argument("--account", help="the Slurm account the app's jobs charge (one of "
                         "yours; default: your default account)")
    publish.add_argument("--qos", help="the QoS of the app's jobs (default: the account's)")
    listing = actions.add_parser("list", help="apps you can see")
    listing.add_argument("--filter", default="all", choices=["all", "mine", "shared"])
    listing.add_argument("--search", default="")
    listing.add_argument("--json", action="store_true")
    versions = actions.add_parser("versions", help="an app's versions with their notes")
    versions.add_argument("app", type=_app_ref, help="OWNER/APP")
    versions.add_argument("--json", action="store_true")
    rollback = actions.add_parser("rollback", help="serve an earlier version again")
    rollback.add_argument("app", type=_app_ref, help="OWNER/APP")
    rollback.add_argument("--to", type=int, help="version number (default: the previous one)")
    unpublish = actions.add_parser("unpublish", help="remove an app and all its versions")
    unpublish.add_argument("app", type=_app_ref, help="OWNER/APP")
    apps.set_defaults(func=run_apps)
