"""The seam's two runners: one dialect (command lines and parsers), async and blocking.

The typed methods are checked twice: what command line each builds (both runners must build
the same), and what they make of Slurm's answers, with stand-in Slurm tools (shell scripts in
``bin_dir``) so the real process handling runs too.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pytest

from shopfloor.slurm.seam import Slurm, SlurmError, SlurmSync
from shopfloor.userfiles import run_as_user_sync, sudo_argv

END = datetime(2030, 1, 2, 17, 0)


class AsyncRecorder(Slurm):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[list[str]] = []

    async def run(self, args: Sequence[str], **_: object) -> str:
        self.seen.append(list(args))
        return "1\n" if args[0] == "sbatch" else ""


class SyncRecorder(SlurmSync):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[list[str]] = []

    def run(self, args: Sequence[str], **_: object) -> str:
        self.seen.append(list(args))
        return "1\n" if args[0] == "sbatch" else ""


def test_both_runners_speak_the_same_dialect() -> None:
    sync, aio = SyncRecorder(), AsyncRecorder()
    for runner in (sync, aio):
        steps = [
            lambda r: r.sbatch("#!/bin/sh\n", user="alice", secret_env={"TOKEN": "x"}),
            lambda r: r.squeue(["1", "2"], user="alice"),
            lambda r: r.scancel("7", user="alice"),
            lambda r: r.cancel_jobs_of("alice", names=["ray-a", "ray-w-a"]),
            lambda r: r.cancel_jobs_of("bob"),
            lambda r: r.partitions(),
            lambda r: r.nodes("node1", details=True),
            lambda r: r.node_address("node1"),
        ]
        for step in steps:
            result = step(runner)
            if asyncio.iscoroutine(result):
                asyncio.run(result)
    assert sync.seen == aio.seen
    assert sync.seen[0] == ["sbatch", "--parsable", "--export=TOKEN"]
    assert sync.seen[2] == ["scancel", "7"]
    assert sync.seen[3] == ["scancel", "--name", "ray-a,ray-w-a", "-u", "alice"]
    assert sync.seen[4] == ["scancel", "-u", "bob"]
    assert sync.seen[6] == ["scontrol", "-d", "-o", "show", "node", "node1"]


def test_cancelling_no_names_cancels_nothing() -> None:
    # An empty --name would match every job of the user.
    for runner in (SyncRecorder(), AsyncRecorder()):
        result = runner.cancel_jobs_of("alice", names=[])
        if asyncio.iscoroutine(result):
            asyncio.run(result)
        assert runner.seen == []


async def test_reservation_command_lines() -> None:
    slurm = AsyncRecorder()
    await slurm.create_reservation("ws-intro", start=None, end=END, partition="cpu",
                                   users=["trainer", "p1"], cores=4)
    await slurm.create_reservation("ws-intro", start=datetime(2030, 1, 2, 9), end=END,
                                   partition="cpu", users=["trainer"], nodes=2,
                                   flags=["IGNORE_JOBS"])
    await slurm.set_reservation_flags("ws-intro", ["IGNORE_JOBS"])
    await slurm.add_reservation_user("ws-intro", "p2")
    await slurm.delete_reservation("ws-intro")
    assert slurm.seen == [
        ["scontrol", "create", "reservation", "ReservationName=ws-intro", "StartTime=now",
         "EndTime=2030-01-02T17:00:00", "PartitionName=cpu", "CoreCnt=4", "Users=trainer,p1"],
        ["scontrol", "create", "reservation", "ReservationName=ws-intro",
         "StartTime=2030-01-02T09:00:00", "EndTime=2030-01-02T17:00:00", "PartitionName=cpu",
         "NodeCnt=2", "Users=trainer", "Flags=IGNORE_JOBS"],
        ["scontrol", "update", "ReservationName=ws-intro", "Flags=IGNORE_JOBS"],
        ["scontrol", "update", "ReservationName=ws-intro", "Users+=p2"],
        ["scontrol", "delete", "ReservationName=ws-intro"],
    ]


def _tool(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def tools(tmp_path: Path) -> Path:
    """Stand-in Slurm tools that log their arguments and answer like Slurm does."""
    log = tmp_path / "calls"
    _tool(tmp_path, "sbatch", f'echo "sbatch $*" >> {log}; cat > {tmp_path}/script; '
                              'umask > "$0.umask"; echo "4711;cluster"\n')
    _tool(tmp_path, "squeue", f'echo "squeue $*" >> {log}\ncase "$*" in\n'
          '  *"-j 99"*) echo "squeue: error: Invalid job id specified" >&2; exit 1;;\n'
          '  *"-j 98"*) echo "squeue: error: Unable to contact slurm controller" >&2; exit 1;;\n'
          'esac\n'
          'echo "12|RUNNING|None|node1|node1|2030-01-02T09:00:00|alice|cpu|ray-x|5|'
          '2030-01-02T09:30:00"\n'
          'echo "13|PENDING|Priority|||N/A|bob|gpu|job|7|N/A"\n')
    _tool(tmp_path, "sinfo", 'echo "debug1|idle"; echo "gpu1|down*"\n')
    _tool(tmp_path, "scontrol", 'echo "NodeName=node1 NodeAddr=127.0.2.1 State=IDLE"\n')
    return tmp_path


def test_sync_typed_answers(tools: Path) -> None:
    slurm = SlurmSync(bin_dir=str(tools))
    assert slurm.sbatch("#!/bin/sh\necho hi\n") == "4711"
    assert (tools / "script").read_text() == "#!/bin/sh\necho hi\n"
    assert (tools / "sbatch.umask").read_text().strip() == "0077"  # job output stays private
    jobs = slurm.squeue()
    assert jobs["12"].is_running and jobs["12"].start == datetime(2030, 1, 2, 9)
    assert jobs["12"].end == datetime(2030, 1, 2, 9, 30) and jobs["13"].end is None
    assert jobs["13"].is_pending and jobs["13"].priority == 7
    assert slurm.squeue(["99"]) == {}  # every listed job has left Slurm's memory
    with pytest.raises(SlurmError) as err:
        slurm.squeue(["98"])
    assert err.value.unreachable
    assert slurm.node_states() == {"debug1": "idle", "gpu1": "down*"}
    assert slurm.node_address("node1") == "127.0.2.1"
    assert slurm.node_address("node9") == "node9"
    assert slurm.calls["squeue"] == 3


def test_async_runner_lends_its_settings_to_the_blocking_one(tools: Path) -> None:
    slurm = Slurm(bin_dir=str(tools), env={"SLURM_CONF": "/nowhere"}, timeout=7)
    assert slurm.sync.bin_dir == str(tools) and slurm.sync.timeout == 7
    assert slurm.sync.env == {"SLURM_CONF": "/nowhere"}
    slurm.sync.partitions()
    assert slurm.calls == {"sinfo": 1}  # one count for both
    assert slurm.run_sync(["sinfo"]).startswith("debug1|")


def test_a_slow_tool_is_a_timeout_error(tmp_path: Path) -> None:
    _tool(tmp_path, "sinfo", "sleep 5\n")
    with pytest.raises(SlurmError, match="timed out") as err:
        SlurmSync(bin_dir=str(tmp_path), timeout=0.3).partitions()
    assert err.value.unreachable


def test_missing_tool_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SlurmError, match="not found: is Slurm installed"):
        SlurmSync(bin_dir=str(tmp_path)).ping()


def test_the_one_way_to_run_as_a_user() -> None:
    assert sudo_argv("alice", ["cat", "--", "/x"]) == ["sudo", "-n", "-u", "alice", "--",
                                                       "cat", "--", "/x"]
    assert sudo_argv("alice", ["sbatch"], preserve_env=["A", "B"]) == [
        "sudo", "-n", "-u", "alice", "--preserve-env=A,B", "--", "sbatch"]
    with pytest.raises(ValueError):
        sudo_argv("alice", [])
    # The seam's user commands are built by it.
    assert Slurm().command(["scancel", "7"], user="alice") == sudo_argv("alice", ["scancel", "7"])


@pytest.mark.skipif(os.geteuid() != 0, reason="runs sudo as root")
def test_run_as_user_sync_runs_as_that_user() -> None:
    code, out, _ = run_as_user_sync("nobody", ["id", "-un"], timeout=10)
    assert (code, out.strip()) == (0, b"nobody")
    code, out, _ = run_as_user_sync("nobody", ["cat"], stdin=b"given", timeout=10)
    assert (code, out) == (0, b"given")
    code, _, _ = run_as_user_sync("nobody", ["sleep", "5"], timeout=0.5)
    assert code != 0  # killed
