"""Helpers for the apps tests: a hub with short idle times, alice's notebook, a shared group."""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
import yaml
from hubclient import HubClient
from support import PORT_BASE, REPO, RunningHub, write_test_site

from shopfloor.apps.model import app_origin
from shopfloor.demo.hub import Hub
from shopfloor.site import load_site

#: The apps tests run their own hub (short idle stop, public apps allowed) on these ports,
#: beside the shared test hub ($SHOPFLOOR_TEST_PORT_BASE + 20..22; its apps service +31).
APPS_PORTS = {"bind_url": PORT_BASE + 20, "hub_bind_url": PORT_BASE + 21,
              "proxy_api_url": PORT_BASE + 22}
NOTEBOOK = REPO / "example_notebooks" / "slider_app.ipynb"
SHARE_GROUP = "slider-viewers"
LOGO = ('<svg xmlns="http://www.w3.org/2000/svg" width="20" height="20">'
        '<circle cx="10" cy="10" r="8" fill="#1f6feb"/></svg>')


@contextmanager
def apps_hub(passwords: dict[str, str], **apps: object) -> Iterator[RunningHub]:
    """A real hub (with the apps service) whose site has the given ``apps`` settings."""
    directory = Path(tempfile.mkdtemp(prefix="shopfloor-apps-hub-"))
    directory.chmod(0o711)  # the app store beside the hub's state must be reachable by owners
    site_file = write_test_site(directory)
    data = yaml.safe_load(site_file.read_text())
    for key, port in APPS_PORTS.items():
        data["hub"][key] = f"http://127.0.0.1:{port}"
    data["apps"] = {**data.get("apps", {}), **apps}
    site_file.write_text(yaml.safe_dump(data, sort_keys=False))
    site = load_site(site_file)
    process = Hub(site, site_file)
    process.start(detach=True)
    try:
        wait_for_service(site.hub.bind_url)
        yield RunningHub(site.hub.bind_url, site, site_file, process, passwords)
    finally:
        process.stop()
        cancel_app_jobs()


def origin_of(hub: RunningHub) -> str:
    """The app origin of ``hub`` (another host than the hub's: 127.0.0.2 here)."""
    return app_origin(hub.site.hub.bind_url, hub.site.apps).url


def wait_for_service(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/services/apps/", timeout=5,
                            allow_redirects=False).status_code in (200, 302):
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise AssertionError("the apps service did not answer")


def cancel_app_jobs() -> None:
    out = subprocess.run(["squeue", "-h", "-o", "%i|%j"], capture_output=True, text=True,
                         check=False).stdout
    for line in out.splitlines():
        job_id, _, name = line.partition("|")
        if name.startswith("shopfloor-app-") and "alice" in name:
            subprocess.run(["scancel", job_id], check=False)


def install_notebook(owner: str = "alice") -> Path:
    """Copy the example notebook (and a logo, and a private file) into ``owner``'s home."""
    folder = Path(f"/home/{owner}/apps-test")
    run_as = ["sudo", "-u", owner, "--"]
    subprocess.run([*run_as, "mkdir", "-p", str(folder)], check=True)
    subprocess.run([*run_as, "cp", str(NOTEBOOK), str(folder / "slider_app.ipynb")], check=True)
    subprocess.run([*run_as, "tee", str(folder / "logo.svg")], input=LOGO, text=True,
                   check=True, capture_output=True)
    subprocess.run([*run_as, "tee", f"/home/{owner}/private-notes.svg"], input=LOGO, text=True,
                   check=True, capture_output=True)
    return folder / "slider_app.ipynb"


def publish_app(hub: RunningHub, notebook: Path, slug: str, **fields: object) -> str:
    """Publish ``notebook`` as alice's app ``slug`` through the service's REST API (audience
    ``hub`` unless ``fields`` say otherwise); returns the app's key ``alice/<slug>``."""
    token = hub.client("alice").token()
    resp = requests.post(f"{hub.url}/services/apps/api/apps", timeout=60,
                         headers={"Authorization": f"token {token}"},
                         json={"notebook": str(notebook), "title": slug, "slug": slug,
                               "audience": "hub", **fields})
    assert resp.status_code == 201, resp.text
    return f"alice/{slug}"


def share_group(hub: RunningHub, members: list[str]) -> None:
    admin = hub.client("admin")
    token = admin.token()
    admin.api("POST", f"/groups/{SHARE_GROUP}", token=token)
    resp = admin.api("POST", f"/groups/{SHARE_GROUP}/users", token=token,
                     json={"users": members})
    resp.raise_for_status()


def service_login(client: HubClient) -> None:
    """Complete the OAuth round trip into the apps service (as a browser would)."""
    resp = client.http.get(f"{client.base}/services/apps/")
    resp.raise_for_status()


def wait_app_ready(client: HubClient | requests.Session, base: str, key: str,
                   timeout: float = 180, expect: int = 200) -> requests.Response:
    """Open the app's page until it serves the app (the first visit starts its job).

    ``base`` is the app origin; a logged-in client passes the hub's OAuth on the way."""
    http = client.http if isinstance(client, HubClient) else client
    deadline = time.monotonic() + timeout
    resp = None
    while time.monotonic() < deadline:
        resp = http.get(f"{base}/services/apps/{key}/")
        if resp.status_code == expect != 200:
            return resp
        if resp.status_code == 200 and "jupyter-widgets" in resp.text.lower():
            return resp
        if resp.status_code not in (200, 202):
            raise AssertionError(f"{key}: {resp.status_code} {resp.text[-500:]}")
        time.sleep(0.3)
    raise AssertionError(f"{key} did not start in {timeout} s: {resp and resp.text[-300:]}")


def kernel_id(page: str) -> str:
    match = re.search(r'kernelId["\']?\s*[:=]\s*["\']([0-9a-f-]{36})', page)
    if not match:
        match = re.search(r'"kernelId":\s*"([0-9a-f-]{36})"', page)
    if not match:
        raise AssertionError("no kernel id in the rendered page")
    return match.group(1)
