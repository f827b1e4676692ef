"""Job-side launcher: pick a port on this node, tell the hub, then become the server.

Run inside the Slurm job as ``python -m shopfloor.session.singleuser <server> [args...]``.
The hub learns only the port; it connects to the node's Slurm ``NodeAddr``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
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
    if reply.get("api_token"):
        # The hub restarted while we were queued and gave this server a new token.
        os.environ["JUPYTERHUB_API_TOKEN"] = os.environ["JPY_API_TOKEN"] = reply["api_token"]
    argv = [*args, f"--ip={address}", f"--port={port}"]
    if os.path.basename(args[0]) == "jupyterhub-singleuser":
        # Run it in this process: a second interpreter start costs about 0.4 s.
        from jupyterhub.singleuser import main as singleuser_main

        sys.argv = argv
        sys.exit(singleuser_main())
    os.execv(args[0], argv)


if __name__ == "__main__":
    main()
