"""bob attacks alice's next Ray cluster on the real stack: squatted temp folders and ports.

Before the fix, a folder bob made at ``/tmp/shopfloor-ray-alice-<next job>-0`` made alice's
head refuse to start, and a port bob held on 127.0.0.1 (only) could be picked by the head as
"free on the node address" while Ray binds it on 0.0.0.0: the GCS died and ``status()`` said
"Stopped.".
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_raycluster_real import REQUEST, as_user, run, wait_gone

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

#: Ports bob holds on 127.0.0.1: a third of the kernel's ephemeral range, so that a launcher
#: that checks only the node address picks at least one of them for its ~9 ports (p > 0.97).
SQUATTED_PORTS = 9000
SQUATTER = """
import resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held = []
for address, count in ((\"127.0.0.1\", {count}), (\"127.0.2.1\", 200), (\"127.0.2.2\", 200)):
    for _ in range(count):
        sock = socket.socket()
        sock.bind((address, 0))
        sock.listen(1)
        held.append(sock)
print(len(held), flush=True)
sys.stdin.read()
"""


@pytest.fixture
def port_squatter(local_cluster: object) -> Iterator[int]:
    """bob holds many ports on 127.0.0.1 (like a kernel or a local Ray) and on node addresses."""
    proc = subprocess.Popen(
        ["sudo", "-n", "-u", "bob", "/opt/shopfloor/venv/bin/python", "-c",
         SQUATTER.format(count=SQUATTED_PORTS)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/tmp",
    )
    try:
        held = int((proc.stdout.readline() if proc.stdout else "") or 0)
        assert held >= SQUATTED_PORTS, "the squatter could not hold its ports"
        yield held
    finally:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _next_job_id() -> int:
    """The id Slurm gives the next job (bob submits and cancels a throwaway job)."""
    job = run(["sbatch", "--parsable", "-p", "cpu", "-t", "1", "-o", "/dev/null", "-H",
               "--wrap", "true"], user="bob").stdout.strip()
    run(["scancel", job])
    return int(job) + 1


@pytest.fixture
def squatted_dirs(local_cluster: object) -> Iterator[list[Path]]:
    """bob makes the folders alice's next jobs would have used, as dirs and as links."""
    first = _next_job_id()
    made: list[Path] = []
    try:
        for job in range(first, first + 25):
            for index in (0, 1):
                name = Path(f"/tmp/sfray-alice-{job}-{index}")
                if run(["mkdir", "-m", "700", str(name)], user="bob").returncode == 0:
                    made.append(name)
                link = Path(f"{name}-")
                if run(["ln", "-s", "/tmp", str(link)], user="bob").returncode == 0:
                    made.append(link)
        assert made
        yield made
    finally:
        for path in made:
            run(["rm", "-rf", str(path)], user="bob")


def test_bob_cannot_deny_alices_cluster_with_squatted_folders_and_ports(
    squatted_dirs: list[Path], port_squatter: int
) -> None:
    name = f"iso-{os.getpid()}"
    info = as_user("alice", f"""
c = RayCluster.create({name!r}, {REQUEST}, settings=RaySettings(idle_timeout_minutes=10))
try:
    status = c.wait_ready(150)
    print(json.dumps({{"job": c.config()["head_job"], "phase": status.phase,
                      "head": c.head(), "message": status.message}}))
except Exception as exc:
    print(json.dumps({{"job": c.config()["head_job"], "phase": c.status().phase,
                      "head": c.head(), "message": str(exc)}}))
finally:
    c.stop()
""", timeout=240)
    try:
        assert info["phase"] == "ready", info["message"]
        temp = Path(info["head"]["temp_dir"])
        assert temp not in squatted_dirs and not any(
            str(temp).startswith(f"{p}/") for p in squatted_dirs)
        assert temp.name.startswith(f"sfray-alice-{info['job']}-0-")
        # Some of bob's folders were the old names of this very job: alice used none of them.
        assert Path(f"/tmp/sfray-alice-{info['job']}-0") in squatted_dirs
        for path in squatted_dirs:
            if not path.is_symlink():
                assert path.stat().st_uid == pwd.getpwnam("bob").pw_uid
                assert list(path.iterdir()) == []
        ports = {info["head"]["gcs_port"], info["head"]["dashboard_port"]}
        assert all(p > 0 for p in ports)
    finally:
        run(["scancel", str(info["job"])])
        wait_gone([str(info["job"])])
        as_user("alice", f"RayCluster({name!r}).forget()\nprint(json.dumps({{}}))")


def test_a_head_that_cannot_start_says_why(local_cluster: object) -> None:
    """A site temp root another user can change is refused; status() gives the reason."""
    name = f"why-{os.getpid()}"
    open_root = Path("/tmp/sfopen")
    open_root.mkdir(exist_ok=True)
    open_root.chmod(0o777)  # world-writable without the sticky bit: bob could rename ours
    try:
        info = as_user("alice", f"""
c = RayCluster.create({name!r}, {REQUEST},
                      settings=RaySettings(idle_timeout_minutes=10, temp_root={str(open_root)!r}))
try:
    c.wait_ready(90)
    out = {{"phase": "ready"}}
except Exception as exc:
    out = {{"phase": c.status().phase, "message": c.status().message, "error": str(exc)}}
c.stop()
out["job"] = c.config()["head_job"]
c.forget()
print(json.dumps(out))
""", timeout=150)
        assert info["phase"] == "stopped", info
        assert "could not start" in info["message"] and "ray.temp_root" in info["message"]
        assert info["message"] != "Stopped."
        assert json.dumps(info)  # the reason reached alice's own process
    finally:
        open_root.rmdir()
