"""JupyterLab warns before the idle culler stops a session, and "Keep session" counts as
activity. The test hub's debug partition stops sessions after 2 idle minutes and warns 2
minutes ahead, so the warning is due as soon as JupyterLab shows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opssupport import private_hub
from support import RunningHub

pytestmark = [pytest.mark.browser, pytest.mark.hub, pytest.mark.cluster, pytest.mark.slow]

OFFSET = 70


@pytest.fixture(scope="module")
def idle_hub(local_cluster: object, passwords: dict[str, str]) -> Iterator[RunningHub]:
    with private_hub(OFFSET, passwords, idle={
            "idle_minutes": 120, "partition_minutes": {"debug": 2}, "warn_minutes": 2,
            "check_seconds": 10}) as hub:
        yield hub


def test_idle_warning_with_keep_session(idle_hub: RunningHub, page, artifacts: Path) -> None:  # type: ignore[no-untyped-def]
    alice = idle_hub.client("alice")
    assert alice.spawn_form(partition="debug", cpus=1, memory_gb=1,
                            walltime=20).status_code == 302
    try:
        alice.wait_ready(timeout=120)
        page.goto(f"{idle_hub.url}/hub/login")
        page.fill("#username_input", "alice")
        page.fill("#password_input", idle_hub.passwords["alice"])
        page.click("#login_submit")
        page.goto(f"{idle_hub.url}/user/alice/lab?reset")
        warning = page.locator(".Toastify__toast", has_text="Idle: this session stops in about")
        warning.wait_for(timeout=90_000)
        text = warning.inner_text()
        assert "(sessions on debug stop after 2 idle minutes)" in text, text
        page.screenshot(path=str(artifacts / "lab-idle-warning.png"))
        with page.expect_response(lambda r: "/shopfloor/lab/keep?" in r.url) as kept:
            warning.get_by_role("button", name="Keep session").click()
        assert kept.value.status == 200
        assert kept.value.json()["idle_seconds"] < 5
    finally:
        alice.stop()
