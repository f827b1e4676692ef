"""Helpers shared by the integration and browser tests (not fixtures: see conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from hubclient import HubClient

from shopfloor.demo import Hub
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
    data.update(overrides)
    path = directory / "site.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def squeue_jobs(user: str) -> list[dict[str, str]]:
    out = subprocess.run(
        ["squeue", "-h", "-u", user, "-o", "%i|%T|%u|%N|%j|%P"],
        capture_output=True, text=True, check=True,
    ).stdout
    keys = ("id", "state", "user", "nodes", "name", "partition")
    return [dict(zip(keys, line.split("|"), strict=True)) for line in out.splitlines()]


def fill_debug_partition() -> str:
    """Submit (as bob) a job that takes every CPU of the debug node; returns its job id.

    Sessions asked for on debug then wait with reason Resources. Cancel it with scancel.
    """
    return subprocess.run(
        ["sudo", "-u", "bob", "sbatch", "--parsable", "-p", "debug", "-c", "4", "-t", "5",
         "-o", "/dev/null", "--wrap", "sleep 300"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
