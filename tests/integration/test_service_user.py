"""The hub as an unprivileged service user (``hub.service_user``), started as the demo starts it.

A hub of its own (ports PORT_BASE+40..), run by :class:`shopfloor.demo.hub.Hub` exactly as
``shopfloor demo`` runs it with ``hub.service_user: shopfloor``: the account, the sudoers rule
and the state are set up, then the hub and its services run as ``shopfloor``. Users log in
(PAM through the ``shadow`` group), sessions are submitted and cancelled as the user through
the sudoers rule, and another user can read nothing the hub keeps.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from serviceuser_support import (
    SERVICE_HUB_OFFSET,
    cancel_jobs_reporting_to,
    everything_under,
    hub_ports,
    process_args,
    process_tree,
    process_user,
    readable_as,
)
from support import RunningHub, squeue_jobs, write_test_site

from shopfloor.demo.hub import Hub
from shopfloor.demo.localcluster import LocalCluster
from shopfloor.site import load_site

pytestmark = [pytest.mark.hub, pytest.mark.cluster, pytest.mark.slow]

SERVICE_USER = "shopfloor"


@pytest.fixture(scope="module")
def service_hub(local_cluster: LocalCluster, passwords: dict[str, str]
                ) -> Iterator[RunningHub]:
    if os.geteuid() != 0:
        pytest.skip("starting a hub as a service user needs root")
    directory = Path(tempfile.mkdtemp(prefix="shopfloor-test-svc-hub-"))
    directory.chmod(0o711)
    site_file = write_test_site(directory)
    data = yaml.safe_load(site_file.read_text())
    data["hub"].update(hub_ports(SERVICE_HUB_OFFSET), service_user=SERVICE_USER)
    site_file.write_text(yaml.safe_dump(data, sort_keys=False))
    site = load_site(site_file)
    api_port = int(site.hub.hub_bind_url.rsplit(":", 1)[1])
    cancel_jobs_reporting_to(api_port)
    process = Hub(site, site_file)
    process.start(detach=True)
    try:
        yield RunningHub(site.hub.bind_url, site, site_file, process, passwords)
    finally:
        process.stop()
        cancel_jobs_reporting_to(api_port)


def test_the_hub_and_its_services_run_as_the_service_user(service_hub: RunningHub) -> None:
    pid = service_hub.process.pid()
    assert pid is not None
    deadline = time.monotonic() + 60
    wanted = ("jupyterhub", "configurable-http-proxy", "shopfloor.extensions.apps_service",
              "shopfloor.extensions.workshops_service")
    while time.monotonic() < deadline:
        running = {p: process_args(p) for p in process_tree(pid)}
        found = {w: [p for p, args in running.items() if w in args] for w in wanted}
        if all(found.values()):
            break
        time.sleep(1)
    assert all(found.values()), found
    for name, pids in found.items():
        for p in pids:
            assert process_user(p) == SERVICE_USER, (name, process_args(p))


def test_alice_logs_in_spawns_and_stops_through_the_sudoers_rule(
        service_hub: RunningHub) -> None:
    alice = service_hub.client("alice")  # PAM as the service user (group shadow)
    resp = alice.spawn_form("svc", partition="debug", cpus=1, memory_gb=0.5, walltime=10)
    assert resp.status_code == 302, resp.text[-500:]
    try:
        alice.wait_ready("svc", timeout=150)
        job = next(j for j in squeue_jobs("alice", other_hubs=True)
                   if j["name"] == "shopfloor-alice-svc")
        assert job["user"] == "alice" and job["state"] == "RUNNING"
        # The job log folder was made as alice (shopfloor-as-user), private to her.
        logs = Path("/home/alice/.shopfloor/logs")
        assert logs.stat().st_uid == os.stat("/home/alice").st_uid
        assert stat.S_IMODE(logs.stat().st_mode) == 0o700
    finally:
        alice.stop("svc")  # scancel as alice, through sudo
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(
            j["id"] == job["id"] for j in squeue_jobs("alice", other_hubs=True)):
        time.sleep(0.5)
    assert not any(j["id"] == job["id"] for j in squeue_jobs("alice", other_hubs=True))
    assert "sudo: a password is required" not in service_hub.log_text()


def test_bob_can_read_none_of_the_hubs_state_logs_or_secrets(service_hub: RunningHub) -> None:
    state = Path(service_hub.site.hub.state_dir)
    store = state.parent / "apps"
    # The hub has written its database, cookie secret, log and the services' state by now.
    service_hub.client("bob")
    names = {p.name for p in state.iterdir()}
    assert {"jupyterhub.sqlite", "jupyterhub_cookie_secret", "jupyterhub.log"} <= names
    private = everything_under(state)
    for path in private:
        info = path.lstat()
        assert info.st_uid == os.stat(state).st_uid, path
        assert not info.st_mode & 0o077, f"{path} is mode {stat.S_IMODE(info.st_mode):o}"
    assert readable_as("bob", private) == []
    # The app store is traversable (owners' jobs reach their snapshots), not listable.
    assert readable_as("bob", [store]) == []
    from pwd import getpwnam

    assert os.stat(state).st_uid == getpwnam(SERVICE_USER).pw_uid


def test_the_doctor_passes_for_the_service_user(service_hub: RunningHub) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "shopfloor"), "doctor", "--site",
         str(service_hub.site_file), "--json", "--skip", "connect"],
        capture_output=True, text=True, timeout=180, check=False, cwd="/")
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["sudo"]["status"] == "ok", checks["sudo"]
    assert checks["database"]["status"] == "ok", checks["database"]
    assert done.returncode == 0, done.stdout


def test_a_published_snapshot_is_readable_by_its_owner_only(service_hub: RunningHub,
                                                            tmp_path: Path) -> None:
    """As the service user the store cannot give files to root:<owner's group>; a POSIX ACL
    grants the owner's group instead. Checked with the store's own code, as the service user."""
    folder = Path(service_hub.site.hub.state_dir).parent / "apps" / "acl-probe"
    script = (
        "import grp, pathlib, sys\n"
        "from shopfloor.apps.model import _protect\n"
        "p = pathlib.Path(sys.argv[1]); p.mkdir(); f = p / 'app.ipynb'; f.write_text('{}')\n"
        "gid = grp.getgrnam('alice').gr_gid\n"
        "_protect(p, gid, 0o750); _protect(f, gid, 0o640)\n"
    )
    subprocess.run(["runuser", "-u", SERVICE_USER, "--", sys.executable, "-I", "-c", script,
                    str(folder)], check=True, cwd="/")
    try:
        assert readable_as("alice", [folder / "app.ipynb"]) == [str(folder / "app.ipynb")]
        assert readable_as("bob", [folder, folder / "app.ipynb"]) == []
        denied = subprocess.run(["runuser", "-u", "alice", "--", "sh", "-c",
                                 f"echo x >> {folder / 'app.ipynb'}"], capture_output=True,
                                check=False)
        assert denied.returncode != 0  # the owner reads the snapshot, never changes it
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=False)
