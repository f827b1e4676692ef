"""Ask for help from JupyterLab: the session's server asks the hub with its own token.

A real session of alice's (debug partition) on a test hub. Its Help view posts to its own
server (``shopfloor/lab/support``); the server extension asks the hub with the session's own
token, which may ask for help on, and revoke, that one session and nothing else of alice's.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hubclient import HubClient
from support import RunningHub, squeue_jobs

pytestmark = [pytest.mark.hub, pytest.mark.cluster, pytest.mark.slow]

SERVER = "helpme"
SESSION = {"partition": "debug", "cpus": 1, "memory_gb": 0.5, "walltime": "10"}


def session_token(job_id: str) -> str:
    """The server token the hub gave the session of ``job_id`` (what code in it holds)."""
    pids = subprocess.run(["pgrep", "-u", "alice", "-f", "singleuser"],
                          capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        env = dict(e.decode(errors="replace").split("=", 1) for e in raw if b"=" in e)
        if env.get("SLURM_JOB_ID") == job_id and env.get("JUPYTERHUB_API_TOKEN"):
            return env["JUPYTERHUB_API_TOKEN"]
    raise AssertionError(f"no session process for job {job_id}")


@pytest.fixture(scope="module")
def session(hub: RunningHub) -> Iterator[tuple[HubClient, str]]:
    """alice's running session and a token of hers; the session is stopped after."""
    alice = hub.client("alice")
    token = alice.token()
    try:
        resp = alice.api("POST", f"/users/alice/servers/{SERVER}", json={"user_options": SESSION})
        assert resp.status_code in (201, 202), resp.text
        alice.wait_ready(SERVER, timeout=180)
        yield alice, token
    finally:
        alice.stop(SERVER)


def lab(hub: RunningHub, token: str, method: str, path: str = "",
        **kw: object) -> requests.Response:
    """A call to the session's own server extension, as the Help view makes it."""
    url = f"{hub.url}/user/alice/{SERVER}/shopfloor/lab/support{path}"
    return requests.request(method, url, headers={"Authorization": f"token {token}"},
                            timeout=60, allow_redirects=False, **kw)  # type: ignore[arg-type]


def test_help_from_the_lab_reaches_support_and_is_revoked(
        hub: RunningHub, session: tuple[HubClient, str]) -> None:
    _alice, token = session
    max_hours = hub.site.support.max_hours

    # Bad input comes back from the hub's one check, naming the field.
    bad = lab(hub, token, "POST", json={"message": "stuck", "hours": max_hours + 1})
    assert bad.status_code == 400, bad.text
    assert "hours" in bad.json()["problems"]
    assert lab(hub, token, "POST", data="not json").status_code == 400

    made = lab(hub, token, "POST", json={"message": "my kernel dies", "hours": 1})
    assert made.status_code == 201, made.text
    request = made.json()
    assert request["user"] == "alice" and request["server"] == SERVER
    assert request["access"], "nobody of the support group was given access"

    # The Help view shows it with who has access and the site's limit.
    view = lab(hub, token, "GET").json()
    assert view["session"] == SERVER and view["max_hours"] == max_hours
    assert [r["id"] for r in view["requests"]] == [request["id"]]
    assert view["requests"][0]["access"] == request["access"]

    # The support member sees it in the queue, with the session's job.
    support = hub.client("support")
    queue = support.api("GET", "/shopfloor/support").json()["queue"]
    [seen] = [r for r in queue if r["id"] == request["id"]]
    assert seen["message"] == "my kernel dies" and seen["job_id"]

    # bob cannot ask through alice's session.
    bob = hub.client("bob")
    refused = lab(hub, bob.token(), "POST", json={"message": "x", "hours": 1})
    assert refused.status_code in (302, 403, 404), refused.status_code

    # Revoke from the Help view: the request ends and support loses it.
    assert lab(hub, token, "DELETE", f"/{request['id']}").status_code == 204
    queue = support.api("GET", "/shopfloor/support").json()["queue"]
    assert request["id"] not in [r["id"] for r in queue]
    assert lab(hub, token, "GET").json()["requests"][0]["state"] == "revoked"


def test_session_token_asks_for_its_own_session_only(
        hub: RunningHub, session: tuple[HubClient, str]) -> None:
    alice, _token = session
    [job] = [j for j in squeue_jobs("alice") if j["name"] == f"shopfloor-alice-{SERVER}"]
    own = session_token(job["id"])
    api = f"{hub.url}/hub/api/shopfloor/support"
    headers = {"Authorization": f"token {own}"}
    # Another of alice's sessions (named or the default) is refused outright.
    for other in ("other", ""):
        forged = requests.post(api, headers=headers, timeout=30,
                               json={"server": other, "message": "x", "hours": 1})
        assert forged.status_code == 403, (other, forged.text)
    # Its own session is allowed (and a request made with it can be revoked with it).
    made = requests.post(api, headers=headers, timeout=30,
                         json={"server": SERVER, "message": "from code", "hours": 1})
    assert made.status_code == 201, made.text
    request_id = made.json()["id"]
    assert requests.delete(f"{api}/{request_id}", headers=headers,
                           timeout=30).status_code == 204
    # The refused ones left nothing behind.
    mine = alice.api("GET", "/shopfloor/support").json()["mine"]
    assert {r["server"] for r in mine} == {SERVER}
    assert all(r["state"] != "open" for r in mine)


MODEL = "lab-help-test-model"


def test_home_lists_my_models_through_the_hub(
        hub: RunningHub, session: tuple[HubClient, str]) -> None:
    """The home page's "My fine-tuned models": the hub asks alice's running session with a
    token of hers for that server only, which it deletes at once."""
    alice, token = session
    folder = f"~alice/shopfloor-models/{MODEL}"
    card = json.dumps({"name": MODEL, "task": "classification", "base_model": "minilm-l6",
                       "metrics": {"accuracy": 0.87}, "saved": "2025-01-01 10:00"})
    subprocess.run(["sudo", "-u", "alice", "--", "sh", "-c",
                    f"mkdir -p {folder} && printf '%s' '{card}' > {folder}/shopfloor-model.json"],
                   check=True)
    try:
        tokens_before = alice.api("GET", "/users/alice/tokens").json()["api_tokens"]
        listing = alice.api("GET", f"/shopfloor/home/models?server={SERVER}", token=token)
        assert listing.status_code == 200, listing.text
        assert MODEL in [m["name"] for m in listing.json()["models"]]
        # The hub's token for the listing is gone again.
        tokens_after = alice.api("GET", "/users/alice/tokens").json()["api_tokens"]
        assert {t["id"] for t in tokens_after} == {t["id"] for t in tokens_before}
        # Not for a session alice has not running, nor for bob, nor for a narrower token.
        assert alice.api("GET", "/shopfloor/home/models?server=nosuch",
                         token=token).status_code == 404
        bob = hub.client("bob")
        assert bob.api("GET", f"/shopfloor/home/models?server={SERVER}").status_code == 404
        narrow = alice.token(scopes=["read:users!user"])
        assert alice.api("GET", f"/shopfloor/home/models?server={SERVER}",
                         token=narrow).status_code == 403
    finally:
        subprocess.run(["sudo", "-u", "alice", "--", "sh", "-c", f"rm -rf {folder}"],
                       check=False)
