"""The workshop example notebooks run top to bottom against the real hub and its service."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from support import REPO, RunningHub
from workshopsupport import (
    cleanup,
    login,
    material_folder,
    running_workshop,
    service_url,
    trainer_client,
    unix_users,
    wait_for_service,
    workshop_name,
)

from shopfloor.workshops.client import WorkshopClient

pytestmark = [pytest.mark.hub, pytest.mark.cluster, pytest.mark.slow]


def run_notebook(name: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                 tmp_path: Path) -> nbformat.NotebookNode:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(REPO / "example_notebooks" / name, as_version=4)
    NotebookClient(nb, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb


def outputs(nb: nbformat.NotebookNode) -> str:
    text = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text.append(out.get("text", ""))
            text.extend(str(v) for v in out.get("data", {}).values())
    return "\n".join(text)


def test_participant_notebook_records_checkpoints(
        hub: RunningHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    wait_for_service(hub)
    trainer = trainer_client(hub)
    with running_workshop(hub, trainer, "n", hours=1, capacity=1, partition="debug") as info:
        person = WorkshopClient(service_url(hub), "").join(info["code"], "Notebook Nel")
        token = login(hub, person["username"], person["password"]).token()
        nb = run_notebook("workshop_intro.ipynb", {
            "JUPYTERHUB_API_TOKEN": token, "SHOPFLOOR_WORKSHOP_URL": service_url(hub),
        }, monkeypatch, tmp_path)
        assert "not recorded" not in outputs(nb)
        row = trainer.progress(info["name"])[0]
        assert (row.step, row.ok, row.steps_done, row.errors) == ("step-3", True, 4, 0)


def test_trainer_notebook_prepares_runs_and_ends(
        hub: RunningHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    wait_for_service(hub)
    name = workshop_name("m")
    try:
        nb = run_notebook("trainer_workshop.ipynb", {
            "JUPYTERHUB_API_TOKEN": hub.client("trainer").token(),
            "SHOPFLOOR_WORKSHOP_URL": service_url(hub), "WORKSHOP_NAME": name,
            "WORKSHOP_MATERIAL": str(material_folder()), "HOME": str(tmp_path),
        }, monkeypatch, tmp_path)
        text = outputs(nb)
        assert "Join code :" in text and f"ws-{name}" in text
        assert "2 logins written" in text and "password" not in text.lower()
        assert (tmp_path / f"{name}-logins.csv").stat().st_mode & 0o077 == 0
        assert f"ws-{name}-1.tar.gz" in text and "progress.csv" in text
        assert unix_users(f"ws-{name}-") == []
    finally:
        cleanup(name, hub)
