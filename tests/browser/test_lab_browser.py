"""Shopfloor inside JupyterLab, with clicks only: cards, status bar, warning, publish, help.

alice starts a 15-minute session on the debug partition (so the 15-minute warning is due at
once), opens JupyterLab and, without typing code: sees the examples, opens every card's panel,
reads the time left, saves all from the warning, publishes a notebook from its toolbar and
copies the Help text. The seconds from each click to its panel are written to
``artifacts/lab-timings.json`` (reported, not asserted). Needs the lead's integration of
issue 13 (``/work/notes/lab-integration.md``): the built extension installed in the venv, the
server extension enabled, ``PublishPanel()``/``TrainerPanel()`` without arguments.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
from support import REPO, RunningHub, squeue_jobs

pytestmark = [pytest.mark.browser, pytest.mark.hub, pytest.mark.cluster, pytest.mark.slow]

#: What shows that a card's panel is up, by card label.
PANELS = {
    "Compute": ".sf-compute-panel",
    "Ray cluster": ".sf-ray-form, .sf-ray-summary",
    "Fine-tune a model": ".sf-finetune-wizard",
    "Publish as app": ".jp-OutputArea-output .widget-vbox",
    "Workshops": ".jp-OutputArea-output .widget-vbox",
}
STDERR = "[data-mime-type='application/vnd.jupyter.stderr']"
CARDS = ["Compute", "Ray cluster", "Fine-tune a model", "Publish as app", "Apps gallery",
         "Workshops", "Examples", "Help"]


def _shot(page, artifacts: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    shot = artifacts / f"lab-{name}.png"
    page.screenshot(path=str(shot))
    shutil.copyfile(shot, REPO / "docs" / "screenshots" / shot.name)


def _launcher(page):  # type: ignore[no-untyped-def]
    # Each new launcher is a tab of its own; the earlier ones stay in the page, hidden.
    launcher = page.locator(".jp-Launcher:visible")
    launcher.first.wait_for(timeout=5_000)
    return launcher.locator(".jp-Launcher-section", has_text="Shopfloor")


def _new_launcher(page):  # type: ignore[no-untyped-def]
    page.keyboard.press("Control+Shift+L")  # the stock "New Launcher" shortcut
    section = _launcher(page)
    section.wait_for(timeout=30_000)
    return section


def _session_env(user: str, job_id: str) -> dict[str, str]:
    """The environment of the server process of ``user``'s Slurm job ``job_id``."""
    pids = subprocess.run(["pgrep", "-u", user, "-f", "jupyterhub-singleuser"],
                          capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        env = dict(e.decode(errors="replace").split("=", 1) for e in raw if b"=" in e)
        if env.get("SLURM_JOB_ID") == job_id:
            return env
    raise AssertionError(f"no server process for job {job_id}")


def _visible_panel(page):  # type: ignore[no-untyped-def]
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")


def test_everything_is_one_click_away(hub: RunningHub, page, artifacts: Path) -> None:  # type: ignore[no-untyped-def]
    alice = hub.client("alice")
    resp = alice.spawn_form(partition="debug", cpus=1, memory_gb=1, walltime=15)
    assert resp.status_code == 302, resp.text[-500:]
    timings: dict[str, float] = {}
    try:
        alice.wait_ready(timeout=120)
        token = alice.token()
        job = next(j for j in squeue_jobs("alice") if j["name"] == "shopfloor-alice-default")
        # The site's settings for the session reach the job (Spawner.environment).
        env = _session_env("alice", job["id"])
        assert env["SHOPFLOOR_WARN_MINUTES"] == ",".join(map(str, hub.site.hub.warn_minutes))
        assert env["SHOPFLOOR_HELP_URL"] == hub.site.hub.help_url
        assert env["SHOPFLOOR_MODEL_CATALOG"] == hub.site.models.catalog_dir

        # Examples are in the home before anyone clicks anything.
        listing = requests.get(f"{hub.url}/user/alice/api/contents/shopfloor-examples",
                               headers={"Authorization": f"token {token}"}, timeout=30)
        assert listing.status_code == 200, listing.text
        names = {item["name"] for item in listing.json()["content"]}
        assert {"slider_app.ipynb", "compute_panel.ipynb"} <= names

        page.goto(f"{hub.url}/hub/login")
        page.fill("#username_input", "alice")
        page.fill("#password_input", hub.passwords["alice"])
        page.click("#login_submit")
        page.goto(f"{hub.url}/user/alice/lab?reset")
        section = _launcher(page)
        section.wait_for(timeout=90_000)
        assert section.locator(".jp-LauncherCard-label").all_inner_texts() == CARDS
        # The Shopfloor section comes first, above Notebook, Console and Other.
        titles = page.locator(".jp-Launcher:visible .jp-Launcher-sectionTitle")
        assert titles.first.inner_text() == "Shopfloor", titles.all_inner_texts()

        # Status bar: partition, node, time left, memory against the limit; and the warning.
        item = page.locator(".sf-job-status")
        item.wait_for(timeout=30_000)
        page.wait_for_function(
            "document.querySelector('.sf-job-status').textContent.includes('left')")
        text = item.inner_text()
        assert re.fullmatch(rf"debug · {job['nodes']} · 1[45] min left · [\d.]+ / 1\.0 GiB",
                            text), text
        warning = page.locator(".Toastify__toast", has_text="This session ends in")
        warning.wait_for(timeout=30_000)
        assert job["id"] in warning.inner_text()
        _shot(page, artifacts, "launcher-warning")
        warning.get_by_role("button", name="Save all").click()

        # Every panel card: one click, the panel shows.
        for label, selector in PANELS.items():
            section = _new_launcher(page)
            start = time.monotonic()
            section.locator(".jp-LauncherCard", has_text=label).click()
            _visible_panel(page).locator(selector).first.wait_for(timeout=90_000)
            timings[label] = round(time.monotonic() - start, 2)
            errors = _visible_panel(page).locator(STDERR)
            assert errors.count() == 0, errors.first.inner_text()
            _shot(page, artifacts, "card-" + label.split()[0].lower())

        # Apps gallery: the hub's gallery in a new tab.
        section = _new_launcher(page)
        with page.context.expect_page() as popup:
            section.locator(".jp-LauncherCard", has_text="Apps gallery").click()
        assert popup.value.url.endswith("/services/apps/") or "/services/apps/" in popup.value.url
        popup.value.close()

        # Examples: the file browser opens the examples folder.
        section = _new_launcher(page)
        section.locator(".jp-LauncherCard", has_text="Examples").click()
        page.locator(".jp-BreadCrumbs", has_text="shopfloor-examples").wait_for(timeout=30_000)
        page.locator(".jp-DirListing-item", has_text="slider_app.ipynb").first.wait_for()

        # Help: the facts support needs, and the site's help page.
        section = _new_launcher(page)
        start = time.monotonic()
        section.locator(".jp-LauncherCard", has_text="Help").click()
        page.wait_for_function(
            "(document.querySelector('.sf-help-text') || {}).textContent?.includes('job id')")
        timings["Help"] = round(time.monotonic() - start, 2)
        help_text = page.locator(".sf-help-text").inner_text()
        for line in ("user:       alice", f"job id:     {job['id']}", "partition:  debug",
                     f"node:       {job['nodes']}"):
            assert line in help_text
        assert token not in help_text
        # The front door on the hub is one click away: home page and catalog.
        hub_links = page.locator(".sf-help-hub-link")
        hub_links.first.wait_for()
        hrefs = {hub_links.nth(i).get_attribute("href") for i in range(hub_links.count())}
        assert {h.rsplit("/hub/", 1)[-1] for h in hrefs if h} == {"home", "catalog"}, hrefs
        _shot(page, artifacts, "help")

        # Publish from an open notebook: toolbar button → dialog → app link.
        page.goto(f"{hub.url}/user/alice/lab/tree/shopfloor-examples/slider_app.ipynb")
        page.locator(".lm-TabBar-tab.lm-mod-current", has_text="slider_app.ipynb").wait_for(
            timeout=90_000)
        start = time.monotonic()
        _visible_panel(page).locator(".sf-publish-button").click()
        dialog = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output",
                              has_text="slider_app.ipynb as an app")
        dialog.wait_for(timeout=90_000)
        timings["Publish button"] = round(time.monotonic() - start, 2)
        dialog.locator(".widget-text:has(label:text-is('Title')) input").fill("Lab wave")
        dialog.locator("button", has_text=re.compile(r"^Publish$")).click()
        published = dialog.locator(".widget-html", has_text="Published v")
        published.wait_for(timeout=120_000)
        url = re.search(r"at (\S+) \(", published.inner_text()).group(1)
        assert "/services/apps/alice/" in url
        _shot(page, artifacts, "publish")
        app = page.context.request.get(url if url.startswith("http") else hub.url + url)
        assert app.status < 400, app.status
        # The same dialog from the File menu.
        page.locator(".lm-MenuBar-itemLabel", has_text="File").click()
        assert page.locator(".lm-Menu-itemLabel", has_text="Publish as app...").count() == 1
        page.keyboard.press("Escape")
    except Exception:
        page.screenshot(path=str(artifacts / "lab-failure.png"), full_page=True)
        raise
    finally:
        (artifacts / "lab-timings.json").write_text(json.dumps(timings, indent=1))
        print("seconds from click to panel:", timings)
        alice.stop()


#: The toast of a warning before the job ends.
WARNING = ".Toastify__toast"
ENDS = "This session ends in"


def _seconds_left(page) -> float:  # type: ignore[no-untyped-def]
    return float(page.locator(".sf-job-status").get_attribute("data-seconds-left") or "nan")


def test_both_warnings_come_in_turn(hub: RunningHub, page, artifacts: Path) -> None:  # type: ignore[no-untyped-def]
    """A 7-minute session on debug (the site warns at 15 and 5 minutes): the 15-minute
    warning at once, the 5-minute one only once 5 minutes are left; a reload with neither
    remembered shows one warning for both thresholds, not two."""
    assert hub.site.hub.warn_minutes == [15, 5]
    alice = hub.client("alice")
    resp = alice.spawn_form(partition="debug", cpus=1, memory_gb=1, walltime=7)
    assert resp.status_code == 302, resp.text[-500:]
    try:
        alice.wait_ready(timeout=120)
        page.goto(f"{hub.url}/hub/login")
        page.fill("#username_input", "alice")
        page.fill("#password_input", hub.passwords["alice"])
        page.click("#login_submit")
        page.goto(f"{hub.url}/user/alice/lab?reset")
        page.wait_for_function(
            "(document.querySelector('.sf-job-status') || {}).dataset?.secondsLeft > 0",
            timeout=90_000)
        warnings = page.locator(WARNING, has_text=ENDS)
        warnings.first.wait_for(timeout=30_000)
        left = _seconds_left(page)
        assert 300 < left <= 420, f"the session started too late to see both: {left} s left"
        assert warnings.count() == 1, warnings.all_inner_texts()

        # The second warning: not before 5 minutes are left, then within a tick (10 s).
        # (Newer toasts stack above older ones: find it by its words.)
        second = page.locator(WARNING, has_text=re.compile(f"{ENDS} [1-5] minutes? "))
        second.wait_for(timeout=(left - 300 + 30) * 1000)
        assert _seconds_left(page) <= 300
        assert warnings.count() == 2, warnings.all_inner_texts()
        page.screenshot(path=str(artifacts / "lab-second-warning.png"))

        # Both thresholds passed at once (nothing remembered): one warning, not one each.
        page.evaluate("window.localStorage.clear()")
        page.reload()
        warnings.first.wait_for(timeout=90_000)
        page.wait_for_timeout(15_000)  # more than a tick of the status item
        assert warnings.count() == 1, warnings.all_inner_texts()
    except Exception:
        page.screenshot(path=str(artifacts / "lab-warnings-failure.png"), full_page=True)
        raise
    finally:
        alice.stop()
