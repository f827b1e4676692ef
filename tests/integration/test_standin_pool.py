"""The scale curve's pooled stand-in under real Slurm: a job registers its port with the pool
and only sleeps; the port answers while the job runs and stops answering once Slurm ends it.

Runs as root (the pool and the job run as ``alice`` through ``sudo``) on the local cluster.
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
USER = "alice"

pytestmark = [pytest.mark.cluster]


def answers(port: int) -> dict[str, str] | None:
    """The headers of a GET to the stand-in's port, or ``None`` when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/user/{USER}/api", timeout=3) as r:
            return dict(r.headers) if r.status == 200 else None
    except (urllib.error.URLError, OSError):
        return None


def wait_for(check: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.25)
    return False


def job_state(job_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True,
                         text=True, check=False).stdout.strip()
    return out or "GONE"


@pytest.fixture
def pool() -> Iterator[Path]:
    """The pool, run as the user in the user's own 0700 folder; stopped after the test."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the pool and the job run as alice through sudo")
    account = pwd.getpwnam(USER)
    root = Path(tempfile.mkdtemp(prefix="shopfloor-test-standinpool-", dir="/tmp"))
    root.chmod(0o711)
    folder = root / "pool"
    folder.mkdir(mode=0o700)
    os.chown(folder, account.pw_uid, account.pw_gid)
    sock = folder / "standin.sock"
    proc = subprocess.Popen(["sudo", "-u", USER, "--", PYTHON,
                             str(REPO / "benchmarks" / "standinpool.py"), "--socket", str(sock)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        assert wait_for(sock.exists, 20), "the pool did not start"
        yield sock
    finally:
        proc.terminate()
        proc.wait(15)
        subprocess.run(["rm", "-rf", str(root)], check=False)


def test_a_slurm_jobs_port_answers_from_the_pool_until_slurm_ends_the_job(pool: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = (f"{PYTHON} {REPO / 'benchmarks' / 'standin.py'} --hub-version=6.1.1 "
               f"--pool={pool} --ip=127.0.0.1 --port={port}")
    job_id = subprocess.run(
        ["sudo", "-u", USER, "sbatch", "--parsable", "-p", "cpu", "-t", "3", "--mem=11M",
         "-J", "test-standin-pool", "-o", "/dev/null", "--wrap", command],
        capture_output=True, text=True, check=True, cwd="/tmp").stdout.strip().split(";")[0]
    try:
        assert wait_for(lambda: answers(port) is not None, 90), (
            f"job {job_id} ({job_state(job_id)}): nothing answers on {port}")
        headers = answers(port)
        assert headers is not None and headers["X-JupyterHub-Version"] == "6.1.1"
        assert job_state(job_id) == "RUNNING"  # one real job per session in squeue
        subprocess.run(["scancel", job_id], check=True)
        assert wait_for(lambda: answers(port) is None, 60), "the port outlived its job"
    finally:
        subprocess.run(["scancel", job_id], check=False)
