"""Helpers shared by the integration and browser tests (not fixtures: see conftest.py)."""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from hubclient import HubClient

from shopfloor.demo.hub import Hub
from shopfloor.site import SiteConfig

REPO = Path(__file__).resolve().parents[1]
#: Ports of the test hub: $SHOPFLOOR_TEST_PORT_BASE (default 8500) and the next two, so that
#: several test runs (or a demo) can share one machine.
PORT_BASE = int(os.environ.get("SHOPFLOOR_TEST_PORT_BASE", "8500"))
TEST_PORTS = {"bind_url": PORT_BASE, "hub_bind_url": PORT_BASE + 1, "proxy_api_url": PORT_BASE + 2}


@dataclass
class RunningHub:
    url: str
    site: SiteConfig
    site_file: Path
    process: Hub
    passwords: dict[str, str]

    def client(self, user: str) -> HubClient:
        client = HubClient(self.url)
        client.login(user, self.passwords[user])
        return client

    def log_text(self) -> str:
        return self.process.log_file.read_text(errors="replace")


def write_test_site(directory: Path, **overrides: object) -> Path:
    data = yaml.safe_load((REPO / "hub_config" / "demo_site.yaml").read_text())
    for key, port in TEST_PORTS.items():
        data["hub"][key] = f"http://127.0.0.1:{port}"
    data["hub"]["state_dir"] = str(directory / "hub")
    # Jobs run the environment these tests run in (a CI venv may differ from the demo's).
    data["hub"]["python"] = sys.executable
    # The test hub runs as the demo runs it, as hub.service_user; SHOPFLOOR_TEST_SERVICE_USER=
    # (empty) runs it as root, another name as that user.
    service_user = os.environ.get("SHOPFLOOR_TEST_SERVICE_USER", "shopfloor")
    data["hub"]["service_user"] = service_user or None
    data.update(overrides)
    path = directory / "site.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def give_to_hub(path: Path, site: SiteConfig) -> None:
    """A file the hub reads (a secret, a password file), written by a test as root: the
    hub's service user's (made if missing), kept 0600, as an admin would leave it."""
    user = site.hub.service_user
    if user:
        from shopfloor.ops.serviceuser import ensure_service_user

        ensure_service_user(user)
        account = pwd.getpwnam(user)
        os.chown(path, account.pw_uid, account.pw_gid)
    path.chmod(0o600)


#: The hub a session job reports to, as its job script sets it (``export JUPYTERHUB_API_URL=``).
_JOB_HUB = re.compile(r"^export JUPYTERHUB_API_URL='?https?://[^/:']+:(\d+)/", re.MULTILINE)
_job_hub_ports: dict[str, int | None] = {}


def job_hub_port(job_id: str) -> int | None:
    """The hub API port a job reports to; None for a job no hub started (or one gone)."""
    if job_id not in _job_hub_ports:
        script = subprocess.run(["scontrol", "write", "batch_script", job_id, "-"],
                                capture_output=True, text=True, check=False)
        if script.returncode:
            return None
        match = _JOB_HUB.search(script.stdout)
        _job_hub_ports[job_id] = int(match.group(1)) if match else None
    return _job_hub_ports[job_id]


def squeue_jobs(user: str, *, other_hubs: bool = False) -> list[dict[str, str]]:
    """The user's jobs, without those of another hub (a demo running beside the tests starts
    sessions with the same job names): pass ``other_hubs=True`` to see those too."""
    out = subprocess.run(
        ["squeue", "-h", "-u", user, "-o", "%i|%T|%u|%N|%j|%P"],
        capture_output=True, text=True, check=True,
    ).stdout
    keys = ("id", "state", "user", "nodes", "name", "partition")
    jobs = [dict(zip(keys, line.split("|"), strict=True)) for line in out.splitlines()]
    ours = TEST_PORTS["hub_bind_url"]
    return [j for j in jobs if other_hubs or job_hub_port(j["id"]) in (None, ours)]


def cancel_test_hub_jobs(timeout: float = 30) -> list[str]:
    """Cancel every job that reports to the test hub's port (left by a failed or crashed
    run) and wait until Slurm lists none; returns their ids. Other hubs' jobs stay."""
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True,
                         check=True).stdout.split()
    ours = [j for j in out if job_hub_port(j) == TEST_PORTS["hub_bind_url"]]
    if ours:
        subprocess.run(["scancel", *ours], capture_output=True, check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and set(ours) & set(subprocess.run(
                ["squeue", "-h", "-o", "%i"], capture_output=True, text=True,
                check=True).stdout.split()):
            time.sleep(0.5)
    return ours


def fill_debug_partition() -> str:
    """Submit (as bob) a job that takes every CPU of the debug node; returns its job id.

    Sessions asked for on debug then wait with reason Resources. Cancel it with scancel.
    """
    return subprocess.run(
        ["sudo", "-u", "bob", "sbatch", "--parsable", "-p", "debug", "-c", "4", "-t", "5",
         "-o", "/dev/null", "--wrap", "sleep 300"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
