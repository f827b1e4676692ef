"""The hub's Shopfloor API: the resource model for code running in users' sessions."""

from __future__ import annotations

import pytest
from support import RunningHub

pytestmark = [pytest.mark.hub, pytest.mark.cluster]


def test_partitions_describe_the_caller(hub: RunningHub) -> None:
    alice = hub.client("alice")
    token = alice.token()
    resp = alice.api("GET", "/shopfloor/partitions", token=token)
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["user"] == "alice" and data["default_partition"] == "cpu"
    by_name = {p["name"]: p for p in data["partitions"]}
    assert set(by_name) == {"cpu", "gpu", "debug"}
    assert by_name["gpu"]["demo_gpus"] and by_name["gpu"]["limits"]["max_gpus"] == 2
    assert by_name["debug"]["limits"]["max_walltime_minutes"] == 30
    assert by_name["cpu"]["live"]["nodes_total"] == 2


def test_validate_uses_the_one_model(hub: RunningHub) -> None:
    alice = hub.client("alice")
    token = alice.token()
    ok = alice.api("POST", "/shopfloor/validate", token=token,
                   json={"partition": "debug", "cpus": "2", "walltime": "20"})
    assert ok.status_code == 200
    assert ok.json()["request"]["walltime_minutes"] == 20
    # Slurm's grammar: "30:00" is 30 minutes (minutes:seconds), as sbatch and sinfo mean it.
    slurm_form = alice.api("POST", "/shopfloor/validate", token=token,
                           json={"partition": "debug", "walltime": "30:00"})
    assert slurm_form.status_code == 200, slurm_form.text
    assert slurm_form.json()["request"]["walltime_minutes"] == 30
    bad = alice.api("POST", "/shopfloor/validate", token=token,
                    json={"partition": "debug", "walltime": "2:00:00", "cmd": "id"})
    assert bad.status_code == 400
    assert "cmd" in bad.json()["problems"]
    bad = alice.api("POST", "/shopfloor/validate", token=token,
                    json={"partition": "debug", "walltime": "2:00:00"})
    assert bad.json()["problems"] == {
        "walltime": "the debug partition allows at most 30 minutes; you asked for 2 hours"
    }


def test_api_needs_a_token(hub: RunningHub) -> None:
    import requests

    resp = requests.get(f"{hub.url}/hub/api/shopfloor/partitions", timeout=10)
    assert resp.status_code == 403
