"""A whole workshop on the real hub and Slurm: create, join, material, checkpoints, end.

Also the trainer's RBAC scope: their workshop's participants only, nothing hub-wide.
These run beside other work on the cluster (a demo and its sessions): the reservation goes
where cores are idle, and every workshop is removed whether the test passes or fails.
"""

from __future__ import annotations

import html
import re
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hubclient import HubClient
from support import RunningHub, squeue_jobs
from workshopsupport import (
    EXPORTS,
    login,
    material_folder,
    partition_with_idle_cores,
    reservations,
    running_workshop,
    service_url,
    trainer_client,
    unix_users,
    wait_for_service,
    wait_some_ready,
)

from shopfloor.workshops.client import WorkshopClient, WorkshopError

pytestmark = [pytest.mark.hub, pytest.mark.cluster, pytest.mark.slow]
PARTICIPANTS = 5
RESERVED_CORES = 2


@pytest.fixture(scope="module")
def trainer(hub: RunningHub) -> WorkshopClient:
    wait_for_service(hub)
    return trainer_client(hub)


@pytest.fixture  # per test: a failure must not leave its participants to the next test
def workshop(hub: RunningHub, trainer: WorkshopClient) -> Iterator[dict[str, object]]:
    partition = partition_with_idle_cores(RESERVED_CORES)
    with running_workshop(hub, trainer, "t", title="Test workshop", hours=1,
                          capacity=PARTICIPANTS, partition=partition, cores=RESERVED_CORES,
                          material=str(material_folder())) as info:
        yield info


def join_all(hub: RunningHub, code: str) -> list[dict[str, str]]:
    url = f"{service_url(hub)}/join"
    joined = []
    for i in range(PARTICIPANTS):
        resp = requests.post(url, data={"code": code.lower(), "name": f"Person {i}"}, timeout=60)
        assert resp.status_code == 200, resp.text
        login_name = resp.text.split('id="login">')[1].split("<")[0]
        password = resp.text.split('id="password">')[1].split("<")[0]
        joined.append({"username": login_name, "password": password})
    return joined


def open_as_trainer(web: HubClient, url: str) -> requests.Response:
    """Open a participant's page, accepting the hub's "authorize access" page."""
    page = web.http.get(url, timeout=60)
    if "oauth2/authorize" in page.url:
        fields = re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page.text)
        page = web.http.post(page.url, data=[(k, html.unescape(v)) for k, v in fields],
                             timeout=60)
    return page


def test_workshop_lifecycle(hub: RunningHub, trainer: WorkshopClient,
                            workshop: dict[str, object]) -> None:
    code, name, partition = str(workshop["code"]), str(workshop["name"]), workshop["partition"]
    assert f"ReservationName=ws-{name}" in reservations()
    assert workshop["spawn_url"] == (
        f"/hub/spawn?opt-partition={partition}&opt-reservation=ws-{name}")

    people = join_all(hub, code)
    assert [p["username"] for p in people] == [f"ws-{name}-{i}" for i in range(1, 6)]
    # Full: the sixth is turned away.
    with pytest.raises(WorkshopError) as full:
        WorkshopClient(service_url(hub), "").join(code, "Late comer")
    assert "full" in full.value.problems["workshop"]
    res = reservations()
    assert all(p["username"] in res for p in people)

    # Each participant logs in with the shown password and follows the one link.
    clients = [login(hub, p["username"], p["password"]) for p in people]
    for client in clients:
        resp = client.http.get(f"{hub.url}{workshop['spawn_url']}", allow_redirects=False)
        assert resp.status_code in (302, 303), resp.text[:300]
    # The reservation holds two cores: two sessions run, the others wait in it.
    running = wait_some_ready(clients, RESERVED_CORES, f"ws-{name}")
    jobs = {j["user"]: j for p in people for j in squeue_jobs(p["username"])}
    assert len(jobs) == PARTICIPANTS
    assert all(j["partition"] == partition for j in jobs.values())
    reserved = subprocess.run(["squeue", "-h", "-o", "%u|%v", "-R", f"ws-{name}"],
                              capture_output=True, text=True, check=True).stdout
    assert all(p["username"] in reserved for p in people)

    # Material is in every home, placed once as the participant.
    for person in people:
        home = Path(f"/home/{person['username']}")
        lesson = home / name / "lesson.ipynb"
        assert lesson.exists() and (home / name / "data" / "points.csv").exists()
        assert lesson.stat().st_uid == home.stat().st_uid

    # Checkpoints with each participant's own token; the trainer sees them.
    for i, client in enumerate(clients):
        token = client.token(scopes=["access:services!service=workshop"])
        me = WorkshopClient(service_url(hub), token)
        me.checkpoint("step-1")
        if i == 1:
            me.checkpoint("step-2", ok=False, message="NameError: x")
        elif i > 1:
            me.checkpoint("step-2")
    with pytest.raises(WorkshopError) as bad:
        WorkshopClient(service_url(hub), clients[0].token()).checkpoint("x" * 80)
    assert "step" in bad.value.problems
    rows = {r.username: r for r in trainer.progress(name)}
    assert len(rows) == PARTICIPANTS
    first, second = rows[people[0]["username"]], rows[people[1]["username"]]
    assert (first.step, first.ok, first.steps_done, first.stuck) == ("step-1", True, 1, False)
    assert (second.step, second.ok, second.errors, second.stuck) == ("step-2", False, 1, True)
    owner = people[running[0]]["username"]
    assert rows[owner].server == "running"
    assert first.open_url == f"/user/{people[0]['username']}/lab/tree/{name}"

    # The trainer opens a participant's notebook through the hub (access:servers!group):
    # the hub asks them to confirm once, as it does for anyone else's server.
    web = hub.client("trainer")
    lab = open_as_trainer(web, f"{hub.url}/user/{owner}/lab/tree/{name}")
    assert lab.status_code == 200 and "/user/" in lab.url, lab.url
    xsrf = web.http.cookies.get("_xsrf", path=f"/user/{owner}/")
    page = web.http.get(f"{hub.url}/user/{owner}/api/contents/{name}",
                        headers={"X-XSRFToken": xsrf or ""}, timeout=60)
    assert page.status_code == 200, page.text[:300]
    assert "lesson.ipynb" in page.text

    # Work done in the session (a file) must reach the export.
    (Path(f"/home/{owner}") / name / "answer.txt").write_text("42\n")

    # The end: export first, then clean. Root can read the trainer's private exports.
    report = trainer.end(name)
    assert report["state"] == "ended"
    export = EXPORTS / name
    archives = sorted(p.name for p in export.glob("*.tar.gz"))
    assert archives == sorted(f"{p['username']}.tar.gz" for p in people)
    with tarfile.open(export / f"{owner}.tar.gz") as tar:
        assert f"{owner}/{name}/answer.txt" in tar.getnames()
    assert (export / f"{owner}.tar.gz").stat().st_uid == Path("/home/trainer").stat().st_uid
    table = (export / "progress.csv").read_text().splitlines()
    assert table[0].startswith("username,name,step,ok") and len(table) == PARTICIPANTS + 1
    assert unix_users(f"ws-{name}-") == []
    assert f"ws-{name}" not in reservations()
    assert all(not squeue_jobs(p["username"]) for p in people if unix_users(p["username"]))
    users = {u["name"] for u in hub.client("admin").api("GET", "/users").json()}
    assert not {p["username"] for p in people} & users
    # Ending again is harmless (every step is in the journal).
    assert trainer.end(name)["state"] == "ended"
    # The code no longer works.
    with pytest.raises(WorkshopError):
        WorkshopClient(service_url(hub), "").join(code, "After the end")


def test_trainer_scope(hub: RunningHub, trainer: WorkshopClient) -> None:
    with running_workshop(hub, trainer, "s", hours=1, capacity=2, partition="debug") as info:
        name = str(info["name"])
        person = WorkshopClient(service_url(hub), "").join(
            str(trainer.status(name)["code"]), "Scoped")
        web = hub.client("trainer")
        token = web.token()
        api = {"Authorization": f"token {token}"}

        def call(method: str, path: str, **kw: object) -> int:
            return requests.request(method, f"{hub.url}/hub/api{path}", headers=api,
                                    timeout=30, **kw).status_code  # type: ignore[arg-type]

        member = person["username"]
        # Inside the group: see the participant, start and stop their server.
        assert call("GET", f"/users/{member}") == 200
        listed = requests.get(f"{hub.url}/hub/api/users", headers=api, timeout=30).json()
        assert {u["name"] for u in listed} <= {member, "trainer"}
        assert call("POST", f"/users/{member}/server",
                    json={"user_options": {"partition": "debug", "walltime": "10"}}) in (201,
                                                                                          202)
        assert call("DELETE", f"/users/{member}/server") in (202, 204)
        # Outside the group, or hub-wide: refused.
        assert call("GET", "/users/alice") in (403, 404)
        assert call("POST", "/users/alice/server", json={}) in (403, 404)
        assert call("DELETE", "/users/bob/server") in (403, 404)
        assert call("PATCH", f"/users/{member}", json={"admin": True}) == 403
        assert call("PATCH", "/users/trainer", json={"admin": True}) == 403
        assert call("POST", f"/groups/ws-{name}/users", json={"users": ["alice"]}) in (403,
                                                                                      404)
        assert call("POST", "/users/mallory", json={}) == 403
        assert call("PUT", f"/shopfloor/workshop-roles/{name}",
                    json={"trainers": ["alice"]}) == 403
        assert hub.client("alice").api("GET", f"/users/{member}").status_code in (403, 404)
        # Another user may not read or end the workshop.
        alice = WorkshopClient(service_url(hub), hub.client("alice").token())
        for action in (lambda: alice.progress(name), lambda: alice.end(name),
                       lambda: alice.create("mine", hours=1)):
            with pytest.raises(WorkshopError) as refused:
                action()
            assert refused.value.status == 403
        trainer.end(name)
        assert hub.client("admin").api("GET", "/users/trainer").json()["roles"] == ["user"]


def test_bad_requests(hub: RunningHub, trainer: WorkshopClient) -> None:
    with pytest.raises(WorkshopError) as bad:
        trainer.create("Bad Name!", hours=99, capacity=0, partition="gpu", cores=99,
                       material="/nonexistent", colour="red")
    assert set(bad.value.problems) == {"name", "end", "capacity", "partition", "cores",
                                       "material", "colour"}
    anon = WorkshopClient(service_url(hub), "")
    with pytest.raises(WorkshopError) as wrong:
        anon.join("AAAA-AAAA", "Nobody")
    assert "no running workshop" in wrong.value.problems["code"]
    with pytest.raises(WorkshopError) as blank:
        anon.join("", "")
    assert set(blank.value.problems) == {"code", "name"}
