"""Idle sessions end: the hub's jupyterhub-idle-culler stops a session nobody uses on a
partition with a short idle limit, and its Slurm job is cancelled; a session on a partition
with a long limit stays."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from opssupport import private_hub
from support import RunningHub, squeue_jobs

pytestmark = [pytest.mark.hub, pytest.mark.cluster, pytest.mark.slow]

#: The culler's hub (above the shared test hub's ports and services).
OFFSET = 20


@pytest.fixture(scope="module")
def idle_hub(local_cluster: object, passwords: dict[str, str]) -> Iterator[RunningHub]:
    # debug: stopped after 1 idle minute; everything else after 120.
    with private_hub(OFFSET, passwords, idle={
            "idle_minutes": 120, "partition_minutes": {"debug": 1}, "warn_minutes": 1,
            "check_seconds": 10}) as hub:
        yield hub


def job_of(server: str) -> dict[str, str] | None:
    name = f"shopfloor-alice-{server}"
    return next((j for j in squeue_jobs("alice", other_hubs=True) if j["name"] == name), None)


def test_idle_session_is_stopped_and_its_job_cancelled(idle_hub: RunningHub) -> None:
    alice = idle_hub.client("alice")
    assert alice.spawn_form("idle", partition="debug", cpus=1, memory_gb=0.5,
                            walltime=20).status_code == 302
    assert alice.spawn_form("busy", partition="cpu", cpus=1, memory_gb=0.5,
                            walltime=20).status_code == 302
    try:
        alice.wait_ready("idle", timeout=120)
        alice.wait_ready("busy", timeout=120)
        idle_job, busy_job = job_of("idle"), job_of("busy")
        assert idle_job and busy_job
        # The session knows its own limit (JupyterLab warns from it).
        token = alice.token()
        status = alice.http.get(f"{idle_hub.url}/user/alice/idle/shopfloor/lab/status",
                                headers={"Authorization": f"token {token}"}, timeout=30)
        assert status.status_code == 200, status.text
        assert status.json()["idle_minutes"] == 1 and status.json()["idle_warn_minutes"] == 1
        started = time.monotonic()
        # Nobody touches it: after 1 idle minute (plus one check every 10 s) it is stopped.
        deadline = started + 150
        while time.monotonic() < deadline and job_of("idle") is not None:
            time.sleep(2)
        assert job_of("idle") is None, "the idle session's Slurm job is still there"
        assert 50 < time.monotonic() - started, "stopped before its idle minute was up"
        model = alice.server_model("idle")
        assert model is None or not model.get("ready")
        # The cpu session (120 idle minutes) is left alone.
        assert job_of("busy") is not None
        assert alice.server_model("busy")["ready"]
        log = idle_hub.log_text()
        assert "Culling server alice/idle" in log
        assert "Culling server alice/busy" not in log
    finally:
        for server in ("idle", "busy"):
            if alice.server_model(server):
                alice.stop(server)
