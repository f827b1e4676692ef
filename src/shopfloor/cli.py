"""The ``shopfloor`` command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shopfloor.site import SiteConfigError


def _cluster(args: argparse.Namespace) -> int:
    from shopfloor.demo.localcluster import LocalCluster

    cluster = LocalCluster(Path(args.state_dir) if args.state_dir else None)
    if args.action == "up":
        print(cluster.up().table())
    elif args.action == "down":
        cluster.down()
        print("cluster stopped")
    else:
        status = cluster.status()
        print(status.table())
        return 0 if status.running else 3
    return 0


def _demo(args: argparse.Namespace) -> int:
    from shopfloor.demo import hub as demo

    site = Path(args.site) if args.site else None
    if args.credentials:
        creds = demo.demo_credentials(site)
        if not creds:
            print("no demo credentials yet: run `shopfloor demo` first", file=sys.stderr)
            return 1
        print(json.dumps(creds, indent=1))
    elif args.down:
        demo.demo_down(site)
    else:
        demo.demo_up(site, detach=args.detach)
    return 0


def _models(args: argparse.Namespace) -> int:
    from shopfloor.finetune.catalog import ModelCatalog, build_demo_catalog

    if args.action == "build-demo":
        root = build_demo_catalog(args.catalog, copy=args.copy)
        print(f"demo model catalog ready in {root}")
        from shopfloor.finetune.demo_datasets import build_demo_datasets

        # The demo site file's catalog lists these beside the models.
        for path in build_demo_datasets():
            print(f"demo dataset ready: {path}")
    for entry in ModelCatalog(args.catalog).models():
        print(f"{entry.name:20} {entry.task:15} {entry.summary}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shopfloor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    cluster = sub.add_parser("cluster", help="the embedded multi-node Slurm cluster")
    cluster.add_argument("action", choices=["up", "down", "status"])
    cluster.add_argument("--state-dir", help="where the cluster keeps its state "
                         "(default $SHOPFLOOR_STATE_DIR/cluster or /var/lib/shopfloor/cluster)")
    cluster.set_defaults(func=_cluster)

    demo = sub.add_parser("demo", help="run the whole workbench on this machine")
    demo.add_argument("--detach", action="store_true", help="return once the hub answers")
    demo.add_argument("--down", action="store_true", help="stop everything the demo started")
    demo.add_argument("--credentials", action="store_true",
                      help="print the demo logins as JSON")
    demo.add_argument("--site", help="site file (default: the packaged demo_site.yaml)")
    demo.set_defaults(func=_demo)

    models = sub.add_parser("models", help="the site model catalog (for fine-tuning)")
    models.add_argument("action", choices=["list", "build-demo"])
    models.add_argument("--catalog", help="catalog folder (default $SHOPFLOOR_MODEL_CATALOG "
                        "or /opt/shopfloor/models)")
    models.add_argument("--copy", action="store_true",
                        help="copy the packaged model's files instead of linking them")
    models.set_defaults(func=_models)

    from shopfloor.apps.cli import add_apps_parser

    add_apps_parser(sub)

    from shopfloor.workshops.cli import add_workshop_parser

    add_workshop_parser(sub)

    from shopfloor.ops.doctor import add_doctor_parser
    from shopfloor.ops.sitedoc import add_site_reference_parser

    add_doctor_parser(sub)
    add_site_reference_parser(sub)
    from shopfloor.accounts.usage import add_usage_parser

    add_usage_parser(sub)
    from shopfloor.ops.serviceuser import add_service_user_parser

    add_service_user_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from shopfloor.demo.hub import DemoError
    from shopfloor.demo.localcluster import ClusterError
    from shopfloor.finetune.catalog import CatalogError

    try:
        return int(args.func(args))
    except (CatalogError, ClusterError, DemoError, SiteConfigError) as exc:
        print(f"shopfloor: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
