"""The local cluster against its real daemons: jobs, partitions, GPUs, crashes, restarts.

These tests share the machine's one cluster (fixture ``local_cluster``); they stop and kill
its daemons on purpose and always leave it up.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from shopfloor.demo.localcluster import LocalCluster
from shopfloor.slurm.seam import Slurm, SlurmError

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

TEST_USER = "sftest"
#: Job states after which a job will not change any more.
_FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}


@pytest.fixture(scope="module")
def user_home() -> Path:
    """An ordinary Unix user who submits jobs through sudo, as the hub does."""
    if os.geteuid() != 0 or shutil.which("sudo") is None:
        pytest.skip("needs root and sudo to submit jobs as another user")
    try:
        home = Path(pwd.getpwnam(TEST_USER).pw_dir)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", TEST_USER], check=True)
        home = Path(pwd.getpwnam(TEST_USER).pw_dir)
    # Slurm refuses jobs of users without an association (AccountingStorageEnforce).
    LocalCluster().accounting.accounts.add_user(TEST_USER, "training", default_account=True)
    return home


@pytest.fixture
def slurm() -> Slurm:
    """The project's Slurm seam with no SLURM_CONF: the tools find /etc/slurm/slurm.conf."""
    return Slurm()


def _submit(slurm: Slurm, home: Path, *args: str) -> str:
    out = slurm.run_sync(
        ["sbatch", "--parsable", f"--chdir={home}", f"--output={home}/sf-test-%j.out", *args],
        user=TEST_USER,
    )
    return out.strip().split(";", 1)[0]


def _wait_job(slurm: Slurm, job_id: str, timeout: float = 60) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        out = slurm.run_sync(["scontrol", "-o", "show", "job", job_id])
        fields = dict(t.split("=", 1) for t in out.split() if "=" in t)
        if fields.get("JobState") in _FINAL:
            return fields
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} did not finish in {timeout} s: {out}")
        time.sleep(0.5)


def _output(home: Path, job_id: str) -> str:
    return (home / f"sf-test-{job_id}.out").read_text()


def _slurm_daemons() -> list[str]:
    """Command lines of live (not zombie) slurmctld and slurmd processes."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        if state != "Z" and os.path.basename(argv[0].decode()) in {"slurmctld", "slurmd"}:
            found.append(b" ".join(argv).decode())
    return found


def _busy_nodes(slurm: Slurm) -> set[str]:
    """Nodes where some job (another test's, or a hub user's on this shared cluster) runs."""
    lists = slurm.run_sync(["squeue", "-h", "-t", "RUNNING,COMPLETING", "-o", "%N"]).split()
    if not lists:
        return set()
    return set(slurm.run_sync(["scontrol", "show", "hostnames", ",".join(lists)]).split())


def _assert_all_idle(cluster: LocalCluster, timeout: float = 20) -> None:
    """Every node responds and is idle, except where a job is running."""
    slurm = Slurm()
    deadline = time.monotonic() + timeout
    while True:
        status = cluster.status()
        assert status.running, status.table()
        busy = _busy_nodes(slurm)
        expected = {n: "idle" for n in ("node1", "node2", "gpu1", "debug1") if n not in busy}
        actual = {n: s for n, s in status.nodes.items() if n not in busy}
        if actual == expected and all(status.nodes[n] in {"mix", "alloc"} for n in busy):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"nodes not idle after {timeout} s (busy: {busy}):\n{status.table()}")
        time.sleep(0.5)


def test_up_twice_is_harmless_and_all_nodes_are_idle(local_cluster: LocalCluster) -> None:
    before = local_cluster.status()
    again = local_cluster.up()
    assert again.controller_pid == before.controller_pid
    assert again.slurmd_pids == before.slurmd_pids
    _assert_all_idle(local_cluster)
    link = local_cluster.system_config_link
    assert link.is_symlink() and link.resolve() == local_cluster.slurm_conf


def test_multi_node_job_runs_on_node1_and_node2(
    local_cluster: LocalCluster, slurm: Slurm, user_home: Path
) -> None:
    job = _submit(
        slurm, user_home, "-N2", "-p", "cpu", "--wrap", "srun sh -c 'echo on $SLURMD_NODENAME'"
    )
    info = _wait_job(slurm, job)
    assert info["JobState"] == "COMPLETED", info
    assert info["NodeList"] == "node[1-2]"
    assert info["UserId"].startswith(f"{TEST_USER}(")
    lines = sorted(_output(user_home, job).split("\n"))
    assert "on node1" in lines and "on node2" in lines


def test_gpu_job_gets_cuda_visible_devices(
    local_cluster: LocalCluster, slurm: Slurm, user_home: Path
) -> None:
    job = _submit(
        slurm, user_home, "-p", "gpu", "--gres=gpu:1", "--wrap",
        'echo "CVD=${CUDA_VISIBLE_DEVICES:-unset}"',
    )
    info = _wait_job(slurm, job)
    assert info["JobState"] == "COMPLETED", info
    assert info["NodeList"] == "gpu1"
    assert _output(user_home, job).strip() == "CVD=0"


def test_debug_partition_refuses_two_hours(
    local_cluster: LocalCluster, slurm: Slurm, user_home: Path
) -> None:
    with pytest.raises(SlurmError) as info:
        _submit(slurm, user_home, "-p", "debug", "--time=2:00:00", "--wrap", "true")
    assert "time limit" in info.value.slurm_message.lower()


def test_node_left_down_is_resumed_by_up(local_cluster: LocalCluster, slurm: Slurm) -> None:
    slurm.run_sync(["scontrol", "update", "nodename=debug1", "state=down", "reason=test"])
    assert local_cluster.status().nodes["debug1"].startswith("down")
    local_cluster.up()
    _assert_all_idle(local_cluster)


def test_up_recovers_after_controller_and_node_crash(local_cluster: LocalCluster) -> None:
    before = local_cluster.status()
    assert before.controller_pid is not None and before.slurmd_pids["node2"] is not None
    os.kill(before.controller_pid, signal.SIGKILL)
    os.kill(before.slurmd_pids["node2"], signal.SIGKILL)
    time.sleep(0.5)
    crashed = local_cluster.status()
    assert crashed.running is False
    assert crashed.controller_pid is None
    assert crashed.slurmd_pids["node2"] is None

    after = local_cluster.up(timeout=60)
    assert after.running
    assert after.controller_pid not in (None, before.controller_pid)
    assert after.slurmd_pids["node1"] == before.slurmd_pids["node1"]  # survivors are kept
    _assert_all_idle(local_cluster)


def test_up_cancels_jobs_lost_in_a_crash(
    local_cluster: LocalCluster, slurm: Slurm, user_home: Path
) -> None:
    """A job whose processes die with slurmctld must not hold its node until its time limit."""
    job = _submit(slurm, user_home, "-p", "debug", "--time=10:00", "--wrap", "sleep 600")
    deadline = time.monotonic() + 30
    while slurm.run_sync(["squeue", "-h", "-j", job, "-o", "%T"]).strip() != "RUNNING":
        assert time.monotonic() < deadline, f"job {job} did not start"
        time.sleep(0.5)
    # slurmctld saves a job's start lazily; an update makes it save within seconds.
    job_state = local_cluster.state_dir / "ctld" / "job_state"
    marked = time.time()
    slurm.run_sync(["scontrol", "update", f"jobid={job}", "comment=saved"])
    while job_state.stat().st_mtime < marked:
        assert time.time() - marked < 20, "slurmctld did not save its job state"
        time.sleep(0.5)

    job_processes = _job_processes(job)
    assert job_processes, f"no slurmstepd for job {job}"
    for pid in [local_cluster.status().controller_pid, *job_processes]:
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)

    local_cluster.up()
    state = slurm.run_sync(["squeue", "-h", "-t", "all", "-j", job, "-o", "%T"]).strip()
    assert state in {"CANCELLED", "COMPLETING"}, state
    _assert_all_idle(local_cluster)


def _job_processes(job_id: str) -> list[int]:
    """The job's slurmstepd processes and their children (the job's own processes)."""
    stepds, parents = [], {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode()
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if title.startswith(f"slurmstepd: [{job_id}."):
            stepds.append(int(entry.name))
        parents[int(entry.name)] = ppid
    return stepds + [pid for pid, ppid in parents.items() if ppid in stepds]


def test_down_stops_every_daemon_and_up_brings_it_back(local_cluster: LocalCluster) -> None:
    local_cluster.down()
    try:
        status = local_cluster.status()
        assert status.running is False
        assert status.controller_pid is None
        assert set(status.slurmd_pids.values()) == {None}
        assert _slurm_daemons() == []
        run_dir = local_cluster.state_dir / "run"
        assert not list(run_dir.glob("*.pid"))
        local_cluster.down()  # a second down is harmless
        # Stale pid files naming a live, unrelated process (a crash, then pid reuse): down()
        # must not signal it and up() must not take it for a running daemon.
        bystander = subprocess.Popen(["sleep", "60"])
        try:
            (run_dir / "slurmctld.pid").write_text(f"{bystander.pid}\n")
            (run_dir / "slurmd-node1.pid").write_text(f"{bystander.pid}\n")
            local_cluster.down()
            assert bystander.poll() is None, "down() killed an unrelated process"
            started = local_cluster.up()
            assert bystander.poll() is None, "up() killed an unrelated process"
            assert bystander.pid not in (started.controller_pid, started.slurmd_pids["node1"])
        finally:
            bystander.kill()
            bystander.wait()
    finally:
        local_cluster.up()
    _assert_all_idle(local_cluster)
