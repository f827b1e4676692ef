"""A hub of its own for the operations tests (idle culler, PostgreSQL): its own ports above
the shared test hub's, its own site settings, and its jobs cancelled when it stops."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families
from support import PORT_BASE, REPO, RunningHub, give_to_hub, job_hub_port

from shopfloor.demo.hub import Hub
from shopfloor.site import load_site


def write_site(directory: Path, port: int, hub: dict[str, Any] | None = None,
               **sections: Any) -> Path:
    """The demo's site file with the hub on ``port`` (API ``port+1``, proxy ``port+2``; the
    services take ``port+11`` and ``port+13``), its state in ``directory``."""
    data = yaml.safe_load((REPO / "hub_config" / "demo_site.yaml").read_text())
    data["hub"].update({
        "bind_url": f"http://127.0.0.1:{port}", "hub_bind_url": f"http://127.0.0.1:{port + 1}",
        "proxy_api_url": f"http://127.0.0.1:{port + 2}", "state_dir": str(directory / "hub"),
        "python": sys.executable, **(hub or {}),
    })
    data.update(sections)
    path = directory / "site.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def hub_jobs(api_port: int) -> list[str]:
    """Ids of the Slurm jobs that report to the hub whose API listens on ``api_port``."""
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True,
                         check=True).stdout.split()
    return [j for j in out if job_hub_port(j) == api_port]


def cancel_hub_jobs(api_port: int, timeout: float = 30) -> None:
    ours = hub_jobs(api_port)
    if ours:
        subprocess.run(["scancel", *ours], capture_output=True, check=False)
    deadline = time.monotonic() + timeout
    while ours and time.monotonic() < deadline and set(ours) & set(hub_jobs(api_port)):
        time.sleep(0.5)


@contextlib.contextmanager
def private_hub(offset: int, passwords: dict[str, str], hub: dict[str, Any] | None = None,
                hub_files: tuple[Path, ...] = (), **sections: Any) -> Iterator[RunningHub]:
    """A real hub on ``$SHOPFLOOR_TEST_PORT_BASE + offset``; stopped, its jobs cancelled and
    its folder removed afterwards, whatever happened. ``hub_files`` (secrets the hub reads)
    are given to its service user."""
    directory = Path(tempfile.mkdtemp(prefix="shopfloor-ops-hub-"))
    directory.chmod(0o711)
    port = PORT_BASE + offset
    site_file = write_site(directory, port, hub, **sections)
    site = load_site(site_file)
    for path in hub_files:
        give_to_hub(path, site)
    process = Hub(site, site_file)
    cancel_hub_jobs(port + 1)
    try:
        process.start(detach=True)
        yield RunningHub(site.hub.bind_url, site, site_file, process, passwords)
    finally:
        process.stop()
        cancel_hub_jobs(port + 1)
        shutil.rmtree(directory, ignore_errors=True)


def scrape(url: str, token: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/hub/metrics`` as {(sample name, sorted labels): value}."""
    import requests

    resp = requests.get(f"{url}/hub/metrics", headers={"Authorization": f"token {token}"},
                        timeout=30)
    resp.raise_for_status()
    samples = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def sample(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)

