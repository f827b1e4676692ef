"""Parsing Slurm's own output, and the seam's command lines."""

from __future__ import annotations

from datetime import datetime

import pytest

from shopfloor.slurm.seam import (
    Slurm,
    SlurmError,
    expand_hostlist,
    gpus_in_gres,
    parse_scontrol_nodes,
    parse_sinfo,
    parse_squeue,
    parse_time_limit,
)


def test_parse_squeue() -> None:
    text = (
        "12|PENDING|Resources|n/a||2026-11-27T10:05:00|alice|gpu|shopfloor-alice|4294901759|"
        "N/A\n"
        "13|RUNNING|None|node1|node[1-2]|2026-11-27T09:00:00|bob|cpu|ray|100|"
        "2026-11-27T09:15:00\n"
    )
    jobs = parse_squeue(text)
    assert jobs["12"].is_pending and jobs["12"].start == datetime(2026, 11, 27, 10, 5)
    assert jobs["12"].end is None  # Slurm knows no end before the start
    assert jobs["13"].is_running and jobs["13"].batch_host == "node1"
    assert jobs["13"].nodes == "node[1-2]"
    assert jobs["13"].end == datetime(2026, 11, 27, 9, 15)  # start + time limit


def test_parse_sinfo() -> None:
    text = (
        "cpu*|up|8:00:00|0/2/0/2|0/8/0/8|4000|(null)|2|node[1-2]\n"
        "gpu|up|4:00:00|1/0/0/1|2/2/0/4|4000|gpu:2|1|gpu1\n"
    )
    cpu, gpu = parse_sinfo(text)
    assert cpu.default and cpu.nodes_idle == 2 and cpu.max_time_minutes == 480
    assert cpu.node_names == {"node1", "node2"} and gpu.node_names == {"gpu1"}
    assert gpu.gpus_per_node == 2 and gpu.cpus_idle == 2 and not gpu.default


@pytest.mark.parametrize(
    "text,minutes",
    [("30:00", 30), ("4:00:00", 240), ("1-00:00:00", 1440), ("infinite", None), ("5", 5)],
)
def test_parse_time_limit(text: str, minutes: int | None) -> None:
    assert parse_time_limit(text) == minutes


def test_hostlists_expand_like_slurm() -> None:
    assert expand_hostlist("node[1-3,5],gpu1") == {"node1", "node2", "node3", "node5", "gpu1"}
    assert expand_hostlist("n[08-10]") == {"n08", "n09", "n10"}
    assert expand_hostlist("(null)") == frozenset()


@pytest.mark.parametrize(
    "args,stderr,unreachable",
    [
        (["sbatch"], "sbatch: error: Batch job submission failed: Unable to contact slurm "
         "controller (connect failure)", True),
        (["squeue"], "squeue: error: Socket timed out on send/recv operation", True),
        (["sbatch"], "sbatch: error: Batch job submission failed: Invalid account", False),
    ],
)
def test_unreachable_controller_is_told_apart(
    args: list[str], stderr: str, unreachable: bool
) -> None:
    assert SlurmError(args, 1, "", stderr).unreachable is unreachable


def test_gres() -> None:
    assert gpus_in_gres("gpu:2") == 2
    assert gpus_in_gres("gpu:a100:4(S:0-1),gpu:v100:2") == 6
    assert gpus_in_gres("(null)") == 0


def test_scontrol_nodes() -> None:
    nodes = parse_scontrol_nodes("NodeName=node1 Arch=x86_64 NodeAddr=127.0.2.1 State=IDLE\n")
    assert nodes["node1"]["NodeAddr"] == "127.0.2.1"


def test_secrets_travel_by_name_only() -> None:
    slurm = Slurm()
    cmd = slurm.command(["sbatch", "--parsable"], user="alice", keep_env=["JUPYTERHUB_API_TOKEN"])
    assert cmd == ["sudo", "-n", "-u", "alice", "--preserve-env=JUPYTERHUB_API_TOKEN", "--",
                   "sbatch", "--parsable"]


async def test_errors_carry_command_and_slurms_words(tmp_path) -> None:  # type: ignore[no-untyped-def]
    fake = tmp_path / "sbatch"
    fake.write_text(
        "#!/bin/sh\necho 'sbatch: error: Invalid partition name specified' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    slurm = Slurm(bin_dir=str(tmp_path))
    with pytest.raises(SlurmError) as err:
        await slurm.sbatch("#!/bin/sh\n")
    assert err.value.returncode == 1
    assert err.value.slurm_message == "Invalid partition name specified"
    assert "sbatch --parsable --export=NONE" in str(err.value)


async def test_missing_binary_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SlurmError) as err:
        await Slurm(bin_dir=str(tmp_path)).partitions()
    assert "not found" in str(err.value)
