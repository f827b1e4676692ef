"""A stand-in single-user server for benchmarks: answers HTTP and costs almost nothing.

``benchmarks.scale`` runs hundreds of sessions on a 2-core machine, where JupyterLab (about
100 MB and seconds of CPU each) would measure the machine, not the hub. This program does
only what the hub sees of a single-user server:

* ``--report-port``: pick a free port and POST it to ``$JUPYTERHUB_API_URL/batchspawner``,
  as ``batchspawner-singleuser`` does (stock batchspawner). Without it the port comes from
  ``--port`` (our launcher, :mod:`shopfloor.session.singleuser`, has already reported it)
  or from ``$JUPYTERHUB_SERVICE_URL``.
* answer every ``GET``/``HEAD`` with 200 and the ``X-JupyterHub-Version`` header, which is
  all JupyterHub's readiness check asks for;
* report activity to ``$JUPYTERHUB_ACTIVITY_URL`` at start and every
  ``$JUPYTERHUB_ACTIVITY_INTERVAL`` seconds (300 by default), as ``jupyterhub-singleuser`` does.

Standard library only (plus our launcher's port helpers in ``--report-port`` mode): about
15 MB of memory. Unknown arguments (those JupyterHub adds) are ignored.

``--pool SOCKET`` (used by :mod:`benchmarks.scalecurve` for 1000 sessions): instead of
serving, register ``host:port`` (and the activity settings) with the pool process of
:mod:`benchmarks.standinpool`, which answers on that port, then ``exec`` ``sleep`` holding
the registration's socket open. The job then costs a ``sleep`` (and its ``slurmstepd``), not
an interpreter; when Slurm ends it the socket closes and the pool stops answering the port.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

BODY = b"shopfloor benchmark stand-in\n"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="standin", add_help=False)
    parser.add_argument("--ip", default="")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--report-port", action="store_true")
    parser.add_argument("--hub-version", default="")
    parser.add_argument("--pool", default="")
    args, _ = parser.parse_known_args(list(argv))
    return args


def listen_address(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[str, int]:
    """Where to listen: ``--ip``/``--port`` first, then ``$JUPYTERHUB_SERVICE_URL``.

    Port 0 means "pick one" (``--report-port`` mode); the host defaults to all interfaces.
    """
    url = urlparse(env.get("JUPYTERHUB_SERVICE_URL", ""))
    host = args.ip or url.hostname or "0.0.0.0"
    port = args.port or (0 if args.report_port else url.port or 0)
    return host, port


def activity_body(server_name: str, when: datetime) -> dict[str, object]:
    """The body ``jupyterhub-singleuser`` POSTs to the hub's activity URL."""
    stamp = when.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return {"servers": {server_name: {"last_activity": stamp}}, "last_activity": stamp}


def post_activity(env: Mapping[str, str]) -> int:
    """POST one activity report; the hub's status code (0 when it could not be reached)."""
    url = urlparse(env["JUPYTERHUB_ACTIVITY_URL"])
    body = json.dumps(activity_body(env.get("JUPYTERHUB_SERVER_NAME", ""), datetime.now(UTC)))
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=30)
    try:
        conn.request("POST", url.path, body=body, headers={
            "Authorization": f"token {env['JUPYTERHUB_API_TOKEN']}",
            "Content-Type": "application/json",
        })
        return conn.getresponse().status
    except OSError as exc:
        print(f"standin: activity report failed: {exc}", flush=True)
        return 0
    finally:
        conn.close()


def keep_activity_updated(env: Mapping[str, str]) -> None:
    """Report activity now and then every ``$JUPYTERHUB_ACTIVITY_INTERVAL`` seconds."""
    interval = float(env.get("JUPYTERHUB_ACTIVITY_INTERVAL") or 300)
    while True:
        post_activity(env)
        time.sleep(interval)


def make_handler(hub_version: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            if hub_version:
                self.send_header("X-JupyterHub-Version", hub_version)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(BODY)

        do_HEAD = do_GET

        def log_message(self, format: str, *args: object) -> None:
            pass  # 300 servers answering probes would fill the job logs

    return Handler


def registration(host: str, port: int, hub_version: str, env: Mapping[str, str]) -> bytes:
    """The line :mod:`benchmarks.standinpool` reads: where to listen, how to report activity."""
    return json.dumps({
        "host": host or "0.0.0.0",
        "port": port,
        "hub_version": hub_version,
        "server_name": env.get("JUPYTERHUB_SERVER_NAME", ""),
        "activity_url": env.get("JUPYTERHUB_ACTIVITY_URL", ""),
        "api_token": env.get("JUPYTERHUB_API_TOKEN", ""),
        "activity_interval": float(env.get("JUPYTERHUB_ACTIVITY_INTERVAL") or 300),
    }).encode() + b"\n"


def hand_over_to_pool(pool: str, host: str, port: int, hub_version: str,
                      env: Mapping[str, str]) -> None:
    """Register with the pool, then become ``sleep`` holding the registration open.

    Never returns: ``exec`` on success, exit status 1 (the job fails, as a server that cannot
    listen would) when the pool refuses or cannot be reached.
    """
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(60)
        conn.connect(pool)
        conn.sendall(registration(host, port, hub_version, env))
        answer = conn.makefile("rb").readline().decode(errors="replace").strip()
    except OSError as exc:
        sys.exit(f"standin: cannot register with the pool {pool}: {exc}")
    if answer != "ok":
        sys.exit(f"standin: the pool refused {host}:{port}: {answer or 'no answer'}")
    print(f"standin: pooled on {host}:{port}", flush=True)
    conn.settimeout(None)
    conn.set_inheritable(True)
    # ``sleep`` never reads the socket: its only job is to keep it open while the job lives.
    os.execvp("sleep", ["sleep", "infinity"])


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    env = os.environ
    host, port = listen_address(args, env)
    if args.report_port:
        from shopfloor.session.singleuser import free_port, report_port

        port = port or free_port(host)
        report_port(port)
    if args.pool:
        hand_over_to_pool(args.pool, host, port, args.hub_version, env)
    server = ThreadingHTTPServer((host, port), make_handler(args.hub_version))
    server.daemon_threads = True
    print(f"standin: listening on {host}:{server.server_port}", flush=True)
    if env.get("JUPYTERHUB_ACTIVITY_URL") and env.get("JUPYTERHUB_API_TOKEN"):
        threading.Thread(target=keep_activity_updated, args=(env,), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
