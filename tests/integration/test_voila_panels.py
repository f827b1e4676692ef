"""Panels render as Voila apps (standalone Voila): compute, Ray and the fine-tuning wizard."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import requests
from support import RunningHub

pytestmark = [pytest.mark.hub, pytest.mark.slow]


@pytest.mark.parametrize(
    "panel", ["ComputePanel", "RayClusterPanel", "FineTuneWizard"],
)
def test_panel_renders_in_voila(hub: RunningHub, tmp_path: Path, panel: str) -> None:
    code = f"from shopfloor.widgets import {panel}\n{panel}()"
    voila = shutil.which("voila", path=str(Path(sys.executable).parent))
    assert voila, "voila is not installed in the venv"
    source = tmp_path / "panel.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, source)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "JUPYTERHUB_API_URL": f"{hub.site.hub.hub_bind_url}/hub/api",
           "JUPYTERHUB_API_TOKEN": hub.client("alice").token(), "JUPYTERHUB_USER": "alice"}
    proc = subprocess.Popen(
        [voila, str(source), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 90
        page = ""
        while time.monotonic() < deadline:
            try:
                page = requests.get(f"http://127.0.0.1:{port}/", timeout=90).text
                break
            except requests.ConnectionError:
                time.sleep(0.5)
        assert "application/vnd.jupyter.widget-view+json" in page, page[-2000:]
        assert "Traceback" not in page and "Something went wrong" not in page
        # The widget view, with the panel's own text fallback (its class name), sources hidden.
        assert f"{panel}(" in page, page[-3000:]
        assert "from shopfloor.widgets import" not in page
    finally:
        proc.terminate()
        proc.wait(timeout=20)
