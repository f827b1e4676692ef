"""Helpers for the workshop tests: a material folder, the service URL, cleanup of leftovers."""

from __future__ import annotations

import json
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import nbformat
import requests
from hubclient import HubClient
from support import RunningHub

from shopfloor.extensions.workshop_service import PREFIX
from shopfloor.workshop import WorkshopClient


def service_url(hub: RunningHub) -> str:
    return f"{hub.url}{PREFIX}"


def wait_for_service(hub: RunningHub, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{service_url(hub)}/join", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the workshop service did not answer in {timeout} s")


def material_folder() -> Path:
    """A world-readable folder with one guided notebook (participants copy it as themselves)."""
    folder = Path(tempfile.mkdtemp(prefix="shopfloor-ws-material-"))
    folder.chmod(0o755)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Step 1"),
                nbformat.v4.new_code_cell("print('hello')")]
    (folder / "lesson.ipynb").write_text(nbformat.writes(nb))
    (folder / "lesson.ipynb").chmod(0o644)
    (folder / "data").mkdir(mode=0o755)
    (folder / "data" / "points.csv").write_text("x,y\n1,2\n")
    (folder / "data" / "points.csv").chmod(0o644)
    return folder


def trainer_client(hub: RunningHub) -> WorkshopClient:
    return WorkshopClient(service_url(hub), hub.client("trainer").token())


def unix_users(prefix: str) -> list[str]:
    return [p.pw_name for p in pwd.getpwall() if p.pw_name.startswith(prefix)]


def reservations() -> str:
    return subprocess.run(["scontrol", "-o", "show", "reservation"], capture_output=True,
                          text=True, check=False).stdout


def cleanup(workshop: str, hub: RunningHub | None = None) -> None:
    """Remove whatever a failed test left: jobs, accounts, reservation, hub users."""
    for user in unix_users(f"ws-{workshop}-"):
        subprocess.run(["scancel", "-u", user], capture_output=True, check=False)
        subprocess.run(["userdel", "--remove", "--force", user], capture_output=True,
                       check=False)
    subprocess.run(["scontrol", "delete", f"ReservationName=ws-{workshop}"],
                   capture_output=True, check=False)
    shutil.rmtree(f"/home/trainer/workshop-exports/{workshop}", ignore_errors=True)
    if hub is not None:
        admin = hub.client("admin")
        for user in admin.api("GET", "/users").json():
            if user["name"].startswith(f"ws-{workshop}-"):
                admin.api("DELETE", f"/users/{user['name']}")


def login(hub: RunningHub, user: str, password: str) -> HubClient:
    """A participant logged in with the password the join page showed them."""
    client = HubClient(hub.url)
    client.login(user, password)
    return client


def dump(obj: object) -> str:
    return json.dumps(obj, indent=1, default=str)
