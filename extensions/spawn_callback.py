"""The job's port callback, replacing batchspawner's.

batchspawner's handler ``setattr``s every key the caller sends onto the spawner, authenticated
only by the job's own token, which the user can read; the hub later builds shell commands from
spawner attributes. This handler accepts exactly ``{"port": <int>}`` for the server that owns
the calling token, while that server is starting, once per start, and nothing else.
"""

from __future__ import annotations

import json

from jupyterhub.apihandlers import APIHandler
from tornado import web

from shopfloor.extensions.compat import (
    BATCHSPAWNER_CALLBACK_PATH,
    replace_batchspawner_callback,
    server_names,
    spawner_log_name,
)

CALLBACK_PATH = BATCHSPAWNER_CALLBACK_PATH


def parse_port_body(body: bytes) -> int:
    """The port from a callback body, or ``ValueError`` saying what is wrong."""
    try:
        data = json.loads(body or b"null")
    except ValueError:
        raise ValueError("body must be JSON") from None
    if not isinstance(data, dict) or set(data) != {"port"}:
        raise ValueError('body must be exactly {"port": <integer>}')
    port = data["port"]
    if isinstance(port, bool) or not isinstance(port, int) or not 1024 <= port <= 65535:
        raise ValueError("port must be an integer from 1024 to 65535")
    return port


class PortCallbackHandler(APIHandler):
    """POST ``{"port": N}`` from a starting job."""

    @web.authenticated
    def post(self) -> None:
        token = self.get_auth_token() or ""
        spawner = find_spawner_for_job_token(self.current_user, token)
        if spawner is None:
            raise web.HTTPError(403, "This token does not belong to a server.")
        try:
            port = parse_port_body(self.request.body)
        except ValueError as exc:
            self.log.warning("%s: refused port callback: %s", spawner_log_name(spawner), exc)
            raise web.HTTPError(400, str(exc)) from None
        if getattr(spawner, "reattach_state", None) is not None:
            # The reattach has begun but start() has not restored the job yet: retry soon.
            raise web.HTTPError(503, "The hub is reattaching this server; retry.")
        if not spawner.pending == "spawn":
            if getattr(spawner, "job_id", "") and not getattr(spawner, "job_ready", True):
                # The hub just restarted and has not reattached this queued job yet: the
                # job retries on 5xx, so it reports again once the spawn is back.
                raise web.HTTPError(503, "The hub is reattaching this server; retry.")
            raise web.HTTPError(409, "The server is not starting.")
        report = getattr(spawner, "report_port", None)
        if report is None:
            raise web.HTTPError(400, "This server does not take port callbacks.")
        if report(port) is False:
            # One port per start: a second caller with the job's token must not redirect
            # the hub to another port while the first server is still coming up.
            self.log.warning("%s: refused a second port (%d) for this start",
                             spawner_log_name(spawner), port)
            raise web.HTTPError(409, "This server already reported its port.")
        self.log.info("%s: job reported port %d", spawner_log_name(spawner), port)
        reply: dict[str, str] = {"message": "port recorded"}
        if spawner.api_token and spawner.api_token != token:
            # The hub restarted and issued the server a new token since the job was queued:
            # hand it over, so the server authenticates with the token the hub now expects.
            reply["api_token"] = spawner.api_token
        self.set_status(201)
        self.finish(json.dumps(reply))


def find_spawner_for_job_token(user: object, token: str) -> object | None:
    """The user's server whose job holds ``token`` (current token, or the one at submit)."""
    if not token or user is None:
        return None
    spawners = getattr(user, "spawners", {})
    for name in server_names(user) or list(spawners):
        candidate = spawners[name]
        owns = getattr(candidate, "owns_job_token", None)
        if owns is not None and owns(token):
            return candidate
    return None


def replace_batchspawner_handler() -> None:
    """Swap batchspawner's handler (registered at its import) for ours, at the same path."""
    replace_batchspawner_callback(PortCallbackHandler)
