"""Shopfloor's Prometheus metrics: defined on the registry /hub/metrics serves, recorded with
bounded labels, and served by JupyterHub's own metrics handler."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY, generate_latest
from tornado.testing import AsyncHTTPTestCase
from tornado.web import Application

from shopfloor.extensions import metrics as record
from shopfloor.ops import metrics
from shopfloor.slurm.seam import JobInfo, SlurmError


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def job(job_id: str, state: str, reason: str) -> JobInfo:
    return JobInfo(job_id, state, reason, "", "", None, "alice", "cpu", "jupyterhub-spawner")


def test_every_shopfloor_metric_is_on_jupyterhubs_registry() -> None:
    # JupyterHub's /hub/metrics handler writes generate_latest(REGISTRY): the default one.
    from jupyterhub.handlers import metrics as hub_metrics

    assert hub_metrics.REGISTRY is REGISTRY
    text = generate_latest(REGISTRY).decode()
    for name in ("shopfloor_spawn_duration_seconds", "shopfloor_pending_sessions",
                 "shopfloor_slurm_command_duration_seconds",
                 "shopfloor_slurm_command_failures_total", "shopfloor_job_poll_size",
                 "shopfloor_ray_clusters", "shopfloor_app_opens_total",
                 "shopfloor_app_cold_start_seconds", "shopfloor_workshop_joins_total"):
        assert f"# HELP {name} " in text, name


def test_spawn_duration_by_partition_and_outcome() -> None:
    before = value("shopfloor_spawn_duration_seconds_count", partition="gpu", outcome="ready")
    record.observe_spawn("gpu", "ready", 7.5)
    record.observe_spawn("gpu", "no-such-outcome", 1)
    assert value("shopfloor_spawn_duration_seconds_count",
                 partition="gpu", outcome="ready") == before + 1
    assert value("shopfloor_spawn_duration_seconds_bucket", partition="gpu", outcome="ready",
                 le="10.0") >= 1
    assert value("shopfloor_spawn_duration_seconds_count", partition="gpu",
                 outcome="other") >= 1


def test_pending_sessions_by_reason_go_to_zero_not_away() -> None:
    record.record_pending([job("1", "PENDING", "Resources"), job("2", "PENDING", "Resources"),
                           job("3", "PENDING", "Priority"), job("4", "RUNNING", "None")])
    assert value("shopfloor_pending_sessions", reason="Resources") == 2
    assert value("shopfloor_pending_sessions", reason="Priority") == 1
    record.record_pending([job("3", "PENDING", "Priority")])
    assert value("shopfloor_pending_sessions", reason="Resources") == 0
    assert value("shopfloor_pending_sessions", reason="Priority") == 1


@pytest.mark.parametrize(("error", "kind"), [
    (SlurmError(["sbatch"], 1, "", "sbatch: error: Invalid partition name specified"),
     "refused"),
    (SlurmError(["sbatch"], 1, "", "sbatch: error: Unable to contact slurm controller"),
     "unreachable"),
    (SlurmError(["sbatch"], -1, "", "timed out after 30 s"), "timeout"),
])
def test_slurm_command_failures_by_command_and_kind(error: SlurmError, kind: str) -> None:
    before = value("shopfloor_slurm_command_failures_total", command="sbatch", kind=kind)
    count = value("shopfloor_slurm_command_duration_seconds_count", command="sbatch")
    record.observe_slurm_command("/usr/bin/sbatch", 0.2, error)
    assert value("shopfloor_slurm_command_failures_total",
                 command="sbatch", kind=kind) == before + 1
    assert value("shopfloor_slurm_command_duration_seconds_count", command="sbatch") == count + 1


def test_unknown_command_names_do_not_make_new_series() -> None:
    record.observe_slurm_command("rm -rf /", 0.1)
    text = generate_latest(REGISTRY).decode()
    assert 'command="rm -rf /"' not in text
    assert value("shopfloor_slurm_command_duration_seconds_count", command="other") >= 1


def test_watch_observer_and_ray_clusters_from_jobs() -> None:
    polls = value("shopfloor_job_poll_size_count")
    record.observe_watch(2, {"7": job("7", "PENDING", "ReqNodeNotAvail"),
                             "8": job("8", "RUNNING", "None")})
    assert value("shopfloor_job_poll_size_count") == polls + 1
    assert value("shopfloor_pending_sessions", reason="ReqNodeNotAvail") == 1
    head = JobInfo("9", "RUNNING", "None", "", "", None, "bob", "cpu", "shopfloor-ray-demo")
    worker = JobInfo("10", "RUNNING", "None", "", "", None, "bob", "cpu", "shopfloor-raywk-demo")
    record.count_ray_clusters([head, worker, job("11", "PENDING", "Priority")])
    assert value("shopfloor_ray_clusters", state="running") == 1
    assert value("shopfloor_ray_clusters", state="pending") == 0


def test_poll_size_ray_apps_and_joins() -> None:
    polls = value("shopfloor_job_poll_size_count")
    record.observe_poll(42)
    assert value("shopfloor_job_poll_size_count") == polls + 1
    assert value("shopfloor_job_poll_size_bucket", le="50.0") >= 1
    record.set_ray_clusters(pending=1, running=3)
    assert value("shopfloor_ray_clusters", state="running") == 3
    cold, warm = (value("shopfloor_app_opens_total", start=s) for s in ("cold", "warm"))
    record.observe_app_open(cold=True, seconds=4.2)
    record.observe_app_open(cold=False)
    assert value("shopfloor_app_opens_total", start="cold") == cold + 1
    assert value("shopfloor_app_opens_total", start="warm") == warm + 1
    joined = value("shopfloor_workshop_joins_total", outcome="joined")
    record.observe_workshop_join("joined")
    record.observe_workshop_join("alice")  # a user name is never a label value
    assert value("shopfloor_workshop_joins_total", outcome="joined") == joined + 1
    assert 'outcome="alice"' not in generate_latest(REGISTRY).decode()


def test_ops_metrics_import_no_jupyterhub() -> None:
    import subprocess
    import sys

    code = ("import sys, shopfloor.ops.metrics; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'jupyterhub'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
    assert metrics.SPAWN_OUTCOMES[0] == "ready"


class TestServiceMetricsHandler(AsyncHTTPTestCase):
    def get_app(self) -> Application:
        return Application([record.service_metrics_route("/services/apps/")])

    def test_needs_the_token_and_serves_the_registry(self) -> None:
        with pytest.MonkeyPatch.context() as mp:
            mp.delenv(record.METRICS_TOKEN_ENV, raising=False)
            assert self.fetch("/services/apps/metrics").code == 403
            mp.setenv(record.METRICS_TOKEN_ENV, "s3cret")
            assert self.fetch("/services/apps/metrics",
                              headers={"Authorization": "Bearer wrong"}).code == 403
            ok = self.fetch("/services/apps/metrics",
                            headers={"Authorization": "Bearer s3cret"})
        assert ok.code == 200
        assert b"shopfloor_workshop_joins_total" in ok.body
