"""Apps without a cluster: input checks, who sees what, the store, the job's secret guard."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tornado.web
from tornado.httpclient import AsyncHTTPClient

from shopfloor.apps.client import AppsError
from shopfloor.apps.job import SECRET_HEADER, guard_handlers, voila_argv
from shopfloor.apps.model import (
    App,
    AppInputError,
    AppStore,
    Audience,
    can_view,
    first_figure,
    gallery,
    slug_from_title,
    validate_publish,
)
from shopfloor.extensions.apps_runner import compute_options
from shopfloor.extensions.apps_service import _app_path
from shopfloor.resources import UserContext
from shopfloor.site import AppsSettings
from shopfloor.widgets import PublishPanel

NOTEBOOK = Path(__file__).resolve().parents[2] / "example_notebooks" / "slider_app.ipynb"
HOME = "/home/alice"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def check(raw: dict[str, Any], allow_public: bool = True) -> Any:
    return validate_publish(
        raw, home=HOME, settings=AppsSettings(allow_public=allow_public),
        user_exists=lambda n: n in {"bob", "alice"}, group_exists=lambda n: n == "ml",
    )


def problems(raw: dict[str, Any], **kw: Any) -> dict[str, str]:
    with pytest.raises(AppInputError) as info:
        check(raw, **kw)
    return info.value.problems


def test_valid_request_is_normalised() -> None:
    spec = check({"notebook": "work/app.ipynb", "title": "Wave explorer!",
                  "audience": "groups", "names": "ml", "files": ["data/x.csv", "logo.svg"]})
    assert spec.notebook == "/home/alice/work/app.ipynb" and spec.slug == "wave-explorer"
    assert spec.files == ("/home/alice/work/data/x.csv", "/home/alice/work/logo.svg")
    assert spec.audience == Audience("groups", ("ml",))


@pytest.mark.parametrize(("raw", "field"), [
    ({"title": ""}, "title"),
    ({"title": "x" * 81}, "title"),
    ({"title": "<script>alert(1)</script>"}, "title"),
    ({"title": "ok\u202e"}, "title"),
    ({"slug": "Bad Slug"}, "slug"),
    ({"slug": "../x"}, "slug"),
    ({"notebook": "/etc/passwd.ipynb"}, "notebook"),
    ({"notebook": "../bob/x.ipynb"}, "notebook"),
    ({"notebook": "notes.txt"}, "notebook"),
    ({"files": ["../../etc/shadow"]}, "files"),
    ({"files": ["/home/alice/other/x.csv"]}, "files"),
    ({"audience": "everyone"}, "audience"),
    ({"audience": "users", "names": ["mallory"]}, "names"),
    ({"audience": "groups", "names": []}, "names"),
    ({"audience": "private", "names": ["bob"]}, "names"),
    ({"thumbnail": base64.b64encode(b"GIF89a").decode()}, "thumbnail"),
    ({"thumbnail": "not base64!"}, "thumbnail"),
    ({"compute": "big"}, "compute"),
    ({"cmd": "rm -rf"}, "cmd"),
])
def test_bad_fields_are_named(raw: dict[str, Any], field: str) -> None:
    base = {"notebook": "work/app.ipynb", "title": "Wave"}
    assert field in problems({**base, **raw})


def test_public_needs_the_site_to_allow_it() -> None:
    base = {"notebook": "a.ipynb", "title": "Wave", "audience": "public"}
    assert "does not allow public apps" in problems(base, allow_public=False)["audience"]
    assert check(base, allow_public=True).audience.kind == "public"


def test_too_many_files() -> None:
    files = [f"f{i}.csv" for i in range(21)]
    assert "at most 20" in problems({"notebook": "a.ipynb", "title": "W", "files": files})["files"]


def app(kind: str, names: tuple[str, ...] = ()) -> App:
    return App(owner="alice", slug=f"app-{kind}", title=f"{kind} app", description="",
               audience=Audience(kind, names), current=1, versions=[], created=0, updated=0)  # type: ignore[arg-type]


ALICE = UserContext("alice")
BOB = UserContext("bob", frozenset({"ml"}))
CAROL = UserContext("carol")
ADMIN = UserContext("admin", is_admin=True)


@pytest.mark.parametrize(("the_app", "viewer", "allow_public", "expected"), [
    (app("private"), ALICE, True, True),
    (app("private"), BOB, True, False),
    (app("private"), None, True, False),
    (app("private"), ADMIN, True, True),
    (app("users", ("bob",)), BOB, True, True),
    (app("users", ("bob",)), CAROL, True, False),
    (app("groups", ("ml",)), BOB, True, True),
    (app("groups", ("ml",)), CAROL, True, False),
    (app("hub"), CAROL, True, True),
    (app("hub"), None, True, False),
    (app("public"), None, True, True),
    (app("public"), None, False, False),  # the site turned public apps off after publishing
    (app("public"), CAROL, False, True),
])
def test_who_may_view(the_app: App, viewer: UserContext | None, allow_public: bool,
                      expected: bool) -> None:
    assert can_view(the_app, viewer, allow_public=allow_public) is expected


def test_gallery_filters_and_search() -> None:
    apps = [app("private"), app("groups", ("ml",)), app("users", ("carol",))]
    bob_all = gallery(apps, BOB, allow_public=True)
    assert [a.slug for a in bob_all] == ["app-groups"]
    assert gallery(apps, BOB, allow_public=True, which="mine") == []
    assert [a.slug for a in gallery(apps, ALICE, allow_public=True, which="mine")] == [
        "app-private", "app-groups", "app-users"]
    assert gallery(apps, ALICE, allow_public=True, which="shared") == []
    assert [a.slug for a in gallery(apps, ALICE, allow_public=True, search="users APP")] == [
        "app-users"]


def test_first_figure_is_the_thumbnail() -> None:
    notebook = json.loads(NOTEBOOK.read_text())
    name, data = first_figure(notebook) or ("", b"")
    assert name == "thumbnail.svg" and data.startswith(b"<svg")
    assert first_figure({"cells": []}) is None


@pytest.fixture
def store_root() -> Iterator[Path]:
    """A store folder app owners could reach (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="shopfloor-apps-unit-", dir="/tmp"))
    folder.chmod(0o711)
    yield folder / "apps"
    shutil.rmtree(folder)


def test_store_versions_are_immutable_and_rollback(store_root: Path) -> None:
    store = AppStore(store_root, AppsSettings(max_file_mb=1))
    files = {"/home/alice/w/app.ipynb": NOTEBOOK.read_bytes(), "/home/alice/w/logo.svg": b"<svg/>"}

    def read(path: str, limit: int) -> bytes:
        return files[path]

    spec = check({"notebook": "w/app.ipynb", "title": "Wave", "files": ["logo.svg"]})
    first = store.publish("alice", spec, {"partition": "cpu"}, read, owner_gid=None)
    files["/home/alice/w/logo.svg"] = b"<svg>changed</svg>"
    second = store.publish("alice", spec, {"partition": "cpu"}, read)
    assert (first.current, second.current) == (1, 2)
    v1 = store.snapshot_dir(second, 1)
    assert (v1 / "logo.svg").read_bytes() == b"<svg/>"  # v1 untouched by v2
    assert oct((v1 / "logo.svg").stat().st_mode & 0o777) == "0o640"
    assert (v1 / ".thumbnail" / "thumbnail.svg").exists()
    assert store.rollback("alice", "wave").current == 1
    with pytest.raises(AppInputError) as info:
        store.rollback("alice", "wave", 7)
    assert "version" in info.value.problems
    store.unpublish("alice", "wave")
    assert store.all() == []


def test_store_refuses_big_files_and_non_notebooks(store_root: Path) -> None:
    store = AppStore(store_root, AppsSettings(max_file_mb=0.001))
    spec = check({"notebook": "a.ipynb", "title": "Wave"})
    with pytest.raises(AppInputError) as info:
        store.publish("alice", spec, {}, lambda p, limit: b"x" * (limit + 1))
    assert "notebook" in info.value.problems
    with pytest.raises(AppInputError) as info:
        store.publish("alice", spec, {}, lambda p, limit: b"not json")
    assert "not a notebook" in info.value.problems["notebook"]


def test_store_refuses_a_folder_owners_cannot_reach(tmp_path: Path) -> None:
    with pytest.raises(PermissionError, match="chmod o\\+x"):
        AppStore(tmp_path / "apps", AppsSettings())


def test_proxy_paths_never_climb_out() -> None:
    assert _app_path("voila/files/logo.svg") == "voila/files/logo.svg"
    for bad in ("../x", "voila/files/../../etc/passwd", "a/./b", "a\\..\\b"):
        with pytest.raises(tornado.web.HTTPError):
            _app_path(bad)


def test_voila_runs_standalone_without_sources_or_tracebacks() -> None:
    argv = voila_argv("/s/app.ipynb", "/services/apps/a/b/", "127.0.2.1", 4000, 2)
    assert "--VoilaConfiguration.strip_sources=True" in argv
    assert "--VoilaConfiguration.show_tracebacks=False" in argv
    assert "--VoilaConfiguration.preheat_kernel=True" in argv
    assert not any("token" in a.lower() or "secret" in a.lower() for a in argv)


async def test_job_answers_only_with_the_secret() -> None:
    class Hello(tornado.web.RequestHandler):
        def get(self) -> None:
            self.write("hello")

    secret = "s" * 43
    application = tornado.web.Application(guard_handlers([(r"/.*", Hello)], secret))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = application.listen(port, "127.0.0.1")
    try:
        client = AsyncHTTPClient()
        url = f"http://127.0.0.1:{port}/x"
        assert (await client.fetch(url, raise_error=False)).code == 403
        wrong = await client.fetch(url, headers={SECRET_HEADER: "s" * 42 + "t"}, raise_error=False)
        assert wrong.code == 403
        right = await client.fetch(url, headers={SECRET_HEADER: secret})
        assert right.code == 200 and right.body == b"hello"
    finally:
        server.stop()
        await asyncio.sleep(0)


def test_app_compute_defaults() -> None:
    settings = AppsSettings(partition="cpu", cpus=1, memory_gb=1, walltime="8:00:00")
    assert compute_options({}, settings) == {"partition": "cpu", "cpus": 1, "memory_gb": 1,
                                             "walltime": "480"}
    assert compute_options({"partition": "debug"}, settings) == {"partition": "debug"}


def test_slugs_are_ascii_words() -> None:
    assert slug_from_title("Été: wave explorer!") == "ete-wave-explorer"


class FakeClient:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def publish(self, notebook: str, **kw: Any) -> dict[str, Any]:
        self.calls.append(("publish", kw))
        if kw["title"] == "bad":
            raise AppsError("refused", {"title": "may use letters"}, 400)
        return {"owner": "alice", "slug": "wave", "version": 1, "url": "/services/apps/alice/wave/",
                "audience_text": "groups ml"}

    def rollback(self, owner: str, slug: str) -> dict[str, Any]:
        self.calls.append(("rollback", (owner, slug)))
        return {"version": 1}

    def unpublish(self, owner: str, slug: str) -> None:
        self.calls.append(("unpublish", (owner, slug)))


def test_publish_panel_sends_the_form_and_shows_refusals() -> None:
    client = FakeClient()
    # The partition is one of the user's (the hub's answer), not free text.
    hub = type("Hub", (), {"partitions": lambda self: {
        "partitions": [{"name": "cpu"}, {"name": "debug"}], "default_partition": "cpu"}})()
    panel = PublishPanel("slider_app.ipynb", client=client, hub=hub)
    assert panel.partition.options == ("cpu", "debug") and panel.partition.value == "cpu"
    panel.title.value = "bad"
    panel.publish()
    assert "title: may use letters" in panel.status.value and "sf-error" in panel.status.value
    panel.title.value = "Wave"
    panel.audience.value = "groups"
    panel.names.value = "ml, physics"
    panel.files.value = "logo.svg\ndata.csv"
    panel.partition.value = "debug"
    panel.publish_button.click()
    sent = client.calls[-1][1]
    assert sent["names"] == ["ml", "physics"] and sent["files"] == ["logo.svg", "data.csv"]
    assert sent["compute"] == {"cpus": 1, "partition": "debug"}
    assert "Published v1" in panel.status.value
    panel.rollback_button.click()
    panel.unpublish_button.click()
    assert [c[0] for c in client.calls[-2:]] == ["rollback", "unpublish"]
    assert panel.last is None


def test_app_origin_is_another_host_with_a_strict_policy() -> None:
    from shopfloor.apps.model import app_origin

    demo = app_origin("http://127.0.0.1:8000", AppsSettings())
    assert (demo.url, demo.bind_host, demo.bind_port) == ("http://127.0.0.2:8000", "127.0.0.2",
                                                          8000)
    policy = demo.content_security_policy()
    for rule in ("default-src 'self'", "connect-src 'self' ws://127.0.0.2:8000",
                 "frame-ancestors 'none'", "form-action 'self'", "base-uri 'none'",
                 "object-src 'none'"):
        assert rule in policy
    site = app_origin("https://hub.example.org", AppsSettings(
        origin_url="https://apps.example.org/", origin_bind_url="http://10.0.0.1:8443"))
    assert (site.url, site.bind_host, site.bind_port, site.websocket) == (
        "https://apps.example.org", "10.0.0.1", 8443, "wss://apps.example.org")
    # Another port of the hub's host shares the hub's cookies: refused, naming the field.
    with pytest.raises(ValueError, match=r"apps\.origin_url"):
        app_origin("http://127.0.0.1:8000", AppsSettings(origin_url="http://127.0.0.1:9000"))
    with pytest.raises(ValueError):
        AppsSettings(origin_url="apps.example.org/path")


def test_kernels_belong_to_their_viewer_and_are_capped() -> None:
    from shopfloor.extensions.apps_runner import KernelClaim, Run

    run = Run(key="alice/wave", version=1, secret="s" * 32)
    run.kernels["k1"] = KernelClaim("user:alice")
    assert run.owns("k1", "user:alice") and not run.owns("k1", "user:bob")
    assert not run.owns("unknown", "user:alice")
    assert run.over_capacity("user:alice", 2, 3) is None
    run.kernels["k2"] = KernelClaim("user:alice")
    assert "open 2 times" in (run.over_capacity("user:alice", 2, 3) or "")
    assert run.over_capacity("user:bob", 2, 3) is None
    run.kernels["k3"] = KernelClaim("user:bob")
    assert "as many viewers as it can (3)" in (run.over_capacity("user:carol", 2, 3) or "")
    claim = KernelClaim("user:bob", sockets=1, last_seen=0)
    assert claim.unconnected_for(100) == 0
    claim.sockets = 0
    assert claim.unconnected_for(100) == 100


def test_logs_never_show_kernel_ids() -> None:
    import logging

    from shopfloor.apps.job import RedactKernelIds

    record = logging.LogRecord("Voila", logging.INFO, __file__, 1, "Kernel started: %s",
                               ("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",), None)
    assert RedactKernelIds().filter(record)
    assert record.getMessage() == "Kernel started: <kernel>"


def test_voila_overrides_are_off() -> None:
    argv = voila_argv("/s/app.ipynb", "/services/apps/a/b/", "127.0.2.1", 4000, 2)
    assert "--VoilaConfiguration.allow_template_override=NO" in argv
    assert "--VoilaConfiguration.allow_theme_override=NO" in argv


def test_kernel_paths_are_recognised() -> None:
    from shopfloor.extensions.apps_service import _kernel_in, _rendered_kernel

    kid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    for path in (f"api/kernels/{kid}", f"api/kernels/{kid}/channels", f"voila/query/{kid}",
                 f"voila/api/shutdown/{kid}", f"voila/execution/{kid}"):
        assert _kernel_in(path) == kid, path
    assert _kernel_in("voila/static/main.js") is None and _kernel_in("api/kernels") is None
    assert _rendered_kernel(b'{"baseUrl": "/x/", "kernelId": "' + kid.encode() + b'"}') == kid


def _note_claim(claims: list[tuple[str, bytes]], sent: list[bytes], kernel: str) -> None:
    claims.append((kernel, b"".join(sent)))


def test_a_page_is_passed_on_in_whole_lines_with_its_kernel_claimed_first() -> None:
    """However the job's answer is cut into chunks, the viewer gets the same page (shared
    files' URLs rewritten, never a URL cut in two), and the page's kernel is claimed before
    the line naming it is passed on."""
    from functools import partial

    from shopfloor.apps.shared_static import share_page
    from shopfloor.extensions.apps_service import PageStream

    kid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    base = "/services/apps/alice/wave/"
    page = (f'<link href="{base}voila/templates/lab/static/index.css">\n'
            f'<script src="{base}voila/static/voila.js"></script>\n'
            f'<script id="jupyter-config-data">{{"baseUrl": "{base}", "kernelId": "{kid}"}}'
            "</script>\n<div>cell output</div>\n<p>no newline at the end</p>").encode()
    rewrite = partial(share_page, app_base=base, shared_base="/services/apps/_static/k1/")
    whole = rewrite(page)
    assert whole.count(b"/services/apps/_static/k1/") == 2
    for size in (1, 2, 7, 50, len(page)):
        sent: list[bytes] = []
        claims: list[tuple[str, bytes]] = []
        stream = PageStream(partial(_note_claim, claims, sent), rewrite)
        for at in range(0, len(page), size):
            sent.append(stream.feed(page[at:at + size]))
        sent.append(stream.end())
        assert b"".join(sent) == whole, size
        assert len(claims) == 1 and claims[0][0] == kid, size
        assert kid.encode() not in claims[0][1], size  # claimed before it was passed on
        # Nothing is held back longer than its line: each line leaves once it is whole.
        assert all(not part or part.endswith(b"\n") for part in sent[:-1]), size
    unclaimed: list[str] = []
    stream = PageStream(unclaimed.append)
    assert stream.feed(b"<p>no kernel here</p>\n") == b"<p>no kernel here</p>\n"
    assert stream.end() == b"" and not unclaimed
