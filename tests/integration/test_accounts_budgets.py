"""Accounts and budgets against the real stack: slurmdbd, slurmctld's enforcement, the hub.

The embedded cluster runs with ``AccountingStorageEnforce=associations,limits,qos,safe``:
alice may charge proj-ml (shared with bob) and proj-chem (hers alone). Each test checks both
the hub (400 naming the field) and Slurm itself (a direct ``sbatch`` is refused).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from support import RunningHub, squeue_jobs

from shopfloor.demo.localcluster import LocalCluster
from shopfloor.slurm.accounting import AccountingSync
from shopfloor.slurm.seam import SlurmError, SlurmSync

pytestmark = [pytest.mark.cluster]

#: A project of alice's with a tiny CPU budget, made and removed by the ``tiny_budget`` fixture.
TINY = "sf-test-tiny"


@pytest.fixture(scope="module")
def accounts(local_cluster: LocalCluster) -> AccountingSync:
    return AccountingSync(SlurmSync())


def _script(account: str | None = None, partition: str = "debug", cpus: int = 1,
            minutes: int = 1) -> str:
    lines = ["#!/bin/bash", f"#SBATCH --partition={partition}", f"#SBATCH --time={minutes}",
             f"#SBATCH --cpus-per-task={cpus}", "#SBATCH --output=/dev/null",
             "#SBATCH --job-name=sf-test-acct"]
    if account:
        lines.append(f"#SBATCH --account={account}")
    return "\n".join([*lines, "true", ""])


def test_slurm_itself_refuses_an_account_without_association() -> None:
    slurm = SlurmSync()
    with pytest.raises(SlurmError) as err:
        slurm.sbatch(_script("training"), user="alice")  # trainer's project, not alice's
    assert "Invalid account" in err.value.slurm_message
    with pytest.raises(SlurmError):
        slurm.sbatch(_script("proj-chem"), user="bob")  # alice's alone


def test_sacct_shows_a_finished_job_with_its_account(accounts: AccountingSync) -> None:
    job_id = SlurmSync().sbatch(_script("proj-chem"), user="alice")
    deadline = time.monotonic() + 90
    records = []
    while time.monotonic() < deadline:
        records = accounts.jobs([job_id])
        # slurmdbd fills a short job's record in from several messages: wait for all.
        if records and records[0].state == "COMPLETED" and records[0].partition:
            break
        time.sleep(1)
    assert records and records[0].state == "COMPLETED", records
    assert (records[0].user, records[0].account, records[0].partition) == \
        ("alice", "proj-chem", "debug")
    # As alice, sacct shows her own job too (users read their history without the hub).
    assert [r.job_id for r in accounts.jobs([job_id], user="alice")] == [job_id]


@pytest.fixture(scope="module")
def tiny_budget(accounts: AccountingSync, hub: RunningHub) -> Iterator[str]:
    """alice's project with 30 CPU-minutes: a 1-CPU hour cannot fit. Removed afterwards,
    and waited for until the shared test hub forgets it (later modules see alice's own)."""
    accounts.add_account(TINY, description="test: tiny budget")
    accounts.set_budget(TINY, {"cpu": 30})
    accounts.add_user("alice", TINY)
    try:
        yield TINY
    finally:
        accounts.remove_user("alice", TINY)
        accounts.remove_account(TINY)
        _wait_until_hub_knows(hub.client("alice"), TINY, present=False)


def _wait_until_hub_knows(client, account: str, present: bool = True) -> dict:  # type: ignore[no-untyped-def]
    """The hub caches associations (accounting.cache_seconds, 30 s in the demo): a new (or
    removed) one shows up (or goes) within that, which is what this waits for."""
    token = client.token()
    deadline = time.monotonic() + 45
    while True:
        parts = client.api("GET", "/shopfloor/partitions", token=token).json()
        if (account in parts["accounts"]) == present or time.monotonic() > deadline:
            return parts
        time.sleep(2)


def test_hub_refuses_accounts_outside_the_associations(hub: RunningHub) -> None:
    alice = hub.client("alice")
    token = alice.token()
    for account in ("training", "root", "bob"):
        resp = alice.api("POST", "/users/alice/servers/acct", token=token, json={
            "user_options": {"partition": "debug", "walltime": "5", "account": account}})
        assert resp.status_code == 400, resp.text
        assert "account" in resp.json()["message"] and "proj-ml" in resp.json()["message"]
    bob = hub.client("bob")
    resp = bob.api("POST", "/users/bob/servers/acct", token=bob.token(), json={
        "user_options": {"partition": "debug", "walltime": "5", "account": "proj-chem"}})
    assert resp.status_code == 400 and "proj-chem" in resp.json()["message"]
    assert not [j for j in squeue_jobs("alice") + squeue_jobs("bob") if j["name"].endswith("-acct")]


def test_partitions_and_budgets_offer_exactly_the_users_accounts(
        hub: RunningHub, tiny_budget: str) -> None:
    alice, bob = hub.client("alice"), hub.client("bob")
    parts = _wait_until_hub_knows(alice, tiny_budget)
    assert parts["accounts"] == ["proj-chem", "proj-ml", tiny_budget]
    assert parts["default_account"] == "proj-ml"
    assert parts["qos"]["debug"] == ["cpu", "debug", "gpu", "normal"]
    assert bob.api("GET", "/shopfloor/partitions", token=bob.token()).json()["accounts"] == \
        ["proj-ml"]
    budgets = alice.api("GET", "/shopfloor/budgets", token=alice.token()).json()
    by_account = {b["account"]: b for b in budgets["budgets"]}
    assert set(by_account) == {"proj-ml", "proj-chem", tiny_budget}
    cpu = by_account[tiny_budget]["items"][0]
    assert (cpu["tres"], cpu["granted"]) == ("cpu", 30)
    assert budgets["warnings"] == [] or all(tiny_budget not in w for w in budgets["warnings"])
    # Only admins see everyone's usage.
    assert alice.api("GET", "/shopfloor/usage", token=alice.token()).status_code == 403
    admin = hub.client("admin")
    usage = admin.api("GET", "/shopfloor/usage", token=admin.token()).json()["usage"]
    assert {"account": "proj-ml", "user": "bob"}.items() <= next(
        r for r in usage if r["account"] == "proj-ml" and r["user"] == "bob").items()


def test_a_request_over_the_remaining_budget_is_refused_saying_what_is_left(
        hub: RunningHub, tiny_budget: str) -> None:
    alice = hub.client("alice")
    resp = alice.api("POST", "/users/alice/servers/big", token=alice.token(), json={
        "user_options": {"partition": "debug", "cpus": 2, "walltime": "30",
                         "account": tiny_budget}})
    assert resp.status_code == 400, resp.text
    message = resp.json()["message"]
    assert f"the {tiny_budget} budget has 30 CPU-minutes left" in message
    assert "this request needs 60" in message
    # Slurm agrees: the same job directly never starts (safe: it could not finish).
    job_id = SlurmSync().sbatch(_script(tiny_budget, cpus=2, minutes=30), user="alice")
    try:
        deadline = time.monotonic() + 20
        reason = ""
        while time.monotonic() < deadline and "Assoc" not in reason:
            time.sleep(1)
            reason = SlurmSync().squeue([job_id])[job_id].reason
        assert reason.startswith("AssocGrpCPUMin"), reason
    finally:
        SlurmSync().scancel(job_id)


def test_spawn_page_shows_accounts_and_the_budget_bar(hub: RunningHub) -> None:
    page = hub.client("alice").http.get(f"{hub.url}/hub/spawn", timeout=30).text
    assert 'name="account"' in page
    assert '<option value="proj-chem"' in page and "proj-ml (default)" in page
    assert 'class="sf-budget" data-account="proj-ml"' in page
    assert "CPU-minutes:" in page and "granted" in page and 'role="progressbar"' in page
    bob_page = hub.client("bob").http.get(f"{hub.url}/hub/spawn", timeout=30).text
    assert "proj-chem" not in bob_page
