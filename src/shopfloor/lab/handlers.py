"""HTTP handlers of the Shopfloor server extension, under ``{base_url}shopfloor/lab/``.

Every handler needs the server's own login (the hub lets only the server's owner in); none
takes a path or host from the browser except the notebook to publish, which must lie under
the server's root folder.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web

from shopfloor.lab.config import ShopfloorLab
from shopfloor.lab.examples import CopyReport, copy_examples
from shopfloor.lab.jobstatus import JobStatus, JobWatcher, redact, tail
from shopfloor.lab.panels import PanelError, write_panel_notebook


def shopfloor_version() -> str:
    try:
        return version("shopfloor")
    except PackageNotFoundError:
        return "0"


@dataclass
class LabState:
    """What the handlers share: settings, the job watcher and the server's root folder."""

    config: ShopfloorLab
    watcher: JobWatcher
    root_dir: Path
    hub_prefix: str = ""  #: the hub's base URL (``$JUPYTERHUB_BASE_URL``), "" outside a hub
    examples: CopyReport | None = None
    #: When the server last did something for its user (jupyter_server's ``last_activity``:
    #: API requests, kernels, terminals), which the hub's idle culler goes by.
    last_activity: Callable[[], datetime] | None = None

    def idle_seconds(self) -> float | None:
        """Seconds since the server's last activity; None when unknown."""
        if self.last_activity is None:
            return None
        return max(0.0, (datetime.now(UTC) - self.last_activity()).total_seconds())

    def relative(self, setting: str) -> str:
        """A folder setting as the path JupyterLab's file browser uses."""
        return Path(setting).as_posix().strip("/")

    def copy_examples(self) -> CopyReport:
        source = self.config.examples_source
        self.examples = copy_examples(
            Path(source), self.config.resolve(self.root_dir, self.config.examples_dir),
            shopfloor_version(),
        ) if source else CopyReport()
        return self.examples

    async def status(self) -> JobStatus:
        await self.watcher.refresh()
        status = self.watcher.status()
        status.extra = {
            "warn_minutes": list(self.config.warn_minutes),
            "help_url": self.config.help_url,
            "gallery_url": f"{self.hub_prefix.rstrip('/')}/services/apps/"
            if self.hub_prefix else "",
            "examples_dir": self.relative(self.config.examples_dir),
            "version": shopfloor_version(),
            # The idle culler's limit for this session and how long it has been idle.
            "idle_minutes": self.config.idle_minutes,
            "idle_warn_minutes": self.config.idle_warn_minutes,
            "idle_seconds": self.idle_seconds(),
        }
        return status


def help_text(status: JobStatus, log: str) -> str:
    """What a support person needs, as plain text to copy."""
    def when(epoch: float | None) -> str:
        if epoch is None:
            return "unknown"
        return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")

    lines = [
        f"user:       {status.user or 'unknown'}",
        f"session:    {status.server_name or 'default'}",
        f"job id:     {status.job_id or 'not in a Slurm job'}",
        f"partition:  {status.partition or 'unknown'}",
        f"node:       {status.node or 'unknown'}",
        f"time limit: {status.time_limit or 'unknown'}",
        f"job ends:   {when(status.end_epoch)}",
        f"shopfloor:  {status.extra.get('version', '')}",
    ]
    if log:
        lines += ["", "last lines of the job log:", log]
    return "\n".join(lines) + "\n"


class _LabHandler(APIHandler):
    def initialize(self, lab: LabState) -> None:
        self.lab = lab

    def _json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))


class StatusHandler(_LabHandler):
    """``GET status``: the job's facts for the status bar."""

    # The status bar polls this every 30 s: that must not count as the user's activity, or
    # an open tab would keep a forgotten session from ever being idle (jupyter_server's
    # documented switch for such handlers).
    _track_activity = False

    @web.authenticated
    async def get(self) -> None:
        status = await self.lab.status()
        if self.lab.watcher.last_error is not None:
            self.log.warning("shopfloor: cannot read job %s from Slurm: %s",
                             status.job_id, self.lab.watcher.last_error)
        self._json(status.to_json())


class HelpHandler(_LabHandler):
    """``GET help``: the job's facts and the end of its log, as text to copy."""

    @web.authenticated
    async def get(self) -> None:
        await self.lab.watcher.refresh(force=True)
        status = await self.lab.status()
        log = redact(tail(status.log_path, self.lab.config.log_lines))
        self._json({**status.to_json(), "log": log, "text": help_text(status, log)})


class KeepHandler(_LabHandler):
    """``POST keep``: the user chose to keep an idle session (counts as activity)."""

    @web.authenticated
    async def post(self) -> None:
        self.update_api_activity()  # now, so the answer shows the idle time restarted
        self._json({"idle_seconds": self.lab.idle_seconds()})


class PanelHandler(_LabHandler):
    """``POST panels/<card>`` (body ``{"notebook": path}`` for Publish): the card's notebook."""

    @web.authenticated
    async def post(self, name: str) -> None:
        body = self.get_json_body() or {}
        notebook = body.get("notebook") if isinstance(body, dict) else None
        if notebook is not None and not isinstance(notebook, str):
            raise web.HTTPError(400, "notebook must be a path")
        cfg = self.lab.config
        try:
            path = write_panel_notebook(name, self.lab.root_dir,
                                        cfg.resolve(self.lab.root_dir, cfg.panels_dir), notebook)
        except PanelError as exc:
            raise web.HTTPError(400, str(exc)) from None
        self._json({"path": path.relative_to(self.lab.root_dir.resolve()).as_posix()})


class ExamplesHandler(_LabHandler):
    """``POST examples``: copy the examples again (as at start); ``GET``: the last report."""

    @web.authenticated
    async def get(self) -> None:
        report = self.lab.examples or CopyReport()
        self._json({"dir": self.lab.relative(self.lab.config.examples_dir), **vars(report)})

    @web.authenticated
    async def post(self) -> None:
        report = self.lab.copy_examples()
        self._json({"dir": self.lab.relative(self.lab.config.examples_dir), **vars(report)})


class SupportHandler(_LabHandler):
    """``GET support``: this session's help requests and the site's limits; ``POST`` (body
    ``{"message": ..., "hours": ...}``): ask for help on this session; ``DELETE
    support/<id>``: revoke. The server asks the hub with its own token (which may do this for
    this session only), so the browser talks to nobody but its own server.
    """

    def _hub(self) -> tuple[Any, str]:
        from shopfloor.session.hubapi import Hub, HubError

        try:
            return Hub(), os.environ.get("JUPYTERHUB_SERVER_NAME", "")
        except HubError as exc:
            raise web.HTTPError(503, str(exc)) from None

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        from shopfloor.session.hubapi import HubError

        try:
            return await asyncio.to_thread(fn, *args)  # requests blocks; the server must not
        except HubError as exc:
            raise web.HTTPError(exc.status or 502, str(exc)) from None

    @web.authenticated
    async def get(self) -> None:
        hub, server = self._hub()
        data = await self._call(hub.help_requests)
        self._json({
            "session": server or "default",
            "max_hours": data.get("max_hours"), "default_hours": data.get("default_hours"),
            "requests": [r for r in data.get("mine", []) if r.get("server") == server],
        })

    @web.authenticated
    async def post(self) -> None:
        from shopfloor.resources import RequestError

        body = self.get_json_body()
        if not isinstance(body, dict):
            raise web.HTTPError(400, "the body must be a JSON object with message and hours")
        hub, server = self._hub()
        try:
            request = await self._call(hub.ask_for_help, server, body.get("message"),
                                       body.get("hours"))
        except RequestError as exc:
            self._json({"message": str(exc), "problems": dict(exc.problems)}, 400)
            return
        self._json(request, 201)

    @web.authenticated
    async def delete(self, request_id: str) -> None:
        hub, _server = self._hub()
        await self._call(hub.revoke_help, int(request_id))
        self.set_status(204)
        self.finish()


class MyModelsHandler(JupyterHandler):
    """``GET models``: the user's saved fine-tuned models and runs, read as the user.

    The hub's home page asks the hub, which asks this for the user with a short-lived token
    of theirs for this server only (``shopfloor.extensions.home_models``; a browser fetch
    here would loop through the login, as it lacks this server's XSRF token): the hub itself
    never opens users' files. Not an API handler, so it does not count as the user's
    activity (only API handlers do): the home page's polling keeps no idle session alive.
    """

    @web.authenticated
    async def get(self) -> None:
        from shopfloor.finetune.mine import my_models

        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(my_models()))


def handlers(base_url: str, lab: LabState) -> list[tuple[str, type, dict[str, Any]]]:
    prefix = url_path_join(base_url, "shopfloor/lab")
    args = {"lab": lab}
    return [
        (url_path_join(prefix, "status"), StatusHandler, args),
        (url_path_join(prefix, "help"), HelpHandler, args),
        (url_path_join(prefix, "keep"), KeepHandler, args),
        (url_path_join(prefix, r"panels/(?P<name>[a-z]+)"), PanelHandler, args),
        (url_path_join(prefix, "examples"), ExamplesHandler, args),
        (url_path_join(prefix, "models"), MyModelsHandler, {}),
        (url_path_join(prefix, "support"), SupportHandler, args),
        (url_path_join(prefix, r"support/(?P<request_id>[0-9]{1,12})"), SupportHandler, args),
    ]


def install(serverapp: Any, watcher: JobWatcher | None = None) -> LabState:
    """Add the handlers to a running Jupyter server and copy the examples (first start)."""
    config = ShopfloorLab(parent=serverapp)
    lab = LabState(
        config=config,
        watcher=watcher or JobWatcher(refresh_seconds=config.job_refresh_seconds),
        root_dir=Path(serverapp.root_dir).expanduser(),
        hub_prefix=os.environ.get("JUPYTERHUB_BASE_URL", "") if
        os.environ.get("JUPYTERHUB_API_URL") else "",
        last_activity=serverapp.web_app.last_activity,
    )
    try:
        report = lab.copy_examples()
        serverapp.log.info("shopfloor: examples in %s: %s", config.examples_dir, report.summary())
    except OSError as exc:
        # A full or read-only home must not stop the session from starting.
        serverapp.log.warning("shopfloor: could not copy the examples into %s: %s",
                              config.examples_dir, exc)
    serverapp.web_app.add_handlers(".*$", handlers(serverapp.web_app.settings["base_url"], lab))
    serverapp.log.info("shopfloor: JupyterLab status, help and cards served under %s",
                       url_path_join(serverapp.web_app.settings["base_url"], "shopfloor/lab/"))
    return lab
