"""RayCluster's plan (files, scripts, scaling, status) and the panel, with a fake Slurm seam.

Real Slurm and real Ray are exercised in tests/integration/test_raycluster.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shopfloor.ray.cluster import RayCluster, RayClusterError, list_clusters
from shopfloor.ray.node import HEAD_FILE, STOPPED_FILE, write_json_private
from shopfloor.resources import RequestError, ResourceRequest
from shopfloor.site import RaySettings
from shopfloor.slurm.seam import JobInfo

REQUEST = ResourceRequest(partition="cpu", nodes=2, cpus=1, memory_gb=1, walltime_minutes=20)


class FakeSlurm:
    """Replaces :class:`shopfloor.slurm.seam.SlurmSync`: records scripts, answers squeue."""

    def __init__(self) -> None:
        self.scripts: list[str] = []
        self.jobs: dict[str, JobInfo] = {}
        self.cancelled: list[str] = []
        self.next_id = 100

    def sbatch(self, script: str, **_: Any) -> str:
        self.scripts.append(script)
        self.next_id += 1
        job = str(self.next_id)
        name = next(line.split("=", 1)[1] for line in script.splitlines()
                    if line.startswith("#SBATCH --job-name="))
        self.jobs[job] = _job(job, "PENDING", name)
        return job

    def squeue(self, job_ids: Any = None, *, user: str | None = None) -> dict[str, JobInfo]:
        return dict(self.jobs)

    def scancel(self, job_id: str, **_: Any) -> None:
        self.cancelled.append(job_id)
        self.jobs[job_id] = _job(job_id, "CANCELLED", self.jobs[job_id].name)

    def set_state(self, job: str, state: str) -> None:
        self.jobs[job] = _job(job, state, self.jobs[job].name)


def _job(job_id: str, state: str, name: str) -> JobInfo:
    return JobInfo(job_id=job_id, state=state, reason="Resources" if state == "PENDING" else
                   "None", batch_host="node1", nodes="node1", start=None, user="alice",
                   partition="cpu", name=name)


@pytest.fixture
def slurm() -> FakeSlurm:
    return FakeSlurm()


class SizeHub:
    """The hub's ``/validate`` seam for scaling: at most ``max_nodes`` nodes per cluster."""

    def __init__(self, max_nodes: int = 4) -> None:
        self.max_nodes = max_nodes
        self.seen: list[dict[str, Any]] = []

    def validate(self, options: dict[str, Any]) -> ResourceRequest:
        self.seen.append(options)
        if options["nodes"] > self.max_nodes:
            raise RequestError({"nodes": f"the cpu partition allows at most {self.max_nodes} "
                                         f"node(s); you asked for {options['nodes']}"})
        return REQUEST.model_copy(update={"nodes": options["nodes"]})

    def partitions(self) -> dict[str, Any]:
        return PARTITIONS


def make(tmp_path: Path, slurm: FakeSlurm, name: str = "demo", **kw: Any) -> RayCluster:
    return RayCluster.create(name, REQUEST, settings=RaySettings(idle_timeout_minutes=30),
                             slurm=slurm, root=tmp_path, python="/venv/bin/python", **kw)


def test_create_writes_private_state_and_a_script_without_the_token(
    tmp_path: Path, slurm: FakeSlurm
) -> None:
    cluster = make(tmp_path, slurm)
    directory = tmp_path / "demo"
    assert directory.stat().st_mode & 0o777 == 0o700
    assert cluster.token_file.stat().st_mode & 0o777 == 0o600
    token = cluster.token_file.read_text()
    assert len(token) == 64
    config = json.loads((directory / "cluster.json").read_text())
    assert config["head_job"] == "101" and config["idle_timeout_minutes"] == 30
    (script,) = slurm.scripts
    assert token not in script and token not in json.dumps(config)
    assert "#SBATCH --job-name=shopfloor-ray-demo" in script
    assert "#SBATCH --nodes=2" in script and "#SBATCH --cpus-per-task=1" in script
    assert f"srun --ntasks-per-node=1 --kill-on-bad-exit=0 /venv/bin/python -m " \
           f"shopfloor.ray.node --cluster-dir {directory}" in script
    assert f"#SBATCH --output={directory}/logs/%j.log" in script


def test_names_and_idle_timeouts_are_checked(tmp_path: Path, slurm: FakeSlurm) -> None:
    with pytest.raises(RayClusterError, match="name: 'Bad Name!'"):
        make(tmp_path, slurm, name="Bad Name!")
    with pytest.raises(RequestError) as err:
        make(tmp_path, slurm, idle_timeout_minutes=90)
    assert "at most 30" in err.value.problems["idle_timeout_minutes"]
    assert slurm.scripts == []


def test_raw_options_need_the_hub(tmp_path: Path, slurm: FakeSlurm) -> None:
    with pytest.raises(RayClusterError, match="without the hub"):
        RayCluster.create("demo", {"partition": "cpu"}, settings=RaySettings(), slurm=slurm,
                          root=tmp_path)


def test_raw_options_are_validated_by_the_hub(tmp_path: Path, slurm: FakeSlurm) -> None:
    class Hub:
        def __init__(self) -> None:
            self.seen: list[dict[str, Any]] = []

        def get_json(self, path: str) -> dict[str, Any]:
            assert path == "/shopfloor/ray"
            return {"idle_timeout_minutes": 5}

        def validate(self, options: dict[str, Any]) -> ResourceRequest:
            self.seen.append(options)
            return REQUEST

    hub = Hub()
    cluster = RayCluster.create("demo", {"partition": "cpu", "nodes": 2}, hub=hub,
                                slurm=slurm, root=tmp_path)
    assert hub.seen == [{"partition": "cpu", "nodes": 2}]
    assert cluster.config()["idle_timeout_minutes"] == 5


def test_a_running_cluster_name_cannot_be_reused(tmp_path: Path, slurm: FakeSlurm) -> None:
    make(tmp_path, slurm)
    with pytest.raises(RayClusterError, match="already running"):
        make(tmp_path, slurm)
    slurm.set_state("101", "CANCELLED")
    make(tmp_path, slurm)  # a stopped one can


def test_scale_adds_worker_jobs_for_the_head_and_removes_the_newest(
    tmp_path: Path, slurm: FakeSlurm
) -> None:
    cluster = make(tmp_path, slurm)
    hub = SizeHub()
    assert cluster.scale(4, hub=hub) == ["102", "103"]
    assert hub.seen[0]["nodes"] == 4 and hub.seen[0]["partition"] == "cpu"
    worker_script = slurm.scripts[1]
    assert "#SBATCH --job-name=shopfloor-raywk-demo" in worker_script
    assert "#SBATCH --nodes=1" in worker_script and "--worker-for 101" in worker_script
    assert cluster.scale(3, hub=hub) == [] and slurm.cancelled == ["103"]
    with pytest.raises(RequestError) as err:
        cluster.scale(1, hub=hub)
    assert "started with 2 node(s)" in err.value.problems["nodes"]


def test_scale_goes_through_the_resource_model_and_submits_nothing_it_refuses(
    tmp_path: Path, slurm: FakeSlurm
) -> None:
    cluster = make(tmp_path, slurm)
    with pytest.raises(RequestError) as err:
        cluster.scale(40, hub=SizeHub(max_nodes=2))
    assert "at most 2 node(s); you asked for 40" in err.value.problems["nodes"]
    assert len(slurm.scripts) == 1 and cluster.config()["workers"] == []
    with pytest.raises(RayClusterError, match="without the hub"):
        cluster.scale(3)
    assert len(slurm.scripts) == 1


def test_status_pending_says_why(tmp_path: Path, slurm: FakeSlurm) -> None:
    status = make(tmp_path, slurm).status()
    assert status.phase == "pending" and "free resources on the cpu partition" in status.message


def test_status_stopped_gives_the_launchers_reason(tmp_path: Path, slurm: FakeSlurm) -> None:
    cluster = make(tmp_path, slurm)
    slurm.set_state("101", "CANCELLED")
    write_json_private(cluster.directory / STOPPED_FILE,
                       {"job_id": "101", "reason": "no Ray job ran for 30 minutes"})
    status = cluster.status()
    assert status.phase == "stopped" and "no Ray job ran for 30 minutes" in status.message


class RayAnswers(RayCluster):
    """A cluster whose Ray state API answers from a list (Slurm is faked too)."""

    nodes_answer: list[dict[str, Any]] | None = None

    def ray_nodes(self) -> list[dict[str, Any]] | None:
        return self.nodes_answer


def _alive(cpus: float) -> dict[str, Any]:
    return {"state": "ALIVE", "resources_total": {"CPU": cpus, "object_store_memory": 1e8}}


def test_ready_needs_every_node_and_a_lost_worker_is_reported(
    tmp_path: Path, slurm: FakeSlurm
) -> None:
    make(tmp_path, slurm)
    cluster = RayAnswers("demo", settings=RaySettings(), slurm=slurm, root=tmp_path)
    slurm.set_state("101", "RUNNING")
    assert cluster.status().phase == "starting"  # no head.json yet: Ray not answering
    write_json_private(cluster.directory / HEAD_FILE,
                       {"job_id": "101", "address": "127.0.2.1", "dashboard_port": 1})
    cluster.nodes_answer = [_alive(1)]
    assert cluster.status().message == "Starting: 1 of 2 node(s) joined."
    cluster.nodes_answer = [_alive(1), _alive(1)]
    status = cluster.status()
    assert status.ready and status.cpus == 2 and status.object_store_bytes == 2e8
    (worker,) = cluster.scale(3, hub=SizeHub())
    slurm.set_state(worker, "RUNNING")
    cluster.nodes_answer = [_alive(1), _alive(1), _alive(1)]
    assert cluster.status().ready
    slurm.set_state(worker, "CANCELLED")  # killed behind our back, not scaled down
    cluster.nodes_answer = [_alive(1), _alive(1), {"state": "DEAD"}]
    status = cluster.status()
    assert status.phase == "degraded" and status.lost_workers == (worker,)
    assert f"worker job(s) {worker} ended" in status.message
    # Scaling back up drops the lost job; Ray still lists its node as DEAD, and that is fine.
    (again,) = cluster.scale(3, hub=SizeHub())
    assert worker not in cluster.config()["workers"] and again in cluster.config()["workers"]
    slurm.set_state(again, "RUNNING")
    cluster.nodes_answer = [_alive(1), _alive(1), {"state": "DEAD"}, _alive(1)]
    status = cluster.status()
    assert status.ready and status.lost_workers == () and status.nodes_alive == 3


def test_clusters_are_found_again_from_the_state_folder(tmp_path: Path, slurm: FakeSlurm) -> None:
    make(tmp_path, slurm, name="one")
    make(tmp_path, slurm, name="two")
    (tmp_path / "not-a-cluster").mkdir()
    assert sorted(c.name for c in list_clusters(slurm=slurm, root=tmp_path)) == ["one", "two"]


def test_dashboard_url_goes_through_the_users_server(
    tmp_path: Path, slurm: FakeSlurm, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = make(tmp_path, slurm)
    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX", raising=False)
    assert cluster.dashboard_url is None
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/alice/")
    assert cluster.dashboard_url == "/user/alice/shopfloor/ray/demo/dashboard/"


def test_sync_bridge_works_inside_a_running_loop() -> None:
    import asyncio

    from shopfloor.session.services import blocking

    async def inner() -> int:
        return 7

    async def outer() -> int:
        return blocking(inner())

    assert asyncio.run(outer()) == 7


# -- the panel ------------------------------------------------------------------------------

PARTITIONS = {
    "default_partition": "cpu",
    "partitions": [{
        "name": "cpu", "description": "CPU nodes", "live": {"nodes_total": 2},
        "limits": {"max_nodes": 2, "max_cpus": 4, "max_memory_gb": 3.5, "max_gpus": 0,
                   "max_walltime_minutes": 480},
        "max_walltime_text": "8 hours",
        "defaults": {"cpus": 1, "memory_gb": 1, "gpus": 0, "walltime_minutes": 120},
    }],
}


class PanelHub:
    def partitions(self) -> dict[str, Any]:
        return PARTITIONS


def test_panel_offers_the_hubs_partitions_and_shows_a_lost_worker(
    tmp_path: Path, slurm: FakeSlurm
) -> None:
    from shopfloor.widgets.ray_panel import RayClusterPanel

    make(tmp_path, slurm)
    cluster = RayAnswers("demo", settings=RaySettings(), slurm=slurm, root=tmp_path)
    panel = RayClusterPanel(cluster, hub=SizeHub(), auto_refresh=False)
    assert panel.chooser.partition.options == ("cpu",) and panel.nodes.max == 2
    assert "pending" in panel.summary.value and panel.cluster_view in panel.children
    slurm.set_state("101", "RUNNING")
    write_json_private(cluster.directory / HEAD_FILE,
                       {"job_id": "101", "address": "127.0.2.1", "dashboard_port": 1})
    cluster.nodes_answer = [_alive(2), _alive(2)]
    panel.refresh()
    assert "ready" in panel.summary.value and "CPUs 4" in panel.summary.value
    (worker,) = cluster.scale(3, hub=SizeHub())
    slurm.set_state(worker, "FAILED")
    panel.refresh()
    assert "degraded" in panel.summary.value and f"{worker} ended" in panel.summary.value
    slurm.set_state("101", "CANCELLED")
    panel.refresh()
    assert panel.form in panel.children and "stopped" in panel.summary.value
    panel.close()


def test_panel_shows_field_problems_in_plain_words(tmp_path: Path, slurm: FakeSlurm) -> None:
    from shopfloor.widgets.ray_panel import RayClusterPanel

    panel = RayClusterPanel(None, hub=PanelHub(), auto_refresh=False, root=tmp_path)
    panel.name.value = "No Spaces Allowed"
    panel.create_button.click()
    assert "name:" in panel.status.value and "lowercase" in panel.status.value
    assert "Traceback" not in panel.status.value and slurm.scripts == []


class CountingSlurm(FakeSlurm):
    def __init__(self) -> None:
        super().__init__()
        self.squeue_calls = 0

    def squeue(self, job_ids: Any = None, *, user: str | None = None) -> dict[str, JobInfo]:
        self.squeue_calls += 1
        return super().squeue(job_ids, user=user)


class JoiningCluster(RayAnswers):
    """Ray answers with one node alive, and with two from the ``join_after``-th question on."""

    join_after = 30
    asked = 0

    def ray_nodes(self) -> list[dict[str, Any]] | None:
        self.asked += 1
        return [_alive(1)] * (2 if self.asked >= self.join_after else 1)


def test_waiting_for_ready_asks_ray_often_and_slurm_seldom(tmp_path: Path) -> None:
    slurm = CountingSlurm()
    make(tmp_path, slurm)
    slurm.set_state("101", "RUNNING")
    slurm.squeue_calls = 0
    cluster = JoiningCluster("demo", settings=RaySettings(), slurm=slurm, root=tmp_path)
    write_json_private(cluster.directory / HEAD_FILE,
                       {"job_id": "101", "address": "127.0.2.1", "dashboard_port": 1})
    status = cluster.wait_ready(timeout=10, poll=0.01, full_every=60)
    assert status.ready and cluster.asked >= 30
    # One full status at the start and one when Ray said every node joined: no Slurm per poll.
    assert slurm.squeue_calls == 2


def test_waiting_for_ready_still_sees_a_cluster_that_stopped(tmp_path: Path) -> None:
    slurm = CountingSlurm()
    make(tmp_path, slurm)
    slurm.set_state("101", "RUNNING")
    cluster = JoiningCluster("demo", settings=RaySettings(), slurm=slurm, root=tmp_path)
    cluster.join_after = 10**9
    write_json_private(cluster.directory / STOPPED_FILE,
                       {"job_id": "101", "reason": "the head node could not start Ray"})
    slurm.set_state("101", "FAILED")
    with pytest.raises(RayClusterError, match=r"stopped before it was ready.*could not start"):
        cluster.wait_ready(timeout=10, poll=0.01, full_every=0.05)
