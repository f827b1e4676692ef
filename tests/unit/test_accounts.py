"""Accounts and budgets: Slurm's answers parsed, the policy with fake associations, usage."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_resources import live

from shopfloor.accounts.model import build_snapshot, request_minutes
from shopfloor.accounts.usage import usage_rows, usage_table
from shopfloor.demo.accounting import LocalAccounting, workshop_account
from shopfloor.resources import RequestError, RequestPolicy, UserContext
from shopfloor.site import SiteConfigError, parse_site
from shopfloor.slurm.accounting import (
    add_user_call,
    check_name,
    parse_associations,
    parse_qos,
    parse_sacct,
    parse_shares,
    parse_tres,
    parse_user_defaults,
    shares_call,
)
from shopfloor.slurm.seam import SlurmSync

# Real output of the demo cluster (sacctmgr -nP show assoc format=..., sshare -nP -a -o ...).
ASSOC = """root||||normal||
root|root|||normal||
proj-chem|||root|cpu,debug,normal||cpu=100000,gres/gpu=0
proj-chem|alice|||cpu,debug,normal||
proj-ml|||root|cpu,debug,gpu,normal||cpu=500000,gres/gpu=50000
proj-ml|alice|||cpu,debug,gpu,normal||
proj-ml|bob|||cpu,debug,gpu,normal||
"""
DEFAULTS = "alice|proj-ml\nbob|proj-ml\nroot|root\n"
_Z = "mem=0,energy=0,node=0,billing=0,fs/disk=0,vmem=0,pages=0"
SHARES = f"""root|||cpu=0,{_Z},gres/gpu=0|cpu=0,{_Z},gres/gpu=0
 proj-chem||cpu=100000,gres/gpu=0|cpu=99000,{_Z},gres/gpu=0|cpu=400,{_Z},gres/gpu=0
  proj-chem|alice||cpu=99000,{_Z},gres/gpu=0|cpu=400,{_Z},gres/gpu=0
 proj-ml||cpu=500000,gres/gpu=50000|cpu=1200,mem=41,{_Z[6:]},gres/gpu=30|cpu=0,{_Z},gres/gpu=0
  proj-ml|alice||cpu=200,{_Z},gres/gpu=30|cpu=0,{_Z},gres/gpu=0
  proj-ml|bob||cpu=1000,{_Z},gres/gpu=0|cpu=0,{_Z},gres/gpu=0
"""
SNAPSHOT = build_snapshot(parse_associations(ASSOC), parse_user_defaults(DEFAULTS),
                          parse_shares(SHARES))
SITE = parse_site({
    "partitions": {
        "cpu": {"max_cpus": 8, "max_memory_gb": 16, "max_walltime": "8:00:00"},
        "gpu": {"max_cpus": 4, "max_gpus": 2, "max_walltime": "4:00:00"},
        "debug": {"max_cpus": 2, "max_walltime": "0:30:00", "qos": ["debug"]},
    },
    "accounting": {"enabled": True},
})
POLICY = RequestPolicy(SITE)
ALICE = UserContext("alice")
BOB = UserContext("bob")
LIVE = replace(live(), accounts=SNAPSHOT)


def test_tres_lists_keep_whole_numbers_only() -> None:
    assert parse_tres("cpu=60,mem=1G,gres/gpu=2,billing=") == {"cpu": 60, "gres/gpu": 2}
    assert parse_tres("") == {} and parse_tres("(null)") == {}


def test_associations_and_defaults_make_each_users_accounts() -> None:
    alice = SNAPSHOT.for_user("alice")
    assert alice is not None
    assert alice.accounts == ("proj-chem", "proj-ml") and alice.default == "proj-ml"
    assert alice.qos["proj-chem"] == {"cpu", "debug", "normal"}
    assert SNAPSHOT.for_user("bob").accounts == ("proj-ml",)  # type: ignore[union-attr]
    assert SNAPSHOT.for_user("mallory") is None


def test_budgets_count_used_and_running_minutes() -> None:
    chem = SNAPSHOT.budgets["proj-chem"]
    assert chem.items["cpu"].remaining == 100_000 - 99_000 - 400
    assert chem.items["gres/gpu"].remaining == 0
    ml = SNAPSHOT.budgets["proj-ml"].as_json(10)
    assert ml["items"][0] == {"tres": "cpu", "label": "CPU-minutes", "granted": 500000,
                              "used": 1200, "running": 0, "remaining": 498800,
                              "limited_by": "proj-ml", "source": "",
                              "percent_used": 0.2}
    # A TRES granted nothing (no GPU time on proj-chem) is a rule, not a warning.
    assert SNAPSHOT.budgets["proj-chem"].warnings(10) == [
        "proj-chem: only 600 of 100,000 CPU-minutes left"]
    assert SNAPSHOT.budgets["proj-ml"].warnings(10) == []
    assert [b.account for b in SNAPSHOT.budgets_of("alice")] == ["proj-ml", "proj-chem"]


def test_sacct_and_qos_answers_are_read() -> None:
    jobs = parse_sacct("42|wrap|alice|proj-ml|debug|normal|COMPLETED|0:0|00:00:05|"
                       "billing=1,cpu=1,mem=500M,node=1\n43|x|bob|proj-ml|cpu|normal|"
                       "CANCELLED by 0|0:0|00:00:00|\n")
    assert (jobs[0].job_id, jobs[0].account, jobs[0].state, jobs[0].alloc_tres["cpu"]) == \
        ("42", "proj-ml", "COMPLETED", 1)
    assert jobs[1].state == "CANCELLED"
    assert parse_qos("gpu|04:00:00|gres/gpu=2|\n")["gpu"] == {
        "MaxWall": "04:00:00", "MaxTRESPerUser": "gres/gpu=2", "MaxJobsPerUser": ""}


@pytest.mark.parametrize("bad", ["a,b", "x=y", "", "-rf", "a b", "a\nb"])
def test_names_that_would_add_sacctmgr_settings_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        check_name(bad, "account")
    with pytest.raises(ValueError):
        add_user_call("alice", bad)
    with pytest.raises(ValueError):
        shares_call([bad])


def test_default_account_is_filled_in_and_others_are_refused() -> None:
    assert POLICY.validate({"partition": "cpu"}, ALICE, LIVE).account == "proj-ml"
    assert POLICY.validate({"partition": "cpu", "account": "proj-chem"}, ALICE, LIVE).account \
        == "proj-chem"
    with pytest.raises(RequestError) as err:
        POLICY.validate({"partition": "cpu", "account": "proj-chem"}, BOB, LIVE)
    assert err.value.problems["account"] == (
        "'proj-chem' is not an account you may charge; choose one of proj-ml")
    assert err.value.http_status == 400
    with pytest.raises(RequestError) as err:
        POLICY.validate({"partition": "cpu", "account": "root"}, UserContext("x", is_admin=True),
                        LIVE)
    assert "no Slurm account" in err.value.problems["account"]
    assert POLICY.accounts_for(ALICE, LIVE) == ["proj-chem", "proj-ml"]


def test_a_request_that_cannot_fit_the_budget_says_what_is_left() -> None:
    # proj-chem has 600 CPU-minutes left: 1 CPU for 10 minutes fits, 2 CPUs for 8 h do not.
    assert POLICY.validate({"partition": "cpu", "account": "proj-chem", "walltime": "10"},
                           ALICE, LIVE)
    with pytest.raises(RequestError) as err:
        POLICY.validate({"partition": "cpu", "account": "proj-chem", "cpus": 2,
                         "walltime": "8:00:00"}, ALICE, LIVE)
    assert err.value.problems["account"].startswith(
        "the proj-chem budget has 600 CPU-minutes left (of 100,000); this request needs 960")
    with pytest.raises(RequestError) as err:
        POLICY.validate({"partition": "gpu", "account": "proj-chem", "gpus": 1,
                         "walltime": "10"}, ALICE, LIVE)
    assert "0 GPU-minutes left" in err.value.problems["account"]
    assert request_minutes(2, 4, 1, 60) == {"cpu": 480, "gres/gpu": 120}


def test_qos_comes_from_the_association_and_the_partition_list() -> None:
    assert POLICY.qos_for(ALICE, "cpu", "proj-chem", LIVE) == ["cpu", "debug", "normal"]
    assert POLICY.qos_for(ALICE, "debug", "proj-ml", LIVE) == ["debug"]
    assert POLICY.validate({"partition": "cpu", "qos": "cpu"}, BOB, LIVE).qos == "cpu"
    with pytest.raises(RequestError) as err:
        POLICY.validate({"partition": "gpu", "account": "proj-chem", "qos": "gpu"}, ALICE, LIVE)
    assert "'gpu' is not a QoS you may use" in err.value.problems["qos"]


def test_without_accounting_data_slurm_decides_and_group_accounts_are_refused() -> None:
    # Accounts unknown (no snapshot): the hub adds no check of its own; Slurm enforces.
    assert POLICY.validate({"partition": "cpu", "account": "proj-ml"}, BOB, live()).account \
        == "proj-ml"
    with pytest.raises(SiteConfigError, match="group_accounts must be empty"):
        parse_site({"partitions": {"cpu": {}}, "accounting": {"enabled": True},
                    "group_accounts": {"g": ["a"]}})


def test_usage_table_shows_used_over_granted_per_project_and_user() -> None:
    table = usage_table(usage_rows(SNAPSHOT.usage))
    lines = table.splitlines()
    assert lines[0].split() == ["ACCOUNT", "USER", "CPU-MINUTES", "GPU-MINUTES"]
    assert "proj-chem  (all)  99,400 / 100,000  0 / 0" in table
    assert any(line.split() == ["bob", "1,000", "0"] for line in lines)
    assert not any(line.startswith("root") for line in lines)


def test_demo_accounting_config_and_workshop_accounts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    acct = LocalAccounting(tmp_path, tmp_path / "etc" / "slurm.conf", SlurmSync(),
                           db_port=7000, dbd_port=7001)
    lines = acct.slurm_conf_lines()
    assert "AccountingStoragePort=7001" in lines
    assert "AccountingStorageEnforce=associations,limits,qos,safe" in lines
    conf = acct.render_dbd_conf("s3cret")
    assert "StoragePort=7000" in conf and "StoragePass=s3cret" in conf
    assert acct.dbd_conf == tmp_path / "etc" / "slurmdbd.conf"
    assert workshop_account("ws-intro25-3") == "ws-intro25"
    assert workshop_account("alice") is None and workshop_account("ws-x") is None
