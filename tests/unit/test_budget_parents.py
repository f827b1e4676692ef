"""Budgets bound by a parent account: Slurm enforces every ancestor's ``GrpTRESMins``.

The texts are in the shapes the demo cluster's ``sacctmgr -nP show assoc`` and
``sshare -nP -a`` print (captured from Slurm 22.05 with a parent above a project: the parent's
row carries the sum of its children's use and running minutes; children are indented one
more space). The real parent limit on the real cluster:
tests/integration/test_budget_parents_real.py.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_resources import live

from shopfloor.accounts.model import ancestors, build_snapshot
from shopfloor.resources import RequestError, RequestPolicy, UserContext
from shopfloor.site import parse_site
from shopfloor.slurm.accounting import parse_associations, parse_shares, parse_user_defaults

ASSOC = """root||||normal||
root|root|||normal||
proj-ml|||root|cpu,debug,gpu,normal||cpu=500000,gres/gpu=50000
proj-ml|alice|||cpu,debug,gpu,normal||
workshops|||root|normal||cpu=1000
ws-intro|||workshops|normal||cpu=800
ws-intro|ann|||normal||
ws-intro|ben|||normal||
ws-gpu|||workshops|normal||cpu=5000,gres/gpu=100
ws-gpu|cai|||normal||
ws-gpu|alice|||normal||
faculty|||root|normal||gres/gpu=40
chem-a|||faculty|normal||cpu=9000,gres/gpu=500
chem-a|dan|||normal||
"""
DEFAULTS = "alice|proj-ml\nann|ws-intro\nben|ws-intro\ncai|ws-gpu\ndan|chem-a\n"
_Z = "mem=0,energy=0,node=0,billing=0,fs/disk=0,vmem=0,pages=0"


def _t(cpu: int, gpu: int = 0) -> str:
    return f"cpu={cpu},{_Z},gres/gpu={gpu}"


# workshops: ws-intro used 300 and holds 50 running; ws-gpu used 500, holds 0.
SHARES = f"""root|||{_t(0)}|{_t(0)}
 proj-ml||cpu=500000,gres/gpu=50000|{_t(1200, 30)}|{_t(0)}
  proj-ml|alice||{_t(1200, 30)}|{_t(0)}
 workshops||cpu=1000|{_t(800)}|{_t(50)}
  ws-gpu||cpu=5000,gres/gpu=100|{_t(500)}|{_t(0)}
   ws-gpu|alice||{_t(0)}|{_t(0)}
   ws-gpu|cai||{_t(500)}|{_t(0)}
  ws-intro||cpu=800|{_t(300)}|{_t(50)}
   ws-intro|ann||{_t(300)}|{_t(50)}
   ws-intro|ben||{_t(0)}|{_t(0)}
 faculty||gres/gpu=40|{_t(100, 35)}|{_t(0)}
  chem-a||cpu=9000,gres/gpu=500|{_t(100, 35)}|{_t(0)}
   chem-a|dan||{_t(100, 35)}|{_t(0)}
"""
SNAPSHOT = build_snapshot(parse_associations(ASSOC), parse_user_defaults(DEFAULTS),
                          parse_shares(SHARES))
SITE = parse_site({
    "partitions": {"cpu": {"max_cpus": 8, "max_gpus": 2, "max_walltime": "8:00:00"}},
    "accounting": {"enabled": True, "warn_remaining_percent": 20},
})
LIVE = replace(live(), accounts=SNAPSHOT)


def test_ancestors_walk_up_to_root_and_stop_at_a_loop() -> None:
    parents = {"ws-intro": "workshops", "workshops": "root"}
    assert ancestors("ws-intro", parents) == ["workshops", "root"]
    assert ancestors("a", {"a": "b", "b": "a"}) == ["b"]
    assert ancestors("root", parents) == []


def test_the_tightest_of_own_and_parent_limit_binds_and_says_whose() -> None:
    intro = SNAPSHOT.budgets["ws-intro"].items["cpu"]
    # Own: 800 - 300 - 50 = 450 left; workshops: 1000 - 800 - 50 = 150 left: the parent binds.
    assert (intro.account, intro.granted, intro.remaining) == ("workshops", 1000, 150)
    assert intro.shared_by == ("ws-gpu", "ws-intro")
    assert intro.source("ws-intro") == "the workshops budget, shared by ws-gpu, ws-intro"
    # A TRES only the child limits keeps the child's own figures.
    gpu = SNAPSHOT.budgets["ws-gpu"].items["gres/gpu"]
    assert (gpu.account, gpu.remaining, gpu.source("ws-gpu")) == ("ws-gpu", 100, "")
    # The parent itself reports its own budget, and a budget with no limit above stays its own.
    assert SNAPSHOT.budgets["workshops"].items["cpu"].source("workshops") == ""
    ml = SNAPSHOT.budgets["proj-ml"].items["cpu"]
    assert (ml.account, ml.remaining) == ("proj-ml", 500000 - 1200)


def test_a_parent_limit_on_another_tres_binds_only_that_tres() -> None:
    chem = SNAPSHOT.budgets["chem-a"]
    assert chem.items["cpu"].account == "chem-a" and chem.items["cpu"].remaining == 8900
    assert (chem.items["gres/gpu"].account, chem.items["gres/gpu"].remaining) == ("faculty", 5)


def test_refusal_names_the_binding_parent_and_how_much_is_left() -> None:
    policy = RequestPolicy(SITE)
    ann = UserContext("ann")
    ok = policy.validate({"partition": "cpu", "cpus": 1, "walltime": "150"}, ann, LIVE)
    assert ok.account == "ws-intro"
    with pytest.raises(RequestError) as caught:
        policy.validate({"partition": "cpu", "cpus": 1, "walltime": "151"}, ann, LIVE)
    assert caught.value.problems == {"account": (
        "the workshops budget, shared by ws-gpu, ws-intro, has 150 CPU-minutes left (of "
        "1,000); this request needs 151. Ask for fewer CPUs/GPUs or a shorter walltime, or "
        "choose another account")}
    # dan's own GPU budget has 465 left, the faculty's 5: one GPU for 6 minutes is refused.
    with pytest.raises(RequestError, match="the faculty budget, shared by chem-a, has 5 "
                       "GPU-minutes left"):
        policy.validate({"partition": "cpu", "gpus": 1, "walltime": "6"}, UserContext("dan"),
                        LIVE)


def test_bars_and_warnings_show_the_binding_budget() -> None:
    shown = SNAPSHOT.budgets["ws-intro"].as_json(20)
    [cpu] = shown["items"]
    assert (cpu["granted"], cpu["used"], cpu["running"], cpu["remaining"]) == (1000, 800, 50, 150)
    assert cpu["percent_used"] == 85.0 and cpu["limited_by"] == "workshops"
    assert cpu["source"] == "the workshops budget, shared by ws-gpu, ws-intro"
    assert shown["warnings"] == ["ws-intro: only 150 of 1,000 CPU-minutes left in the "
                                 "workshops budget, shared by ws-gpu, ws-intro"]
    # Every participant's budgets list includes their workshop, bound by the parent.
    assert [b.account for b in SNAPSHOT.budgets_of("ben")] == ["ws-intro"]
    assert SNAPSHOT.budgets["proj-ml"].as_json(20)["items"][0]["source"] == ""


def test_many_sharers_are_counted_not_all_named() -> None:
    children = [f"ws-{i:02d}" for i in range(6)]
    assoc = "workshops|||root|normal||cpu=100\n" + "".join(
        f"{c}|||workshops|normal||\n{c}|u{c[-2:]}|||normal||\n" for c in children)
    shares = f" workshops||cpu=100|{_t(90)}|{_t(0)}\n" + "".join(
        f"  {c}|||{_t(15)}|{_t(0)}\n" for c in children)
    snap = build_snapshot(parse_associations(assoc), {}, parse_shares(shares))
    item = snap.budgets["ws-03"].items["cpu"]
    assert item.source("ws-03") == "the workshops budget, shared by ws-00, ws-01, ws-02 and 3 more"
