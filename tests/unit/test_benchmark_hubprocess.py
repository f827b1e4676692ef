"""BenchHub.stop waits until the hub's ports are free, so a restart right after finds them so.

Real sockets and a real child process on this machine; port base 8840-8849 (this test
module's own), nothing from the shared cluster.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

# ``benchmarks`` is a top-level folder run as ``python -m benchmarks.<name>`` from the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.hubprocess import (
    BenchHub,
    HubError,
    HubPorts,
    ProcessId,
    child_processes,
    port_in_use,
    wait_ports_free,
)

BASE = 8843  # inside this engineer's test port base (8840-8849)


def listener(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def hub_with_child(tmp_path: Path, ports: HubPorts, child_code: str, hub_seconds: int) -> BenchHub:
    """A stand-in hub process that starts ``child_code`` in a session of its own (as
    JupyterHub starts its proxy and services), waits for its ``up`` line, then sleeps."""
    hub_code = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', {child_code!r}], stdout=subprocess.PIPE,"
        " start_new_session=True)\n"
        "print(p.stdout.readline().decode(), end='', flush=True)\n"
        f"time.sleep({hub_seconds})\n"
    )
    hub = BenchHub("t", tmp_path, ports, config="", job_id_pattern=r"(\d+)")
    hub.process = subprocess.Popen([sys.executable, "-c", hub_code], stdout=subprocess.PIPE,
                                   start_new_session=True)
    assert hub.process.stdout is not None and hub.process.stdout.readline() == b"up\n"
    return hub


def test_wait_ports_free_returns_once_the_listener_closes() -> None:
    sock = listener(BASE)
    threading.Timer(0.6, sock.close).start()
    started = time.monotonic()
    assert wait_ports_free([BASE, BASE + 1], timeout=10) == []
    waited = time.monotonic() - started
    assert 0.5 <= waited < 5
    assert not port_in_use(BASE)


def test_wait_ports_free_names_the_ports_still_held() -> None:
    with listener(BASE + 1):
        started = time.monotonic()
        assert wait_ports_free([BASE, BASE + 1, BASE + 2], timeout=0.5) == [BASE + 1]
        assert time.monotonic() - started >= 0.5


def test_stop_waits_for_a_process_of_the_hub_that_outlives_it(tmp_path: Path) -> None:
    """Like JupyterHub's proxy (a session of its own, not in the hub's group): a process the
    hub started keeps the hub's proxy port for a while after the hub has exited. stop returns
    only once that port is free."""
    ports = HubPorts(BASE)
    straggler = (
        "import socket, time\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('127.0.0.1', {ports.proxy_api})); s.listen()\n"
        "print('up', flush=True); time.sleep(1.5)\n"
    )
    hub = hub_with_child(tmp_path, ports, straggler, hub_seconds=60)
    assert port_in_use(ports.proxy_api)
    assert hub.stop(timeout=10, ports_timeout=10) == []
    assert hub.process.poll() is not None
    assert not any(port_in_use(p) for p in ports.all)


def test_stop_reports_a_port_someone_else_still_holds(tmp_path: Path) -> None:
    ports = HubPorts(BASE)
    hub = BenchHub("t", tmp_path, ports, config="", job_id_pattern=r"(\d+)")
    with listener(ports.proxy_api):
        assert hub.stop(ports_timeout=0.3) == [ports.proxy_api]
        try:
            hub.start(timeout=1)
        except HubError as exc:
            assert str(ports.proxy_api) in str(exc)
        else:
            raise AssertionError("start must refuse a port still in use")


def test_stop_ends_a_service_the_hub_left_running(tmp_path: Path) -> None:
    """A managed service runs in a session of its own; a hub that dies without stopping it
    (killed mid-shutdown) must not leave it holding its port for the next hub."""
    ports = HubPorts(BASE)
    service_port = BASE + 5
    service = (
        "import signal, socket, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('127.0.0.1', {service_port})); s.listen()\n"
        "print('up', flush=True); time.sleep(120)\n"
    )
    hub = hub_with_child(tmp_path, ports, service, hub_seconds=120)
    children = child_processes(hub.process.pid)
    assert len(children) == 1 and children[0].alive()
    assert port_in_use(service_port)
    try:
        assert hub.stop(timeout=10, ports_timeout=10) == []
        assert not children[0].alive()
        assert not port_in_use(service_port)
    finally:
        if children[0].alive():  # only the process this test started, by pid
            os.kill(children[0].pid, signal.SIGKILL)


def test_a_reused_pid_is_not_taken_for_the_process_noted() -> None:
    me = child_processes(os.getppid())
    mine = next(p for p in me if p.pid == os.getpid())
    assert mine.alive()
    assert not ProcessId(mine.pid, mine.started + 1).alive()
