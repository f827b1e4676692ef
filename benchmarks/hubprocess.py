"""A JupyterHub process that a benchmark starts, drives and always stops.

Each hub gets its own state folder (database, cookie secret, pid files, log), its own public,
hub-API and proxy-API ports, and runs in its own process group. :meth:`BenchHub.stop` ends
the hub's group, then its managed services' and the proxy's (JupyterHub starts both in
sessions of their own, so they would outlive a killed hub and hold their ports), and waits
until the hub's ports are free; nothing is matched by name (children by pid and start time).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

#: Python of the environment the hubs (and, through the site file, the jobs) run.
VENV_PYTHON = Path(sys.executable)


class HubError(RuntimeError):
    """A benchmark hub could not start; the message says why and where its log is."""


@dataclass(frozen=True)
class HubPorts:
    """Public (proxy) port, hub API port and proxy API port: ``base``, ``base+1``, ``base+2``."""

    base: int

    @property
    def public(self) -> int:
        return self.base

    @property
    def hub_api(self) -> int:
        return self.base + 1

    @property
    def proxy_api(self) -> int:
        return self.base + 2

    @property
    def all(self) -> tuple[int, int, int]:
        return (self.public, self.hub_api, self.proxy_api)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something already listens on ``host:port``."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


@dataclass(frozen=True)
class ProcessId:
    """A process by pid *and* start time, so a pid reused by an unrelated process is not it."""

    pid: int
    started: int

    def alive(self) -> bool:
        return _start_time(self.pid) == self.started


def _start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat`` (start time in clock ticks); None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count after its last ")".
    return int(stat.rsplit(")", 1)[1].split()[19])


def child_processes(parent: int) -> list[ProcessId]:
    """The live direct children of ``parent`` (from ``/proc``), each with its start time."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(ProcessId(int(entry.name), int(fields[19])))
    return found


def wait_ports_free(ports: Iterable[int], timeout: float, interval: float = 0.2) -> list[int]:
    """Wait up to ``timeout`` seconds until nothing listens on any of ``ports`` (127.0.0.1);
    return those still listening then (empty: all free)."""
    deadline = time.monotonic() + timeout
    while True:
        busy = [p for p in ports if port_in_use(p)]
        if not busy or time.monotonic() >= deadline:
            return busy
        time.sleep(interval)


def proxy_config_lines(state_dir: Path, ports: HubPorts) -> list[str]:
    """Config lines giving a hub its own proxy API port and pid files in its state folder."""
    return [
        f"c.JupyterHub.pid_file = {str(state_dir / 'jupyterhub.pid')!r}",
        f"c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:{ports.proxy_api}'",
        f"c.ConfigurableHTTPProxy.pid_file = {str(state_dir / 'proxy.pid')!r}",
    ]


class BenchHub:
    """One JupyterHub (and its proxy) started from a generated ``jupyterhub_config.py``.

    ``config`` is the text of the config file; it is written to ``state_dir``.
    ``job_id_pattern`` finds the Slurm job ids this hub submitted in its log (one capture
    group), so the benchmark knows, and can cancel, exactly the jobs it made.
    """

    def __init__(
        self, name: str, state_dir: Path, ports: HubPorts, config: str, job_id_pattern: str
    ) -> None:
        self.name = name
        self.state_dir = state_dir
        self.ports = ports
        self.config = config
        self.job_id_pattern = re.compile(job_id_pattern)
        self.config_file = state_dir / "jupyterhub_config.py"
        self.log_file = state_dir / "jupyterhub.log"
        self.proxy_pid_file = state_dir / "proxy.pid"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The public URL (through the proxy), as users and the benchmark's client see it."""
        return f"http://127.0.0.1:{self.ports.public}"

    def exited(self) -> int | None:
        """The hub's exit code once it has exited, else ``None``."""
        return None if self.process is None else self.process.poll()

    def answers(self, timeout: float = 2.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/hub/api/", timeout=timeout) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start(self, timeout: float = 90) -> None:
        """Write the config, start the hub, and wait until its API answers through the proxy."""
        busy = [p for p in self.ports.all if port_in_use(p)]
        if busy:
            raise HubError(
                f"{self.name} hub: port(s) {', '.join(map(str, busy))} already in use; "
                f"pick another base port (this hub uses {self.ports.base}-{self.ports.base + 2})"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.config_file.write_text(self.config)
        env = {
            **os.environ,
            "PATH": f"{VENV_PYTHON.parent}:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        }
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                [str(VENV_PYTHON), "-m", "jupyterhub", "-f", str(self.config_file)],
                cwd=self.state_dir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise HubError(
                    f"{self.name} hub exited with {self.process.returncode} while starting; "
                    f"last lines of {self.log_file}:\n{self.log_tail()}"
                )
            if self.answers():
                return
            time.sleep(0.3)
        raise HubError(f"{self.name} hub did not answer in {timeout:.0f} s; see {self.log_file}")

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 25) -> str:
        return "".join(self.log_text().splitlines(True)[-lines:]) or "(empty log)"

    def log_size(self) -> int:
        try:
            return self.log_file.stat().st_size
        except OSError:
            return 0

    def job_ids(self, since: int = 0) -> list[str]:
        """Job ids this hub logged as submitted, from byte ``since`` of its log on."""
        try:
            with open(self.log_file, "rb") as fh:
                fh.seek(since)
                text = fh.read().decode(errors="replace")
        except OSError:
            return []
        return list(dict.fromkeys(self.job_id_pattern.findall(text)))

    def stop(self, timeout: float = 20, ports_timeout: float = 30) -> list[int]:
        """Stop the hub (SIGTERM, then SIGKILL) and then its proxy, each by process group,
        and wait until none of the hub's ports is listening any more.

        A killed process's listening sockets close only once the kernel has torn it down (and
        a proxy that outlived its hub may still be ending), so a :meth:`start` right after a
        bare kill could find its own ports in use. Returns the ports still listening after
        ``ports_timeout`` seconds (empty when all are free); it does not raise, so that the
        callers' cleanup (cancelling jobs) always goes on, and :meth:`start` names them.
        """
        # The hub's managed services (workshop, apps, culler...) run in sessions of their own:
        # a hub killed while stopping them leaves them running, holding their ports, and the
        # next hub's service then fails to bind and is restarted every 30 s (an import storm
        # that once cost our arm 50 ms of p95). Note them before the hub goes.
        children = [] if self.process is None else child_processes(self.process.pid)
        if self.process is not None and self.process.poll() is None:
            _end_group(self.process.pid, timeout, wait=self.process.wait)
        for child in children:
            if child.alive():
                _end_group(child.pid, 5)
        proxy_pid = self._proxy_pid()
        if proxy_pid is not None:
            _end_group(proxy_pid, 5)
            self.proxy_pid_file.unlink(missing_ok=True)
        return wait_ports_free(self.ports.all, ports_timeout)

    def _proxy_pid(self) -> int | None:
        """The proxy's pid, if its pid file names a live proxy on *this* hub's API port."""
        try:
            pid = int(self.proxy_pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        if b"--api-port" in cmdline and str(self.ports.proxy_api).encode() in cmdline:
            return pid
        return None


def _end_group(
    pid: int, timeout: float, wait: Callable[..., object] | None = None
) -> None:
    """SIGTERM the process group led by ``pid``; SIGKILL it if still there after ``timeout``.

    ``wait`` is the ``Popen.wait`` of our own child (so it is reaped); other processes are
    polled with signal 0.
    """
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if wait is not None:
            try:
                wait(timeout=0.2)
                return
            except subprocess.TimeoutExpired:
                continue
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
