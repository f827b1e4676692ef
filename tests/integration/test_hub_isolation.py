"""Attacks on the hub by a legitimate user, against the real hub and Slurm (issue 11).

Each test performs the attack an outside probe found and asserts the attacker gets nothing:
no root-only file content through a spawn error, no blocked hub, no readable hub state, no
reservation or account outside the user's rights, no admin text, no second port.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from support import TEST_PORTS, RunningHub, fill_debug_partition, squeue_jobs, write_test_site

from shopfloor.demo.hub import Hub, credentials_path
from shopfloor.site import load_site

pytestmark = [pytest.mark.hub, pytest.mark.cluster, pytest.mark.slow]

LOG_DIR = Path("/home/alice/.shopfloor/logs")
CTLD_STATE = Path("/var/lib/shopfloor/cluster/ctld")


def as_user(user: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sudo", "-n", "-u", user, "--", *cmd], capture_output=True,
                          text=True, check=False)


def next_job_ids(count: int = 40) -> list[str]:
    """Job ids Slurm will hand out next (ids grow by one; a probe job shows where they are)."""
    probe = subprocess.run(
        ["sudo", "-u", "bob", "sbatch", "--parsable", "-p", "debug", "-t", "1", "--hold",
         "-o", "/dev/null", "--wrap", "true"], capture_output=True, text=True, check=True,
    ).stdout.strip()
    subprocess.run(["scancel", probe], check=False)
    return [str(int(probe) + i) for i in range(1, count + 1)]


def progress_events(client, server: str, timeout: float = 60) -> list[dict]:  # type: ignore[no-untyped-def]
    """The spawn progress events until the spawn ends (failed, ready) or ``timeout``."""
    events: list[dict] = []
    url = f"{client.base}/hub/api/users/{client.user}/servers/{server}/progress"
    deadline = time.monotonic() + timeout
    with client.http.get(url, stream=True, timeout=timeout,
                         headers={"X-XSRFToken": client._xsrf()}) as resp:
        for line in resp.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                events.append(json.loads(line[5:]))
                if events[-1].get("failed") or events[-1].get("ready"):
                    break
            if time.monotonic() > deadline:
                break
    return events


def remove_server(client, server: str) -> None:  # type: ignore[no-untyped-def]
    client.api("DELETE", f"/users/{client.user}/servers/{server}", json={"remove": True})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and client.server_model(server) is not None:
        time.sleep(0.3)


@pytest.fixture
def root_secret() -> Iterator[tuple[Path, str]]:
    """A root-only file (0600 in /root) holding a marker no user may ever read."""
    marker = f"ROOT-ONLY-{secrets.token_hex(8)}"
    fd, name = tempfile.mkstemp(prefix="shopfloor-isolation-", dir="/root")
    os.write(fd, f"{marker}\n".encode())
    os.close(fd)
    try:
        yield Path(name), marker
    finally:
        Path(name).unlink(missing_ok=True)


def _link_next_logs(target: str) -> list[Path]:
    as_user("alice", "mkdir", "-p", str(LOG_DIR))
    links = [LOG_DIR / f"{job_id}.log" for job_id in next_job_ids()]
    for link in links:
        result = as_user("alice", "ln", "-sfn", target, str(link))
        assert result.returncode == 0, result.stderr
    return links


def test_job_log_linked_to_a_root_file_is_never_quoted(hub: RunningHub, root_secret) -> None:  # type: ignore[no-untyped-def]
    """Issue 11, hole 1: alice links her next job logs to a root-only file; the job dies."""
    path, marker = root_secret
    alice = hub.client("alice")
    links = _link_next_logs(str(path))
    try:
        resp = alice.api("POST", "/users/alice/servers/leak", json={
            "user_options": {"partition": "debug", "cpus": 1, "memory_gb": 0.5,
                             "walltime": "10"}})
        # The job dies within seconds: the answer is the failure itself (400), or 201/202
        # and then the failure in the progress stream.
        if resp.status_code == 400:
            message = resp.json()["message"]
        else:
            assert resp.status_code in (201, 202), resp.text
            events = progress_events(alice, "leak")
            assert events and events[-1].get("failed"), events
            message = events[-1]["message"]
        assert "ended" in message and "JobLaunchFailure" in message, message
        assert marker not in resp.text and marker not in message
        assert marker not in hub.log_text()
    finally:
        for link in links:
            link.unlink(missing_ok=True)
        remove_server(alice, "leak")


def test_job_log_swapped_for_a_fifo_does_not_block_the_hub(hub: RunningHub) -> None:
    """A FIFO where the log was: reading it as before would block the hub's event loop.

    Also: the log folder is made private (0700) even if it was looser, and Slurm creates the
    job's log 0600 (the job is submitted with umask 077).
    """
    alice = hub.client("alice")
    as_user("alice", "mkdir", "-p", str(LOG_DIR))
    as_user("alice", "chmod", "0755", str(LOG_DIR))
    fifo = Path("/home/alice/shopfloor-isolation.fifo")
    as_user("alice", "rm", "-f", str(fifo))
    assert as_user("alice", "mkfifo", str(fifo)).returncode == 0
    resp = alice.spawn_form("fifo", partition="debug", cpus=1, memory_gb=0.5, walltime=10)
    assert resp.status_code == 302, resp.text[-500:]
    try:
        alice.wait_ready("fifo", timeout=120)
        job = next(j for j in squeue_jobs("alice") if j["name"] == "shopfloor-alice-fifo")
        log = LOG_DIR / f"{job['id']}.log"
        assert stat.S_IMODE(LOG_DIR.stat().st_mode) == 0o700
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        assert as_user("bob", "cat", str(log)).returncode != 0
        # Swap the log for a link to a FIFO, then let the job die.
        assert as_user("alice", "ln", "-sfn", str(fifo), str(log)).returncode == 0
        subprocess.run(["scancel", job["id"]], check=True)
        started = time.monotonic()
        while time.monotonic() - started < 30:
            answer = requests.get(f"{hub.url}/hub/api/", timeout=5)
            assert answer.status_code == 200
            if alice.server_model("fifo") is None:
                break
            time.sleep(0.5)
        assert alice.server_model("fifo") is None
        # The hub answers promptly while and after it looked at the log.
        started = time.monotonic()
        assert requests.get(f"{hub.url}/hub/api/", timeout=5).status_code == 200
        assert time.monotonic() - started < 2
    finally:
        fifo.unlink(missing_ok=True)
        remove_server(alice, "fifo")


# -- a hub whose state folder existed (0755) and whose slurmctld vanishes at submit ---------


@pytest.fixture(scope="module")
def outage_hub(local_cluster, passwords: dict[str, str]) -> Iterator[RunningHub]:  # type: ignore[no-untyped-def]
    """A second real hub: its state folder pre-exists 0755 with a 0644 log (as the demo used
    to leave it), and its ``sbatch`` talks to a slurmctld port nobody listens on (the other
    Slurm tools reach the real controller), as when slurmctld dies after the last ``sinfo``.
    """
    directory = Path(tempfile.mkdtemp(prefix="shopfloor-test-outage-"))
    directory.chmod(0o711)
    state = directory / "hub"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    (state / "jupyterhub.log").write_text("old log\n")
    (state / "jupyterhub.log").chmod(0o644)
    bin_dir = directory / "bin"
    bin_dir.mkdir()
    dead_conf = directory / "slurm.conf"
    conf = Path("/etc/slurm/slurm.conf").resolve().read_text()
    dead_conf.write_text(conf.replace("SlurmctldPort=6817", "SlurmctldPort=6599"))
    assert "SlurmctldPort=6599" in dead_conf.read_text()
    dead_conf.chmod(0o644)
    for tool in ("sinfo", "squeue", "scontrol", "scancel", "sbatch"):
        real = shutil.which(tool)
        env = f"SLURM_CONF={dead_conf} " if tool == "sbatch" else ""
        wrapper = bin_dir / tool
        wrapper.write_text(f'#!/bin/sh\n{env}exec {real} "$@"\n')
        wrapper.chmod(0o755)
    bin_dir.chmod(0o755)
    base = TEST_PORTS["bind_url"] + 20
    site_file = write_test_site(directory, slurm={
        **yaml.safe_load(write_test_site(directory).read_text())["slurm"],
        "bin_dir": str(bin_dir),
    })
    data = yaml.safe_load(site_file.read_text())
    for offset, key in enumerate(("bind_url", "hub_bind_url", "proxy_api_url")):
        data["hub"][key] = f"http://127.0.0.1:{base + offset}"
    site_file.write_text(yaml.safe_dump(data, sort_keys=False))
    site = load_site(site_file)
    process = Hub(site, site_file)
    process.start(detach=True)
    try:
        yield RunningHub(site.hub.bind_url, site, site_file, process, passwords)
    finally:
        process.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_hub_state_is_private_even_if_its_folder_existed(outage_hub: RunningHub) -> None:
    """Issue 11, hole 4 (hub part): bob reads nothing of the hub's state."""
    state = Path(outage_hub.site.hub.state_dir)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for name in ("jupyterhub.sqlite", "jupyterhub.log", "jupyterhub_cookie_secret"):
        path = state / name
        assert path.is_file(), name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
        result = as_user("bob", "cat", str(path))
        assert result.returncode != 0 and "Permission denied" in result.stderr, name
    listing = as_user("bob", "ls", str(state))
    assert listing.returncode != 0 and "Permission denied" in listing.stderr
    creds = credentials_path()
    assert stat.S_IMODE(creds.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert as_user("bob", "cat", str(creds)).returncode != 0


def test_spawn_while_slurmctld_is_unreachable_is_503(outage_hub: RunningHub) -> None:
    """Issue 11, hole 8: 503 "the scheduler is unreachable", no command line, nothing left."""
    alice = outage_hub.client("alice")
    started = time.monotonic()
    resp = alice.api("POST", "/users/alice/servers/outage", json={
        "user_options": {"partition": "debug", "cpus": 1, "memory_gb": 0.5, "walltime": "10"}})
    elapsed = time.monotonic() - started
    try:
        assert resp.status_code == 503, (resp.status_code, resp.text, elapsed)
        message = resp.json()["message"]
        assert "scheduler is unreachable" in message and "try again" in message
        assert "sudo" not in resp.text and "sbatch" not in resp.text
        assert alice.server_model("outage") is None
        user = alice.api("GET", "/users/alice").json()
        assert "outage" not in user["servers"]
        assert not [j for j in squeue_jobs("alice") if j["name"] == "shopfloor-alice-outage"]
        assert "slurm_unreachable" in outage_hub.log_text()
    finally:
        remove_server(alice, "outage")


# -- reservations and accounts ---------------------------------------------------------------


@pytest.fixture
def group_reservation() -> Iterator[str]:
    """A reservation on the debug node for the Unix group of alice only, made by node names
    (Slurm then reports the default partition as the reservation's partition)."""
    group = "sftestres"
    subprocess.run(["groupadd", "-f", group], check=True)
    subprocess.run(["gpasswd", "-a", "alice", group], capture_output=True, check=True)
    name = f"sf-iso-{secrets.token_hex(3)}"
    subprocess.run(["scontrol", "create", "reservation", f"ReservationName={name}",
                    "StartTime=now", "Duration=15", "Nodes=debug1", "CoreCnt=1",
                    f"Groups={group}", "Flags=IGNORE_JOBS"], capture_output=True, check=True)
    try:
        yield name
    finally:
        subprocess.run(["scontrol", "delete", f"ReservationName={name}"], check=False)
        subprocess.run(["gpasswd", "-d", "alice", group], capture_output=True, check=False)
        subprocess.run(["groupdel", group], capture_output=True, check=False)


def _validate(client, token: str, options: dict, until: int, timeout: float = 20):  # type: ignore[no-untyped-def]
    """POST /shopfloor/validate until the answer is ``until`` (the live cache refreshes)."""
    deadline = time.monotonic() + timeout
    while True:
        resp = client.api("POST", "/shopfloor/validate", token=token, json=options)
        if resp.status_code == until or time.monotonic() > deadline:
            return resp
        time.sleep(1)


def test_reservations_bind_groups_and_partition(hub: RunningHub, group_reservation: str) -> None:
    """Issue 11, hole 7: Groups= binds; the debug reservation serves debug, not cpu."""
    alice, bob = hub.client("alice"), hub.client("bob")
    options = {"partition": "debug", "walltime": "10", "reservation": group_reservation}
    ok = _validate(alice, alice.token(), options, 200)
    assert ok.status_code == 200, ok.text
    bob_token = bob.token()
    refused = _validate(bob, bob_token, options, 400)
    assert refused.status_code == 400
    assert refused.json()["problems"] == {
        "reservation": f"reservation {group_reservation!r} is not open to you"}
    wrong = _validate(alice, alice.token(), {**options, "partition": "cpu"}, 400)
    assert "holds no nodes of the cpu partition" in wrong.json()["problems"]["reservation"]
    resp = bob.api("POST", "/users/bob/servers/resv", token=bob_token,
                   json={"user_options": options})
    assert resp.status_code == 400 and "reservation" in resp.json()["message"]
    assert not [j for j in squeue_jobs("bob") if j["name"] == "shopfloor-bob-resv"]


def test_accounts_outside_the_site_file_are_refused(hub: RunningHub) -> None:
    bob = hub.client("bob")
    token = bob.token()
    resp = bob.api("POST", "/users/bob/servers/acct", token=token, json={
        "user_options": {"partition": "debug", "walltime": "10", "account": "someone-else"}})
    assert resp.status_code == 400, resp.text
    assert "account" in resp.json()["message"]
    assert not [j for j in squeue_jobs("bob") if j["name"] == "shopfloor-bob-acct"]


# -- what users see --------------------------------------------------------------------------


def test_form_and_url_errors_show_only_the_user_message(hub: RunningHub) -> None:
    """Issue 11, hole 8: no ``SpawnException(...)`` or log prefix on the spawn page."""
    bob = hub.client("bob")
    form = bob.spawn_form("adm", partition="debug", walltime="8:00:00")
    url = bob.http.get(f"{hub.url}/hub/spawn/bob/adm2?opt-partition=debug&opt-cmd=id")
    for resp, field in ((form, "walltime"), (url, "cmd")):
        assert resp.status_code == 400, resp.text[-300:]
        assert "Invalid resource request" in resp.text and field in resp.text
        assert "SpawnException" not in resp.text and "rejected user_options" not in resp.text
        assert "bob:adm" not in resp.text


def test_refused_named_servers_leave_nothing_behind(hub: RunningHub) -> None:
    """Bad input leaves nothing half-made: JupyterHub counts every named server against the
    per-user limit, so refused first requests must not leave server records behind."""
    bob = hub.client("bob")
    token = bob.token()
    names = [f"refused{i}" for i in range(7)]  # more than the limit of named servers
    for name in names:
        resp = bob.api("POST", f"/users/bob/servers/{name}", token=token,
                       json={"user_options": {"partition": "debug", "walltime": "8:00:00"}})
        assert resp.status_code == 400, (name, resp.status_code, resp.text)
        assert "walltime" in resp.json()["message"]
    deadline = time.monotonic() + 15
    left: list[str] = names
    while time.monotonic() < deadline:
        servers = bob.api("GET", "/users/bob", token=token).json().get("servers", {})
        left = [n for n in names if n in servers]
        if not left:
            break
        time.sleep(0.5)
    assert not left, f"refused servers still listed: {left}"


def test_slurm_refusal_shows_slurms_words_not_the_command(hub: RunningHub,
                                                         group_reservation: str) -> None:
    """An admin (whom the hub lets through) asks for a reservation Slurm refuses him: the
    page shows Slurm's words, never the internal ``sudo ... sbatch`` command line."""
    admin = hub.client("admin")
    options = {"partition": "debug", "walltime": "10", "reservation": group_reservation}
    assert _validate(admin, admin.token(), options, 200).status_code == 200
    resp = admin.spawn_form("refused", **options)
    try:
        if resp.status_code == 302:  # the refusal came after the form's one-second wait
            events = progress_events(admin, "refused")
            text = events[-1]["message"] + admin.pending_page_text("refused")
        else:
            text = resp.text
        assert "Slurm refused the job" in text and "reservation" in text.lower(), text[-500:]
        assert "sudo" not in text and "--export" not in text and "SpawnException" not in text
    finally:
        remove_server(admin, "refused")


# -- the port callback -------------------------------------------------------------------------


def _saved_job_token(job_id: str) -> str:
    """The server token from slurmctld's copy of the job's environment (the user's job
    has it in its environment too, readable by the user)."""
    for env in CTLD_STATE.glob(f"hash.*/job.{job_id}/environment"):
        for item in env.read_bytes().split(b"\0"):
            if item.startswith(b"JUPYTERHUB_API_TOKEN="):
                return item.split(b"=", 1)[1].decode()
    raise AssertionError(f"no saved environment for job {job_id}")


def test_port_is_accepted_once_per_start(hub: RunningHub) -> None:
    """Issue 11, hole 10: while a server starts, a second port from its token is refused.

    Also hole 9: the walltime "25:00" reaches Slurm as 25 minutes.
    """
    blocker = fill_debug_partition()
    alice = hub.client("alice")
    try:
        resp = alice.spawn_form("twoports", partition="debug", cpus=2, memory_gb=0.5,
                                walltime="25:00")
        assert resp.status_code == 302, resp.text[-500:]
        deadline = time.monotonic() + 30
        job = None
        while job is None and time.monotonic() < deadline:
            job = next((j for j in squeue_jobs("alice")
                        if j["name"] == "shopfloor-alice-twoports"), None)
            time.sleep(0.3)
        assert job is not None and job["state"] == "PENDING"
        limit = subprocess.run(["squeue", "-h", "-j", job["id"], "-o", "%l"],
                               capture_output=True, text=True).stdout.strip()
        assert limit == "25:00"
        token = _saved_job_token(job["id"])
        headers = {"Authorization": f"token {token}"}
        first = requests.post(f"{hub.url}/hub/api/batchspawner", json={"port": 40001},
                              headers=headers, timeout=10)
        assert first.status_code == 201, first.text
        second = requests.post(f"{hub.url}/hub/api/batchspawner", json={"port": 40002},
                               headers=headers, timeout=10)
        assert second.status_code == 409, second.text
    finally:
        subprocess.run(["scancel", blocker], check=False)
        remove_server(alice, "twoports")
