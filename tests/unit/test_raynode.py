"""The job-side Ray launcher's decisions, tested in-process with fake "srun tasks"."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shopfloor.ray import node as raynode
from shopfloor.ray.node import (
    IdleWatch,
    LaunchError,
    NodePlan,
    check_private_dir,
    check_temp_root,
    explain_failure,
    make_temp_dir,
    object_store_bytes,
    own_processes_mentioning,
    pick_ports,
    plan_node,
    ray_env,
    ray_start_command,
    wait_for_head,
)


def srun_tasks(job: str, ntasks: int) -> list[dict[str, str]]:
    """The environments ``srun --ntasks-per-node=1`` gives the tasks of one job."""
    return [{"SLURM_JOB_ID": job, "SLURM_PROCID": str(i), "SLURMD_NODENAME": f"node{i + 1}"}
            for i in range(ntasks)]


def test_exactly_one_head_per_cluster_and_scale_jobs_only_add_workers() -> None:
    plans = [plan_node(env) for env in srun_tasks("41", 3)]
    assert [p.role for p in plans] == ["head", "worker", "worker"]
    assert {p.head_job for p in plans} == {"41"}
    extra = [plan_node(env, worker_job_for="41") for env in srun_tasks("57", 2)]
    assert [p.role for p in extra] == ["worker", "worker"]
    assert {p.head_job for p in extra} == {"41"}


def test_outside_a_job_step_the_launcher_refuses() -> None:
    with pytest.raises(LaunchError, match="Slurm job step"):
        plan_node({"SLURM_JOB_ID": "12"})


def test_workers_start_as_soon_as_the_head_file_of_their_job_appears(tmp_path: Path) -> None:
    (tmp_path / raynode.HEAD_FILE).write_text(json.dumps({"job_id": "40", "address": "x"}))

    def head_task() -> None:
        time.sleep(0.3)
        raynode.write_json_private(tmp_path / raynode.HEAD_FILE, {
            "job_id": "41", "address": "127.0.2.1", "gcs_port": 1234})

    threading.Thread(target=head_task).start()
    start = time.monotonic()
    head = wait_for_head(tmp_path, "41", timeout=5)
    assert head["gcs_port"] == 1234 and time.monotonic() - start < 2
    assert (tmp_path / raynode.HEAD_FILE).stat().st_mode & 0o777 == 0o600


def test_a_stale_head_file_is_not_trusted(tmp_path: Path) -> None:
    raynode.write_json_private(tmp_path / raynode.HEAD_FILE, {"job_id": "40"})
    with pytest.raises(LaunchError, match="did not start"):
        wait_for_head(tmp_path, "41", timeout=0.3)


def test_object_store_is_a_share_of_job_memory_with_ray_minimum() -> None:
    assert object_store_bytes(1024, 0.15, 80) == 153 * 1024 * 1024
    assert object_store_bytes(256, 0.15, 80) == 80 * 1024 * 1024
    assert object_store_bytes(100, 0.1, 76) >= raynode.MIN_OBJECT_STORE_BYTES


@pytest.fixture
def job_in_tmp() -> Iterator[str]:
    """A job id no real job has; removes what a test made for it in /tmp (Ray's real root)."""
    job = f"8{os.getpid() % 1000:03d}"
    yield job
    for path in Path("/tmp").glob(f"sfray-*-{job}-*"):
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            shutil.rmtree(path)


def test_temp_dir_is_private_unguessable_and_short_enough_for_sockets(job_in_tmp: str) -> None:
    job = job_in_tmp
    first = make_temp_dir("/tmp", "alice", 1002, job, 1)
    second = make_temp_dir("/tmp", "alice", 1002, job, 1)
    assert first != second  # the same job and node never gets a name twice
    assert first.name.startswith(f"sfray-alice-{job}-1-")
    assert first.stat().st_mode & 0o777 == 0o700
    assert len(str(first)) <= raynode.MAX_TEMP_DIR_LENGTH
    long_name = make_temp_dir("/tmp", "a" * 32, 1002, job, 0)
    assert long_name.name.startswith(f"sfray-1002-{job}-0-")
    with pytest.raises(LaunchError, match="too long"):
        make_temp_dir("/" + "x" * 40, "alice", 1002, job, 0)


def test_a_squatted_or_predicted_name_is_never_used(job_in_tmp: str, tmp_path: Path) -> None:
    job = job_in_tmp
    # What the old launcher would have used, made first (and a link to a folder we hold).
    Path(f"/tmp/sfray-alice-{job}-0").mkdir()
    (tmp_path / "bait").mkdir()
    Path(f"/tmp/sfray-alice-{job}-0-").symlink_to(tmp_path / "bait")
    made = make_temp_dir("/tmp", "alice", 1002, job, 0)
    assert not made.is_symlink() and made.parent == Path("/tmp")
    assert made.name.startswith(f"sfray-alice-{job}-0-") and len(made.name) > len(
        f"sfray-alice-{job}-0-")
    assert list((tmp_path / "bait").iterdir()) == []


def test_temp_root_must_be_one_other_users_cannot_change(tmp_path: Path) -> None:
    open_root = tmp_path / "open"
    open_root.mkdir()
    os.chmod(open_root, 0o777)  # world-writable, not sticky: others could rename ours
    with pytest.raises(LaunchError, match="cannot change"):
        check_temp_root(open_root)
    (tmp_path / "link").symlink_to(Path("/tmp"))
    with pytest.raises(LaunchError, match="cannot change"):
        check_temp_root(tmp_path / "link")
    check_temp_root(Path("/tmp"))  # root-owned and sticky


def test_private_dir_check_refuses_links_open_and_foreign_folders(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    assert check_private_dir(mine) == mine
    (tmp_path / "link").symlink_to(mine)
    with pytest.raises(LaunchError, match="not your folder"):
        check_private_dir(tmp_path / "link")
    (tmp_path / "open").mkdir(mode=0o755)
    os.chmod(tmp_path / "open", 0o755)
    with pytest.raises(LaunchError, match="open to other users"):
        check_private_dir(tmp_path / "open")
    if os.getuid() == 0:
        other = tmp_path / "squatted"
        other.mkdir(mode=0o700)
        os.chown(other, 1003, 1003)
        with pytest.raises(LaunchError, match="not your folder"):
            check_private_dir(other)


def test_ports_are_free_on_every_address_not_only_the_node_address() -> None:
    # Someone's kernel holds many ports on 127.0.0.1 only; Ray binds 0.0.0.0 and 127.0.0.1.
    held = []
    try:
        for _ in range(300):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            held.append(sock)
        taken = {sock.getsockname()[1] for sock in held}
        for _ in range(20):
            ports = pick_ports(raynode.NODE_PORTS + raynode.HEAD_PORTS)
            assert len(set(ports.values())) == len(ports)
            assert not taken & set(ports.values())
    finally:
        for sock in held:
            sock.close()


GCS_BIND_ERROR = (
    "[2026-11-30 08:27:40,645 C 7001 7001] (gcs_server) grpc_server.cc:134: Check failed: "
    "server_ Failed to start the grpc server. The specified port is 37889. This means ..."
)


def test_a_failed_start_is_explained_and_a_taken_port_is_recognised(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "gcs_server.err").write_text("E1130 UNKNOWN:No address added\n" + GCS_BIND_ERROR)
    output = ["Local node IP: 127.0.2.1\n", "RuntimeError: Failed to start GCS.\n"]
    reason, port_taken = explain_failure(output, logs)
    assert port_taken and reason == "a port Ray needed (37889) was already in use on the node"
    reason, port_taken = explain_failure(["ValueError: bad memory value\n"], tmp_path / "none")
    assert not port_taken and reason == "Ray exited: ValueError: bad memory value"


def _command(role: str) -> list[str]:
    plan = NodePlan(role, "41", 0 if role == "head" else 1)
    ports = {"node-manager-port": 40001, "port": 40002, "dashboard-port": 40003}
    return ray_start_command("/venv/bin/ray", plan, "127.0.2.1", ports, Path("/tmp/t"),
                             num_cpus=2, num_gpus=0, object_store=80 << 20, memory=1 << 30,
                             head_address="127.0.2.2:40002")


def test_head_command_binds_the_dashboard_to_the_node_with_chosen_ports() -> None:
    cmd = _command("head")
    assert "--head" in cmd and "--include-dashboard=true" in cmd
    assert "--dashboard-host=127.0.2.1" in cmd and "--dashboard-port=40003" in cmd
    assert "--port=40002" in cmd and "--temp-dir=/tmp/t" in cmd
    assert "--num-cpus=2" in cmd and f"--object-store-memory={80 << 20}" in cmd
    assert "--disable-usage-stats" in cmd and "--block" in cmd
    assert not any(arg.startswith("--address") for arg in cmd)


def test_worker_command_joins_the_head_without_a_dashboard() -> None:
    cmd = _command("worker")
    assert "--address=127.0.2.2:40002" in cmd
    assert "--head" not in cmd and not any("dashboard-host" in a for a in cmd)


def test_ray_environment_turns_token_auth_on_by_file_only(tmp_path: Path) -> None:
    env = ray_env({"PATH": "/bin", "RAY_AUTH_TOKEN": "leak", "RAY_ADDRESS": "x"},
                  tmp_path / "auth_token", tmp_path)
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_AUTH_TOKEN_PATH"] == str(tmp_path / "auth_token")
    assert env["RAY_USAGE_STATS_ENABLED"] == "0"
    assert "RAY_AUTH_TOKEN" not in env and "RAY_ADDRESS" not in env


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_idle_watch_stops_only_after_the_idle_time_without_jobs() -> None:
    clock = FakeClock()
    answers = iter([True, False, None, False, False])
    watch = IdleWatch(600, lambda: next(answers), clock=clock)
    for t in (100, 300, 500, 900):  # busy, idle, unknown (counts as busy), idle 400 s
        clock.now = t
        assert watch.reason_to_stop() is None
    clock.now = 1200
    assert "idle timeout" in (watch.reason_to_stop() or "")


def test_idle_watch_follows_the_session_and_can_be_off() -> None:
    alive = [True]
    watch = IdleWatch(0, lambda: False, session_alive=lambda: alive[0], clock=FakeClock())
    assert watch.reason_to_stop() is None
    alive[0] = False
    assert "session" in (watch.reason_to_stop() or "")


def test_leftover_sweep_finds_only_our_processes_naming_the_temp_dir(tmp_path: Path) -> None:
    for pid, cmdline in (("101", b"raylet\0--temp-dir=/tmp/shopfloor-ray-a-41-0\0"),
                         ("102", b"raylet\0--temp-dir=/tmp/shopfloor-ray-a-42-0\0"),
                         ("self", b"x")):
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "cmdline").write_bytes(cmdline)
    assert own_processes_mentioning("/tmp/shopfloor-ray-a-41-0", tmp_path) == [101]


RAYLET_AGENT_TIMEOUT = (
    "[2026-11-30 11:48:52,213 C 26866 26866] (raylet) node_manager.cc:3588:  An unexpected "
    "system state has occurred. Check failed: statussetor3588.has_value() Timed out waiting "
    "for file /tmp/sfray-alice-41-0-x/r/session_1/dashboard_agent_listen_port_9bcb15d66f"
)


def test_a_node_whose_ray_started_too_slowly_on_a_busy_node_tries_again(tmp_path: Path) -> None:
    # Ray's raylet waits 15 s at most for its dashboard agent; under load the agent's imports
    # take longer and the raylet aborts: that node must try again, not leave the cluster.
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "raylet.out").write_text("Setting cluster ID\n" + RAYLET_AGENT_TIMEOUT + "\n")
    output = ["Some Ray subprocesses exited unexpectedly:\n", "  raylet [exit code=-6]\n"]
    reason, retry = explain_failure(output, logs)
    assert retry and reason.startswith("Ray's own processes did not start in time")
    dashboard = ["RuntimeError: Module MetricsHead failed to start. Received EOF from pipe.\n"]
    assert explain_failure(dashboard, None)[1]
    # A failure another try cannot fix is not retried.
    assert not explain_failure(["ValueError: bad memory value\n"], tmp_path / "none")[1]


def test_only_the_head_skips_the_autoscaler_monitor() -> None:
    assert "--no-monitor" in _command("head")
    assert "--no-monitor" not in _command("worker")


def test_a_worker_notices_at_once_that_its_head_started_again(tmp_path: Path) -> None:
    head = {"job_id": "41", "address": "127.0.2.1", "gcs_port": 1234, "attempt": 1}
    raynode.write_json_private(tmp_path / raynode.HEAD_FILE, head)
    assert not raynode.head_restarted(tmp_path, head)
    assert not raynode.head_restarted(tmp_path / "unreadable", head)
    runner = raynode.NodeRunner(["sleep", "30"], dict(os.environ), tmp_path / "t")
    runner.start()
    try:
        def restart_head() -> None:
            time.sleep(0.3)
            raynode.write_json_private(tmp_path / raynode.HEAD_FILE,
                                       dict(head, gcs_port=5678, attempt=2))

        threading.Thread(target=restart_head).start()
        start = time.monotonic()
        reason = raynode._supervise(runner, None, [], 60,
                                    lambda: raynode.head_restarted(tmp_path, head))
        assert reason is None and time.monotonic() - start < 3
        assert runner.running()  # it returned because of the head, not because Ray ended
    finally:
        runner.stop_ray()
    assert not runner.running()
