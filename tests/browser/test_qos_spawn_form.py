"""The spawn page offers exactly the QoS of the chosen partition and account (real Chromium).

In the demo proj-ml may use the gpu QoS and proj-chem may not. Switching alice's account on
the page takes gpu off the QoS list (and drops it if chosen); a QoS forced into the page's
form anyway is refused by the hub naming ``qos``, and nothing reaches Slurm; a QoS the page
offers reaches the job (squeue's QOS).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from support import RunningHub

pytestmark = [pytest.mark.browser, pytest.mark.hub, pytest.mark.slow]


def _offered(page) -> list[str]:  # type: ignore[no-untyped-def]
    return page.eval_on_selector_all("#sf-qos option", "els => els.map(e => e.value)")


def _alice_jobs() -> list[tuple[str, str, str]]:
    out = subprocess.run(["squeue", "-h", "-u", "alice", "-n", "shopfloor-alice-default",
                          "-o", "%a|%q|%T"], capture_output=True, text=True, check=True).stdout
    return [tuple(line.split("|")) for line in out.split()]  # type: ignore[misc]


def test_spawn_page_offers_the_qos_of_the_chosen_account(hub: RunningHub, page,  # type: ignore[no-untyped-def]
                                                         artifacts: Path) -> None:
    alice = hub.client("alice")
    if alice.server_model(""):
        alice.stop()
    page.goto(f"{hub.url}/hub/login")
    page.fill("#username_input", "alice")
    page.fill("#password_input", hub.passwords["alice"])
    page.click("#login_submit")
    page.wait_for_url("**/hub/spawn**")
    page.check("input[name=partition][value=gpu]")
    page.select_option("#sf-account", "proj-ml")
    assert _offered(page) == ["", "cpu", "debug", "gpu", "normal"]
    assert page.is_visible("#sf-qos")
    page.select_option("#sf-qos", "gpu")
    page.select_option("#sf-account", "proj-chem")
    assert _offered(page) == ["", "cpu", "debug", "normal"]
    assert page.input_value("#sf-qos") == ""  # gpu is not proj-chem's: dropped, not sent
    page.screenshot(path=str(artifacts / "spawn-qos.png"), full_page=True)

    # A QoS forced into the form (devtools, a crafted POST) is the hub's to refuse.
    page.check("input[name=partition][value=debug]")
    page.eval_on_selector("#sf-qos", "s => { s.add(new Option('gpu', 'gpu')); s.value = 'gpu'; }")
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_load_state()
    body = page.inner_text("body")
    assert "'gpu' is not a QoS you may use on debug" in body, body[-1500:]
    assert _alice_jobs() == []

    # A QoS the page offers reaches Slurm with the chosen account.
    page.goto(f"{hub.url}/hub/spawn")
    page.check("input[name=partition][value=cpu]")
    page.check("input[name=partition][value=debug]")
    page.select_option("#sf-account", "proj-chem")
    page.select_option("#sf-qos", "debug")
    page.click("input[type=submit], button[type=submit]")
    try:
        page.wait_for_url("**/user/alice/**", timeout=120_000)
        jobs = _alice_jobs()
        assert jobs and jobs[0][:2] == ("proj-chem", "debug"), jobs
    finally:
        alice.stop()
    # The page preselects the last choice, QoS included.
    page.goto(f"{hub.url}/hub/spawn")
    assert page.input_value("#sf-account") == "proj-chem"
    assert page.input_value("#sf-qos") == "debug"
