"""Voila's static files once for every app, without a cluster: the index and its key, the page
rewrite, the job's report of its key and the service taking it.

The real service, job and browser are in tests/integration/test_apps_shared_static.py and
tests/browser/test_apps_shared_static_browser.py.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from apprunner_support import SECRET, demo_runner

from shopfloor.apps.job import report_port
from shopfloor.apps.shared_static import KEY, StaticIndex, installed_index, share_page
from shopfloor.extensions.apps_runner import AppRunner
from shopfloor.extensions.apps_service import _content_type


def tree(root: Path, files: dict[str, str]) -> dict[str, list[str]]:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return {"static": [str(root / "first"), str(root / "second")],
            "labextensions": [str(root / "ext")], "templates": [str(root / "tpl")]}


def test_the_first_directory_holding_a_path_wins_as_in_voila(tmp_path: Path) -> None:
    roots = tree(tmp_path, {"first/voila.js": "one", "second/voila.js": "two",
                            "second/only.js": "x", "ext/@w/m/static/remote.js": "r",
                            "tpl/index.css": "c", "missing/never.js": "n"})
    roots["static"].append(str(tmp_path / "does-not-exist"))
    index = StaticIndex.build(roots, "lab", "0.5.13")
    assert index.files == {
        "static/voila.js": tmp_path / "first/voila.js",
        "static/only.js": tmp_path / "second/only.js",
        "labextensions/@w/m/static/remote.js": tmp_path / "ext/@w/m/static/remote.js",
        "templates/lab/static/index.css": tmp_path / "tpl/index.css",
    }
    assert KEY.fullmatch(index.key)


def test_the_key_changes_with_what_is_installed(tmp_path: Path) -> None:
    roots = tree(tmp_path, {"first/voila.js": "one", "ext/a/package.json": "{}"})
    key = StaticIndex.build(roots, "lab", "0.5.13").key
    assert StaticIndex.build(roots, "lab", "0.5.13").key == key  # the same install: the same
    assert StaticIndex.build(roots, "lab", "0.5.14").key != key
    assert StaticIndex.build(roots, "reveal", "0.5.13").key != key
    (tmp_path / "first/voila.js").write_text("longer")  # a rebuilt file
    assert StaticIndex.build(roots, "lab", "0.5.13").key != key
    key = StaticIndex.build(roots, "lab", "0.5.13").key
    os.utime(tmp_path / "first/voila.js", (1, 1))  # reinstalled, the same size
    assert StaticIndex.build(roots, "lab", "0.5.13").key != key
    key = StaticIndex.build(roots, "lab", "0.5.13").key
    (tmp_path / "ext/b.txt").write_text("")  # an owner's own extra labextension file
    assert StaticIndex.build(roots, "lab", "0.5.13").key != key


def test_only_indexed_paths_of_the_right_key_are_found(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("not an installed file")
    roots = tree(tmp_path, {"first/voila.js": "one"})
    index = StaticIndex.build(roots, "lab", "1")
    assert index.find(index.key, "static/voila.js") == tmp_path / "first/voila.js"
    assert index.find("0" * 24, "static/voila.js") is None
    assert index.find("", "static/voila.js") is None
    for path in ["static/../secret.txt", "static/../../secret.txt", "../secret.txt",
                 str(tmp_path / "secret.txt"), "static//voila.js", "static/./voila.js",
                 "static/voila.js/", "static\\voila.js", "static/voila.js\x00", "static/",
                 "static", "", "first/voila.js", "static/%2e%2e/secret.txt"]:
        assert index.find(index.key, path) is None, path


def test_links_are_followed_like_voila_does(tmp_path: Path) -> None:
    """``jupyter labextension develop`` installs an extension as a link: Voila serves it."""
    roots = tree(tmp_path, {"src/static/remote.js": "r", "first/voila.js": "v"})
    (tmp_path / "ext").mkdir()
    (tmp_path / "ext" / "dev-ext").symlink_to(tmp_path / "src")
    (tmp_path / "ext" / "dangling.js").symlink_to(tmp_path / "gone.js")
    index = StaticIndex.build(roots, "lab", "1")
    assert "labextensions/dev-ext/static/remote.js" in index.files
    assert "labextensions/dangling.js" not in index.files


def test_this_installation_indexes_what_an_app_page_loads() -> None:
    index = installed_index()
    for path in ["static/voila.js", "templates/lab/static/index.css",
                 "templates/lab/static/voila-style.js",
                 "labextensions/@jupyter-widgets/jupyterlab-manager/package.json",
                 "labextensions/@voila-dashboards/widgets-manager8/package.json"]:
        assert index.find(index.key, path) is not None, path
    assert installed_index().key == index.key


PAGE = b"""<html>
<link rel="stylesheet" href="/services/apps/alice/wave/voila/templates/lab/static/index.css?v=1">
<script src="/services/apps/alice/wave/voila/templates/lab/static/voila-style.js?v=2"></script>
<script id="jupyter-config-data" type="application/json">{"baseUrl": "/services/apps/alice/wave/",
"fullStaticUrl": "/services/apps/alice/wave/voila/static",
"fullLabextensionsUrl": "/services/apps/alice/wave/voila/labextensions",
"themesUrl": "/voila/api/themes"}
</script><script src="/services/apps/alice/wave/voila/static/voila.js"></script>
<a href="/services/apps/alice/wave/voila/files/data.csv">own file</a>
<a href="/services/apps/alice/wave/voila/staticky">not an area</a>
<a href="/services/apps/bob/wave/voila/static/voila.js">another app</a></html>"""


def test_the_page_points_the_shared_areas_at_the_shared_path() -> None:
    shared = "/services/apps/_static/" + "a" * 24 + "/"
    page = share_page(PAGE, "/services/apps/alice/wave/", shared).decode()
    assert f'href="{shared}templates/lab/static/index.css?v=1"' in page
    assert f'src="{shared}templates/lab/static/voila-style.js?v=2"' in page
    assert f'"fullStaticUrl": "{shared}static"' in page
    assert f'"fullLabextensionsUrl": "{shared}labextensions"' in page
    assert f'<script src="{shared}static/voila.js">' in page
    # Everything else as Voila wrote it: the app's own files, its base, other apps.
    assert '"baseUrl": "/services/apps/alice/wave/"' in page
    assert "/services/apps/alice/wave/voila/files/data.csv" in page
    assert "/services/apps/alice/wave/voila/staticky" in page
    assert "/services/apps/bob/wave/voila/static/voila.js" in page
    assert "/services/apps/alice/wave/voila/static/" not in page
    assert "/services/apps/alice/wave/voila/static\"" not in page


@pytest.fixture
def runner() -> Iterator[AppRunner]:
    with demo_runner("shopfloor-apps-static-") as made:
        yield made


def test_the_service_keeps_only_a_keys_shape_and_only_the_first(runner: AppRunner) -> None:
    key = "b" * 24
    assert not runner.callback("alice/wave", "t" * 43, 8123, None, key)  # not the run's secret
    assert runner.runs["alice/wave"].static_key == ""
    for bad in ("B" * 24, "b" * 23, "b" * 25, "../" + "b" * 21, 123, ["b" * 24], None,
                "b" * 24 + "\n"):
        assert runner.callback("alice/wave", SECRET, 8123, None, bad), bad
        assert runner.runs["alice/wave"].static_key == "", bad
    assert runner.callback("alice/wave", SECRET, 8123, None, key)
    assert runner.callback("alice/wave", SECRET, 8123, None, "c" * 24)
    assert runner.runs["alice/wave"].static_key == key


class _Callback(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.received.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


def test_the_job_reports_its_key_with_its_port() -> None:
    server = HTTPServer(("127.0.0.1", 0), _Callback)
    _Callback.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/cb"
        report_port(url, 8123, SECRET, static_key="d" * 24)
        assert _Callback.received[-1] == {"port": 8123, "static": "d" * 24}
        report_port(url, 8123, SECRET)
        assert _Callback.received[-1] == {"port": 8123}
    finally:
        server.shutdown()


def test_content_types_are_what_browsers_run_under_nosniff() -> None:
    assert _content_type("voila.js").startswith("text/javascript")
    assert _content_type("index.css").startswith("text/css")
    assert _content_type("package.json").startswith("application/json")
    assert _content_type("font.woff2") == "font/woff2"
    assert _content_type("archive.js.gz") == "application/octet-stream"
    assert _content_type("no-extension") == "application/octet-stream"
