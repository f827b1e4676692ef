"""Job side of a published app: standalone Voila that answers only the apps service.

Run inside the app's Slurm job (as the app's owner) by :mod:`shopfloor.apps.jobstart` (which
keeps an unused slow import out of Voila's start and starts the first kernel ahead) as::

    python -m shopfloor.apps.jobstart --notebook SNAPSHOT/app.ipynb \\
        --base-url /services/apps/o/a/ \\
        --callback http://hub-host:port/services/apps/api/callback/o/a --pool-size 1

The per-run secret arrives by name in ``$SHOPFLOOR_APP_SECRET`` (sbatch ``--export``);
:mod:`~shopfloor.apps.jobstart` removes it from the environment before any kernel starts, so
app code never sees it. Every request (pages, static files, kernel websockets) must carry it
in the ``X-Shopfloor-App-Secret`` header, which only the service adds: browsers never learn it, so
the job is reachable through the hub's checks only. Voila runs *standalone*: kernels accept
widget messages only (no ``execute_request``), sources are stripped, and there is no
JupyterLab, terminal, contents API or file browser.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

import tornado.ioloop
import tornado.web
from voila.app import Voila

from shopfloor.apps import prelaunch
from shopfloor.apps.shared_static import installed_index
from shopfloor.apps.voila_compat import preheated_kernel_tasks

SECRET_HEADER = "X-Shopfloor-App-Secret"
#: A kernel id (Jupyter's UUIDs). Whoever learns one of a viewer's kernel ids could ask for
#: that kernel, so they never reach a log: :class:`RedactKernelIds` blanks them.
KERNEL_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                       r"[0-9a-fA-F]{12}")
#: JupyterLab extensions installed beside Voila that an app's page would load for nothing
#: (Voila loads every federated extension of the environment): Shopfloor's own JupyterLab
#: panels and jupyter-server-proxy's launcher entries need JupyterLab's shell.
NOT_FOR_APPS = ("@shopfloor/jupyterlab", "@jupyterhub/jupyter-server-proxy")
#: Seconds a viewer's kernel may sit without a connected page before Voila reclaims it.
KERNEL_IDLE_SECONDS = 900


class RedactKernelIds(logging.Filter):
    """Replaces kernel ids in log records (Voila logs ``Kernel started: <id>``, tornado logs
    request paths that name them) with ``<kernel>``."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if KERNEL_ID.search(message):
            record.msg, record.args = KERNEL_ID.sub("<kernel>", message), None
        return True


def redact_logs(*loggers: logging.Logger) -> None:
    """Put :class:`RedactKernelIds` on every handler of the root logger and of ``loggers``."""
    root = logging.getLogger()
    if not root.handlers:
        # Without one, records (tornado's request log) go to logging's last-resort handler,
        # which no filter reaches.
        logging.basicConfig(level=logging.WARNING, format="[%(levelname)1.1s %(name)s] %(message)s")
    redact = RedactKernelIds()
    for logger in (logging.getLogger(), *loggers):
        for handler in logger.handlers:
            if not any(isinstance(f, RedactKernelIds) for f in handler.filters):
                handler.addFilter(redact)


def require_secret(handler: type, secret: str) -> type:
    """A subclass of ``handler`` that answers 403 unless the request carries ``secret``."""
    expected = secret.encode()

    class SecretRequired(handler):  # type: ignore[misc, valid-type]
        def prepare(self) -> Any:
            given = self.request.headers.get(SECRET_HEADER, "").encode()
            if not hmac.compare_digest(given, expected):
                raise tornado.web.HTTPError(403)
            return super().prepare()

    SecretRequired.__name__ = SecretRequired.__qualname__ = f"SecretRequired{handler.__name__}"
    return SecretRequired


def guard_handlers(handlers: Sequence[tuple[Any, ...]], secret: str) -> list[tuple[Any, ...]]:
    """Wrap every handler of a handler list (``(pattern, class[, kwargs])``)."""
    return [(spec[0], require_secret(spec[1], secret), *spec[2:]) for spec in handlers]


class AppVoila(Voila):
    """Standalone Voila whose every handler requires the per-run secret."""

    shopfloor_secret = ""
    shopfloor_callback = ""
    #: Seconds of this job's start-up phases, reported to the apps service with the port.
    shopfloor_timings: dict[str, float] = {}
    #: The key of this installation's static files (:mod:`shopfloor.apps.shared_static`),
    #: reported with the port: where it matches the service's, pages use the shared files.
    shopfloor_static_key = ""

    def init_handlers(self) -> list[Any]:
        return guard_handlers(super().init_handlers(), self.shopfloor_secret)

    def init_settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = super().init_settings()
        # No browser reaches the job: every request comes from the apps service with the
        # secret (which checks the viewer and drops cookies), so there is no cookie to forge
        # requests with. Without this, the service's kernel shutdowns would be refused.
        settings["disable_check_xsrf"] = True
        return settings

    def start(self) -> None:
        tornado.ioloop.IOLoop.current().add_callback(self._report_port)
        super().start()

    async def _report_port(self) -> None:
        """Report the port once the pool's kernel has started (a few tenths of a second after
        Voila listens; the notebook then runs in it while the viewer's page is on its way).
        Not earlier: Voila serves a page from its pool only once it knows the pool's notebook,
        which it learns when that kernel has started; a page asked for before renders on a
        second kernel started for it alone, from scratch, beside the pool's (both competing
        for the job's CPUs), which made some cold starts slower."""
        timings = {**self.shopfloor_timings, "listening_s": process_age()}
        await self._pool_warm()
        timings["pool_warm_s"] = process_age()
        if prelaunch.claimed is not None:  # when (process age) its kernel was started
            ahead = time.monotonic() - prelaunch.claimed.started
            timings["kernel_ahead_s"] = round(max(timings["pool_warm_s"] - ahead, 0.0), 3)
        if prelaunch.discard():
            # The pool started its kernel another way (the notebook's kernelspec has its own
            # provisioner, say): the one started ahead is not needed.
            timings["kernel_ahead_unused_s"] = timings["pool_warm_s"]
        await self._report(timings)

    async def _report(self, timings: dict[str, float]) -> bool:
        try:
            await asyncio.to_thread(report_port, self.shopfloor_callback, self.port,
                                    self.shopfloor_secret, timings=timings,
                                    static_key=self.shopfloor_static_key)
        except RuntimeError as exc:
            self.log.error("shopfloor: %s", exc)
            tornado.ioloop.IOLoop.current().stop()
            return False
        return True

    async def _pool_warm(self, timeout: float = 120) -> None:
        """Wait until the preheated kernels have rendered the notebook (first view is warm)."""
        pending = preheated_kernel_tasks(self.kernel_manager)
        if pending:
            try:
                await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), timeout)
            except TimeoutError:
                self.log.warning("shopfloor: kernel pool not warm after %.0f s", timeout)


def process_age() -> float:
    """Seconds since this process started (its exec, from ``/proc``), 0.0 where unknown."""
    try:
        with open("/proc/self/stat") as stat_file:
            fields = stat_file.read().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # starttime, 22nd field
        return round(time.clock_gettime(time.CLOCK_BOOTTIME) - started, 3)
    except (OSError, IndexError, ValueError):
        return 0.0


def report_port(callback: str, port: int, secret: str, attempts: int = 30,
                timings: dict[str, float] | None = None, static_key: str = "") -> None:
    """Tell the apps service where we listen (authenticated by the per-run secret), with the
    seconds since this process started that each start-up phase ended at (``timings``) and
    the key of the static files our Voila serves (``static_key``)."""
    body: dict[str, Any] = {"port": port}
    if timings:
        body["timings"] = timings
    if static_key:
        body["static"] = static_key
    request = urllib.request.Request(
        callback, data=json.dumps(body).encode(), method="POST",
        headers={SECRET_HEADER: secret, "Content-Type": "application/json"},
    )
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(request, timeout=20):
                return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                raise RuntimeError(f"the apps service refused our port ({exc.code})") from None
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError("could not reach the apps service to report our port")


def voila_argv(notebook: str, base_url: str, address: str, port: int, pool_size: int) -> list[str]:
    """Voila's command line: standalone, no sources, no tracebacks, a preheated pool."""
    return [
        notebook, "--no-browser", f"--Voila.ip={address}", f"--port={port}",
        "--Voila.port_retries=0", f"--Voila.base_url={base_url}",
        "--VoilaConfiguration.strip_sources=True", "--VoilaConfiguration.show_tracebacks=False",
        # ?template= and ?theme= would render with a fresh kernel each (the pool holds the
        # default's); the apps service refuses them too.
        "--VoilaConfiguration.allow_template_override=NO",
        "--VoilaConfiguration.allow_theme_override=NO",
        f"--VoilaConfiguration.preheat_kernel={pool_size > 0}",
        f"--VoilaConfiguration.default_pool_size={max(pool_size, 0)}",
        # Kernels of viewers who left are reclaimed; the pool refills itself.
        f"--MappingKernelManager.cull_idle_timeout={KERNEL_IDLE_SECONDS}",
        "--MappingKernelManager.cull_interval=60",
        # JupyterLab extensions of the environment that have nothing to do in an app's page.
        *(f"--VoilaConfiguration.extension_denylist={name}" for name in NOT_FOR_APPS),
    ]


def serve(args: argparse.Namespace, secret: str, address: str, port: int,
          prelaunched: bool = False) -> None:
    """Run the app's Voila on ``address:port`` until the job ends (``args`` as
    :func:`shopfloor.apps.jobstart.parse_args` reads them; ``secret`` already taken out of the
    environment). ``prelaunched``: a kernel was started ahead (:mod:`shopfloor.apps.prelaunch`)
    and the pool may take it."""
    imported = process_age()  # Voila's imports (this module's) ran before this call
    print(f"shopfloor: app {args.base_url} on {address}:{port}", flush=True)
    app = AppVoila()
    app.shopfloor_secret = secret
    app.shopfloor_callback = args.callback
    argv = voila_argv(args.notebook, args.base_url, address, port, args.pool_size)
    if prelaunched:
        argv.append(f"--KernelProvisionerFactory.default_provisioner_name={prelaunch.PROVISIONER}")
    app.initialize(argv)
    app.shopfloor_timings = {"imports_s": imported, "voila_ready_s": process_age()}
    # The files this Voila serves, as the owner sees them (their Jupyter paths, the template
    # Voila chose): a few milliseconds of stat calls.
    config = app.voila_configuration
    app.shopfloor_static_key = installed_index(config.template,
                                               config.extra_labextensions_path).key
    redact_logs(app.log, logging.getLogger("tornado.access"))
    app.start()
