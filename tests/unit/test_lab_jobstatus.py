"""The session's job as the JupyterLab status bar and Help view see it (shopfloor.lab)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from shopfloor.lab.config import ShopfloorLab, parse_minutes
from shopfloor.lab.jobstatus import (
    JobWatcher,
    memory_limit_bytes,
    parse_job_record,
    process_tree_rss,
    record_memory_limit_bytes,
    redact,
    tail,
)

#: A real `scontrol -o show job` line of the demo cluster (a session job).
RECORD = (
    "JobId=23 JobName=shopfloor-alice-default UserId=alice(1001) GroupId=alice(1001) "
    "MCS_label=N/A Priority=4294901740 Nice=0 Account=(null) QOS=(null) JobState=RUNNING "
    "Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 "
    "RunTime=00:03:45 TimeLimit=01:00:00 TimeMin=N/A SubmitTime=2026-11-30T08:31:28 "
    "StartTime=2026-11-30T08:31:29 EndTime=2026-11-30T09:31:29 Deadline=N/A "
    "Partition=cpu AllocNode:Sid=localhost:15659 ReqNodeList=(null) NodeList=node1 "
    "BatchHost=node1 NumNodes=1 NumCPUs=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,mem=1G,node=1,billing=1 "
    "MinMemoryNode=1G Command=(null) WorkDir=/home/alice "
    "StdErr=/home/alice/.shopfloor/logs/23.log StdIn=/dev/null "
    "StdOut=/home/alice/.shopfloor/logs/23.log Power= Comment=two words"
)

JOB_ENV = {
    "SLURM_JOB_ID": "23", "SLURM_JOB_PARTITION": "cpu", "SLURMD_NODENAME": "node1",
    "SLURM_MEM_PER_NODE": "1024", "JUPYTERHUB_USER": "alice", "JUPYTERHUB_SERVER_NAME": "gpu1",
}


def test_parse_job_record_reads_slurms_fields() -> None:
    fields = parse_job_record(RECORD + "\n")
    assert fields["EndTime"] == "2026-11-30T09:31:29"
    assert fields["Partition"] == "cpu"
    assert fields["StdOut"] == "/home/alice/.shopfloor/logs/23.log"
    assert fields["TRES"] == "cpu=1,mem=1G,node=1,billing=1"
    assert fields["AllocNode:Sid"] == "localhost:15659"
    assert fields["Power"] == ""
    assert fields["Comment"] == "two words"


@pytest.mark.parametrize(("env", "expected"), [
    ({"SLURM_MEM_PER_NODE": "2048"}, 2048 * 2**20),
    ({"SLURM_MEM_PER_CPU": "512", "SLURM_CPUS_ON_NODE": "4"}, 2048 * 2**20),
    ({}, None),
])
def test_memory_limit_from_slurms_environment(env: dict[str, str], expected: int | None) -> None:
    assert memory_limit_bytes(env) == expected


@pytest.mark.parametrize(("record", "expected"), [
    ({"MinMemoryNode": "1G"}, 2**30),
    ({"MinMemoryNode": "1536M"}, 1536 * 2**20),
    ({"MinMemoryNode": "0", "MinMemoryCPU": "512M", "NumCPUs": "2"}, 2**30),
    ({"MinMemoryNode": "2.5G"}, int(2.5 * 2**30)),
    ({}, None),
])
def test_memory_limit_from_the_job_record(record: dict[str, str], expected: int | None) -> None:
    """The demo's Slurm does not export SLURM_MEM_PER_NODE: the record says it."""
    assert record_memory_limit_bytes(record) == expected


def test_memory_use_counts_the_server_and_its_children() -> None:
    alone = process_tree_rss(0x7FFFFFFF)  # no such process
    assert alone == 0
    before = process_tree_rss(os.getpid())
    child = subprocess.Popen([sys.executable, "-c",
                              "import time; b = bytearray(80 * 2**20); time.sleep(30)"])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            grown = process_tree_rss(os.getpid()) - before
            if grown > 60 * 2**20:
                break
            time.sleep(0.1)
        assert grown > 60 * 2**20, grown
    finally:
        child.kill()
        child.wait()


def test_redact_hides_tokens_in_log_lines() -> None:
    log = ("[I] http://node1:4242/user/alice/?token=abc123def\n"
           "Authorization: token 0123456789abcdef0123456789abcdef\n"
           "JUPYTERHUB_API_TOKEN=s3cret\nKernel started")
    shown = redact(log)
    assert "abc123def" not in shown and "0123456789abcdef" not in shown
    assert "s3cret" not in shown
    assert "Kernel started" in shown


def test_tail_reads_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "23.log"
    log.write_text("".join(f"line {i}\n" for i in range(1000)))
    assert tail(str(log), 3) == "line 997\nline 998\nline 999"
    assert "cannot read the job log" in tail(str(tmp_path / "missing.log"), 3)


class FakeSource:
    """Stands in for `scontrol -o show job` (the real one is exercised by the integration test)."""

    def __init__(self, text: str = RECORD) -> None:
        self.text = text
        self.calls = 0
        self.fail = False

    async def __call__(self, job_id: str) -> str:
        self.calls += 1
        assert job_id == "23"
        if self.fail:
            raise RuntimeError("slurm_load_jobs error: Unable to contact slurm controller")
        return self.text


async def test_watcher_reads_slurm_at_most_every_refresh_interval() -> None:
    now = [1000.0]
    source = FakeSource()
    watcher = JobWatcher(JOB_ENV, source=source, refresh_seconds=300, clock=lambda: now[0])
    await watcher.refresh()
    await watcher.refresh()
    now[0] += 299
    await watcher.refresh()
    assert source.calls == 1
    now[0] += 2
    await watcher.refresh()
    assert source.calls == 2
    status = watcher.status()
    assert (status.in_job, status.job_id, status.partition, status.node) == \
        (True, "23", "cpu", "node1")
    assert status.end_epoch == datetime.fromisoformat("2026-11-30T09:31:29").timestamp()
    assert status.memory_limit_bytes == 2**30
    assert status.memory_used_bytes > 0
    assert (status.user, status.server_name, status.time_limit) == ("alice", "gpu1", "01:00:00")
    assert status.now_epoch == now[0]
    assert "log_path" not in status.to_json()


async def test_watcher_keeps_the_last_record_when_slurm_fails() -> None:
    now = [1000.0]
    source = FakeSource()
    watcher = JobWatcher(JOB_ENV, source=source, refresh_seconds=10, clock=lambda: now[0])
    await watcher.refresh()
    source.fail = True
    now[0] += 20
    await watcher.refresh()
    status = watcher.status()
    assert status.end_epoch is not None
    assert "may be out of date" in status.problem
    assert "slurm controller" in str(watcher.last_error)
    source.fail = False
    await watcher.refresh(force=True)
    assert watcher.status().problem == "" and watcher.last_error is None


async def test_outside_a_job_nothing_asks_slurm() -> None:
    source = FakeSource()
    watcher = JobWatcher({"USER": "alice"}, source=source)
    await watcher.refresh(force=True)
    status = watcher.status()
    assert source.calls == 0
    assert not status.in_job and status.end_epoch is None and status.user == "alice"


def test_warning_minutes_come_from_the_site(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOPFLOOR_WARN_MINUTES", raising=False)
    assert ShopfloorLab().warn_minutes == [15, 5]
    monkeypatch.setenv("SHOPFLOOR_WARN_MINUTES", "5, 30,10")
    assert ShopfloorLab().warn_minutes == [30, 10, 5]
    assert ShopfloorLab(warn_minutes=[1, 2]).warn_minutes == [2, 1]
    assert parse_minutes("") == []
    with pytest.raises(ValueError, match=r"e\.g\. 15,5"):
        parse_minutes("15,soon")
