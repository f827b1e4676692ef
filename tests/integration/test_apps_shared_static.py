"""Voila's static files once for every app, against the real hub, Slurm and Voila.

* A page whose job runs the service's installation loads Voila's bundle, the widget manager
  and the template's CSS from one path of the app origin (``/services/apps/_static/<key>/``),
  the same for two apps, with a year of caching, the app origin's policy and the very bytes
  the job itself would have served.
* That path serves only the installation's indexed files: climbing out (``..``, encoded,
  doubled slashes, backslashes, NUL), another key, the app's snapshot or a file of the hub
  host answer 404, and nothing of the app job (its pages, kernels) is reachable there.
* A job that reports another key (another installation) keeps its own per-app files.
"""

from __future__ import annotations

import http.client
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from appsupport import apps_hub, install_notebook, origin_of, publish_app, wait_app_ready
from support import RunningHub

from shopfloor.apps.shared_static import installed_index

pytestmark = [pytest.mark.hub, pytest.mark.cluster, pytest.mark.slow]
SHARED = re.compile(r"/services/apps/_static/([0-9a-f]{24})/")


@pytest.fixture(scope="module")
def ahub(local_cluster: object, passwords: dict[str, str]) -> Iterator[RunningHub]:
    with apps_hub(passwords, idle_stop_minutes=10, partition="cpu",
                  walltime="0:20:00") as hub:
        yield hub


@pytest.fixture(scope="module")
def notebook() -> Path:
    return install_notebook("alice")


def raw_get(origin: str, path: str) -> tuple[int, str]:
    """Status and ``Location`` of ``GET path`` sent byte for byte (no client-side
    normalisation)."""
    where = urlsplit(origin)
    conn = http.client.HTTPConnection(where.hostname or "", where.port, timeout=30)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        reply = conn.getresponse()
        return reply.status, reply.getheader("Location") or ""
    finally:
        conn.close()


@pytest.fixture(scope="module")
def two_pages(ahub: RunningHub, notebook: Path) -> dict[str, str]:
    """Two apps of alice, each rendered once for bob: key -> page."""
    origin = origin_of(ahub)
    bob = ahub.client("bob")
    pages = {}
    for slug in ("shared-one", "shared-two"):
        key = publish_app(ahub, notebook, slug)
        page = wait_app_ready(bob, origin, key)
        assert page.status_code == 200, page.text[-300:]
        pages[key] = page.text
    return pages


def test_pages_load_voilas_files_from_one_shared_path(
        ahub: RunningHub, two_pages: dict[str, str]) -> None:
    origin = origin_of(ahub)
    keys = set()
    for key, page in two_pages.items():
        # Bundle, extensions and template CSS all come from the shared path...
        assert '"fullStaticUrl": "/services/apps/_static/' in page
        assert '"fullLabextensionsUrl": "/services/apps/_static/' in page
        assert re.search(r'href="/services/apps/_static/[0-9a-f]{24}/templates/lab/static/'
                         r'index\.css\?v=', page), page[:2000]
        # ... and none from the app's own copy.
        assert f"/services/apps/{key}/voila/static" not in page
        assert f"/services/apps/{key}/voila/labextensions" not in page
        assert f"/services/apps/{key}/voila/templates" not in page
        keys |= set(SHARED.findall(page))
    assert keys == {installed_index().key}, keys  # one path for both apps
    shared = f"{origin}/services/apps/_static/{keys.pop()}/"
    anonymous = requests.Session()
    key = next(iter(two_pages))
    bob = ahub.client("bob")
    for shared_path, own_path in [
            ("static/voila.js", "voila/static/voila.js"),
            ("templates/lab/static/index.css", "voila/templates/lab/static/index.css"),
            ("labextensions/@jupyter-widgets/jupyterlab-manager/package.json",
             "voila/labextensions/@jupyter-widgets/jupyterlab-manager/package.json")]:
        reply = anonymous.get(shared + shared_path, timeout=30)
        assert reply.status_code == 200, shared_path
        assert "max-age=31536000" in reply.headers["Cache-Control"]
        assert "immutable" in reply.headers["Cache-Control"]
        assert "frame-ancestors 'none'" in reply.headers["Content-Security-Policy"]
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
        assert "set-cookie" not in {h.lower() for h in reply.headers}
        # The very bytes the app's job serves for the same file.
        own = bob.http.get(f"{origin}/services/apps/{key}/{own_path}", timeout=30)
        assert own.status_code == 200 and own.content == reply.content, own_path
    script = anonymous.get(shared + "static/voila.js", timeout=30)
    assert script.headers["Content-Type"].startswith("text/javascript")
    css = anonymous.get(shared + "templates/lab/static/index.css", timeout=30)
    assert css.headers["Content-Type"].startswith("text/css")
    assert anonymous.head(shared + "static/voila.js", timeout=30).status_code == 200


def test_the_shared_path_serves_nothing_else(
        ahub: RunningHub, two_pages: dict[str, str]) -> None:
    origin = origin_of(ahub)
    key = installed_index().key
    app = next(iter(two_pages))
    base = f"/services/apps/_static/{key}"
    for path in [
        f"{base}/../../../../../../etc/passwd",
        f"{base}/static/../../../../../../../etc/passwd",
        f"{base}/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        f"{base}/static/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
        f"{base}//etc/passwd",
        f"{base}/static//etc/passwd",
        f"{base}/static/..\\..\\..\\etc\\passwd",
        f"{base}/static/voila.js%00.png",
        f"{base}/static/",
        f"{base}/",
        f"{base}/voila/static/voila.js",  # the job's layout: not the shared one
        f"{base}/static/../static/voila.js",
        f"{base}/templates/lab/../../../../../../../etc/passwd",
        f"{base}/labextensions/../../../../../../etc/passwd",
        f"{base}/slider_app.ipynb",  # the app's snapshot is not an installed file
        f"{base}/{app}/",  # nor is the app itself
        f"{base}/api/kernels",
        "/services/apps/_static/" + "0" * 24 + "/static/voila.js",  # another installation
        "/services/apps/_static/" + key[:-1] + "/static/voila.js",
        "/services/apps/_static/../_static/" + key + "/static/voila.js?x=/etc/passwd",
    ]:
        status, location = raw_get(origin, path)
        # Refused, or (outside the shared route) sent to the gallery on the hub like any
        # unknown address of the app origin.
        assert status in (400, 404) or (status == 302 and location == (
            f"{ahub.url}/services/apps/")), (path, status, location)
    assert raw_get(origin, f"{base}/static/voila.js") == (200, "")
    # The hub's own origin has no such path (the shared files are the app origin's).
    assert requests.get(f"{ahub.url}{base}/static/voila.js", timeout=30,
                        allow_redirects=False).status_code in (302, 404)


def test_a_job_of_another_installation_keeps_its_own_files(
        ahub: RunningHub, notebook: Path) -> None:
    """bob's own Jupyter data folder holds one more labextensions file than the service's
    installation: his job's Voila would serve it, so his job reports another key and his
    app's page keeps Voila's own per-app paths, and still renders."""
    marker = Path("/home/bob/.local/share/jupyter/labextensions/shopfloor-test-marker.txt")
    existed = marker.parent.exists()
    subprocess.run(["sudo", "-u", "bob", "--", "mkdir", "-p", str(marker.parent)], check=True)
    subprocess.run(["sudo", "-u", "bob", "--", "touch", str(marker)], check=True)
    try:
        book = Path("/home/bob/apps-test") / notebook.name
        subprocess.run(["sudo", "-u", "bob", "--", "mkdir", "-p", str(book.parent)], check=True)
        subprocess.run(["sudo", "-u", "bob", "--", "cp", str(notebook), str(book)], check=True)
        bob = ahub.client("bob")
        resp = requests.post(f"{ahub.url}/services/apps/api/apps", timeout=60,
                             headers={"Authorization": f"token {bob.token()}"},
                             json={"notebook": str(book), "title": "own", "slug": "own-files",
                                   "audience": "hub"})
        assert resp.status_code == 201, resp.text
        origin = origin_of(ahub)
        page = wait_app_ready(bob, origin, "bob/own-files")
        assert page.status_code == 200
        assert SHARED.search(page.text) is None
        assert '"fullStaticUrl": "/services/apps/bob/own-files/voila/static"' in page.text
        assert bob.http.get(f"{origin}/services/apps/bob/own-files/voila/static/voila.js",
                            timeout=30).status_code == 200
    finally:
        subprocess.run(["rm", "-f", str(marker)], check=True)
        if not existed:
            subprocess.run(["rmdir", str(marker.parent)], check=False)
        requests.delete(f"{ahub.url}/services/apps/api/apps/bob/own-files", timeout=60,
                        headers={"Authorization": f"token {ahub.client('bob').token()}"})
