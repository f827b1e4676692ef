"""The front door without a hub: catalog entries in the site file, help requests, home rows."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from shopfloor.catalog_site import CATALOG_TASKS, SupportSettings
from shopfloor.extensions.catalog_api import catalog_for
from shopfloor.extensions.home import job_rows, minutes_left, session_state
from shopfloor.extensions.support import SupportInputError, validate_request
from shopfloor.finetune.catalog import TASKS
from shopfloor.resources import UserContext
from shopfloor.site import SiteConfigError, load_site, parse_site
from shopfloor.slurm.seam import JobInfo

GOOD = {"description": "Product reviews", "task": "classification", "licence": "CC0-1.0",
        "size": "15 kB", "location": "/shared/datasets/reviews.csv"}


def site_with(catalog: dict[str, Any], **more: Any) -> Any:
    return parse_site({"partitions": {"cpu": {}}, "catalog": catalog, **more})


@pytest.mark.parametrize("change,expected", [
    ({"task": "translation"}, "catalog.datasets.reviews.task: Value error, must be one of "
                              "classification, causal-lm; got 'translation'"),
    ({"size": "big"}, "catalog.datasets.reviews.size: Value error, must be a number and a unit"),
    ({"size": "12"}, "catalog.datasets.reviews.size"),
    ({"location": "datasets/reviews.csv"}, "catalog.datasets.reviews.location: Value error, "
                                           "must be an absolute path"),
    ({"location": "/shared/../etc/shadow"}, "catalog.datasets.reviews.location"),
    ({"licence": ""}, "catalog.datasets.reviews.licence: String should have at least 1"),
    ({"description": "x" * 301}, "catalog.datasets.reviews.description"),
    ({"groups": ["bad group!"]}, "catalog.datasets.reviews.groups.0"),
    ({"licence_url": "https://x"}, "catalog.datasets.reviews.licence_url: is not a known "
                                   "setting"),
])
def test_bad_catalog_entries_name_the_field(change: dict[str, Any], expected: str) -> None:
    with pytest.raises(SiteConfigError) as err:
        site_with({"datasets": {"reviews": {**GOOD, **change}}})
    assert expected in str(err.value)


def test_missing_fields_and_bad_names_are_named() -> None:
    with pytest.raises(SiteConfigError) as err:
        site_with({"models": {"m": {"description": "a model"}}})
    for name in ("task", "licence", "size", "location"):
        assert f"catalog.models.m.{name}: is required" in str(err.value)
    with pytest.raises(SiteConfigError, match=r"catalog\.datasets\.bad name"):
        site_with({"datasets": {"bad name": GOOD}})
    with pytest.raises(SiteConfigError, match="a model and a dataset share the name"):
        site_with({"models": {"reviews": GOOD}, "datasets": {"reviews": GOOD}})


def test_support_settings_are_checked() -> None:
    with pytest.raises(SiteConfigError, match=r"support\.max_hours"):
        parse_site({"partitions": {"cpu": {}}, "support": {"max_hours": 48}})
    with pytest.raises(SiteConfigError, match=r"default_hours \(3\) is more than max_hours \(2\)"):
        parse_site({"partitions": {"cpu": {}}, "support": {"max_hours": 2, "default_hours": 3}})


def test_catalog_tasks_are_the_finetune_tasks() -> None:
    assert set(CATALOG_TASKS) == set(TASKS)


def test_catalog_shows_what_the_caller_may_use() -> None:
    site = site_with({"datasets": {"reviews": GOOD,
                                   "medical": {**GOOD, "groups": ["clinic"]}},
                      "models": {"m": {**GOOD, "task": "causal-lm"}}})
    alice = UserContext("alice", frozenset({"alice"}), False)
    doctor = UserContext("dora", frozenset({"clinic"}), False)
    admin = UserContext("root", frozenset(), True)
    assert [d["name"] for d in catalog_for(site, alice)["datasets"]] == ["reviews"]
    assert [d["name"] for d in catalog_for(site, doctor)["datasets"]] == ["reviews", "medical"]
    assert len(catalog_for(site, admin)["datasets"]) == 2
    entry = catalog_for(site, alice)["models"][0]
    assert entry["kind"] == "model" and "groups" not in entry  # who else may: not told


@pytest.mark.parametrize("raw,fields", [
    (None, {"body"}),
    ({"server": "work", "message": "", "hours": 2}, {"message"}),
    ({"server": "work", "message": "help", "hours": 0}, {"hours"}),
    ({"server": "work", "message": "help", "hours": 25}, {"hours"}),
    ({"server": "work", "message": "help", "hours": True}, {"hours"}),
    ({"server": "work", "message": "help", "hours": 1.5}, {"hours"}),
    ({"server": ["work"], "message": "x" * 2001}, {"server", "message"}),
    ({"server": "work", "message": "help", "group": "admins"}, {"body"}),
])
def test_bad_help_requests_name_the_field(raw: Any, fields: set[str]) -> None:
    with pytest.raises(SupportInputError) as err:
        validate_request(raw, SupportSettings(max_hours=24))
    assert set(err.value.problems) == fields
    assert err.value.http_status == 400


def test_help_request_defaults_and_site_maximum() -> None:
    settings = SupportSettings(max_hours=4, default_hours=2)
    assert validate_request({"message": " stuck "}, settings) == ("", "stuck", 2)
    assert validate_request({"server": "gpu", "message": "m", "hours": "4"}, settings) == (
        "gpu", "m", 4)
    with pytest.raises(SupportInputError, match="from 1 to 4"):
        validate_request({"message": "m", "hours": 5}, settings)


def job(job_id: str, name: str, state: str = "RUNNING", user: str = "alice",
        start: datetime | None = None) -> JobInfo:
    return JobInfo(job_id=job_id, state=state, reason="Resources" if state == "PENDING" else
                   "None", batch_host="node1" if state == "RUNNING" else "n/a", nodes="node1",
                   start=start, user=user, partition="cpu", name=name)


def test_clusters_and_runs_are_the_callers_own() -> None:
    jobs = {j.job_id: j for j in [
        job("1", "shopfloor-ray-demo"), job("2", "shopfloor-raywk-demo"),
        job("3", "shopfloor-run-abc123", state="PENDING"),
        job("4", "shopfloor-ray-secret", user="bob"), job("5", "shopfloor-alice-work"),
        job("6", "shopfloor-run-old", state="COMPLETED"),
    ]}
    clusters, runs = job_rows("alice", jobs, "/user/alice/work/")
    assert [(c["name"], c["workers"], c["dashboard_url"]) for c in clusters] == [
        ("demo", 1, "/user/alice/work/shopfloor/ray/demo/dashboard/")]
    assert [(r["id"], r["state"], r["node"], r["reason"]) for r in runs] == [
        ("abc123", "pending", "", "Resources")]
    assert job_rows("alice", jobs, None)[0][0]["dashboard_url"] is None  # no running server


def test_session_state_and_time_left() -> None:
    now = datetime(2026, 1, 1, 12, 0)
    running = job("7", "shopfloor-alice-x", start=now - timedelta(minutes=50))
    assert minutes_left(running, 60, now) == 10
    assert minutes_left(running, 30, now) == 0
    assert minutes_left(job("8", "x", state="PENDING"), 60, now) is None
    assert minutes_left(running, None, now) is None

    def spawner(**kw: Any) -> Any:
        return SimpleNamespace(**{"pending": None, "ready": False, "active": False, **kw})

    assert session_state(spawner(ready=True, active=True), running) == "running"
    assert session_state(spawner(active=True, pending="spawn"),
                         job("8", "x", state="PENDING")) == "pending"
    assert session_state(spawner(active=True, pending="spawn"), running) == "starting"
    assert session_state(spawner(active=True, pending="stop"), running) == "stopping"
    assert session_state(spawner(), None) == "stopped"


def test_demo_datasets_are_what_fine_tuning_reads(tmp_path: Path) -> None:
    from shopfloor.finetune.datasets import (
        classification_examples,
        instruction_examples,
        read_table,
    )
    from shopfloor.finetune.demo_datasets import build_demo_datasets

    reviews, replies = build_demo_datasets(tmp_path)
    assert build_demo_datasets(tmp_path / "again")[0].read_text() == reviews.read_text()
    labelled = classification_examples(read_table(reviews), "text", "label")
    assert len(labelled.texts) == 320 and set(labelled.labels) == {
        "positive", "negative", "neutral"}
    answered = instruction_examples(read_table(replies), "question", "answer")
    assert len(answered.texts) == 200 and answered.targets[0]
    assert oct(reviews.stat().st_mode & 0o777) == "0o644"
    site = parse_site({"partitions": {"cpu": {}}})
    demo = load_site(Path(__file__).resolve().parents[2] / "hub_config" / "demo_site.yaml")
    assert site.catalog.datasets == {}
    assert {Path(d.location).name for d in demo.catalog.datasets.values()} == {
        reviews.name, replies.name}
