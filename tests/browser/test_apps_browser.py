"""bob opens alice's app from the gallery in real Chromium and moves its slider."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from appsupport import SHARE_GROUP, apps_hub, install_notebook, origin_of, share_group
from support import REPO, RunningHub

pytestmark = [pytest.mark.browser, pytest.mark.hub, pytest.mark.cluster, pytest.mark.slow]
SCREENSHOTS = REPO / "docs" / "screenshots"


@pytest.fixture(scope="module")
def ahub(local_cluster: object, passwords: dict[str, str]) -> Iterator[RunningHub]:
    with apps_hub(passwords, idle_stop_minutes=10, partition="cpu",
                  walltime="0:20:00") as hub:
        share_group(hub, ["bob"])
        yield hub


def frequency(page) -> str:  # type: ignore[no-untyped-def]
    return page.locator(".widget-html svg").first.get_attribute("data-frequency") or ""


def test_bob_opens_shared_app_and_moves_the_slider(  # type: ignore[no-untyped-def]
    ahub: RunningHub, page, artifacts: Path
) -> None:
    notebook = install_notebook("alice")
    token = ahub.client("alice").token()
    resp = requests.post(
        f"{ahub.url}/services/apps/api/apps", headers={"Authorization": f"token {token}"},
        json={"notebook": str(notebook), "title": "Wave explorer", "slug": "wave",
              "description": "Move the slider: the sine wave follows.", "audience": "groups",
              "names": [SHARE_GROUP], "files": ["logo.svg"]},
        timeout=60,
    )
    assert resp.status_code == 201, resp.text

    page.goto(f"{ahub.url}/hub/login")
    page.fill("#username_input", "bob")
    page.fill("#password_input", ahub.passwords["bob"])
    page.click("#login_submit")
    page.wait_for_load_state()
    page.goto(f"{ahub.url}/services/apps/?filter=shared")
    card = page.locator('a.card[data-app="alice/wave"]')
    card.wait_for(timeout=30_000)
    assert "by alice" in card.inner_text() and "Wave explorer" in card.inner_text()
    page.wait_for_function("document.querySelector('a.card img').naturalWidth > 0")
    page.screenshot(path=str(artifacts / "apps-gallery.png"), full_page=True)
    card.click()
    # The first visit starts the app's Slurm job: a progress page, then the app itself.
    page.wait_for_selector(".widget-slider", timeout=120_000)
    assert re.search(r"/services/apps/alice/wave/$", page.url)
    assert page.url.startswith(origin_of(ahub))  # the app's own origin, not the hub's
    assert page.locator("text=wave_svg(").count() == 0  # sources are stripped
    assert frequency(page) == "1"
    handle = page.locator(".widget-slider .noUi-handle").first
    handle.focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "document.querySelector('.widget-html svg').getAttribute('data-frequency') === '4'",
        timeout=15_000,
    )
    assert frequency(page) == "4"
    page.screenshot(path=str(artifacts / "apps-app.png"), full_page=True)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(artifacts / "apps-gallery.png", SCREENSHOTS / "gallery.png")
    shutil.copy(artifacts / "apps-app.png", SCREENSHOTS / "app.png")
