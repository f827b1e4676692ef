"""The account a user chooses reaches Slurm, on the real hub, Slurm accounting and apps service.

alice may charge proj-ml (shared with bob, both users' default) and proj-chem (hers alone).
Her RayClusterPanel offers exactly those two, bob's only proj-ml; a Ray cluster created with
proj-chem runs with Account=proj-chem, its scaled workers too; bob asking for proj-chem is
refused naming ``account``. An app alice publishes charging proj-chem starts its job
charging proj-chem; bob cannot publish charging proj-chem. The library runs as the user in a
subprocess (``sudo -u``), exactly as in their kernel.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from appsupport import apps_hub, install_notebook, origin_of, service_login, wait_app_ready
from support import RunningHub
from test_raycluster_real import as_user, session_env, wait_gone

from shopfloor.slurm.accounting import AccountingSync
from shopfloor.slurm.seam import SlurmSync

pytestmark = [pytest.mark.hub, pytest.mark.cluster]

PANEL = """
from shopfloor.widgets.ray_panel import RayClusterPanel
from pathlib import Path
import tempfile
panel = RayClusterPanel(None, auto_refresh=False, root=Path(tempfile.mkdtemp()))
print(json.dumps({"accounts": list(panel.chooser.account.options),
                  "chosen": panel.chooser.account.value,
                  "qos": [v for _, v in panel.qos.options], "status": panel.status.value}))
"""


def job_fields(job_id: str) -> dict[str, str]:
    """squeue's account, state and user of one job ({} once Slurm forgot it)."""
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%a|%T|%u"], capture_output=True,
                         text=True, check=False).stdout.strip()
    if not out:
        return {}
    account, state, user = out.split("|")
    return {"account": account, "state": state, "user": user}


def test_ray_panel_offers_exactly_the_users_accounts(hub: RunningHub) -> None:
    alice = as_user("alice", PANEL, env=session_env(hub, "alice"))
    assert alice["accounts"] == ["proj-chem", "proj-ml"] and alice["chosen"] == "proj-ml"
    assert "sf-error" not in alice["status"]
    assert alice["qos"][0] == "" and set(alice["qos"][1:]) <= {"cpu", "debug", "gpu", "normal"}
    bob = as_user("bob", PANEL, env=session_env(hub, "bob"))
    assert bob["accounts"] == ["proj-ml"] and bob["chosen"] == "proj-ml"


def test_bob_asking_for_alices_project_is_refused_naming_account(hub: RunningHub) -> None:
    name = f"acct-bob-{os.getpid()}"
    refused = as_user("bob", f"""
from shopfloor.resources import RequestError
from shopfloor.session.hubapi import Hub
try:
    RayCluster.create({name!r}, {{"partition": "cpu", "walltime": "5",
                                  "account": "proj-chem"}}, hub=Hub())
    print(json.dumps({{"problems": None}}))
except RequestError as exc:
    print(json.dumps({{"problems": exc.problems}}))
""", env=session_env(hub, "bob"))
    assert list(refused["problems"]) == ["account"], refused
    assert "'proj-chem' is not an account you may charge; choose one of proj-ml" in \
        refused["problems"]["account"]
    # The hub's answer is a 400 naming the field, for any client.
    bob = hub.client("bob")
    resp = bob.api("POST", "/shopfloor/validate", token=bob.token(),
                   json={"partition": "cpu", "account": "proj-chem"})
    assert resp.status_code == 400 and set(resp.json()["problems"]) == {"account"}
    out = subprocess.run(["squeue", "-h", "-u", "bob", "-n", f"shopfloor-ray-{name}", "-o", "%i"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""  # nothing was submitted


@pytest.mark.slow
def test_a_ray_cluster_on_proj_chem_runs_charging_proj_chem(hub: RunningHub) -> None:
    name = f"acct-{os.getpid()}"
    env = session_env(hub, "alice")
    made = as_user("alice", f"""
from shopfloor.session.hubapi import Hub
c = RayCluster.create({name!r}, {{"partition": "cpu", "nodes": 1, "cpus": 1, "memory_gb": 1,
                                  "walltime": "10", "account": "proj-chem"}}, hub=Hub(),
                      idle_timeout_minutes=5)
workers = c.scale(2)
print(json.dumps({{"head": c.config()["head_job"], "workers": workers, "account": c.account}}))
""", env=env)
    jobs = [made["head"], *made["workers"]]
    try:
        assert made["account"] == "proj-chem" and len(made["workers"]) == 1
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and job_fields(made["head"]).get("state") != "RUNNING":
            time.sleep(1)
        head = job_fields(made["head"])
        assert head == {"account": "proj-chem", "state": "RUNNING", "user": "alice"}, head
        assert job_fields(made["workers"][0])["account"] == "proj-chem"
    finally:
        as_user("alice", f"RayCluster({name!r}).stop()\nprint('{{}}')", env=env)
        wait_gone(jobs)


# -- apps ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ahub(local_cluster: object, passwords: dict[str, str]) -> Iterator[RunningHub]:
    with apps_hub(passwords, partition="cpu", walltime="0:10:00") as running:
        yield running


def publish(hub: RunningHub, user: str, notebook: Path, slug: str = "charged",
            **compute: object) -> requests.Response:
    token = hub.client(user).token()
    return requests.post(f"{hub.url}/services/apps/api/apps", timeout=60,
                         headers={"Authorization": f"token {token}"},
                         json={"notebook": str(notebook), "title": "Charged wave",
                               "slug": slug, "compute": compute})


@pytest.mark.slow
def test_an_app_published_on_proj_chem_starts_its_job_charging_proj_chem(
        ahub: RunningHub) -> None:
    notebook = install_notebook("alice")
    env = {**os.environ, "JUPYTERHUB_API_TOKEN": ahub.client("alice").token(),
           "SHOPFLOOR_APPS_URL": f"{ahub.url}/services/apps"}
    out = subprocess.run(["/opt/shopfloor/venv/bin/shopfloor", "apps", "publish", str(notebook),
                          "--title", "Charged wave", "--slug", "charged", "--account",
                          "proj-chem"], env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0 and "alice/charged v1" in out.stdout, out.stderr
    alice = ahub.client("alice")
    service_login(alice)
    summary = alice.http.get(f"{ahub.url}/services/apps/api/apps/alice/charged").json()["app"]
    assert summary["account"] == "proj-chem"
    wait_app_ready(alice, origin_of(ahub), "alice/charged")
    listed = subprocess.run(["squeue", "-h", "-u", "alice", "-o", "%i|%j"], capture_output=True,
                            text=True, check=True).stdout.splitlines()
    (job_id,) = [line.split("|")[0] for line in listed if line.endswith("-alice-charged")]
    assert job_fields(job_id) == {"account": "proj-chem", "state": "RUNNING", "user": "alice"}


def test_bob_cannot_publish_charging_alices_project(ahub: RunningHub) -> None:
    notebook = install_notebook("bob")
    for account in ("proj-chem", "no-such-project", "root"):
        resp = publish(ahub, "bob", notebook, account=account)
        assert resp.status_code == 400, resp.text
        problems = resp.json()["problems"]
        assert list(problems) == ["compute.account"], problems
        assert f"'{account}' is not an account you may charge; choose one of proj-ml" in \
            problems["compute.account"]
    resp = publish(ahub, "bob", notebook, account="proj-ml\n#SBATCH --account=proj-chem")
    assert resp.status_code == 400 and list(resp.json()["problems"]) == ["compute.account"]
    resp = publish(ahub, "bob", notebook, account="proj-ml")
    assert resp.status_code == 201 and resp.json()["app"]["account"] == "proj-ml"
    requests.delete(f"{ahub.url}/services/apps/api/apps/bob/charged", timeout=30,
                    headers={"Authorization": f"token {ahub.client('bob').token()}"})


#: A project of alice's made by the next test and taken away after she published an app on it.
REVOKED = "sf-test-revoked"


@pytest.mark.slow
def test_an_app_whose_account_was_taken_away_since_publishing_does_not_start(
        ahub: RunningHub) -> None:
    accounts = AccountingSync(SlurmSync())
    accounts.add_account(REVOKED, description="test: taken away after an app was published")
    accounts.add_user("alice", REVOKED)
    alice = ahub.client("alice")
    token = alice.token()
    try:
        notebook = install_notebook("alice")
        # The service caches associations (accounting.cache_seconds): the new one shows up
        # within that.
        deadline = time.monotonic() + 60
        while True:
            resp = publish(ahub, "alice", notebook, slug="revoked", account=REVOKED)
            if resp.status_code == 201 or time.monotonic() > deadline:
                break
            time.sleep(3)
        assert resp.status_code == 201, resp.text
        assert resp.json()["app"]["account"] == REVOKED
        accounts.remove_user("alice", REVOKED)
        service_login(alice)
        page = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            page = alice.http.get(f"{origin_of(ahub)}/services/apps/alice/revoked/", timeout=30)
            assert page.status_code in (202, 503), "served although its account was taken away"
            if page.status_code == 503:
                break
            time.sleep(1)
        assert page is not None and page.status_code == 503, page and page.text[-500:]
        # Our own check ("... is not an account you may charge") or, while the service's
        # cache still knew the association, Slurm's refusal: either way the page says why.
        assert "account" in page.text.lower(), page.text[-800:]
        assert not [line for line in subprocess.run(
            ["squeue", "-h", "-u", "alice", "-o", "%j"], capture_output=True, text=True,
            check=True).stdout.splitlines() if line.endswith("-alice-revoked")]
    finally:
        accounts.remove_user("alice", REVOKED)
        accounts.remove_account(REVOKED)
        requests.delete(f"{ahub.url}/services/apps/api/apps/alice/revoked", timeout=30,
                        headers={"Authorization": f"token {token}"})
