"""RayClusterPanel and RayCluster charge the account the user chose, from the hub's one answer.

The panel's choices come from ``/hub/api/shopfloor/partitions`` (the answer ComputePanel
reads); the choice travels as a raw option to the hub's ``/validate`` and from the validated
request into every ``#SBATCH --account`` line, workers added by ``scale`` included. Real Slurm
and the real hub: tests/integration/test_accounts_choice.py.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from test_raycluster import PARTITIONS, FakeSlurm

from shopfloor.ray.cluster import RayCluster
from shopfloor.resources import RequestError, ResourceRequest
from shopfloor.site import RaySettings

GPU_ROW = {
    "name": "gpu", "description": "GPU nodes", "live": {"nodes_total": 1},
    "limits": {"max_nodes": 1, "max_cpus": 2, "max_memory_gb": 3.5, "max_gpus": 2,
               "max_walltime_minutes": 240},
    "max_walltime_text": "4 hours",
    "defaults": {"cpus": 1, "memory_gb": 1, "gpus": 0, "walltime_minutes": 60},
}
#: What the hub answers alice: two projects (proj-ml her default), QoS per partition.
ALICE = {**PARTITIONS, "partitions": [*PARTITIONS["partitions"], GPU_ROW],
         "accounts": ["proj-chem", "proj-ml"], "default_account": "proj-ml",
         "qos": {"cpu": ["cpu", "normal"], "gpu": []}}


class AccountsHub:
    """The hub seen from a session: its partitions answer, and ``/validate`` that accepts
    only the answer's accounts and QoS (as the real resource model does)."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.seen: list[dict[str, Any]] = []

    def partitions(self) -> dict[str, Any]:
        return self.answer

    def get_json(self, path: str) -> dict[str, Any]:
        return {"idle_timeout_minutes": 30}

    def validate(self, options: dict[str, Any]) -> ResourceRequest:
        self.seen.append(dict(options))
        account = options.get("account") or self.answer.get("default_account")
        if account not in (self.answer.get("accounts") or [account]):
            raise RequestError({"account": f"{account!r} is not an account you may charge; "
                                f"choose one of {', '.join(self.answer['accounts'])}"})
        return ResourceRequest(
            partition=options["partition"], nodes=int(options.get("nodes", 1)),
            cpus=int(options.get("cpus", 1)), memory_gb=float(options.get("memory_gb", 1)),
            walltime_minutes=int(options.get("walltime", 30)), account=account,
            qos=options.get("qos"))


def panel_for(answer: dict[str, Any], tmp_path: Path) -> Any:
    from shopfloor.widgets.ray_panel import RayClusterPanel

    return RayClusterPanel(None, hub=AccountsHub(answer), auto_refresh=False, root=tmp_path)


def test_panel_offers_exactly_the_users_accounts_with_the_default_chosen(tmp_path: Path) -> None:
    panel = panel_for(ALICE, tmp_path)
    account = panel.chooser.account
    assert account.options == ("proj-chem", "proj-ml") and account.value == "proj-ml"
    assert account.layout.display == ""
    bob = panel_for({**ALICE, "accounts": ["proj-ml"]}, tmp_path)
    assert bob.chooser.account.options == ("proj-ml",)
    # A site without accounts: no choice shown, none sent (the hub fills nothing in).
    plain = panel_for(PARTITIONS, tmp_path)
    assert plain.chooser.account.layout.display == "none"
    assert "account" not in plain.options() and "qos" not in plain.options()
    for p in (panel, bob, plain):
        p.close()


def test_panel_offers_the_qos_of_the_chosen_partition(tmp_path: Path) -> None:
    panel = panel_for(ALICE, tmp_path)
    assert [value for _, value in panel.qos.options] == ["", "cpu", "normal"]
    assert panel.qos.value == "" and panel.qos.layout.display == ""
    assert "qos" not in panel.options()  # (default): the association's own
    panel.qos.value = "normal"
    assert panel.options()["qos"] == "normal"
    panel.chooser.partition.value = "gpu"  # no QoS offered there: hidden, and none sent
    assert panel.qos.layout.display == "none" and "qos" not in panel.options()
    panel.close()


def test_the_chosen_account_reaches_every_job_of_the_cluster(tmp_path: Path) -> None:
    from shopfloor.widgets.ray_panel import RayClusterPanel

    slurm = FakeSlurm()
    hub = AccountsHub(ALICE)
    panel = RayClusterPanel(None, hub=hub, auto_refresh=False, root=tmp_path)
    panel.name.value = "chem"
    panel.chooser.account.value = "proj-chem"
    panel.qos.value = "cpu"
    cluster = RayCluster.create("chem", panel.options(), hub=hub, settings=RaySettings(),
                                slurm=slurm, root=tmp_path, python="/venv/bin/python")
    assert hub.seen[-1]["account"] == "proj-chem" and hub.seen[-1]["qos"] == "cpu"
    (head,) = slurm.scripts
    assert "#SBATCH --account=proj-chem" in head and "#SBATCH --qos=cpu" in head
    assert cluster.account == "proj-chem"
    # scale() asks the hub about the whole cluster with the same account, and the worker
    # jobs charge it too.
    cluster.scale(2, hub=hub)
    assert hub.seen[-1]["account"] == "proj-chem" and hub.seen[-1]["nodes"] == 2
    assert "#SBATCH --account=proj-chem" in slurm.scripts[-1]
    assert "#SBATCH --qos=cpu" in slurm.scripts[-1]
    panel.cluster = cluster
    panel.refresh()
    assert "(charges proj-chem)" in panel.summary.value
    panel.close()


def test_an_account_the_hub_refuses_is_shown_naming_the_field(tmp_path: Path) -> None:
    from shopfloor.widgets.ray_panel import RayClusterPanel

    slurm = FakeSlurm()
    hub = AccountsHub({**ALICE, "accounts": ["proj-ml"]})

    class Panel(RayClusterPanel):
        def create(self) -> None:  # the panel's create, with this test's fake Slurm
            self.cluster = RayCluster.create(self.name.value, self.options(), hub=hub,
                                             settings=RaySettings(), slurm=slurm,
                                             root=tmp_path)

    panel = Panel(None, hub=hub, auto_refresh=False, root=tmp_path)
    panel.chooser.account.options = ["proj-ml", "proj-chem"]  # a stale or forged choice
    panel.chooser.account.value = "proj-chem"
    panel.create_button.click()
    assert "account: &#x27;proj-chem&#x27; is not an account you may charge" in panel.status.value
    assert slurm.scripts == []
    panel.close()


def test_a_pending_cluster_says_whose_budget_holds_it(tmp_path: Path) -> None:
    slurm = FakeSlurm()
    hub = AccountsHub(ALICE)
    cluster = RayCluster.create("chem", {"partition": "cpu", "account": "proj-chem"}, hub=hub,
                                settings=RaySettings(), slurm=slurm, root=tmp_path)
    head = cluster.config()["head_job"]
    slurm.jobs[head] = replace(slurm.jobs[head], reason="AssocGrpCPUMinutesLimit")
    assert cluster.status().message == (
        "Queued on cpu: the proj-chem budget of CPU time is used up: ask your project lead "
        "to add time, or stop this and choose another account.")
