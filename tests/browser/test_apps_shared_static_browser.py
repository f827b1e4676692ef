"""A second app reuses the first one's Voila files from the browser's cache, in real Chromium.

bob, logged in to the hub, opens alice's app "first" (its job cold-starts), then her app
"second" in the same browser. Both pages load Voila's bundle, the widget manager and the
template's CSS from the one shared path of the app origin; the second page takes every one of
them from the browser's cache (nothing of them crosses the network), and its slider works.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from appsupport import apps_hub, install_notebook, origin_of, publish_app
from support import RunningHub

pytestmark = [pytest.mark.browser, pytest.mark.hub, pytest.mark.cluster, pytest.mark.slow]
WIDGET = ".widget-slider"

#: Every resource of the page: its path, whether it crossed the network (``transferSize`` is
#: 0 for the browser's cache), its start time.
RESOURCES = """() => performance.getEntriesByType('resource').map(r => ({
  path: new URL(r.name).pathname, network: r.transferSize > 0, start: r.startTime}))"""


@pytest.fixture(scope="module")
def ahub(local_cluster: object, passwords: dict[str, str]) -> Iterator[RunningHub]:
    with apps_hub(passwords, idle_stop_minutes=10, partition="cpu",
                  walltime="0:20:00") as hub:
        yield hub


def app_url(hub: RunningHub, notebook: Path, slug: str) -> str:
    return f"{origin_of(hub)}/services/apps/{publish_app(hub, notebook, slug)}/"


def open_app(page: Any, url: str) -> list[dict[str, Any]]:
    """Open an app (through its progress page on a cold start) until its slider shows; the
    resources of the final page."""
    page.goto(url, wait_until="commit", timeout=60_000)
    page.wait_for_selector(WIDGET, state="visible", timeout=180_000)
    return page.evaluate(RESOURCES)


def test_the_second_app_takes_voilas_files_from_the_cache(  # type: ignore[no-untyped-def]
    ahub: RunningHub, page, artifacts: Path
) -> None:
    notebook = install_notebook("alice")
    first, second = app_url(ahub, notebook, "cache-one"), app_url(ahub, notebook, "cache-two")
    page.goto(f"{ahub.url}/hub/login")
    page.fill("#username_input", "bob")
    page.fill("#password_input", ahub.passwords["bob"])
    page.click("#login_submit")
    page.wait_for_load_state()

    one = open_app(page, first)
    shared_one = [r for r in one if r["path"].startswith("/services/apps/_static/")]
    own_one = [r for r in one if "/voila/static/" in r["path"]
               or "/voila/labextensions/" in r["path"] or "/voila/templates/" in r["path"]]
    # Voila's bundle and its chunks, the extensions, the template's CSS: all shared.
    assert len(shared_one) >= 50, one
    assert not own_one, own_one
    assert any(r["path"].endswith("/static/voila.js") for r in shared_one)
    assert any("/labextensions/@jupyter-widgets/" in r["path"] for r in shared_one)
    assert any(r["path"].endswith("/templates/lab/static/index.css") for r in shared_one)

    page.goto("about:blank")  # leave as a viewer does (Voila's goodbye frees the kernel)
    two = open_app(page, second)
    page.screenshot(path=str(artifacts / "apps-shared-static-second.png"), full_page=True)
    shared_two = [r for r in two if r["path"].startswith("/services/apps/_static/")]
    assert {r["path"] for r in shared_two} == {r["path"] for r in shared_one}
    fetched = [r["path"] for r in shared_two if r["network"]]
    assert not fetched, fetched  # every shared file came from the cache
    # The second app's own requests still reach its job: the page and its kernel.
    assert any("/services/apps/alice/cache-two/api/kernels/" in r["path"] for r in two)
    # And the app works: moving the slider redraws the wave through the kernel.
    page.locator(".widget-slider .noUi-handle").first.focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "document.querySelector('.widget-html svg').getAttribute('data-frequency') === '2'",
        timeout=30_000)
