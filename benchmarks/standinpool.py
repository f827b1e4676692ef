"""One process that answers HTTP for many stand-in single-user servers (benchmarks only).

``benchmarks.scalecurve`` runs up to 1000 sessions on a machine with 24 GB of memory. A
stand-in *process* per session (:mod:`benchmarks.standin`, a Python interpreter: ~25 MB with
our launcher's imports) does not fit 1000 times. Here each session keeps what the hub sees
real: its own Slurm job in ``squeue``, the port the job reported, a server answering on that
port with JupyterHub's version header, activity reports. Only the answering moves: the job's
stand-in registers ``host:port`` with this pool over a Unix socket and then ``exec``\\ s
``sleep`` with that socket still open. The pool listens on the port for as long as the
socket stays open, so when Slurm ends the job (``scancel``, walltime) the port stops
answering, as a real server's would.

Run as the job user (the socket's folder is that user's, mode 0700, so no other user can
register ports or read the tokens sent with a registration)::

    python benchmarks/standinpool.py --socket /tmp/x/pool/standin.sock

Standard library only (it is run as a plain script, as the user). One registration is one
line of JSON, answered ``ok`` or ``error: <why>``; see :func:`parse_registration`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import resource
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

BODY = b"shopfloor benchmark stand-in (pooled)\n"
#: Longest request head the pool reads before answering (JupyterHub's probes are ~300 bytes).
MAX_HEAD = 16 * 1024
#: Longest registration line.
MAX_REGISTRATION = 8 * 1024


class RegistrationError(ValueError):
    """A registration line the pool refuses; the message says which field is wrong."""


@dataclass(frozen=True)
class Registration:
    """One stand-in server: where to listen and how to report activity."""

    host: str
    port: int
    hub_version: str
    server_name: str = ""
    activity_url: str = ""
    api_token: str = ""
    activity_interval: float = 300.0


def parse_registration(line: bytes) -> Registration:
    """Check one registration line (JSON object) field by field.

    ``host`` must be an IP address, ``port`` an integer 1-65535, ``activity_url`` an
    ``http://`` URL; anything else is refused with a message naming the field.
    """
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise RegistrationError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RegistrationError("not a JSON object")
    host = data.get("host")
    try:
        ipaddress.ip_address(host if isinstance(host, str) else "")
    except ValueError:
        raise RegistrationError(f"host: not an IP address: {host!r}") from None
    port = data.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise RegistrationError(f"port: not an integer from 1 to 65535: {port!r}")
    strings = {}
    for key in ("hub_version", "server_name", "activity_url", "api_token"):
        value = data.get(key, "")
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            raise RegistrationError(f"{key}: not a one-line string")
        strings[key] = value
    url = urlparse(strings["activity_url"])
    if strings["activity_url"] and (url.scheme != "http" or not url.hostname):
        raise RegistrationError("activity_url: not an http:// URL")
    interval = data.get("activity_interval", 300.0)
    if not isinstance(interval, int | float) or isinstance(interval, bool) or interval < 1:
        raise RegistrationError(f"activity_interval: not a number of seconds >= 1: {interval!r}")
    return Registration(host=host, port=port, activity_interval=float(interval), **strings)


def response_head(hub_version: str, head_only: bool) -> bytes:
    """What every request gets: 200, the hub's version header, a short body."""
    lines = ["HTTP/1.1 200 OK", "Content-Type: text/plain",
             f"Content-Length: {len(BODY)}", "Connection: close"]
    if hub_version:
        lines.append(f"X-JupyterHub-Version: {hub_version}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return head if head_only else head + BODY


def activity_body(server_name: str, when: datetime) -> bytes:
    """The body ``jupyterhub-singleuser`` POSTs to the hub's activity URL."""
    stamp = when.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return json.dumps({"servers": {server_name: {"last_activity": stamp}},
                       "last_activity": stamp}).encode()


async def post_activity(reg: Registration) -> int:
    """POST one activity report; the hub's status code (0 when it could not be reached)."""
    url = urlparse(reg.activity_url)
    body = activity_body(reg.server_name, datetime.now(UTC))
    head = (f"POST {url.path or '/'} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Authorization: token {reg.api_token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(url.hostname, url.port or 80), 30)
        writer.write(head + body)
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 30)
        writer.close()
        return int(status.split()[1])
    except (TimeoutError, OSError, ValueError, IndexError):
        return 0


class Pool:
    """The registrations the pool serves, and its counters."""

    def __init__(self) -> None:
        self.listening = 0
        self.requests = 0
        self.registered = 0
        self.refused = 0

    async def serve_http(self, reg: Registration, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            writer.close()
            return
        self.requests += 1
        with contextlib.suppress(OSError):
            writer.write(response_head(reg.hub_version, head.startswith(b"HEAD ")))
            await writer.drain()
        writer.close()

    async def keep_activity(self, reg: Registration) -> None:
        while True:
            status = await post_activity(reg)
            if status not in (200, 204):
                print(f"standinpool: activity report for {reg.server_name!r} answered "
                      f"{status}", flush=True)
            await asyncio.sleep(reg.activity_interval)

    async def handle_registration(self, reader: asyncio.StreamReader,
                                  writer: asyncio.StreamWriter) -> None:
        """Listen for one stand-in as long as its connection (its job) stays open."""
        try:
            line = await asyncio.wait_for(reader.readline(), 30)
            reg = parse_registration(line)
            server = await asyncio.start_server(
                lambda r, w: self.serve_http(reg, r, w), reg.host, reg.port,
                reuse_address=True, limit=MAX_HEAD)
        except (TimeoutError, RegistrationError, OSError, ValueError) as exc:
            self.refused += 1
            with contextlib.suppress(OSError):
                writer.write(f"error: {exc}\n".encode())
                await writer.drain()
            writer.close()
            return
        self.registered += 1
        self.listening += 1
        activity = (asyncio.ensure_future(self.keep_activity(reg))
                    if reg.activity_url and reg.api_token else None)
        try:
            writer.write(b"ok\n")
            await writer.drain()
            # The job's ``sleep`` holds the other end; EOF means the job is gone.
            while await reader.read(4096):
                pass
        except OSError:
            pass
        finally:
            if activity is not None:
                activity.cancel()
            server.close()
            self.listening -= 1
            writer.close()


def raise_open_files_limit() -> int:
    """Each session holds two descriptors here: raise the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def serve(socket_path: Path) -> None:
    pool = Pool()
    socket_path.unlink(missing_ok=True)
    old_umask = os.umask(0o077)  # the socket: its owner only (the folder is 0700 anyway)
    try:
        server = await asyncio.start_unix_server(pool.handle_registration, str(socket_path),
                                                 limit=MAX_REGISTRATION)
    finally:
        os.umask(old_umask)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    print(f"standinpool: ready on {socket_path} (open files limit "
          f"{raise_open_files_limit()})", flush=True)
    await stop.wait()
    server.close()
    socket_path.unlink(missing_ok=True)
    print(f"standinpool: stopped; {pool.registered} registered, {pool.refused} refused, "
          f"{pool.requests} requests answered, {pool.listening} still listening", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="standinpool", description=__doc__.split("\n")[0])
    parser.add_argument("--socket", type=Path, required=True,
                        help="Unix socket the jobs' stand-ins register with")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    asyncio.run(serve(args.socket))


if __name__ == "__main__":
    main()
