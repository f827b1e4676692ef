"""QoS per account on the real hub and Slurm accounting: what the panels offer is what passes.

In the demo, proj-ml's associations allow the gpu QoS and proj-chem's do not. The hub's
partitions answer lists the QoS of every account of alice's per partition; the hub's
``/validate`` accepts exactly those (gpu with proj-ml, a 400 naming only ``qos`` with
proj-chem); ComputePanel, RayClusterPanel and PublishPanel, run as alice against the hub as in
her kernel, drop the gpu QoS when she switches to proj-chem. The spawn page in Chromium:
tests/browser/test_qos_spawn_form.py.
"""

from __future__ import annotations

import pytest
from support import RunningHub
from test_raycluster_real import as_user, session_env

pytestmark = [pytest.mark.hub, pytest.mark.cluster]

PANELS = """
import tempfile
from pathlib import Path
from shopfloor.widgets import ComputePanel, PublishPanel
from shopfloor.widgets.ray_panel import RayClusterPanel

def offered(dropdown):
    return [value for _, value in dropdown.options]

out = {}
compute = ComputePanel(auto_refresh=False)
ray = RayClusterPanel(None, auto_refresh=False, root=Path(tempfile.mkdtemp()))
publish = PublishPanel("x.ipynb", client=object())
for name, partition, account, qos in (
        ("compute", compute.chooser.partition, compute.chooser.account, compute.chooser.qos),
        ("ray", ray.chooser.partition, ray.chooser.account, ray.qos),
        ("publish", publish.partition, publish.account, publish.qos)):
    partition.value = "gpu"
    seen = {"partitions": list(partition.options), "default": account.value,
            "ml": offered(qos)}
    qos.value = "gpu"
    account.value = "proj-chem"
    seen["chem"], seen["after_switch"] = offered(qos), qos.value
    out[name] = seen
out["status"] = [compute.status.value, ray.status.value, publish.status.value]
compute.close(); ray.close()
print(json.dumps(out))
"""


def test_the_partitions_answer_lists_each_accounts_qos_and_validate_agrees(
        hub: RunningHub) -> None:
    alice = hub.client("alice")
    token = alice.token()
    answer = alice.api("GET", "/shopfloor/partitions", token=token).json()
    by_account = answer["qos_by_account"]
    # Every account of hers and no other (another test may add a project of hers for a while).
    assert set(by_account) == set(answer["accounts"]) >= {"proj-chem", "proj-ml"}
    assert "gpu" in by_account["proj-ml"]["gpu"] and "gpu" not in by_account["proj-chem"]["gpu"]
    assert answer["qos"] == by_account[answer["default_account"]]
    base = {"partition": "gpu", "cpus": 1, "gpus": 0, "walltime": "10"}  # chem: no GPU time
    resp = alice.api("POST", "/shopfloor/validate", token=token,
                     json={**base, "account": "proj-ml", "qos": "gpu"})
    assert resp.status_code == 200 and resp.json()["request"]["qos"] == "gpu", resp.text
    resp = alice.api("POST", "/shopfloor/validate", token=token,
                     json={**base, "account": "proj-chem", "qos": "gpu"})
    assert resp.status_code == 400 and set(resp.json()["problems"]) == {"qos"}, resp.text
    assert "choose one of " in resp.json()["problems"]["qos"]
    # Each QoS the answer offers proj-chem on gpu passes; nothing else does.
    for qos in ("cpu", "debug", "gpu", "normal", "root", "gpu,normal", "x\n#SBATCH --qos=gpu"):
        resp = alice.api("POST", "/shopfloor/validate", token=token,
                         json={**base, "account": "proj-chem", "qos": qos})
        allowed = qos in by_account["proj-chem"]["gpu"]
        assert (resp.status_code == 200) == allowed, (qos, resp.text)
    # bob sees only his own accounts' QoS.
    bob = hub.client("bob")
    his = bob.api("GET", "/shopfloor/partitions", token=bob.token()).json()
    assert set(his["qos_by_account"]) == set(his["accounts"]) and "proj-chem" not in his["accounts"]


def test_every_panel_offers_the_qos_of_the_chosen_account(hub: RunningHub) -> None:
    seen = as_user("alice", PANELS, env=session_env(hub, "alice"))
    assert not any("sf-error" in status for status in seen["status"]), seen["status"]
    for name in ("compute", "ray", "publish"):
        panel = seen[name]
        assert panel["default"] == "proj-ml", (name, panel)
        assert "gpu" in panel["ml"] and panel["ml"][0] == "", (name, panel)
        assert "gpu" not in panel["chem"] and panel["after_switch"] == "", (name, panel)
    assert seen["publish"]["partitions"] == ["cpu", "gpu", "debug"]
