"""Tiny in-process stand-ins for unit tests: the hub's REST API and the Slurm seam.

:class:`FakeHub` answers the calls :class:`shopfloor.session.hubapi.Hub` makes, over real HTTP, with
canned data, lists services in its service list and answers for them too (another FakeHub can
stand in for a service on its own port); :class:`RecordingSlurm` replaces
:class:`shopfloor.slurm.seam.SlurmSync` (the one seam). The real hub and cluster are exercised by
the integration tests.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from shopfloor.slurm.seam import SlurmError, SlurmSync

TOKEN = "secret-test-token"

PARTITIONS = {
    "user": "alice",
    "default_partition": "cpu",
    "partitions": [
        {
            "name": "cpu", "description": "CPU nodes", "demo_gpus": False,
            "live": {"up": True, "nodes_idle": 1, "nodes_total": 2, "cpus_idle": 6,
                     "cpus_total": 8, "memory_per_node_mb": 4000, "gpus_per_node": 0},
            "pending_jobs": 0,
            "limits": {"partition": "cpu", "max_nodes": 2, "max_cpus": 4,
                       "max_memory_gb": 3.5, "max_gpus": 0, "max_walltime_minutes": 480},
            "max_walltime_text": "8 hours",
            "defaults": {"partition": "cpu", "nodes": 1, "cpus": 1, "memory_gb": 1,
                         "gpus": 0, "walltime_minutes": 120},
        },
        {
            "name": "debug", "description": "Short jobs", "demo_gpus": False,
            "live": {"up": True, "nodes_idle": 0, "nodes_total": 1, "cpus_idle": 0,
                     "cpus_total": 4, "memory_per_node_mb": 4000, "gpus_per_node": 0},
            "pending_jobs": 1,
            "limits": {"partition": "debug", "max_nodes": 1, "max_cpus": 2,
                       "max_memory_gb": 2, "max_gpus": 0, "max_walltime_minutes": 30},
            "max_walltime_text": "30 minutes",
            "defaults": {"partition": "debug", "nodes": 1, "cpus": 1, "memory_gb": 0.5,
                         "gpus": 0, "walltime_minutes": 30},
        },
    ],
}


class FakeHub:
    """Holds the fake hub's state; ``url`` is its API root (``.../hub/api``)."""

    def __init__(self) -> None:
        self.servers: dict[str, dict[str, Any]] = {}
        self.progress: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.fail: dict[str, tuple[int, str]] = {}  #: path → (status, message)
        #: path → how many more times it answers 503 before it answers for real.
        self.flaky: dict[str, int] = {}
        #: path → seconds to wait before answering.
        self.slow: dict[str, float] = {}
        #: The hub's service list (``GET /services``), by name; see :meth:`add_service`.
        self.services: dict[str, dict[str, Any]] = {}
        #: Service calls (paths under ``/services/``): (method, path) → (status, JSON body).
        self.answers: dict[tuple[str, str], tuple[int, Any]] = {}
        #: Extra keys of the ``/shopfloor/partitions`` answer (``accounts``, ...).
        self.partitions_extra: dict[str, Any] = {}
        #: The ``/shopfloor/budgets`` answer; None: 404 (a site without accounting).
        self.budgets: dict[str, Any] | None = None
        #: The ``Authorization`` header of each request, in order (None when absent).
        self.auth: list[str | None] = []
        #: (site, caller) whose catalog ``/shopfloor/catalog[/check]`` answers with the hub's
        #: own functions; None: 404 (a hub without a catalog).
        self.catalog: tuple[Any, Any] | None = None
        handler = _handler(self)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hub/api"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def base(self) -> str:
        """``http://127.0.0.1:<port>``: where this fake answers (hub API and services)."""
        return self.url.removesuffix("/hub/api")

    def add_service(self, name: str, at: FakeHub | None = None) -> str:
        """List service ``name`` as served by ``at`` (this fake by default); its root URL."""
        self.services[name] = {
            "kind": "service", "name": name, "admin": False, "roles": [],
            "url": (at or self).base, "prefix": f"/services/{name}/", "command": [],
            "pid": 0, "info": {}, "display": True,
        }
        return f"{(at or self).base}/services/{name}"

    def add_server(self, name: str, *, ready: bool = True, pending: str | None = None,
                   partition: str = "cpu") -> None:
        self.servers[name] = {
            "name": name, "ready": ready, "pending": pending, "stopped": False,
            "url": f"/user/alice/{name}/", "started": "2025-01-01T10:00:00Z",
            "user_options": {"partition": partition},
        }


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped waiting (a timeout test): nothing to answer

        def _route(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            path = self.path.removeprefix("/hub/api")
            hub.requests.append((method, path, body))
            hub.auth.append(self.headers.get("Authorization"))
            time.sleep(hub.slow.get(path, 0))
            if hub.flaky.get(path):
                hub.flaky[path] -= 1
                return self._send(503, {"status": 503, "message": "Try again"})
            if path.startswith("/services/"):  # a service checks its own tokens
                status, answer = hub.answers.get((method, path), (404, {"message": "Not Found"}))
                return self._send(status, answer)
            if self.headers.get("Authorization") != f"token {TOKEN}":
                return self._send(403, {"status": 403, "message": "Forbidden"})
            if path in hub.fail:
                status, message = hub.fail[path]
                return self._send(status, {"status": status, "message": message})
            if method == "GET" and path == "/services":
                return self._send(200, hub.services)
            if method == "GET" and path == "/user":
                return self._send(200, {"name": "alice"})
            if method == "GET" and path == "/shopfloor/partitions":
                return self._send(200, {**PARTITIONS, **hub.partitions_extra})
            if method == "GET" and path == "/shopfloor/budgets" and hub.budgets is not None:
                return self._send(200, hub.budgets)
            if method == "POST" and path == "/shopfloor/validate":
                return self._validate(body or {})
            if path.startswith("/shopfloor/catalog") and hub.catalog is not None:
                return self._catalog(method, path, body)
            if method == "GET" and path == "/users/alice":
                return self._send(200, {"name": "alice", "servers": hub.servers})
            if path.startswith("/users/alice/servers/"):
                return self._server(method, path.split("/")[4:], body)
            return self._send(404, {"status": 404, "message": "Not Found"})

        def _catalog(self, method: str, path: str, body: Any) -> None:
            from shopfloor.extensions.catalog_api import (
                CatalogCheckError,
                catalog_for,
                path_verdicts,
            )

            assert hub.catalog is not None
            site, caller = hub.catalog
            if method == "GET" and path == "/shopfloor/catalog":
                return self._send(200, catalog_for(site, caller))
            if method == "POST" and path == "/shopfloor/catalog/check":
                try:
                    return self._send(200, path_verdicts(site, caller, body))
                except CatalogCheckError as exc:
                    return self._send(400, exc.as_json())
            return self._send(404, {"status": 404, "message": "Not Found"})

        def _validate(self, body: dict[str, Any]) -> None:
            unknown = sorted(set(body) - {"partition", "cpus", "memory_gb", "gpus", "walltime"})
            if unknown:
                return self._send(400, {"message": "bad", "problems": {
                    k: "is not a setting you can choose" for k in unknown}})
            if body.get("partition") == "debug" and int(body.get("walltime", 30)) > 30:
                return self._send(400, {"message": "bad", "problems": {
                    "walltime": "the debug partition allows at most 30 minutes"}})
            return self._send(200, {"request": {
                "partition": body.get("partition", "cpu"), "nodes": 1,
                "cpus": int(body.get("cpus", 1)), "memory_gb": float(body.get("memory_gb", 1)),
                "gpus": int(body.get("gpus", 0)), "walltime_minutes": int(body.get("walltime", 30)),
                "account": None, "qos": None, "reservation": None}})

        def _server(self, method: str, parts: list[str], body: Any) -> None:
            name = parts[0]
            if len(parts) == 2 and parts[1] == "progress":
                return self._stream(hub.progress.get(name))
            if method == "POST":
                hub.add_server(name, ready=False, pending="spawn",
                               partition=body["user_options"]["partition"])
                hub.servers[name]["user_options"] = body["user_options"]
                return self._send(202, {})
            if method == "DELETE":
                hub.servers.pop(name, None)
                return self._send(204, None)
            return self._send(405, {"message": "no"})

        def _stream(self, events: list[dict[str, Any]] | None) -> None:
            if events is None:
                return self._send(400, {"message": "not starting"})
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for event in events:
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_DELETE(self) -> None:
            self._route("DELETE")

        def do_PUT(self) -> None:
            self._route("PUT")

    return Handler


class RecordingSlurm(SlurmSync):
    """Records what would reach sbatch/squeue/scancel: the one seam, replaced at its ``run``.

    The typed methods (``sbatch``, ``squeue``, ``nodes``...) are the real ones, so the command
    lines they build and the parsing of the canned answers are the production code's.
    """

    def __init__(self, fail: str = "") -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.cancelled: list[str] = []
        self.fail = fail

    def run(self, args: Sequence[str], *, stdin: str | None = None, **_: object) -> str:
        if args[0] == "sbatch":
            if self.fail:
                raise SlurmError(["sbatch"], 1, "", f"sbatch: error: {self.fail}")
            self.scripts.append(stdin or "")
            return "4242\n"
        if args[0] == "squeue":
            state = "CANCELLED" if "4242" in self.cancelled else "PENDING"
            return f"4242|{state}|Priority|||N/A|alice|debug|x|0|N/A\n"
        if args[0] == "scancel":
            self.cancelled.append(args[1])
            return ""
        if list(args[:2]) == ["scontrol", "-d"]:
            return ("NodeName=gpu1 State=MIXED Partitions=gpu Gres=gpu:2 GresUsed=gpu:1(IDX:0)\n"
                    "NodeName=node1 State=IDLE Partitions=cpu Gres=(null) GresUsed=gpu:0\n")
        raise SlurmError(args, 1, "", f"{args[0]}: error: not faked")
