"""The metrics are wired where things happen: the Slurm seam's observer (no prometheus in
the seam), the job watcher's observer, the spawner's outcomes, the services' routes."""

from __future__ import annotations

import ast
import asyncio
import os
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from shopfloor.extensions import metrics as record
from shopfloor.slurm.jobwatch import JobWatcher
from shopfloor.slurm.seam import JobInfo, Slurm, SlurmError

SEAM = Path(__file__).resolve().parents[2] / "src" / "shopfloor" / "slurm" / "seam.py"


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def tool(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def test_the_seam_imports_no_metrics() -> None:
    imported = {
        alias.name.split(".")[0] if isinstance(node, ast.Import) else (node.module or "")
        for node in ast.walk(ast.parse(SEAM.read_text()))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [node])
    }
    assert not any(name.startswith(("prometheus", "shopfloor.extensions",
                                    "shopfloor.ops.metrics"))
                   for name in imported), imported


async def test_the_seam_tells_its_observer_of_every_command(tmp_path: Path) -> None:
    # Real processes standing in for the tools: one answers, one refuses.
    tool(tmp_path, "sinfo", "echo 'cpu*|up|8:00:00|0/2/0/2|0/8/0/8|3900|(null)|2|node[1-2]'")
    tool(tmp_path, "scancel", "echo 'scancel: error: Invalid job id specified' >&2; exit 1")
    seen: list[tuple[str, float, SlurmError | None]] = []
    slurm = Slurm(bin_dir=str(tmp_path))
    slurm.observer = lambda name, seconds, error: seen.append((name, seconds, error))
    assert [p.name for p in await slurm.partitions()] == ["cpu"]
    with pytest.raises(SlurmError):
        await slurm.scancel("77")
    assert [(name, error is None) for name, _, error in seen] == [("sinfo", True),
                                                                  ("scancel", False)]
    assert all(0 <= seconds < 10 for _, seconds, _ in seen)


async def test_hub_observer_records_latency_and_failures(tmp_path: Path) -> None:
    tool(tmp_path, "scancel", "echo 'scancel: error: Kill job error' >&2; exit 1")
    slurm = Slurm(bin_dir=str(tmp_path))
    slurm.observer = record.observe_slurm_command
    count = value("shopfloor_slurm_command_duration_seconds_count", command="scancel")
    failed = value("shopfloor_slurm_command_failures_total", command="scancel", kind="refused")
    with pytest.raises(SlurmError):
        await slurm.scancel("77")
    assert value("shopfloor_slurm_command_duration_seconds_count",
                 command="scancel") == count + 1
    assert value("shopfloor_slurm_command_failures_total", command="scancel",
                 kind="refused") == failed + 1


class ListedSlurm(Slurm):
    """The seam replaced at ``squeue``: two pending jobs, one running."""

    async def squeue(self, job_ids: object = None, *, user: str | None = None
                     ) -> dict[str, JobInfo]:
        rows = {"1": ("PENDING", "Resources"), "2": ("PENDING", "Priority"),
                "3": ("RUNNING", "None")}
        return {j: JobInfo(j, s, r, "", "", None, "alice", "cpu", "x")
                for j, (s, r) in rows.items()}


async def test_job_watcher_observer_gets_poll_size_and_pending_reasons() -> None:
    watcher = JobWatcher(ListedSlurm())
    watcher.observer = record.observe_watch
    polls = value("shopfloor_job_poll_size_count")
    for job_id in ("1", "2", "3"):
        watcher.watch(job_id)
    await asyncio.gather(*(watcher.status(j, max_age=5) for j in ("1", "2", "3")))
    assert value("shopfloor_job_poll_size_count") == polls + 1
    assert value("shopfloor_pending_sessions", reason="Resources") == 1
    assert value("shopfloor_pending_sessions", reason="Priority") == 1


def test_spawn_outcomes_refused_versus_failed() -> None:
    from shopfloor.extensions.spawner import UserSpawnError, spawn_outcome

    assert spawn_outcome(UserSpawnError("no", reason="invalid_options")) == "refused"
    assert spawn_outcome(UserSpawnError("no", reason="sbatch_failed")) == "refused"
    assert spawn_outcome(UserSpawnError("gone", reason="job_died")) == "failed"
    record.observe_spawn("cpu", "refused", 0.1)
    assert value("shopfloor_spawn_duration_seconds_count", partition="cpu",
                 outcome="refused") >= 1


def test_services_serve_their_metrics_and_pass_the_token_by_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from shopfloor.extensions import apps_service, workshops_service
    from shopfloor.site import load_site

    site = load_site(Path(__file__).resolve().parents[2] / "hub_config" / "demo_site.yaml")
    monkeypatch.setenv(record.METRICS_TOKEN_ENV, "s3cret-token")
    for config in (apps_service.apps_service_config(site, "/x.yaml"),
                   workshops_service.workshop_service_config(site, "/x.yaml")):
        assert config["environment"][record.METRICS_TOKEN_ENV] == "s3cret-token"
        assert not any("s3cret" in part for part in config["command"])
    monkeypatch.delenv(record.METRICS_TOKEN_ENV)
    assert record.METRICS_TOKEN_ENV not in apps_service.apps_service_config(
        site, "/x.yaml")["environment"]
    assert os.environ.get(record.METRICS_TOKEN_ENV) is None
