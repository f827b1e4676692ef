"""QoS per account: every chooser offers exactly the QoS of the chosen partition *and* account.

The resource model's :meth:`RequestPolicy.qos_by_account` (from the demo's real ``sacctmgr``
output: proj-ml may use the gpu QoS, proj-chem may not) is what the hub answers and what
``validate`` accepts; ComputePanel's chooser, RayClusterPanel and PublishPanel follow it when
the account or partition changes, and never send a QoS the new pair does not allow. The real
hub and the spawn page: tests/integration/test_qos_choice_real.py and
tests/browser/test_qos_spawn_form.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_accounts import ALICE, BOB, LIVE, POLICY, SITE

from shopfloor.resources import RequestError, RequestPolicy, UserContext
from shopfloor.session.compute import qos_table
from shopfloor.widgets import PublishPanel
from shopfloor.widgets.compute import ResourceChooser
from shopfloor.widgets.ray_panel import RayClusterPanel


def test_the_policy_gives_the_qos_of_each_account_on_each_partition() -> None:
    table = POLICY.qos_by_account(ALICE, LIVE)
    assert table["proj-ml"]["gpu"] == ["cpu", "debug", "gpu", "normal"]
    assert table["proj-chem"]["gpu"] == ["cpu", "debug", "normal"]  # no gpu QoS there
    # The site narrows a partition to its list: debug allows only the debug QoS.
    assert table["proj-ml"]["debug"] == table["proj-chem"]["debug"] == ["debug"]
    # No account named: the default account's (proj-ml).
    assert table[""] == table["proj-ml"]
    assert set(POLICY.qos_by_account(BOB, LIVE)) == {"", "proj-ml"}
    # A user Slurm does not know may charge nothing, so no QoS either.
    assert POLICY.qos_by_account(UserContext("mallory"), LIVE) == {
        "": {"cpu": [], "gpu": [], "debug": []}}


def test_what_the_table_offers_is_exactly_what_validate_accepts() -> None:
    table = POLICY.qos_by_account(ALICE, LIVE)
    for account, per_partition in table.items():
        for partition, offered in per_partition.items():
            for qos in ("cpu", "debug", "gpu", "normal", "high"):
                raw = {"partition": partition, "qos": qos, "walltime": "10",
                       **({"account": account} if account else {})}
                try:
                    POLICY.validate(raw, ALICE, LIVE)
                    accepted = True
                except RequestError as exc:
                    assert set(exc.problems) == {"qos"}, exc.problems
                    accepted = False
                assert accepted == (qos in offered), (account, partition, qos)


def test_without_accounting_every_account_gets_the_sites_list() -> None:
    site = SITE.model_copy(update={"accounting": SITE.accounting.model_copy(
        update={"enabled": False}), "group_accounts": {"chem": ["proj-chem"]}})
    table = RequestPolicy(site).qos_by_account(UserContext("carol", frozenset({"chem"})), None)
    assert table == {"": {"cpu": [], "gpu": [], "debug": ["debug"]},
                     "proj-chem": {"cpu": [], "gpu": [], "debug": ["debug"]}}


#: The hub's partitions answer for alice (as extensions/resources_api.py builds it).
_ROWS = [{"name": p, "limits": {"max_cpus": 2, "max_memory_gb": 2, "max_gpus": 1,
                                 "max_walltime_minutes": 60, "max_nodes": 1},
          "defaults": {"cpus": 1, "memory_gb": 1, "gpus": 0, "walltime_minutes": 30},
          "live": {"nodes_total": 1}} for p in ("cpu", "gpu", "debug")]


def _answer(user: UserContext = ALICE) -> dict[str, Any]:
    qos = POLICY.qos_by_account(user, LIVE)
    mine = POLICY.associations(user, LIVE)
    return {"partitions": _ROWS, "default_partition": "cpu",
            "accounts": POLICY.accounts_for(user, LIVE),
            "default_account": mine.default if mine else None,
            "qos": qos.pop(""), "qos_by_account": qos}


def _offered(dropdown: Any) -> list[str]:
    return [value for _, value in dropdown.options]


def test_chooser_offers_the_qos_of_the_pair_and_follows_the_account() -> None:
    from shopfloor.session.compute import partition_rows

    answer = _answer()
    chooser = ResourceChooser()
    chooser.set_rows(partition_rows(answer, None, None), "cpu")
    chooser.set_accounts(answer["accounts"], answer["default_account"])
    chooser.set_qos(qos_table(answer))
    chooser.partition.value = "gpu"
    assert chooser.account.value == "proj-ml"
    assert _offered(chooser.qos) == ["", "cpu", "debug", "gpu", "normal"]
    chooser.qos.value = "gpu"
    assert chooser.options()["qos"] == "gpu"
    chooser.account.value = "proj-chem"  # proj-chem may not use gpu: dropped, never sent
    assert _offered(chooser.qos) == ["", "cpu", "debug", "normal"]
    assert chooser.qos.value == "" and "qos" not in chooser.options()
    chooser.qos.value = "normal"
    chooser.partition.value = "debug"  # the site allows only debug there
    assert _offered(chooser.qos) == ["", "debug"] and chooser.qos.value == ""
    chooser.qos.value = "debug"
    chooser.account.value = "proj-ml"  # still allowed: the choice stays
    assert chooser.qos.value == "debug" and chooser.options()["qos"] == "debug"
    with pytest.raises(Exception, match="Invalid selection"):
        chooser.qos.value = "high"  # not offered: the widget refuses it outright


def test_an_older_hub_without_qos_by_account_still_offers_the_default_accounts() -> None:
    answer = _answer()
    del answer["qos_by_account"]
    assert qos_table(answer) == {"": answer["qos"]}


class _Hub:
    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer

    def partitions(self) -> dict[str, Any]:
        return self.answer

    def get_json(self, path: str) -> dict[str, Any]:
        return {"idle_timeout_minutes": 30}


def test_ray_panel_qos_follows_the_account(tmp_path: Path) -> None:
    panel = RayClusterPanel(None, hub=_Hub(_answer()), auto_refresh=False, root=tmp_path)
    try:
        panel.chooser.partition.value = "gpu"
        panel.qos.value = "gpu"
        assert panel.options()["qos"] == "gpu" and panel.options()["account"] == "proj-ml"
        panel.chooser.account.value = "proj-chem"
        assert "gpu" not in _offered(panel.qos) and "qos" not in panel.options()
    finally:
        panel.close()


class _Apps:
    def __init__(self) -> None:
        self.sent: dict[str, Any] = {}

    def publish(self, notebook: str, **kw: Any) -> dict[str, Any]:
        self.sent = kw
        return {"owner": "alice", "slug": "wave", "version": 1, "history": [],
                "url": "/services/apps/alice/wave/", "audience_text": "only you"}


def test_publish_panel_offers_the_users_partitions_and_the_pairs_qos() -> None:
    client = _Apps()
    panel = PublishPanel("slider_app.ipynb", client=client, hub=_Hub(_answer()))
    assert panel.partition.options == ("cpu", "gpu", "debug") and panel.partition.value == "cpu"
    assert panel.account.value == "proj-ml"
    panel.partition.value = "gpu"
    assert _offered(panel.qos) == ["", "cpu", "debug", "gpu", "normal"]
    panel.qos.value = "gpu"
    panel.title.value = "Wave"
    panel.publish()
    assert client.sent["compute"] == {"cpus": 1, "partition": "gpu", "account": "proj-ml",
                                      "qos": "gpu"}
    panel.account.value = "proj-chem"
    assert panel.qos.value == "" and "gpu" not in _offered(panel.qos)
    panel.publish()
    assert client.sent["compute"] == {"cpus": 1, "partition": "gpu", "account": "proj-chem"}
    with pytest.raises(Exception, match="Invalid selection"):
        panel.partition.value = "bigmem"  # no free text any more: only the user's partitions
    bob = PublishPanel("x.ipynb", client=client, hub=_Hub(_answer(BOB)))
    assert [v for _, v in bob.account.options] == ["proj-ml"]


def test_publish_panel_outside_a_session_uses_the_site_default_partition() -> None:
    class Down:
        def partitions(self) -> dict[str, Any]:
            from shopfloor.session.hubapi import HubError

            raise HubError("The hub is down", 503)

    panel = PublishPanel("x.ipynb", client=_Apps(), hub=Down())
    assert panel.partition.options == (("(site default)", ""),)
    assert panel.qos.layout.display == "none"
    assert panel.request()["compute"] == {"cpus": 1}
    assert "could not be listed" in panel.status.value


def test_compute_panel_offers_the_qos_the_hub_lists_per_account(tmp_path: Path) -> None:
    from fakes import TOKEN, FakeHub, RecordingSlurm

    from shopfloor.session.compute import Compute
    from shopfloor.session.hubapi import Hub
    from shopfloor.widgets import ComputePanel

    fake = FakeHub()
    answer = _answer()
    fake.partitions_extra = {key: answer[key] for key in
                             ("accounts", "default_account", "qos", "qos_by_account")}
    compute = Compute(Hub(fake.url, TOKEN), RecordingSlurm(), tmp_path / "runs")  # type: ignore[arg-type]
    panel = ComputePanel(compute, auto_refresh=False)
    try:
        chooser = panel.chooser
        assert chooser.partition.value == "cpu" and chooser.account.value == "proj-ml"
        assert _offered(chooser.qos) == ["", "cpu", "debug", "gpu", "normal"]
        assert chooser.qos.layout.display == ""
        chooser.qos.value = "gpu"
        panel.refresh()  # a refresh keeps an allowed choice
        assert chooser.qos.value == "gpu" and chooser.options()["qos"] == "gpu"
        chooser.account.value = "proj-chem"
        assert _offered(chooser.qos) == ["", "cpu", "debug", "normal"]
        assert "qos" not in chooser.options()
    finally:
        panel.close()
        fake.close()
