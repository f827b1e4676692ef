"""Sessions survive the hub: restarts mid-running and mid-pending, slurmctld outages."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import requests
from support import RunningHub, fill_debug_partition, squeue_jobs

pytestmark = [pytest.mark.hub, pytest.mark.cluster, pytest.mark.slow]


def _restart(hub: RunningHub) -> None:
    hub.process.stop()
    hub.process.start(detach=True)


def _saved_state(hub: RunningHub, user: str, server: str) -> dict:
    db = Path(hub.site.hub.state_dir) / "jupyterhub.sqlite"
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT spawners.state FROM spawners JOIN users ON spawners.user_id = users.id "
            "WHERE users.name = ? AND spawners.name = ?", (user, server),
        ).fetchone()
    return json.loads(row[0]) if row and row[0] else {}


def _job(user: str, server: str) -> dict[str, str] | None:
    name = f"shopfloor-{user}-{server}"
    return next((j for j in squeue_jobs(user) if j["name"] == name), None)


def _wait_for_job(user: str, server: str, timeout: float = 20) -> None:
    """Wait until the server's job is in the queue (the spawn form returns before sbatch)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not _job(user, server):
        time.sleep(0.2)


def _status(hub: RunningHub, client, server: str) -> int:  # type: ignore[no-untyped-def]
    token = client.token()
    resp = requests.get(f"{hub.url}/user/{client.user}/{server}/api/status",
                        headers={"Authorization": f"token {token}"}, timeout=30)
    return resp.status_code


def test_running_session_survives_hub_restart(hub: RunningHub) -> None:
    alice = hub.client("alice")
    assert alice.spawn_form("survive", partition="cpu", cpus=1, memory_gb=0.5,
                            walltime=20).status_code == 302
    try:
        alice.wait_ready("survive")
        job = _job("alice", "survive")
        assert job is not None
        _restart(hub)
        alice = hub.client("alice")
        model = alice.server_model("survive")
        assert model is not None and model["ready"], model
        assert _job("alice", "survive") == job  # same job, not resubmitted or cancelled
        assert _status(hub, alice, "survive") == 200
    finally:
        alice.stop("survive")
    assert _job("alice", "survive") is None


def test_pending_session_is_reattached_after_hub_restart(hub: RunningHub) -> None:
    blocker = fill_debug_partition()
    alice = hub.client("alice")
    try:
        assert alice.spawn_form("waiting", partition="debug", cpus=2, memory_gb=0.5,
                                walltime=10).status_code == 302
        _wait_for_job("alice", "waiting")
        job = _job("alice", "waiting")
        assert job is not None and job["state"] == "PENDING"
        # The job id is in the hub database while the job is still queued: committed
        # within ShopfloorSpawner.state_save_delay (0.25 s) of sbatch answering.
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and "job_id" not in _saved_state(
                hub, "alice", "waiting"):
            time.sleep(0.05)
        assert _saved_state(hub, "alice", "waiting").get("job_id") == job["id"]
        _restart(hub)
        assert _job("alice", "waiting") == job  # not cancelled by the restart
        subprocess.run(["scancel", blocker], check=True)
        alice = hub.client("alice")
        model = alice.wait_ready("waiting", timeout=90)
        assert model["ready"]
        assert _job("alice", "waiting")["id"] == job["id"]  # the same job, reattached
        # The server authenticates with the token the hub issued after the restart.
        assert _status(hub, alice, "waiting") == 200
    finally:
        subprocess.run(["scancel", blocker], check=False)
        if alice.server_model("waiting"):
            alice.stop("waiting")
    assert _job("alice", "waiting") is None


def test_stop_while_pending_cancels_the_job(hub: RunningHub) -> None:
    blocker = fill_debug_partition()
    alice = hub.client("alice")
    try:
        assert alice.spawn_form("cancelme", partition="debug", cpus=2, memory_gb=0.5,
                                walltime=10).status_code == 302
        _wait_for_job("alice", "cancelme")
        assert _job("alice", "cancelme") is not None
        alice.stop("cancelme")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _job("alice", "cancelme"):
            time.sleep(0.2)
        assert _job("alice", "cancelme") is None
    finally:
        subprocess.run(["scancel", blocker], check=False)


def test_running_session_survives_slurmctld_outage(hub: RunningHub, local_cluster) -> None:  # type: ignore[no-untyped-def]
    alice = hub.client("alice")
    assert alice.spawn_form("outage", partition="cpu", cpus=1, memory_gb=0.5,
                            walltime=20).status_code == 302
    try:
        alice.wait_ready("outage")
        ctld = local_cluster.status().controller_pid
        subprocess.run(["kill", "-TERM", str(ctld)], check=True)
        # Wait until a hub poll has met the outage (squeue fails after its own retries).
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "status unknown" not in hub.log_text():
            time.sleep(1)
        assert "status unknown" in hub.log_text()
        model = alice.server_model("outage")
        assert model is not None and model["ready"], "server dropped during the outage"
        assert _status(hub, alice, "outage") == 200
        local_cluster.up()
        assert _job("alice", "outage") is not None
    finally:
        local_cluster.up()
        alice.stop("outage")
