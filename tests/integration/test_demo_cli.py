"""The `shopfloor` command as a person runs it: demo, credentials, bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from support import PORT_BASE, write_test_site

from shopfloor.demo.hub import Hub
from shopfloor.site import load_site

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SHOPFLOOR = [sys.executable, "-m", "shopfloor.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    # cwd="/": `python -m` puts the cwd first on sys.path, and the checkout's shopfloor/
    # folder would shadow the installed package (which maps extensions/ into it).
    return subprocess.run([*SHOPFLOOR, *args], capture_output=True, text=True, timeout=180,
                          cwd="/")


@pytest.fixture
def hub_dir() -> Iterator[Path]:
    """A state folder users can pass through, like /var/lib/shopfloor (pytest's tmp_path is
    private to root, and the apps store beside the hub state must be reachable by owners)."""
    directory = Path(tempfile.mkdtemp(prefix="shopfloor-demo-cli-"))
    directory.chmod(0o711)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_demo_detach_returns_once_the_hub_answers(hub_dir: Path, local_cluster) -> None:  # type: ignore[no-untyped-def]
    site_file = write_test_site(hub_dir)
    data = yaml.safe_load(site_file.read_text())
    # Ports of their own (services sit at hub API port + 10 and + 12), so both hubs can run.
    for i, key in enumerate(("bind_url", "hub_bind_url", "proxy_api_url")):
        data["hub"][key] = f"http://127.0.0.1:{PORT_BASE + 40 + i}"
    site_file.write_text(yaml.safe_dump(data, sort_keys=False))
    site = load_site(site_file)
    try:
        result = run("demo", "--detach", "--site", str(site_file))
        assert result.returncode == 0, result.stderr
        assert f"open {site.hub.bind_url}/hub/ and log in as one of:" in result.stdout
        for user in ("alice", "bob", "trainer", "admin"):
            assert f"    {user}" in result.stdout
        assert requests.get(f"{site.hub.bind_url}/hub/api/", timeout=5).status_code == 200
        # A second run is harmless: it finds the hub running.
        again = run("demo", "--detach", "--site", str(site_file))
        assert again.returncode == 0 and "already running" in again.stdout
    finally:
        Hub(site, site_file).stop()


def test_credentials_are_json_and_log_in(hub) -> None:  # type: ignore[no-untyped-def]
    result = run("demo", "--credentials")
    assert result.returncode == 0
    creds = json.loads(result.stdout)
    assert set(creds) == {"alice", "bob", "trainer", "admin", "support"}
    assert len(set(creds.values())) == 5 and all(len(p) >= 12 for p in creds.values())
    hub.client("bob")  # logs in with the printed password, or raises
    bad = requests.post(f"{hub.url}/hub/login", data={"username": "bob", "password": "x"},
                        allow_redirects=False, timeout=10)
    assert bad.status_code != 302  # no "any password works"


def test_broken_site_file_names_the_field(tmp_path: Path) -> None:
    broken = tmp_path / "site.yaml"
    broken.write_text("partitions:\n  cpu:\n    max_cpu: 4\n")
    result = run("demo", "--detach", "--site", str(broken))
    assert result.returncode == 2
    assert "partitions.cpu.max_cpu: is not a known setting" in result.stderr
    assert "Traceback" not in result.stderr


def test_port_in_use_is_one_clear_message(tmp_path: Path, local_cluster) -> None:  # type: ignore[no-untyped-def]
    import socket

    site_file = write_test_site(tmp_path)
    data = yaml.safe_load(site_file.read_text())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        data["hub"]["bind_url"] = f"http://127.0.0.1:{port}"
        site_file.write_text(yaml.safe_dump(data, sort_keys=False))
        result = run("demo", "--detach", "--site", str(site_file))
    assert result.returncode == 2
    assert f"http://127.0.0.1:{port} is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_cluster_status_table() -> None:
    result = run("cluster", "status")
    assert result.returncode == 0, result.stdout + result.stderr
    for node in ("node1", "node2", "gpu1", "debug1"):
        assert node in result.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_missing_slurm_binary_is_one_clear_message(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no Slurm anywhere on PATH
    result = subprocess.run(
        [*SHOPFLOOR, "cluster", "up", "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, env=env, timeout=60, cwd="/",
    )
    assert result.returncode == 2
    assert "apt-get install slurm-wlm munge" in result.stderr
    assert "Traceback" not in result.stderr
