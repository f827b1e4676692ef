"""A trainer logs in, opens the trainer panel as a Voila page and sees who is stuck."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pytest
import requests
from hubclient import HubClient
from support import REPO, RunningHub
from workshopsupport import (
    login,
    partition_with_idle_cores,
    running_workshop,
    service_url,
    trainer_client,
    wait_for_service,
)

from shopfloor.workshops.client import WorkshopClient

pytestmark = [pytest.mark.browser, pytest.mark.hub, pytest.mark.slow]
NOTEBOOK = "trainer-panel-test.ipynb"


def _put_notebook(hub: RunningHub, token: str, workshop: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        f"from shopfloor.widgets import TrainerPanel\nTrainerPanel({workshop!r})")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    resp = requests.put(
        f"{hub.url}/user/trainer/api/contents/{NOTEBOOK}",
        json={"type": "notebook", "format": "json", "content": nb},
        headers={"Authorization": f"token {token}"}, timeout=30,
    )
    assert resp.status_code in (200, 201), resp.text


@contextmanager
def _trainer_session(web: HubClient) -> Iterator[None]:
    """The trainer's own session, on whichever partition has a free core; always stopped."""
    partition = partition_with_idle_cores(1)
    resp = web.spawn_form(partition=partition, cpus=1, memory_gb=0.5, walltime=20)
    try:
        assert resp.status_code == 302, resp.text[-500:]
        web.wait_ready(timeout=120)
        yield
    finally:
        web.stop(timeout=60)


def test_trainer_sees_participants(hub: RunningHub, page, artifacts: Path) -> None:  # type: ignore[no-untyped-def]
    wait_for_service(hub)
    trainer = trainer_client(hub)
    web = hub.client("trainer")
    with running_workshop(hub, trainer, "b", title="Cluster basics", hours=1, capacity=10,
                          partition="debug") as info, _trainer_session(web):
        name = str(info["name"])
        anon = WorkshopClient(service_url(hub), "")
        people = [anon.join(info["code"], who) for who in ("Ada", "Grace", "Linus")]
        for person, failed in zip(people, (False, True, False), strict=True):
            me = WorkshopClient(service_url(hub),
                                login(hub, person["username"], person["password"]).token())
            me.checkpoint("step-1")
            me.checkpoint("step-2", ok=not failed,
                          message="NameError: name 'df' is not defined" if failed else "")
        _put_notebook(hub, web.token(), name)

        page.goto(f"{hub.url}/hub/login")
        page.fill("#username_input", "trainer")
        page.fill("#password_input", hub.passwords["trainer"])
        page.click("#login_submit")
        page.goto(f"{hub.url}/user/trainer/voila/render/{NOTEBOOK}", timeout=120_000)
        panel = page.locator(".sf-trainer")
        panel.wait_for(timeout=120_000)
        table = panel.locator("table")
        table.wait_for(timeout=60_000)
        assert table.locator("tr").count() == 1 + len(people)
        stuck = table.locator("tr.sf-stuck")
        assert stuck.count() == 1 and people[1]["username"] in stuck.inner_text()
        assert "stuck" in stuck.inner_text()
        assert "Cluster basics" in panel.inner_text() and info["code"] in panel.inner_text()
        page.screenshot(path=str(artifacts / "trainer-panel.png"), full_page=True)
        shutil.copyfile(artifacts / "trainer-panel.png",
                        REPO / "docs" / "screenshots" / "trainer-panel.png")
