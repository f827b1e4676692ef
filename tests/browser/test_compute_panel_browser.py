"""A person opens JupyterLab, runs ComputePanel(), picks debug and starts a named session."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
import requests
from playwright.sync_api import expect
from support import REPO, RunningHub, squeue_jobs

pytestmark = [pytest.mark.browser, pytest.mark.hub, pytest.mark.slow]

NOTEBOOK = "compute-panel-test.ipynb"
SESSION = "panel-demo"


def _put_notebook(hub: RunningHub, token: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "from shopfloor.widgets import ComputePanel\nComputePanel()")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    resp = requests.put(
        f"{hub.url}/user/alice/api/contents/{NOTEBOOK}",
        json={"type": "notebook", "format": "json", "content": nb},
        headers={"Authorization": f"token {token}"}, timeout=30,
    )
    assert resp.status_code in (200, 201), resp.text


def test_compute_panel_starts_a_session(hub: RunningHub, page, artifacts: Path) -> None:  # type: ignore[no-untyped-def]
    alice = hub.client("alice")
    resp = alice.spawn_form(partition="cpu", cpus=1, memory_gb=1, walltime=20)
    assert resp.status_code == 302, resp.text[-500:]
    try:
        alice.wait_ready(timeout=120)
        _put_notebook(hub, alice.token())
        page.goto(f"{hub.url}/hub/login")
        page.fill("#username_input", "alice")
        page.fill("#password_input", hub.passwords["alice"])
        page.click("#login_submit")
        # A fresh workspace: other tests may have left notebooks open in alice's layout,
        # whose hidden cells would come first.
        page.goto(f"{hub.url}/user/alice/lab/tree/{NOTEBOOK}?reset")
        cell = page.locator(".jp-Notebook .jp-Cell").first
        cell.wait_for(timeout=60_000)
        # Run the cell once the kernel is up (an earlier Shift+Enter is silently dropped).
        page.locator(".jp-StatusBar-TextItem", has_text="| Idle").wait_for(timeout=90_000)
        cell.locator(".cm-content").click()
        page.keyboard.press("Shift+Enter")
        panel = page.locator(".sf-compute-panel")
        panel.wait_for(timeout=90_000)
        table = panel.locator("table.sf-partitions")
        table.wait_for(timeout=30_000)
        assert table.locator("tbody tr").count() == 3
        assert "demo GPUs" in table.locator("tr[data-partition=gpu]").inner_text()
        panel.locator(".sf-partition select").select_option("debug")
        expect(panel.locator(".sf-limits")).to_have_text(
            "up to 2 CPUs, 2 GiB, 0 GPUs, 30 minutes")
        panel.locator(".sf-session-name input").fill(SESSION)
        panel.locator("button.sf-start").click()
        running = panel.locator(f".sf-session-running:has-text('{SESSION}')")
        running.wait_for(timeout=90_000)
        assert "debug" in running.inner_text()
        assert running.locator("a", has_text="Open").get_attribute("href") == \
            f"/user/alice/{SESSION}/"
        page.screenshot(path=str(artifacts / "compute-panel.png"), full_page=True)
        shutil.copyfile(artifacts / "compute-panel.png",
                        REPO / "docs" / "screenshots" / "compute-panel.png")
        jobs = [j for j in squeue_jobs("alice") if j["name"] == f"shopfloor-alice-{SESSION}"]
        assert jobs and jobs[0]["partition"] == "debug" and jobs[0]["state"] == "RUNNING"
    except Exception:
        page.screenshot(path=str(artifacts / "compute-panel-failure.png"), full_page=True)
        raise
    finally:
        if alice.server_model(SESSION):
            alice.stop(SESSION)
        alice.stop()
