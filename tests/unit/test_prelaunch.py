"""The app job's first kernel, started while Voila imports (:mod:`shopfloor.apps.prelaunch`),
and taken over by jupyter_client's kernel manager (:mod:`shopfloor.apps.provisioner`) only
when it is exactly the kernel asked for. Real kernels, real jupyter_client; no Voila, no Slurm
(``test_apps_startup.py`` runs the whole job, ``tests/integration/test_apps_speed.py`` on the
cluster)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import KernelProvisionerFactory
from traitlets.config import Config, LoggingConfigurable

from shopfloor.apps import prelaunch

NOTEBOOK = Path(__file__).resolve().parents[2] / "example_notebooks" / "slider_app.ipynb"


@pytest.fixture(autouse=True)
def nothing_left_waiting() -> Iterator[None]:
    KernelProvisionerFactory.clear_instance()
    yield
    prelaunch.discard()
    prelaunch.claimed = None
    KernelProvisionerFactory.clear_instance()


@pytest.fixture
def notebook(tmp_path: Path) -> Path:
    folder = tmp_path / "app"
    folder.mkdir()
    shutil.copy(NOTEBOOK, folder / "app.ipynb")
    return folder / "app.ipynb"


@pytest.fixture
def runtime(tmp_path: Path) -> Path:
    return tmp_path / "runtime"


def manager(connection_file: Path) -> AsyncKernelManager:
    """A kernel manager configured as the app job's Voila configures its own (the provisioner
    factory reads the configuration of the manager's parent, Voila's kernel manager there)."""
    config = Config()
    config.KernelProvisionerFactory.default_provisioner_name = prelaunch.PROVISIONER
    return AsyncKernelManager(parent=LoggingConfigurable(config=config), kernel_name="python3",
                              connection_file=str(connection_file))


def kernel_env() -> dict[str, str]:
    return {**os.environ, "VOILA_APP_PORT": "8123", "VOILA_PREHEAT": "True"}


def _exited(kernel: prelaunch.PrelaunchedKernel) -> bool:
    return kernel.process.poll() is not None and not os.path.exists(kernel.connection_file)


async def _run(km: AsyncKernelManager, code: str) -> str:
    client = km.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        out: list[str] = []

        def keep(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])

        await client.execute_interactive(code, output_hook=keep, timeout=60)
        return "".join(out)
    finally:
        client.stop_channels()


def test_the_notebooks_kernel_name(tmp_path: Path) -> None:
    assert prelaunch.notebook_kernel(str(NOTEBOOK)) == "python3"
    for name, body in (("none.ipynb", {"metadata": {}}), ("bad.ipynb", "{not json"),
                       ("odd.ipynb", {"metadata": {"kernelspec": "python3"}})):
        path = tmp_path / name
        path.write_text(body if isinstance(body, str) else json.dumps(body))
        assert prelaunch.notebook_kernel(str(path)) is None, name
    assert prelaunch.notebook_kernel(str(tmp_path / "missing.ipynb")) is None


async def test_the_manager_takes_the_kernel_started_ahead(notebook: Path,
                                                          runtime: Path) -> None:
    env = kernel_env()
    kernel = prelaunch.start(str(notebook), env, runtime_dir=str(runtime))
    assert kernel is not None
    assert stat.S_IMODE(os.stat(kernel.connection_file).st_mode) == 0o600
    # The kernelspec lookup left jupyter_client's provisioner factory unmade, so that Voila's
    # managers make it with Voila's configuration.
    assert not KernelProvisionerFactory.initialized()
    own_file = runtime / "kernel-manager.json"
    km = manager(own_file)
    await km.start_kernel(env=env, cwd=str(notebook.parent))
    try:
        assert km.provisioner.pid == kernel.process.pid
        assert prelaunch.claimed is kernel
        assert km.connection_file == kernel.connection_file and not own_file.exists()
        said = await _run(km, "import os; print(os.getcwd(), os.environ['VOILA_APP_PORT'])")
        assert said.split() == [str(notebook.parent), "8123"]
        assert not prelaunch.discard()  # nothing is left waiting
    finally:
        await km.shutdown_kernel()
    assert _exited(kernel)  # the manager owns it now: it stopped it and removed its file


async def test_a_kernel_that_is_not_the_one_asked_for_is_stopped(
        notebook: Path, runtime: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Another environment (here one value of one variable): the manager starts its own kernel,
    and the log names the variable, never its values."""
    kernel = prelaunch.start(str(notebook), {**kernel_env(), "APP_SETTING": "value-one"},
                             runtime_dir=str(runtime))
    assert kernel is not None
    km = manager(runtime / "kernel-manager.json")
    with caplog.at_level(logging.INFO, logger="shopfloor.apps.prelaunch"):
        await km.start_kernel(env={**kernel_env(), "APP_SETTING": "value-two"},
                              cwd=str(notebook.parent))
    try:
        assert km.provisioner.pid != kernel.process.pid
        assert _exited(kernel)
        assert prelaunch.claimed is None
        assert "APP_SETTING" in caplog.text
        assert "value-one" not in caplog.text and "value-two" not in caplog.text
        said = await _run(km, "import os; print(os.environ['APP_SETTING'])")
        assert said.strip() == "value-two"
    finally:
        await km.shutdown_kernel()


def test_another_command_or_folder_is_not_the_kernel(notebook: Path, runtime: Path) -> None:
    env = kernel_env()
    for differs in ("command", "folder"):
        kernel = prelaunch.start(str(notebook), env, runtime_dir=str(runtime))
        assert kernel is not None
        other = str(runtime / "other.json")
        argv = [arg.replace(kernel.connection_file, other) for arg in kernel.argv]
        cwd = notebook.parent
        if differs == "command":
            argv.append("--debug")
        else:
            cwd = notebook.parent.parent
        assert prelaunch.claim(argv, env, cwd, other) is None, differs
        assert _exited(kernel), differs
        assert prelaunch.claim(argv, env, cwd, other) is None  # nothing is waiting any more


def test_the_same_kernel_elsewhere_is_claimed_once(notebook: Path, runtime: Path) -> None:
    env = kernel_env()
    kernel = prelaunch.start(str(notebook), env, runtime_dir=str(runtime))
    assert kernel is not None
    other = str(runtime / "other.json")
    argv = [arg.replace(kernel.connection_file, other) for arg in kernel.argv]
    assert prelaunch.claim(argv, env, str(notebook.parent), other) is kernel
    assert prelaunch.claim(argv, env, str(notebook.parent), other) is None
    kernel.stop()
    assert _exited(kernel)


def test_kernels_with_their_own_ways_are_left_to_voila(
        tmp_path: Path, runtime: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernelspec with its own provisioner or environment, or one that is not installed:
    nothing starts ahead (Voila starts it as it always does)."""
    kernels = tmp_path / "share" / "kernels"
    python = {"argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
              "display_name": "P", "language": "python"}
    for name, extra in (("with-env", {"env": {"A": "1"}}),
                        ("with-provisioner", {"metadata": {"kernel_provisioner": {
                            "provisioner_name": "local-provisioner"}}})):
        (kernels / name).mkdir(parents=True)
        (kernels / name / "kernel.json").write_text(json.dumps({**python, **extra}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share"))
    for name in ("with-env", "with-provisioner", "not-installed"):
        notebook = tmp_path / f"{name}.ipynb"
        notebook.write_text(json.dumps({"metadata": {"kernelspec": {"name": name}},
                                        "cells": [], "nbformat": 4, "nbformat_minor": 5}))
        assert prelaunch.start(str(notebook), kernel_env(), runtime_dir=str(runtime)) is None
    assert not runtime.exists() or not list(runtime.iterdir())


def test_an_unclaimed_kernel_is_discarded(notebook: Path, runtime: Path) -> None:
    kernel = prelaunch.start(str(notebook), kernel_env(), runtime_dir=str(runtime))
    assert kernel is not None
    assert prelaunch.discard()
    assert _exited(kernel)
    assert not prelaunch.discard()
