"""The metrics the docs name (README, docs/*.md: the reference table and the alert rules) are
the metrics Shopfloor exports, with their labels and label values; and every metric it exports
is in the reference table. An alert rule on a misspelt metric never fires, silently."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

from shopfloor.ops import metrics

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: A metric name in prose, a table or PromQL; not a file name (``shopfloor_x.html``) or part of
#: a longer word (``_var_lib_shopfloor_hub``).
_NAME = re.compile(r"(?<![\w/.-])(shopfloor_[a-z0-9_]*[a-z0-9])(?![\w.])(\{[^}]*\})?")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
#: Label values each bounded label may take (others, e.g. Slurm's pending reasons, are open).
BOUNDED = {
    ("shopfloor_spawn_duration_seconds", "outcome"): set(metrics.SPAWN_OUTCOMES),
    ("shopfloor_workshop_joins", "outcome"): set(metrics.JOIN_OUTCOMES),
    ("shopfloor_slurm_command_failures", "kind"): set(metrics.FAILURE_KINDS),
    ("shopfloor_app_opens", "start"): {"cold", "warm"},
    ("shopfloor_ray_clusters", "state"): {"pending", "running"},
}
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
             "gauge": ("",)}


def exported() -> dict[str, tuple[str, MetricWrapperBase]]:
    """Every name Prometheus sees for Shopfloor's metrics -> (family name, metric)."""
    names: dict[str, tuple[str, MetricWrapperBase]] = {}
    for attr in metrics.__all__:
        metric = getattr(metrics, attr)
        if not isinstance(metric, MetricWrapperBase):
            continue
        family = metric._name  # no public accessor
        for suffix in _SUFFIXES[metric._type]:
            names[family + suffix] = (family, metric)
        if metric._type != "counter":  # a counter's series are only <name>_total
            names[family] = (family, metric)
    return names


def documented(texts: dict[str, str]) -> list[tuple[str, str, str]]:
    """(file, name, ``{matchers}`` or "") for each metric name the ``texts`` write."""
    return [(where, m.group(1), m.group(2) or "") for where, text in texts.items()
            for m in _NAME.finditer(text)]


def problems(texts: dict[str, str]) -> list[str]:
    """Each metric, label or label value the ``texts`` name that Shopfloor does not export."""
    known = exported()
    found = []
    for where, name, matchers in documented(texts):
        if name not in known:
            found.append(f"{where} names {name}, which Shopfloor does not export")
            continue
        family, metric = known[name]
        labels = set(metric._labelnames) | ({"le"} if name.endswith("_bucket") else set())
        for label, op, value in _MATCHER.findall(matchers):
            if label not in labels:
                found.append(f"{where}: {name} has no label {label!r}")
                continue
            allowed = BOUNDED.get((family, label))
            regex = op in ("=~", "!~")
            if allowed is None or (regex and not re.fullmatch(r"[\w|]+", value)):
                continue
            found += [f"{where}: {name}{{{label}}} is never {word!r}"
                      for word in (value.split("|") if regex else [value])
                      if word not in allowed]
    return found


def docs() -> dict[str, str]:
    return {path.name: path.read_text() for path in DOCS}


def test_the_docs_name_metrics() -> None:
    # The test reads something: the reference table and the alert rules are there.
    names = {name for _, name, _ in documented(docs())}
    assert "shopfloor_spawn_duration_seconds" in names
    assert "shopfloor_spawn_duration_seconds_count" in names


def test_every_documented_metric_exists_with_its_labels() -> None:
    assert problems(docs()) == []


def test_a_misspelt_metric_label_or_value_is_caught() -> None:
    text = """
    | `shopfloor_app_open_total` | counter |
    expr: rate(shopfloor_app_opens[5m])
    expr: sum(rate(shopfloor_spawn_duration_seconds_count{outcome=~"failed|timedout"}[5m]))
    expr: shopfloor_pending_sessions{partition="gpu"} > 0
    expr: shopfloor_workshop_joins_total{outcome="joined"}
    expr: shopfloor_job_poll_size_bucket{le="5"}
    see extensions/templates/shopfloor_oidc_refused.html and /var/lib/x_shopfloor_hub_db
    """
    assert problems({"t.md": text}) == [
        "t.md names shopfloor_app_open_total, which Shopfloor does not export",
        "t.md names shopfloor_app_opens, which Shopfloor does not export",
        "t.md: shopfloor_spawn_duration_seconds_count{outcome} is never 'timedout'",
        "t.md: shopfloor_pending_sessions has no label 'partition'",
    ]


def test_every_exported_metric_is_in_the_reference_table() -> None:
    table = (REPO / "docs" / "deploy.md").read_text()
    rows = set(re.findall(r"^\| `(shopfloor_[a-z0-9_]+)` \|", table, re.MULTILINE))
    for family, metric in set(exported().values()):
        shown = family + ("_total" if metric._type == "counter" else "")
        assert shown in rows, f"{shown} is not in docs/deploy.md's metrics table"


def test_registered_on_the_registry_the_hub_serves() -> None:
    # JupyterHub's /hub/metrics serves prometheus_client's default registry.
    served = {family.name for family in REGISTRY.collect()}
    for family, _ in exported().values():
        assert family in served, family
