"""Shared fixtures: a real JupyterHub on the real local Slurm cluster.

The test hub runs beside any demo hub: its own ports (8500-8502) and state folder. It uses the
demo's Unix users and their generated passwords.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support import RunningHub, cancel_test_hub_jobs, write_test_site

from shopfloor.demo.hub import Credentials, Hub, credentials_path, default_site_file
from shopfloor.demo.localcluster import LocalCluster
from shopfloor.site import load_site


@pytest.fixture(scope="session")
def local_cluster(passwords: dict[str, str]) -> LocalCluster:
    # The demo users exist first: slurmctld resolves their uids for their associations.
    cluster = LocalCluster()
    cluster.up(timeout=120)
    return cluster


@pytest.fixture(scope="session")
def passwords() -> dict[str, str]:
    return Credentials(credentials_path(load_site(default_site_file()))).ensure()


@pytest.fixture(scope="session")
def hub(local_cluster: LocalCluster, passwords: dict[str, str]) -> Iterator[RunningHub]:
    directory = Path(tempfile.mkdtemp(prefix="shopfloor-test-hub-"))
    directory.chmod(0o711)  # like /var/lib/shopfloor: users may pass through to shared stores
    site_file = write_test_site(directory)
    site = load_site(site_file)
    process = Hub(site, site_file)
    cancel_test_hub_jobs()  # sessions a crashed earlier run on these ports left in Slurm
    process.start(detach=True)
    try:
        yield RunningHub(site.hub.bind_url, site, site_file, process, passwords)
    finally:
        process.stop()
        # The hub keeps sessions when it stops (cleanup_servers off): end what a failed test
        # left running, so the next run (or a demo beside it) finds the cluster as it was.
        cancel_test_hub_jobs()
