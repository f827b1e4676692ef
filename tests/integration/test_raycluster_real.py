"""Real Ray clusters on the real local Slurm cluster, run as alice; bob tries to get in.

The library runs as alice in a subprocess (``sudo -u alice python -c ...``), exactly as it
runs in her kernel; the checks on what is left behind and what bob can do run as root/bob.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import RunningHub, squeue_jobs

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

PYTHON = "/opt/shopfloor/venv/bin/python"
REQUEST = ("ResourceRequest(partition='cpu', nodes=1, cpus=1, memory_gb=1, "
           "walltime_minutes=15)")
PRELUDE = (
    "import json, time\n"
    "from shopfloor.ray.cluster import RayCluster\n"
    "from shopfloor.resources import ResourceRequest\n"
    "from shopfloor.site import RaySettings\n"
)


def as_user(user: str, code: str, timeout: float = 90, env: dict[str, str] | None = None) -> dict:
    """Run ``code`` as ``user`` with the job's Python; it prints one JSON line last."""
    variables = [f"{key}={value}" for key, value in (env or {}).items()]
    out = subprocess.run(
        ["sudo", "-n", "-u", user, "env", *variables, PYTHON, "-c", PRELUDE + code],
        capture_output=True, text=True, timeout=timeout, cwd="/tmp", check=False,
    )
    if out.returncode != 0:
        raise AssertionError(f"as {user} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(cmd: list[str], user: str | None = None) -> subprocess.CompletedProcess[str]:
    if user:
        cmd = ["sudo", "-n", "-u", user, *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def leftovers(user: str, job_ids: list[str]) -> tuple[list[str], list[str]]:
    """(processes, temp folders) of ``user`` still naming one of the clusters' jobs."""
    markers = [f"sfray-{user}-{job}-" for job in job_ids]
    procs = [line for line in run(["ps", "-u", user, "-o", "pid=,args="]).stdout.splitlines()
             if any(m in line for m in markers)]
    dirs = [str(p) for p in Path("/tmp").glob(f"sfray-{user}-*")
            if any(p.name.startswith(m) for m in markers)]
    return procs, dirs


def wait_gone(job_ids: list[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = run(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%T"]).stdout.split()
        if not [s for s in out if s in {"PENDING", "RUNNING", "COMPLETING"}]:
            return
        time.sleep(0.5)
    raise AssertionError(f"jobs {job_ids} still in the queue after {timeout} s")


def session_env(hub: RunningHub, user: str) -> dict[str, str]:
    """What the hub gives a session: its API URL and a token of ``user``'s."""
    return {"JUPYTERHUB_API_URL": f"{hub.url}/hub/api",
            "JUPYTERHUB_API_TOKEN": hub.client(user).token()}


@pytest.mark.hub
def test_create_run_scale_lose_a_worker_and_stop_leaves_nothing(hub: RunningHub) -> None:
    name = f"it-{os.getpid()}"
    env = session_env(hub, "alice")
    started = as_user("alice", f"""
c = RayCluster.create({name!r}, {REQUEST}, settings=RaySettings(idle_timeout_minutes=10))
c.wait_ready(90)
job = c.submit("python -c 'import ray; ray.init(); print(\\"RES\\", ray.cluster_resources())'")
logs = "".join(c.follow_logs(job, timeout=60))
workers = c.scale(2)
status = c.wait_ready(90)
print(json.dumps({{"head": c.config()["head_job"], "workers": workers, "logs": logs,
                  "alive": status.nodes_alive, "cpus": status.cpus,
                  "store": status.object_store_bytes, "job": c.job_status(job)}}))
""", env=env)
    jobs = [started["head"], *started["workers"]]
    try:
        assert started["job"] == "SUCCEEDED"
        assert "RES" in started["logs"] and "'CPU': 1.0" in started["logs"]
        assert started["alive"] == 2 and started["cpus"] == 2
        assert 80 << 20 <= started["store"] // 2 <= 200 << 20  # 15 % of 1 GiB per node
        (worker,) = started["workers"]
        assert run(["scancel", worker]).returncode == 0
        wait_gone([worker])
        seen = as_user("alice", f"""
from shopfloor.widgets.ray_panel import RayClusterPanel
class NoHub:
    def partitions(self):
        return {{"partitions": []}}
c = RayCluster({name!r})
panel = RayClusterPanel(c, hub=NoHub(), auto_refresh=False)
print(json.dumps({{"status": c.status().message, "phase": c.status().phase,
                  "panel": panel.summary.value}}))
""")
        assert seen["phase"] == "degraded", seen
        assert f"worker job(s) {worker} ended" in seen["status"]
        assert "degraded" in seen["panel"] and worker in seen["panel"]
        # Scaling back up replaces the lost worker: the cluster is whole (ready) again.
        healed = as_user("alice", f"""
c = RayCluster({name!r})
again = c.scale(2)
status = c.wait_ready(90)
print(json.dumps({{"again": again, "phase": status.phase, "lost": status.lost_workers,
                  "workers": c.config()["workers"], "alive": status.nodes_alive}}))
""", env=env)
        jobs += healed["again"]
        assert healed["phase"] == "ready" and healed["alive"] == 2, healed
        assert worker not in healed["workers"] and healed["lost"] == []
        assert healed["workers"] == healed["again"] and len(healed["again"]) == 1
        # The whole cluster goes through the hub's resource model: cpu has 2 nodes.
        def cluster_jobs() -> list[str]:
            return [j["id"] for j in squeue_jobs("alice") if j["name"].endswith(f"-{name}")]

        before = cluster_jobs()
        refused = as_user("alice", f"""
from shopfloor.resources import RequestError
c = RayCluster({name!r})
try:
    c.scale(40)
    print(json.dumps({{"refused": None}}))
except RequestError as exc:
    print(json.dumps({{"refused": exc.problems}}))
""", env=env)
        assert refused["refused"] and "nodes" in refused["refused"], refused
        assert "40" in refused["refused"]["nodes"]
        assert cluster_jobs() == before
        stopped = as_user("alice", f"""
c = RayCluster({name!r})
c.stop()
phase = c.status().phase
c.forget()
print(json.dumps({{"phase": phase, "kept": c.directory.exists()}}))
""")
        assert stopped["phase"] == "stopped" and not stopped["kept"]
        wait_gone(jobs)
        deadline = time.monotonic() + 10
        while any(leftovers("alice", jobs)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert leftovers("alice", jobs) == ([], [])
    finally:
        run(["scancel", *jobs])


@pytest.fixture(scope="module")
def alice_cluster(local_cluster: object) -> Iterator[dict]:
    """A ready one-node cluster of alice's, with one finished job that printed its env."""
    name = f"sec-{os.getpid()}"
    info = as_user("alice", f"""
c = RayCluster.create({name!r}, {REQUEST}, settings=RaySettings(idle_timeout_minutes=10))
c.wait_ready(90)
job = c.submit("env; echo DONE")
logs = "".join(c.follow_logs(job, timeout=60))
head = c.head()
print(json.dumps({{"name": c.name, "dir": str(c.directory), "token_file": str(c.token_file),
                  "address": c.dashboard_address, "job": c.config()["head_job"],
                  "temp_dir": head["temp_dir"], "logs": logs}}))
""")
    try:
        yield info
    finally:
        as_user("alice", f"c = RayCluster({name!r})\nc.stop()\nc.forget()\nprint('{{}}')")
        run(["scancel", info["job"]])


BOB_HTTP = """
import requests
url = {url!r}
out = {{}}
out["jobs_get"] = requests.get(url + "/api/jobs/", timeout=10).status_code
out["submit"] = requests.post(url + "/api/jobs/", json={{"entrypoint": "id"}},
                              timeout=10).status_code
out["submit_guess"] = requests.post(url + "/api/jobs/", json={{"entrypoint": "id"}},
                                    headers={{"Authorization": "Bearer " + "0" * 64}},
                                    timeout=10).status_code
out["nodes"] = requests.get(url + "/api/v0/nodes", timeout=10).status_code
from ray.job_submission import JobSubmissionClient
try:
    JobSubmissionClient(url).submit_job(entrypoint="id")
    out["sdk"] = "accepted"
except Exception as exc:
    out["sdk"] = type(exc).__name__
print(json.dumps(out))
"""


def test_bob_cannot_use_alices_cluster(alice_cluster: dict) -> None:
    seen = as_user("bob", BOB_HTTP.format(url=alice_cluster["address"]))
    assert seen["jobs_get"] == 401 and seen["submit"] == 401 and seen["nodes"] == 401
    assert seen["submit_guess"] == 403
    assert seen["sdk"] != "accepted"
    assert run(["cat", alice_cluster["token_file"]], user="bob").returncode != 0
    assert run(["ls", alice_cluster["dir"]], user="bob").returncode != 0
    temp = alice_cluster["temp_dir"]
    assert Path(temp).stat().st_mode & 0o777 == 0o700
    assert run(["touch", f"{temp}/bob-was-here"], user="bob").returncode != 0
    # Ray makes its own temp folder world-writable: it must stay unreachable inside ours.
    assert run(["touch", f"{temp}/r/bob-was-here"], user="bob").returncode != 0
    assert Path(temp, "r", "session_latest").exists()
    assert run(["ls", temp], user="bob").returncode != 0


def test_the_token_is_in_no_script_log_command_line_or_job_output(alice_cluster: dict) -> None:
    token = Path(alice_cluster["token_file"]).read_text().strip()
    assert len(token) >= 32
    assert Path(alice_cluster["token_file"]).stat().st_mode & 0o777 == 0o600
    assert "DONE" in alice_cluster["logs"] and "RAY_AUTH_MODE=token" in alice_cluster["logs"]
    assert token not in alice_cluster["logs"]
    script = run(["scontrol", "write", "batch_script", alice_cluster["job"], "-"]).stdout
    assert "shopfloor.ray.node" in script and token not in script
    assert token not in run(["scontrol", "show", "job", "-dd", alice_cluster["job"]]).stdout
    assert token not in run(["ps", "-eo", "args"]).stdout
    directory = Path(alice_cluster["dir"])
    for path in [*directory.glob("*.json"), *(directory / "logs").glob("*")]:
        assert token not in path.read_text(errors="replace"), path
    temp_logs = Path(alice_cluster["temp_dir"]).glob("r/session_latest/logs/*")
    for path in temp_logs:
        if path.is_file() and path.stat().st_size < 5_000_000:
            assert token not in path.read_text(errors="replace"), path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_dashboard_through_alices_server_adds_the_token_and_reaches_only_her_head(
    alice_cluster: dict,
) -> None:
    import requests

    port, secret = _free_port(), "jupyter-" + os.urandom(8).hex()
    env_token = f"JUPYTER_TOKEN={secret}"
    server = subprocess.Popen(
        ["sudo", "-n", "-u", "alice", "env", env_token, "/opt/shopfloor/venv/bin/jupyter",
         "server", f"--port={port}", "--ip=127.0.0.1", "--no-browser"],
        cwd="/tmp", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/shopfloor/ray/{alice_cluster['name']}/dashboard"
    auth = {"Authorization": f"token {secret}"}
    try:
        deadline = time.monotonic() + 40
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/api/status", headers=auth, timeout=2)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        ok = requests.get(f"{base}/api/version", headers=auth, timeout=10)
        assert ok.status_code == 200 and ok.json()["ray_version"].startswith("2.")
        jobs = requests.get(f"{base}/api/jobs/", headers=auth, timeout=10)
        assert jobs.status_code == 200 and isinstance(jobs.json(), list)
        token = Path(alice_cluster["token_file"]).read_text().strip()
        assert token not in ok.text + jobs.text + json.dumps(dict(jobs.headers))
        anonymous = requests.get(f"{base}/api/jobs/", timeout=10, allow_redirects=False)
        assert anonymous.status_code in (302, 403)
        unknown = requests.get(f"http://127.0.0.1:{port}/shopfloor/ray/nope/dashboard/",
                               headers=auth, timeout=10)
        assert unknown.status_code == 404
        host, ray_port = alice_cluster["address"].removeprefix("http://").split(":")
        generic = requests.get(f"http://127.0.0.1:{port}/proxy/{host}:{ray_port}/api/jobs/",
                               headers=auth, timeout=10)
        assert generic.status_code in (403, 404)
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.mark.hub
def test_hub_serves_the_sites_ray_settings_to_its_users(hub: RunningHub) -> None:
    import requests

    alice = hub.client("alice")
    resp = alice.api("GET", "/shopfloor/ray", token=alice.token())
    assert resp.status_code == 200, resp.text
    settings = resp.json()
    assert settings["idle_timeout_minutes"] == 30 and settings["temp_root"] == "/tmp"
    assert settings["state_dir"] == "{home}/.shopfloor/ray"
    anonymous = requests.get(f"{hub.url}/hub/api/shopfloor/ray", timeout=10)
    assert anonymous.status_code == 403
