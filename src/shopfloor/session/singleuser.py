"""Job-side launcher: pick a port on this node, tell the hub, then become the server.

Run inside the Slurm job as ``python -m shopfloor.session.singleuser <server> [args...]``.
The hub learns only the port; it connects to the node's Slurm ``NodeAddr``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from urllib.parse import urlparse, urlunparse

from shopfloor.slurm.seam import SlurmError, SlurmSync


def node_address() -> str:
    """This node's Slurm ``NodeAddr`` (what the hub connects to); all interfaces if unknown."""
    node = os.environ.get("SLURMD_NODENAME", "")
    if node:
        try:
            fields = SlurmSync(timeout=10).nodes(node).get(node, {})
        except SlurmError:
            fields = {}
        if fields.get("NodeAddr"):
            return fields["NodeAddr"]
    return "0.0.0.0"


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def report_port(port: int, attempts: int = 60, delay: float = 2.0) -> dict[str, str]:
    """Tell the hub our port; retry while the hub is unreachable (e.g. restarting)."""
    api = os.environ["JUPYTERHUB_API_URL"].rstrip("/")
    request = urllib.request.Request(
        f"{api}/batchspawner",
        data=json.dumps({"port": port}).encode(),
        headers={
            "Authorization": f"token {os.environ['JUPYTERHUB_API_TOKEN']}",
            "Content-Type": "application/json",
        },
        method="POST",
    )
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            if exc.code < 500 and exc.code != 404:
                raise SystemExit(
                    f"shopfloor: the hub refused our port ({exc.code}): {exc.reason}"
                ) from None
            problem = f"HTTP {exc.code}"
        except OSError as exc:
            problem = str(exc)
        print(f"shopfloor: hub not reachable ({problem}); retry {attempt + 1}", flush=True)
        time.sleep(delay)
    raise SystemExit("shopfloor: could not reach the hub to report our port; giving up")


#: Modules the server imports but never uses, each costing a noticeable part of the start.
#: ``rfc3987_syntax``: ``jsonschema`` (through ``jupyter_events``) imports it to check the
#: ``iri``/``iri-reference`` string formats, and it compiles ~35 Earley parsers at import:
#: 1-1.6 s of a 3 s start on our 2-core nodes (benchmarks/spawn.py). No Jupyter schema uses
#: those formats (jupyter_server#1559, jsonschema#1428); without the module ``jsonschema``
#: simply has no checker for them.
UNUSED_SLOW_IMPORTS = ("rfc3987_syntax",)


def skip_unused_slow_imports(modules: dict[str, object] | None = None) -> list[str]:
    """Make ``import`` of :data:`UNUSED_SLOW_IMPORTS` fail fast in this (server) process.

    A ``None`` entry in ``sys.modules`` makes ``import name`` raise ``ImportError``, which
    ``jsonschema`` handles by leaving the format unchecked. Only the job's server process is
    affected (kernels are processes of their own); a module already imported is left alone.
    Returns the names it blocked.
    """
    table = sys.modules if modules is None else modules
    blocked = [name for name in UNUSED_SLOW_IMPORTS if name not in table]
    for name in blocked:
        table[name] = None
    return blocked


_PYTHON_NAME = re.compile(r"^python[0-9.]*$")


def is_script_of_this_python(path: str, python: str | None = None) -> bool:
    """True if ``path`` is a script whose ``#!`` line names this environment's Python.

    The interpreter must sit in the same folder as ``python`` (``sys.executable``), so a
    script of another virtual environment, whose modules we do not have, is never run here.
    """
    python = python or sys.executable
    try:
        with open(path, "rb") as script:
            first = script.readline(512)
    except OSError:
        return False
    if not first.startswith(b"#!"):
        return False
    words = first[2:].decode(errors="replace").split()
    if not words:
        return False
    interpreter = words[0]
    return (os.path.dirname(os.path.abspath(interpreter))
            == os.path.dirname(os.path.abspath(python))
            and bool(_PYTHON_NAME.match(os.path.basename(interpreter))))


def process_started_at(proc: str = "/proc") -> float | None:
    """Epoch time at which this process started (the job's batch script, which execs us).

    From ``/proc/self/stat`` (start in clock ticks since boot) and ``/proc/uptime``, good to
    about 10 ms; ``None`` where there is no ``/proc``.
    """
    try:
        stat = open(f"{proc}/self/stat").read()
        uptime = float(open(f"{proc}/uptime").read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22: starttime
    return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


def log_stamp(when: float | None = None) -> str:
    """A local time as Jupyter Server writes it in its log lines (``2026-11-30 09:31:58.698``)."""
    return datetime.fromtimestamp(time.time() if when is None else when).strftime(
        "%Y-%m-%d %H:%M:%S.%f")[:-3]


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        sys.exit("usage: python -m shopfloor.session.singleuser SERVER [ARGS...]")
    address = node_address()
    port = free_port(address)
    service_url = os.environ.get("JUPYTERHUB_SERVICE_URL")
    if service_url:
        url = urlparse(service_url)
        host = address if address != "0.0.0.0" else (url.hostname or "127.0.0.1")
        os.environ["JUPYTERHUB_SERVICE_URL"] = urlunparse(url._replace(netloc=f"{host}:{port}"))
    print(f"shopfloor: starting {args[0]} on {address}:{port}", flush=True)
    reply = report_port(port)
    # One timestamped line in Jupyter's format: the job log then reads as a timeline of the
    # start (job start, port reported, the server's own lines), for admins and benchmarks.
    started = process_started_at()
    print(f"[I {log_stamp()} shopfloor] port reported to the hub; job started at "
          f"{log_stamp(started) if started else 'unknown'}", flush=True)
    if reply.get("api_token"):
        # The hub restarted while we were queued and gave this server a new token.
        os.environ["JUPYTERHUB_API_TOKEN"] = os.environ["JPY_API_TOKEN"] = reply["api_token"]
    argv = [*args, f"--ip={address}", f"--port={port}"]
    if os.path.basename(args[0]) == "jupyterhub-singleuser":
        # Run it in this process: a second interpreter start costs about 0.4 s.
        skip_unused_slow_imports()
        from jupyterhub.singleuser import main as singleuser_main

        sys.argv = argv
        sys.exit(singleuser_main())
    if is_script_of_this_python(args[0]):
        # Likewise for any other Python server of this environment (a console script such as
        # jupyter-lab or voila): one interpreter start instead of two.
        import runpy

        skip_unused_slow_imports()
        sys.argv = argv
        runpy.run_path(args[0], run_name="__main__")
        sys.exit(0)
    os.execv(args[0], argv)


if __name__ == "__main__":
    main()
