"""The scale benchmark's new measurements (hub memory, ready counts, our hub's config without
the apps service) and the scale curve's parts: node capacity, the pooled stand-in (a real
pool process and real stand-in processes on this machine, no Slurm), the curve and its goals.
No hub, no Slurm here; tests/integration/test_standin_pool.py runs the pool under Slurm."""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from traitlets.config import Config

# ``benchmarks`` is a top-level folder run as ``python -m benchmarks.<name>`` from the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import scale, scalecurve, standinpool
from benchmarks.hubprocess import HubPorts

PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[2]


def test_resident_memory_is_read_from_proc_status_in_mb() -> None:
    assert scale.parse_vmrss("Name:\tpython\nVmRSS:\t  162816 kB\nVmSwap:\t0 kB\n") == 159.0
    assert scale.parse_vmrss("Name:\tkthreadd\n") is None  # kernel threads have no VmRSS
    assert scale.parse_vmrss("VmRSS:\tlots kB\n") is None
    own = scale.rss_mb(os.getpid())
    assert own is not None and own > 5
    assert scale.rss_mb(2**22 + 12345) is None


def test_only_ready_servers_count_as_known_again() -> None:
    servers = {"s001": {"ready": True}, "s002": {"ready": False, "pending": "spawn"},
               "s003": {"ready": True}}
    assert scale.count_ready(servers) == 2
    assert scale.count_ready({}) == 0


def test_our_bench_hub_leaves_the_apps_service_out_so_restarts_do_not_wait_for_it(
    tmp_path: Path,
) -> None:
    scene = scale.Scene(tmp_path / "scene")
    scene.root.mkdir()
    scene.make(["ours"])
    state = tmp_path / "ours"
    state.mkdir()
    text = scale.ours_config(scene, state, HubPorts(9200), 5, 2, "t0k")
    config = Config()
    exec(compile(text, "jupyterhub_config.py", "exec"), {"get_config": lambda: config})
    names = [s["name"] for s in config.JupyterHub.services]
    assert "apps" not in names and "bench" in names
    for role in config.JupyterHub.load_roles:
        assert "apps" not in role.get("services", [])
    # Accounting tools are linked when the cluster has them (the hub validates with them).
    for tool in ("sbatch", "squeue", "scontrol"):
        assert (scene.bin_dir("ours") / tool).exists()


# -- the scale curve: capacity ---------------------------------------------------------------


def test_a_node_takes_as_many_jobs_as_its_cpu_slots_or_free_memory_allow() -> None:
    # 4 CPUs x 100 = 400 slots; 4000 MB / 11 MB = 363 jobs: memory decides.
    assert scalecurve.jobs_per_node(4, 4000, 0) == 363
    # Other users' allocations leave less room.
    assert scalecurve.jobs_per_node(4, 4000, 1024) == 270
    # Plenty of memory: the CPU slots decide.
    assert scalecurve.jobs_per_node(2, 100_000, 0) == 200
    assert scalecurve.jobs_per_node(4, 4000, 4000) == 0
    assert scalecurve.jobs_per_node(4, 4000, 5000) == 0


def test_a_point_takes_the_fewest_preferred_nodes_that_hold_its_jobs() -> None:
    caps = [("gpu1", 363), ("debug1", 363), ("node2", 270), ("node1", 363)]
    assert scalecurve.choose_nodes(100, caps) == ["gpu1"]
    assert scalecurve.choose_nodes(363, caps) == ["gpu1"]
    assert scalecurve.choose_nodes(364, caps) == ["gpu1", "debug1"]
    assert scalecurve.choose_nodes(996, caps) == ["gpu1", "debug1", "node2"]
    assert scalecurve.choose_nodes(1000, caps) == ["gpu1", "debug1", "node2", "node1"]
    # A full node is skipped, not counted.
    assert scalecurve.choose_nodes(300, [("gpu1", 0), ("debug1", 363)]) == ["debug1"]
    with pytest.raises(ValueError, match=r"hold 726 jobs .* needs 1000"):
        scalecurve.choose_nodes(1000, caps[:2])


def test_the_curve_reads_available_memory_from_meminfo() -> None:
    text = "MemTotal: 24000000 kB\nMemFree: 100 kB\nMemAvailable: 20971520 kB\n"
    assert scalecurve.mem_available_mb(text) == 20480
    assert scalecurve.mem_available_mb() > 0
    with pytest.raises(ValueError):
        scalecurve.mem_available_mb("MemTotal: 1 kB\n")


def test_point_arguments_are_scales_with_timeouts_growing_with_the_sessions() -> None:
    args = scalecurve.parse_args(["--ours-port", "8550", "--stock-port", "8560"])
    assert args.point_list == [100, 300, 1000] and args.min_free_gb == 6
    small, big = scalecurve.point_args(100, args), scalecurve.point_args(1000, args)
    assert small.servers == 100 and small.phase_timeout == 420
    assert big.servers == 1000 and big.phase_timeout == 1200 and big.spawn_timeout == 300
    assert big.ours_port == 8550 and big.stock_port == 8560 and big.restart
    for bad in (["--points", "100,x"], ["--points", "0"], ["--arms", "ours,mine"],
                ["--min-free-gb", "0"]):
        with pytest.raises(SystemExit):
            scalecurve.parse_args(["--ours-port", "1", "--stock-port", "2", *bad])
    with pytest.raises(SystemExit):  # the ports are never guessed: others use the defaults
        scalecurve.parse_args([])


def test_a_sessions_processes_are_its_slurmstepd_and_everything_below_it() -> None:
    table = {
        1: (0, "/sbin/init"),
        10: (1, "slurmstepd: [2105.batch]"),
        11: (10, "sleep infinity"),
        20: (1, "slurmstepd: [2106.batch]"),
        21: (20, "/bin/bash /var/spool/slurmd/job02106/slurm_script"),
        22: (21, "sleep infinity"),
        30: (1, "slurmstepd: [9999.batch]"),  # someone else's job
        31: (30, "python train.py"),
        40: (1, "slurmstepd: [2106.0]"),  # a job step belongs to its job too
    }
    found = scalecurve.session_processes({"2105", "2106"}, table)
    assert sorted(found["2105"]) == [10, 11]
    assert sorted(found["2106"]) == [20, 21, 22, 40]
    assert "9999" not in found


def test_pss_and_the_process_table_read_this_machines_proc() -> None:
    assert scalecurve.pss_kb(os.getpid()) > 1000
    assert scalecurve.pss_kb(2**22 + 12345) == 0
    table = scalecurve.process_table()
    assert table[os.getpid()][0] == os.getppid() and "pytest" in table[os.getpid()][1]


# -- the pooled stand-in: registrations ------------------------------------------------------


def registration(**changes: object) -> bytes:
    body = {"host": "127.0.0.1", "port": 8888, "hub_version": "6.1.1", "server_name": "s001",
            "activity_url": "http://127.0.0.1:8081/hub/api/users/alice/activity",
            "api_token": "abc", "activity_interval": 300}
    body.update(changes)
    return json.dumps(body).encode()


def test_the_pool_accepts_a_well_formed_registration() -> None:
    reg = standinpool.parse_registration(registration())
    assert (reg.host, reg.port, reg.server_name, reg.activity_interval) == (
        "127.0.0.1", 8888, "s001", 300.0)
    assert standinpool.parse_registration(registration(host="0.0.0.0")).host == "0.0.0.0"


@pytest.mark.parametrize(("changes", "field"), [
    ({"host": "example.org"}, "host"),
    ({"host": None}, "host"),
    ({"port": 0}, "port"),
    ({"port": 70000}, "port"),
    ({"port": "8888"}, "port"),
    ({"port": True}, "port"),
    ({"hub_version": "6.1.1\r\nSet-Cookie: x=1"}, "hub_version"),  # header injection
    ({"api_token": "abc\r\nX-Evil: 1"}, "api_token"),
    ({"server_name": 5}, "server_name"),
    ({"activity_url": "file:///etc/shadow"}, "activity_url"),
    ({"activity_url": "http://"}, "activity_url"),
    ({"activity_interval": 0}, "activity_interval"),
    ({"activity_interval": "often"}, "activity_interval"),
])
def test_the_pool_refuses_each_bad_field_by_name(changes: dict[str, object], field: str) -> None:
    with pytest.raises(standinpool.RegistrationError, match=f"^{field}: "):
        standinpool.parse_registration(registration(**changes))


def test_the_pool_refuses_what_is_not_a_json_object() -> None:
    for line in (b"{not json", b"[1, 2]", b""):
        with pytest.raises(standinpool.RegistrationError):
            standinpool.parse_registration(line)


def test_every_request_gets_200_with_the_hubs_version_and_head_gets_no_body() -> None:
    full = standinpool.response_head("6.1.1", head_only=False)
    head = standinpool.response_head("6.1.1", head_only=True)
    assert full.startswith(b"HTTP/1.1 200 OK\r\n") and b"X-JupyterHub-Version: 6.1.1" in full
    assert full.endswith(standinpool.BODY) and not head.endswith(standinpool.BODY)
    assert b"X-JupyterHub-Version" not in standinpool.response_head("", head_only=True)


def test_the_jobs_stand_in_script_registers_with_the_pool(tmp_path: Path) -> None:
    text = scalecurve.pooled_standin_wrapper(Path(PYTHON), scale.STANDIN, "6.1.1",
                                             tmp_path / "pool" / "s.sock")
    compile(text, "standin", "exec")
    assert text.startswith(f"#!{PYTHON}\n")
    assert f"'--pool={tmp_path / 'pool' / 's.sock'}'" in text and "'--hub-version=6.1.1'" in text


# -- the pooled stand-in: real processes ---------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Path]:
    """A real pool process on a socket in a private folder; stopped after the test."""
    folder = tmp_path / "pool"
    folder.mkdir(mode=0o700)
    sock = folder / "standin.sock"
    proc = subprocess.Popen([PYTHON, str(REPO / "benchmarks" / "standinpool.py"),
                             "--socket", str(sock)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while not sock.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the pool did not start"
        time.sleep(0.05)
    yield sock
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=10)[0].decode()
    assert proc.returncode == 0, out
    assert not sock.exists()  # the pool removes its socket


def start_standin(sock: Path, port: int, env: dict[str, str] | None = None
                  ) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PYTHON, str(scale.STANDIN), "--hub-version=6.1.1", f"--pool={sock}",
         "--ip=127.0.0.1", f"--port={port}", "--extra-arg-the-hub-adds"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def get(port: int, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/user/alice/s001/api", method=method)
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status, dict(resp.headers), resp.read()


def wait_answering(port: int, want: bool, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            get(port)
            answering = True
        except (urllib.error.URLError, OSError):
            answering = False
        if answering == want:
            return True
        time.sleep(0.05)
    return False


def process_name(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def test_a_pooled_stand_in_answers_while_its_process_lives_and_stops_when_it_ends(
    pool: Path,
) -> None:
    assert pool.stat().st_mode & 0o077 == 0  # the user's own socket: no group, no others
    port = free_port()
    job = start_standin(pool, port)
    try:
        assert wait_answering(port, True), job.stdout.read1().decode() if job.stdout else ""
        status, headers, body = get(port)
        assert status == 200 and headers["X-JupyterHub-Version"] == "6.1.1"
        assert body == standinpool.BODY
        status, headers, body = get(port, "HEAD")
        assert status == 200 and body == b""
        # The job's process is now ``sleep``, not an interpreter.
        deadline = time.monotonic() + 5
        while process_name(job.pid) != "sleep" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process_name(job.pid) == "sleep"
    finally:
        job.kill()  # what scancel does to the job
        job.wait(5)
    assert wait_answering(port, False), "the port still answers after its job ended"


def test_a_port_already_taken_fails_the_job_like_a_server_that_cannot_listen(
    pool: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        job = start_standin(pool, port)
        out = job.communicate(timeout=20)[0].decode()
    assert job.returncode == 1
    assert f"the pool refused 127.0.0.1:{port}: error:" in out


def test_the_pool_survives_oversized_and_half_requests_and_answers_the_next(pool: Path) -> None:
    port = free_port()
    job = start_standin(pool, port)
    try:
        assert wait_answering(port, True)
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (4 * standinpool.MAX_HEAD))
            conn.settimeout(10)
            try:
                assert conn.recv(100) == b""  # closed without an answer
            except ConnectionResetError:
                pass
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(b"GET / HTT")  # and never more
            assert get(port)[0] == 200  # others are still answered meanwhile
    finally:
        job.kill()
        job.wait(5)


def test_the_pool_refuses_a_registration_that_is_not_json_and_keeps_serving(pool: Path) -> None:
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(str(pool))
        conn.sendall(b'{"host": "127.0.0.1", "port": "80; rm -rf /"}\n')
        assert conn.makefile("rb").readline().startswith(b"error: port: ")
    port = free_port()
    job = start_standin(pool, port)
    try:
        assert wait_answering(port, True)
    finally:
        job.kill()
        job.wait(5)


def test_the_pool_reports_activity_for_each_server_with_its_token(pool: Path) -> None:
    seen: list[tuple[str, str, dict[str, object]]] = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, self.headers["Authorization"], body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{hub.server_port}/hub/api/users/alice/activity"
    job = start_standin(pool, free_port(), env={
        "JUPYTERHUB_ACTIVITY_URL": url, "JUPYTERHUB_API_TOKEN": "s3cret",
        "JUPYTERHUB_SERVER_NAME": "s001"})
    try:
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        job.kill()
        job.wait(5)
        hub.shutdown()
    path, auth, body = seen[0]
    assert path == "/hub/api/users/alice/activity" and auth == "token s3cret"
    assert set(body["servers"]) == {"s001"}  # type: ignore[arg-type]


# -- the curve and its goals -----------------------------------------------------------------


def point(servers: int, ours_rate: float, stock_rate: float, p95: float,
          restart: float | None) -> dict[str, object]:
    def arm(rate: float) -> dict[str, object]:
        return {"spawn": {"ready": servers, "seconds": 10.0},
                "window": {"squeue_calls_per_s": rate, "hub_rss_mb": 150.0,
                           "hub_cpu_percent": {"own": 5.0, "children": 1.0},
                           "latency": {"user_model": {"p95_ms": p95}}},
                "pages": {"spawn_page": {"p50_ms": 10.0}, "home": {"p50_ms": 12.0}},
                "restart": {"all_known_s": restart}}
    return {"servers": servers, "ours": arm(ours_rate), "stock": arm(stock_rate),
            "memory": {"ours": {"per_session_pss_mb": 2.5}}}


def test_the_curve_has_one_row_per_point_and_arm_with_the_issues_figures() -> None:
    rows = scalecurve.curve_rows([point(100, 0.2, 3.3, 28, 3.4), point(1000, 0.21, 33, 60, 9)])
    assert [(r["sessions"], r["arm"]) for r in rows] == [
        (100, "ours"), (100, "stock"), (1000, "ours"), (1000, "stock")]
    assert rows[0]["squeue/s"] == 0.2 and rows[0]["session PSS MB"] == 2.5
    assert rows[1]["session PSS MB"] is None and rows[3]["squeue/s"] == 33
    goals = scalecurve.curve_goals(rows)
    assert goals["at_sessions"] == 1000
    assert goals["p95_ms"]["met"] and goals["restart_all_known_s"]["met"]
    assert goals["squeue_flat"]["met"] and goals["squeue_flat"]["got"] == 1.05
    assert goals["squeue_flat"]["stock_growth"] == 10.0
    table = scalecurve.curve_table({"points": [100, 1000], "host": "h", "cpus": 2,
                                    "curve": rows, "goals": goals, "stopped": None})
    assert "1000/1000" in table and "NOT met" not in table


def test_each_goal_fails_on_its_own() -> None:
    slow = scalecurve.curve_goals(scalecurve.curve_rows(
        [point(100, 0.2, 3, 28, 3), point(1000, 0.2, 30, 140, 3)]))
    assert not slow["p95_ms"]["met"] and slow["restart_all_known_s"]["met"]
    late = scalecurve.curve_goals(scalecurve.curve_rows(
        [point(100, 0.2, 3, 28, 3), point(1000, 0.2, 30, 50, None)]))
    assert not late["restart_all_known_s"]["met"]  # never all known again
    growing = scalecurve.curve_goals(scalecurve.curve_rows(
        [point(100, 0.2, 3, 28, 3), point(1000, 2.0, 30, 50, 5)]))
    assert not growing["squeue_flat"]["met"] and growing["squeue_flat"]["got"] == 10.0
    single = scalecurve.curve_goals(scalecurve.curve_rows([point(1000, 0.2, 30, 50, 5)]))
    assert not single["squeue_flat"]["met"]  # flatness needs two points
    assert scalecurve.curve_goals([]) == {}
