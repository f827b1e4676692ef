"""A session not ready within ``start_timeout``: what the user reads, and the metric outcome.

The real thing (a job kept pending by a reservation that begins next week, on the real hub
and Slurm) is tests/integration/test_ops_metrics_services.py; here each wording branch.
"""

from __future__ import annotations

from shopfloor.extensions.spawner import UserSpawnError, spawn_outcome
from shopfloor.slurm.seam import JobInfo
from shopfloor.slurm.starttimeout import describe_start_timeout, waited


def job(state: str, reason: str = "None", host: str = "") -> JobInfo:
    return JobInfo(job_id="42", state=state, reason=reason, batch_host=host, nodes=host,
                   start=None, user="alice", partition="gpu", name="shopfloor-alice-x")


def test_queued_for_a_reservation() -> None:
    text = describe_start_timeout(job("PENDING", "Reservation"), 600, job_id="42")
    assert text == (
        "Your session did not start within 10 minutes: its job 42 was still queued on the gpu "
        "partition (waiting for its reservation to start). Job 42 was cancelled. Start it "
        "again once the reservation has begun, or without the reservation.")


def test_queued_on_a_busy_cluster_says_what_to_change() -> None:
    text = describe_start_timeout(job("PENDING", "Resources"), 45)
    assert text.startswith("Your session did not start within 45 seconds: its job was still "
                           "queued on the gpu partition (waiting for free resources on the "
                           "gpu partition).")
    assert "fewer CPUs, less memory, a shorter walltime) or on another partition" in text


def test_queued_on_a_budget_names_the_project() -> None:
    text = describe_start_timeout(job("PENDING", "AssocGrpBillingMinutes"), 600,
                                  account="proj-ml")
    assert "proj-ml" in text and "cancelled" in text


def test_running_without_an_answer_points_at_the_log() -> None:
    text = describe_start_timeout(job("RUNNING", "None", "node1"), 7200, job_id="42",
                                  log_path="/home/alice/.shopfloor/logs/42.log")
    assert "within 2 hours" in text and "ran on node1" in text
    assert "JupyterLab did not answer in time" in text
    assert text.endswith("send your admin its log, /home/alice/.shopfloor/logs/42.log.")


def test_unknown_state() -> None:
    text = describe_start_timeout(None, 30, job_id="42")
    assert "could not say where its job 42 was" in text and "cancelled" in text


def test_waited_reads_as_people_read_it() -> None:
    assert [waited(s) for s in (30, 119.9, 120, 5400)] == [
        "30 seconds", "119 seconds", "2 minutes", "1 hour 30 minutes"]


def test_metric_outcome_of_a_start_timeout() -> None:
    assert spawn_outcome(UserSpawnError("x", reason="start_timeout")) == "timeout"
    assert spawn_outcome(UserSpawnError("x", reason="sbatch_failed")) == "refused"
    assert spawn_outcome(UserSpawnError("x", reason="job_died")) == "failed"
