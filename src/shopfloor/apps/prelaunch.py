"""An app job's first kernel, started while Voila is still being imported.

A cold app start used to run one thing after the other: Python imports Voila (half a second),
Voila starts its pool's kernel (a process that imports ipykernel and IPython), the kernel runs
the notebook, the page is served. The kernel does not need Voila to start, only to be told
its connection file, environment and folder, all of which the job knows before importing
Voila. So :mod:`shopfloor.apps.jobstart` calls :func:`start` first, and the kernel boots on
the other core while Voila imports.

Voila then asks for its pool's kernel as usual; the app job's kernel provisioner
(:class:`shopfloor.apps.provisioner.PrelaunchedProvisioner`, jupyter_client's documented seam
for how kernels are started) hands it this one through
:func:`claim` **only when it is exactly the kernel Voila would have started**: the same
command line (connection file aside), the same environment, key for key and value for value,
the same folder. Anything else (a notebook asking for another kernel, a kernelspec with its
own provisioner or environment, a setting that changes the environment) and the waiting
kernel is stopped and Voila starts its own, as it would have without us. One kernel is ever
waiting, for one claim: the pool's first; every later kernel starts the usual way.

This module imports nothing of Jupyter at import time (it runs before Voila is imported; the
kernelspec lookup imports :mod:`jupyter_client.kernelspec`, which Voila imports anyway).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: The provisioner's name (``jupyter_client.kernel_provisioners`` entry point, pyproject.toml).
PROVISIONER = "shopfloor-prelaunched"
PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
KERNEL_IP = "127.0.0.1"
#: What stands for the connection file when two command lines are compared.
_CONNECTION_FILE = "\0connection-file\0"
log = logging.getLogger(__name__)


@dataclass
class PrelaunchedKernel:
    """A kernel process started ahead of Voila, and everything it was started with."""

    process: subprocess.Popen[bytes]
    argv: list[str]
    #: Its environment, as jupyter_client's ``launch_kernel`` is given it.
    env: dict[str, str]
    cwd: str
    connection_file: str
    #: jupyter_client's connection info (``key`` as bytes, as its managers hold it).
    info: dict[str, Any]
    #: ``time.monotonic()`` when it was started.
    started: float = 0.0

    def stop(self) -> None:
        """Stop the kernel (its whole process group) and remove its connection file."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except OSError:
                self.process.kill()
            self.process.wait(timeout=30)
        try:
            os.remove(self.connection_file)
        except FileNotFoundError:
            pass


_waiting: PrelaunchedKernel | None = None
#: The kernel :func:`claim` handed over, once it has.
claimed: PrelaunchedKernel | None = None


def notebook_kernel(notebook: str) -> str | None:
    """The kernel a notebook names (``metadata.kernelspec.name``), ``None`` where it names
    none or cannot be read (Voila then chooses: not ours to guess)."""
    try:
        with open(notebook, encoding="utf-8") as handle:
            name = json.load(handle).get("metadata", {}).get("kernelspec", {}).get("name")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and name else None


def kernel_command(spec: Any, connection_file: str) -> list[str]:
    """``spec.argv`` formatted as jupyter_client's ``KernelManager.format_kernel_cmd`` does
    (``python`` → this interpreter; ``{connection_file}``, ``{prefix}``, ``{resource_dir}``)."""
    argv = list(spec.argv)
    if argv and argv[0] in {"python", f"python{sys.version_info[0]}",
                            f"python{sys.version_info[0]}.{sys.version_info[1]}"}:
        argv[0] = sys.executable
    values = {"connection_file": os.path.realpath(connection_file), "prefix": sys.prefix,
              "resource_dir": spec.resource_dir}
    return [re.sub(r"\{([A-Za-z0-9_]+)\}", lambda m: values.get(m.group(1), m.group(0)), arg)
            for arg in argv]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((KERNEL_IP, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _write_connection_file(runtime_dir: str, info: Mapping[str, Any], kernel: str) -> str:
    """A new connection file in ``runtime_dir``, readable by this user only."""
    os.makedirs(runtime_dir, mode=0o700, exist_ok=True)
    path = os.path.join(runtime_dir, f"kernel-{uuid.uuid4()}.json")
    body = {**info, "key": info["key"].decode(), "kernel_name": kernel}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(body, handle, indent=1)
    return path


def start(notebook: str, env: Mapping[str, str], runtime_dir: str | None = None
          ) -> PrelaunchedKernel | None:
    """Start the kernel ``notebook`` names, with ``env`` (the environment Voila's pool would
    give it: this process's, Voila's own variables added), in the notebook's folder, and keep
    it for :func:`claim`. ``None`` (nothing started) where the notebook names no kernel, the
    kernelspec is unknown, or it brings its own provisioner or environment."""
    global _waiting
    name = notebook_kernel(notebook)
    if name is None:
        return None
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    from jupyter_client.provisioning import KernelProvisionerFactory
    from jupyter_core.paths import jupyter_runtime_dir

    made_factory = not KernelProvisionerFactory.initialized()
    try:
        spec = KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        return None
    finally:
        if made_factory:
            # The lookup made jupyter_client's provisioner factory (a singleton) without the
            # configuration Voila is about to load: Voila's kernel managers make their own.
            KernelProvisionerFactory.clear_instance()
    if spec.metadata.get("kernel_provisioner") or spec.env:
        return None
    ports = _free_ports(len(PORT_NAMES))
    info: dict[str, Any] = {**dict(zip(PORT_NAMES, ports, strict=True)), "ip": KERNEL_IP,
                            "key": str(uuid.UUID(bytes=secrets.token_bytes(16))).encode(),
                            "transport": "tcp", "signature_scheme": "hmac-sha256"}
    connection_file = _write_connection_file(runtime_dir or jupyter_runtime_dir(), info, name)
    argv = kernel_command(spec, connection_file)
    kernel_env = dict(env)
    if (spec.language or "").lower().startswith("python"):
        kernel_env.pop("PYTHONEXECUTABLE", None)  # as jupyter_client's provisioner does
    cwd = os.path.dirname(os.path.abspath(notebook))
    try:  # as jupyter_client's launch_kernel does (which adds JPY_PARENT_PID: the kernel
        # ends when this process does)
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, cwd=cwd, start_new_session=True,
                                   env={**kernel_env, "JPY_PARENT_PID": str(os.getpid())})
    except OSError:
        os.remove(connection_file)
        return None
    _waiting = PrelaunchedKernel(process, argv, kernel_env, cwd, connection_file, info,
                                 time.monotonic())
    return _waiting


def claim(cmd: Sequence[str], env: Mapping[str, str] | None, cwd: Any,
          connection_file: str) -> PrelaunchedKernel | None:
    """The waiting kernel, if it is exactly the one about to be started (``cmd`` with the
    manager's ``connection_file``, ``env``, ``cwd``), else ``None``. Either way there is no
    waiting kernel afterwards: one that does not match is stopped."""
    global _waiting
    kernel, _waiting = _waiting, None
    if kernel is None:
        return None
    differs = []
    ours = [arg.replace(os.path.realpath(kernel.connection_file), _CONNECTION_FILE)
            for arg in kernel.argv]
    theirs = [arg.replace(os.path.realpath(connection_file), _CONNECTION_FILE) for arg in cmd]
    if ours != theirs:
        differs.append("command")
    wanted = dict(env) if env is not None else dict(os.environ)
    changed = sorted(k for k in set(wanted) | set(kernel.env) if wanted.get(k) != kernel.env.get(k))
    if changed:
        differs.append("environment (" + ", ".join(changed) + ")")  # names only, never values
    if os.path.abspath(str(cwd or os.getcwd())) != kernel.cwd:
        differs.append("folder")
    if kernel.process.poll() is not None:
        differs.append("it has exited")
    if differs:
        log.info("shopfloor: the kernel started ahead is not the one asked for (%s); "
                 "starting that one instead", "; ".join(differs))
        kernel.stop()
        return None
    global claimed
    claimed = kernel
    return kernel


def discard() -> bool:
    """Stop the waiting kernel if nothing claimed it (Voila started its kernel another way);
    whether there was one."""
    global _waiting
    kernel, _waiting = _waiting, None
    if kernel is None:
        return False
    kernel.stop()
    return True


__all__ = ["PROVISIONER", "PrelaunchedKernel", "claim", "discard", "kernel_command",
           "notebook_kernel", "start"]
