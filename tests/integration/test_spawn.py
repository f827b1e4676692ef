"""Spawning real sessions: real hub, real Slurm jobs running as the user on compute nodes."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import requests
from support import RunningHub, fill_debug_partition, squeue_jobs

pytestmark = [pytest.mark.hub, pytest.mark.cluster, pytest.mark.slow]


def test_login_spawn_reach_stop(hub: RunningHub) -> None:
    alice = hub.client("alice")
    marker = Path("/home/alice/shopfloor-test-marker.txt")
    subprocess.run(["sudo", "-u", "alice", "touch", str(marker)], check=True)
    resp = alice.spawn_form(partition="cpu", cpus=1, memory_gb=1, walltime=20)
    assert resp.status_code == 302, resp.text[-500:]
    try:
        model = alice.wait_ready(timeout=120)
        assert model["url"] == "/user/alice/"
        jobs = [j for j in squeue_jobs("alice") if j["name"] == "shopfloor-alice-default"]
        assert len(jobs) == 1 and jobs[0]["state"] == "RUNNING"
        assert jobs[0]["user"] == "alice" and jobs[0]["partition"] == "cpu"
        assert jobs[0]["nodes"] in {"node1", "node2"}
        token = alice.token()
        status = requests.get(f"{hub.url}/user/alice/api/status",
                              headers={"Authorization": f"token {token}"}, timeout=30)
        assert status.status_code == 200 and "last_activity" in status.json()
        # The server runs as alice: it lists alice's home.
        contents = requests.get(f"{hub.url}/user/alice/api/contents",
                                headers={"Authorization": f"token {token}"}, timeout=30)
        assert marker.name in {item["name"] for item in contents.json()["content"]}
        job_id = jobs[0]["id"]
    finally:
        alice.stop()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(j["id"] == job_id for j in squeue_jobs("alice")):
        time.sleep(0.5)
    assert not any(j["id"] == job_id for j in squeue_jobs("alice"))


def test_rest_spawn_with_bad_options_is_400_naming_the_field(hub: RunningHub) -> None:
    bob = hub.client("bob")
    token = bob.token()
    cases = {
        "cmd": {"cmd": ["/bin/sh", "-c", "id"]},
        "partition": {"partition": "cpu\n#SBATCH --uid=0"},
        "walltime": {"partition": "debug", "walltime": "8:00:00"},
        "cpus": {"cpus": 10_000},
    }
    for field, options in cases.items():
        resp = bob.api("POST", "/users/bob/servers/bad", token=token,
                       json={"user_options": options})
        assert resp.status_code == 400, (field, resp.status_code, resp.text)
        assert field in resp.json()["message"], resp.text
    assert not [j for j in squeue_jobs("bob") if j["name"].startswith("shopfloor-bob")]


def test_spawn_url_with_bad_option_shows_form_with_message(hub: RunningHub) -> None:
    bob = hub.client("bob")
    resp = bob.http.get(f"{hub.url}/hub/spawn/bob/viaurl?opt-partition=gpu&opt-walltime=999:00")
    assert resp.status_code == 400
    assert "walltime" in resp.text and "allows at most 4 hours" in resp.text
    assert 'id="sf-partitions"' in resp.text  # the form is shown again, nothing started


def test_callback_accepts_only_a_port(hub: RunningHub) -> None:
    """The job's own token cannot set other spawner attributes (batchspawner's hole)."""
    alice = hub.client("alice")
    resp = alice.spawn_form("cbtest", partition="debug", cpus=1, memory_gb=0.5, walltime=10)
    assert resp.status_code == 302
    try:
        alice.wait_ready("cbtest", timeout=120)
        job = next(j for j in squeue_jobs("alice") if j["name"] == "shopfloor-alice-cbtest")
        # The server's token is in its job environment, readable by the user.
        env = subprocess.run(
            ["scontrol", "show", "job", job["id"], "-d"], capture_output=True, text=True
        )
        assert env.returncode == 0
        server_token = _job_token(job["id"])
        for body in ({"port": 40000, "batch_cancel_cmd": "touch /tmp/pwned"},
                     {"batch_cancel_cmd": "touch /tmp/pwned"}, {"port": "1; id"}):
            resp = requests.post(f"{hub.url}/hub/api/batchspawner", json=body, timeout=10,
                                 headers={"Authorization": f"token {server_token}"})
            assert resp.status_code == 400, (body, resp.status_code)
        # A valid port after start is refused too: the server is not starting any more.
        resp = requests.post(f"{hub.url}/hub/api/batchspawner", json={"port": 40000},
                             headers={"Authorization": f"token {server_token}"}, timeout=10)
        assert resp.status_code == 409
        # The server still works and stop still cancels the real job.
        assert alice.server_model("cbtest")["ready"]
    finally:
        alice.stop("cbtest")
    assert not Path("/tmp/pwned").exists()


def _job_token(job_id: str) -> str:
    """The server token from the job's environment, as the user could read it."""
    pid = subprocess.run(["pgrep", "-f", "-u", "alice", "jupyterhub-singleuser"],
                         capture_output=True, text=True).stdout.split()
    for p in pid:
        environ = Path(f"/proc/{p}/environ").read_bytes().split(b"\0")
        values = dict(e.decode().split("=", 1) for e in environ if b"=" in e)
        if values.get("SLURM_JOB_ID") == job_id:
            return values["JUPYTERHUB_API_TOKEN"]
    raise AssertionError(f"no server process for job {job_id}")


def test_pending_reason_then_cancel_is_reported_within_seconds(hub: RunningHub) -> None:
    """Fill the debug node, spawn there: the pending page says why; cancel → error at once."""
    blocker = fill_debug_partition()
    alice = hub.client("alice")
    try:
        _wait_state(blocker, "RUNNING")
        resp = alice.spawn_form("queued", partition="debug", cpus=2, memory_gb=0.5, walltime=10)
        assert resp.status_code == 302
        messages = _progress_messages(alice, "queued", until="waiting for free resources")
        assert any("Queued on debug" in m and "waiting for free resources" in m
                   for m in messages), messages
        job = next(j for j in squeue_jobs("alice") if j["name"] == "shopfloor-alice-queued")
        assert job["state"] == "PENDING"
        subprocess.run(["scancel", job["id"]], check=True)
        started = time.monotonic()
        final = _progress_messages(alice, "queued", until="ended")
        elapsed = time.monotonic() - started
        assert elapsed < 10, elapsed
        assert any(f"job {job['id']}" in m and "ended" in m for m in final), final
    finally:
        subprocess.run(["scancel", blocker], check=False)
        model = alice.server_model("queued")
        if model:
            alice.stop("queued")


def _wait_state(job_id: str, state: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True,
                             text=True).stdout.strip()
        if out == state:
            return
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} not {state}")


def _progress_messages(client, server: str, until: str, timeout: float = 30) -> list[str]:  # type: ignore[no-untyped-def]
    """Read the spawn progress event stream until a message contains ``until``."""
    messages: list[str] = []
    url = f"{client.base}/hub/api/users/{client.user}/servers/{server}/progress"
    deadline = time.monotonic() + timeout
    with client.http.get(url, stream=True, timeout=timeout,
                         headers={"X-XSRFToken": client._xsrf()}) as resp:
        for line in resp.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                event = json.loads(line[5:])
                messages.append(event.get("message", ""))
                if until in event.get("message", "") or event.get("failed"):
                    break
            if time.monotonic() > deadline:
                break
    return messages
