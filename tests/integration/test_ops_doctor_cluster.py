"""``shopfloor doctor`` against the real local cluster: it passes on the demo site, and names
the fault when one piece is broken on purpose (a partition Slurm lacks, a walltime beyond
Slurm's, a Python environment users cannot enter, a service user without the sudo rule)."""

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
import yaml

from shopfloor.demo.localcluster import LocalCluster
from shopfloor.ops.doctor import Doctor, DoctorOptions, Status, default_site_path
from shopfloor.site import load_site

pytestmark = [pytest.mark.cluster]


@pytest.fixture(scope="module")
def cluster() -> LocalCluster:
    cluster = LocalCluster()
    cluster.up(timeout=120)
    return cluster


@pytest.fixture
def scratch() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="shopfloor-doctor-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def demo_site_data() -> dict:
    return yaml.safe_load(default_site_path().read_text())


def run_cli(*args: str) -> tuple[int, dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "shopfloor.ops.doctor", "--json", *args],
        capture_output=True, text=True, timeout=300, cwd="/", check=False,
    )
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


@pytest.mark.slow
def test_demo_site_passes_every_check(cluster: LocalCluster) -> None:
    """Slurm, munge, partitions, Python as nobody, a real job reaching the hub address, the
    database and the ports: nothing fails on the demo site as the demo installs it."""
    site = load_site(default_site_path())
    checks = Doctor(site, DoctorOptions(site_path=str(default_site_path()))).run()
    failed = [c for c in checks if c.status is Status.FAIL]
    assert not failed, failed
    names = {c.name: c for c in checks}
    assert names["connect"].status is Status.OK, names["connect"]
    assert "reached 127.0.0.1:8081" in names["connect"].summary
    assert names["python"].status is Status.OK
    assert {f"partition:{p}" for p in site.partitions} <= set(names)


def test_broken_site_file_is_named_and_exits_1(cluster: LocalCluster, scratch: Path) -> None:
    data = demo_site_data()
    data["partitions"]["cpu"]["max_walltime"] = "12:00:00"
    data["partitions"]["bigmem"] = {"description": "not in slurm.conf", "max_walltime": "1:00:00"}
    site_file = scratch / "site.yaml"
    site_file.write_text(yaml.safe_dump(data))
    code, report = run_cli("--site", str(site_file), "--skip", "connect", "--skip", "python",
                           "--skip", "ports", "--skip", "database")
    assert code == 1
    assert report["ok"] is False
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["slurm"]["status"] == "ok"
    assert checks["munge"]["status"] == "ok"
    assert checks["partition:gpu"]["status"] == "ok"
    cpu, bigmem = checks["partition:cpu"], checks["partition:bigmem"]
    assert cpu["status"] == "fail"
    assert "partitions.cpu.max_walltime is 12:00:00 but Slurm's MaxTime for cpu is 08:00:00" \
        in cpu["summary"]
    assert cpu["fix"].startswith(f"set partitions.cpu.max_walltime: '08:00:00' in {site_file}")
    assert bigmem["status"] == "fail"
    assert "'bigmem' is in the site file but not in Slurm" in bigmem["summary"]
    assert "cpu" in bigmem["summary"] and "debug" in bigmem["summary"]


def test_python_environment_users_cannot_enter_is_named(
    cluster: LocalCluster, scratch: Path
) -> None:
    # mkdtemp folders are 0700: like a venv made under /root, no job of a user can run it.
    venv_bin = scratch / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(load_site(default_site_path()).hub.python)
    data = demo_site_data()
    data["hub"]["python"] = str(venv_bin / "python")
    site_file = scratch / "site.yaml"
    site_file.write_text(yaml.safe_dump(data))
    code, report = run_cli("--site", str(site_file), "--skip", "connect", "--skip", "ports",
                           "--skip", "partitions", "--skip", "database")
    checks = {c["name"]: c for c in report["checks"]}
    assert code == 1
    assert checks["python"]["status"] == "fail"
    assert "nobody cannot run" in checks["python"]["summary"]
    assert checks["python"]["fix"].startswith(f"chmod o+rx {scratch}")


def test_service_user_without_the_sudo_rule_is_named(cluster: LocalCluster) -> None:
    # alice exists in the demo and may run nothing through sudo: the real `sudo -l -U`.
    site = load_site(default_site_path())
    options = DoctorOptions(service_user="alice")
    [check] = Doctor(site, options).check_sudo()
    assert check.status is Status.FAIL
    # Every command the hub runs through sudo is named: Slurm's tools and the two helper
    # scripts of the hub's environment (the doctor runs from it, like this test).
    venv_bin = os.path.dirname(sys.executable)
    assert "missing " in check.summary
    for command in ("/usr/bin/sbatch", "/usr/bin/scancel", f"{venv_bin}/shopfloor-as-user",
                    f"{venv_bin}/shopfloor-privileged"):
        assert command in check.summary, check.summary
    assert "not allowed to run sudo" in check.detail
    assert os.path.exists("/usr/bin/sbatch")
