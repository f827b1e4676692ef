"""A person logs in, picks a partition on the spawn page and gets JupyterLab (real Chromium)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import RunningHub, squeue_jobs

pytestmark = [pytest.mark.browser, pytest.mark.hub, pytest.mark.slow]


def test_login_pick_partition_jupyterlab(hub: RunningHub, page, artifacts: Path) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{hub.url}/hub/login")
    page.fill("#username_input", "alice")
    page.fill("#password_input", hub.passwords["alice"])
    page.click("#login_submit")
    page.wait_for_url("**/hub/spawn**")
    # The live availability table lists every partition alice may use.
    rows = page.locator("#sf-partitions tbody tr")
    assert rows.count() == 3
    assert "Demo GPUs" in page.locator("tr[data-partition=gpu]").inner_text()
    # The form preselects alice's last choice (an earlier test may have left debug with other
    # values), so pick another partition first: choosing debug then fires its reset.
    page.check("input[name=partition][value=cpu]")
    page.check("input[name=partition][value=debug]")
    # Choosing debug resets the fields to debug's defaults and limits.
    assert page.input_value("#sf-walltime") == "30"
    assert page.get_attribute("#sf-cpus", "max") == "2"
    page.screenshot(path=str(artifacts / "spawn-page.png"), full_page=True)
    page.click("input[type=submit], button[type=submit]")
    try:
        page.wait_for_url("**/user/alice/lab**", timeout=120_000)
        page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)
        # A fresh workspace: other tests may have left notebooks open in alice's layout.
        page.goto(f"{hub.url}/user/alice/lab?reset")
        page.wait_for_selector(".jp-LauncherCard", timeout=60_000)
        page.screenshot(path=str(artifacts / "jupyterlab.png"))
        jobs = [j for j in squeue_jobs("alice") if j["name"] == "shopfloor-alice-default"]
        assert jobs and jobs[0]["partition"] == "debug" and jobs[0]["state"] == "RUNNING"
    finally:
        hub.client("alice").stop()
    # Next time, the spawn page preselects what alice chose last.
    page.goto(f"{hub.url}/hub/spawn")
    assert page.is_checked("input[name=partition][value=debug]")
    assert page.input_value("#sf-walltime") == "30"
