"""A parent account's budget binds on the real cluster: Slurm and the hub agree, and say whose.

The test makes its own small tree (never the demo's accounts): a parent with 30 CPU-minutes
above a project with 100,000, alice associated with the project, and removes it in
``finally``. Slurm holds a 40-minute job of the project pending with
AssocGrpCPUMinutesLimit (the parent's limit: the project's own is far away); the hub refuses
the same request naming the parent's budget and who shares it, accepts one that fits, and its
budgets answer shows the parent's figures for the project.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from support import RunningHub

from shopfloor.slurm.accounting import AccountingSync
from shopfloor.slurm.seam import SlurmSync

pytestmark = [pytest.mark.hub, pytest.mark.cluster]


def _squeue(job: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T|%r|%a"], capture_output=True,
                          text=True, check=False).stdout.strip()


def test_a_parent_limit_binds_in_slurm_and_in_the_hub(hub: RunningHub) -> None:
    accounting = AccountingSync(SlurmSync())
    parent, project = f"sf-bp{os.getpid()}", f"sf-bp{os.getpid()}-proj"
    alice = hub.client("alice")
    token = alice.token()
    job = ""
    try:
        accounting.add_account(parent)
        accounting.add_account(project, parent=parent)
        accounting.set_budget(parent, {"cpu": 30})
        accounting.set_budget(project, {"cpu": 100_000})
        accounting.add_user("alice", project)
        # Slurm itself: the project's own budget is far away, the parent's binds.
        job = subprocess.run(
            ["sudo", "-n", "-u", "alice", "sbatch", "--parsable", "-A", project, "-p", "cpu",
             "-t", "40", "-c", "1", "-o", "/dev/null", "--wrap", "sleep 30"],
            capture_output=True, text=True, check=True, cwd="/tmp").stdout.strip()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "AssocGrp" not in _squeue(job):
            time.sleep(1)
        assert _squeue(job) == f"PENDING|AssocGrpCPUMinutesLimit|{project}"

        # The hub reads the tree within its cache period (accounting.cache_seconds).
        base = {"partition": "cpu", "cpus": 1, "account": project}
        deadline = time.monotonic() + 60
        while True:
            resp = alice.api("POST", "/shopfloor/validate", token=token,
                             json={**base, "walltime": "40"})
            if resp.status_code == 400 and "budget" in resp.json()["problems"].get("account", ""):
                break
            assert time.monotonic() < deadline, resp.text
            time.sleep(2)
        assert resp.json()["problems"] == {"account": (
            f"the {parent} budget, shared by {project}, has 30 CPU-minutes left (of 30); this "
            "request needs 40. Ask for fewer CPUs/GPUs or a shorter walltime, or choose "
            "another account")}
        resp = alice.api("POST", "/shopfloor/validate", token=token,
                         json={**base, "walltime": "20"})
        assert resp.status_code == 200, resp.text
        budgets = alice.api("GET", "/shopfloor/budgets", token=token).json()
        [mine] = [b for b in budgets["budgets"] if b["account"] == project]
        [cpu] = [i for i in mine["items"] if i["tres"] == "cpu"]
        assert (cpu["granted"], cpu["remaining"], cpu["limited_by"]) == (30, 30, parent)
        assert cpu["source"] == f"the {parent} budget, shared by {project}"
    finally:
        if job:
            subprocess.run(["scancel", job], check=False)
        accounting.remove_user("alice", project)
        accounting.remove_account(project)
        accounting.remove_account(parent)
    assert parent not in {a.account for a in accounting.associations()}
