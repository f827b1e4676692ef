"""``/hub/api/shopfloor/jobs`` on the real hub and Slurm: the panels' one cached source.

Each user sees their own jobs only (other users' queued jobs come without id, name or owner);
a job submitted a moment ago is in the answer; the compute panel and Ray clusters read
through it and run no Slurm command of their own.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import requests
from support import RunningHub

from shopfloor.ray.cluster import RayCluster
from shopfloor.session.compute import Compute
from shopfloor.session.hubapi import Hub
from shopfloor.session.hubslurm import HubSlurm
from shopfloor.site import RaySettings
from shopfloor.slurm.seam import SlurmSync

pytestmark = [pytest.mark.hub, pytest.mark.cluster]


def api_url(hub: RunningHub) -> str:
    """The hub's internal API, as sessions see it ($JUPYTERHUB_API_URL)."""
    return f"{hub.site.hub.hub_bind_url}/hub/api"


def held_job(user: str, partition: str = "debug", name: str = "sf-jobs-api-test") -> str:
    """Submit a held job as ``user`` (it queues and never runs, so it takes no CPU)."""
    return subprocess.run(
        ["sudo", "-u", user, "sbatch", "--parsable", "--hold", "-p", partition, "-t", "2",
         "--mem=16M", "-J", name, "-o", "/dev/null", "--wrap", "sleep 1"],
        capture_output=True, text=True, check=True,
    ).stdout.strip().split(";")[0]


def cancel(job_id: str) -> None:
    subprocess.run(["scancel", job_id], check=False)


def test_each_user_sees_only_their_own_jobs(hub: RunningHub) -> None:
    alice_token, bob_token = hub.client("alice").token(), hub.client("bob").token()
    job = held_job("alice")
    try:
        # "I know job N exists": the answer includes it although it is seconds old at most.
        mine = requests.get(f"{api_url(hub)}/shopfloor/jobs", params={"newest": job},
                            headers={"Authorization": f"token {alice_token}"}, timeout=30)
        assert mine.status_code == 200, mine.text
        data = mine.json()
        assert data["user"] == "alice" and data["newest"] >= int(job)
        assert {j["user"] for j in data["jobs"]} <= {"alice"}
        [found] = [j for j in data["jobs"] if j["job_id"] == job]
        assert found["state"] == "PENDING" and found["name"] == "sf-jobs-api-test"
        assert set(data["nodes"]) >= {"node1", "node2", "gpu1", "debug1"}
        assert all("OS" not in fields for fields in data["nodes"].values())

        theirs = requests.get(f"{api_url(hub)}/shopfloor/jobs", params={"newest": job},
                              headers={"Authorization": f"token {bob_token}"}, timeout=30)
        assert theirs.status_code == 200, theirs.text
        other = theirs.json()
        assert other["user"] == "bob"
        assert {j["user"] for j in other["jobs"]} <= {"bob"}
        assert job not in {j["job_id"] for j in other["jobs"]}
        assert "sf-jobs-api-test" not in theirs.text and "alice" not in theirs.text
        # Alice's queued job counts towards bob's expected wait, anonymously.
        assert {"partition": "debug", "start": None}.keys() == {
            k for item in other["queue"] for k in item}
        assert any(item["partition"] == "debug" for item in other["queue"])
        # Asking for alice's job by id through bob's client finds nothing, not Slurm's answer.
        bob = HubSlurm(Hub(api_url(hub), bob_token, "bob"))
        assert bob.squeue([job]) == {} and bob.calls == {}
    finally:
        cancel(job)


def test_refusals_name_the_problem(hub: RunningHub) -> None:
    assert requests.get(f"{api_url(hub)}/shopfloor/jobs", timeout=10).status_code == 403
    token = hub.client("alice").token()
    for bad in ("1,2", "../users", "1 OR 1=1", "9" * 20):
        resp = requests.get(f"{api_url(hub)}/shopfloor/jobs", params={"newest": bad},
                            headers={"Authorization": f"token {token}"}, timeout=10)
        assert resp.status_code == 400, (bad, resp.text)
        assert "newest" in resp.json()["message"]


def test_many_callers_share_one_snapshot(hub: RunningHub) -> None:
    """Forty reads in a row come from at most two snapshots (taken at most 5 s apart)."""
    token = hub.client("alice").token()
    taken = set()
    for _ in range(40):
        before = time.monotonic()
        data = requests.get(f"{api_url(hub)}/shopfloor/jobs",
                            headers={"Authorization": f"token {token}"}, timeout=30).json()
        taken.add(round(before - data["age_seconds"], 1))
    assert len({round(t) for t in taken}) <= 2, taken


def test_panels_and_ray_read_through_the_hub(hub: RunningHub, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The compute panel's library and a Ray cluster's state run no Slurm command here."""
    from shopfloor.widgets import ComputePanel

    token = hub.client("alice").token()
    compute = Compute(Hub(api_url(hub), token, "alice"), runs_dir=tmp_path / "runs")
    assert isinstance(compute.slurm, HubSlurm)
    panel = ComputePanel(compute, auto_refresh=False)
    try:
        assert {row.name for row in panel.partitions} == {"cpu", "gpu", "debug"}
        gpu = next(row for row in panel.partitions if row.name == "gpu")
        assert gpu.gpus_idle is not None and 0 <= gpu.gpus_idle <= 2
        assert all(row.estimated_wait != "unknown" for row in panel.partitions)
        assert compute.slurm_problem == ""
    finally:
        panel.close()
    assert compute.slurm.calls == {}  # no squeue/scontrol from this "session"
    assert compute.slurm.hub_calls >= 1

    # A Ray cluster's state after submit: the head job is seen at once, through the hub.
    job = held_job("alice", name="shopfloor-ray-jobsapi")
    try:
        root = tmp_path / "ray"
        (root / "jobsapi").mkdir(parents=True)
        (root / "jobsapi" / "cluster.json").write_text(
            f'{{"head_job": "{job}", "workers": [], "scaled_down": []}}')
        slurm = HubSlurm(Hub(api_url(hub), token, "alice"))
        cluster = RayCluster("jobsapi", settings=RaySettings(), slurm=slurm, root=root)
        # This test runs as root; the jobs are alice's, as in her session.
        monkeypatch.setattr("shopfloor.ray.cluster._user", lambda: "alice")
        [head] = cluster.jobs()
        assert head.job_id == job and head.is_pending
        assert slurm.calls == {}
    finally:
        cancel(job)
    assert isinstance(SlurmSync().squeue([job]), dict)  # the direct path still works
