"""The job-side Ray launcher's decisions, tested in-process with fake "srun tasks"."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from shopfloor import raynode
from shopfloor.raynode import (
    IdleWatch,
    LaunchError,
    NodePlan,
    make_private_dir,
    object_store_bytes,
    own_processes_mentioning,
    plan_node,
    ray_env,
    ray_start_command,
    temp_dir_for,
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


def test_temp_dir_is_per_user_job_and_node_and_short_enough_for_sockets() -> None:
    path = temp_dir_for("/tmp", "alice", 1002, "41", 1)
    assert path == Path("/tmp/shopfloor-ray-alice-41-1")
    long_name = temp_dir_for("/tmp", "a" * 32, 1002, "41", 0)
    assert long_name == Path("/tmp/shopfloor-ray-1002-41-0")
    with pytest.raises(LaunchError, match="too long"):
        temp_dir_for("/" + "x" * 60, "alice", 1002, "41", 0)


def test_private_dir_is_700_and_refuses_squatters(tmp_path: Path) -> None:
    mine = make_private_dir(tmp_path / "mine")
    assert mine.stat().st_mode & 0o777 == 0o700
    assert make_private_dir(mine) == mine  # a second task on the same machine
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(LaunchError, match="not your folder"):
        make_private_dir(tmp_path / "link")
    (tmp_path / "open").mkdir(mode=0o755)
    os.chmod(tmp_path / "open", 0o755)
    with pytest.raises(LaunchError, match="open to other users"):
        make_private_dir(tmp_path / "open")
    if os.getuid() == 0:
        other = tmp_path / "squatted"
        other.mkdir(mode=0o700)
        os.chown(other, 1003, 1003)
        with pytest.raises(LaunchError, match="not your folder"):
            make_private_dir(other)


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
