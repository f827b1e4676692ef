"""The apps service's view of a viewer: asked from a (real, local) hub API, reused only when
asked for and only for a few seconds, and the hub's answer wins over the token's cached model."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import tornado.web

from shopfloor.extensions.apps_service import VIEWER_CACHE_S, Hub


class _Users(tornado.web.RequestHandler):
    def get(self, name: str) -> None:
        self.settings["calls"].append(name)
        if self.request.headers.get("Authorization") != "token service-token":
            raise tornado.web.HTTPError(403)
        groups = self.settings["groups"]
        if name not in groups:
            raise tornado.web.HTTPError(404)
        self.finish(json.dumps({"name": name, "groups": groups[name], "admin": False}))


@pytest.fixture
async def hub_api() -> AsyncIterator[tuple[Hub, list[str], dict[str, list[str]]]]:
    calls: list[str] = []
    groups: dict[str, list[str]] = {"nobody-here-1": ["viewers"]}
    app = tornado.web.Application([(r"/hub/api/users/([^/]+)", _Users)], calls=calls,
                                  groups=groups)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = app.listen(port, "127.0.0.1")
    try:
        yield Hub(f"http://127.0.0.1:{port}/hub/api", "service-token"), calls, groups
    finally:
        server.stop()
        await asyncio.sleep(0)


async def test_fresh_by_default_and_reused_only_when_asked(
        hub_api: tuple[Hub, list[str], dict[str, Any]]) -> None:
    hub, calls, _ = hub_api
    model = {"name": "nobody-here-1", "groups": ["viewers"]}
    for _ in range(3):
        assert "viewers" in (await hub.user_context(model)).groups
    assert len(calls) == 3  # a page, a kernel: the hub is asked every time
    for _ in range(20):  # the files of the page just opened
        await hub.user_context(model, max_age=VIEWER_CACHE_S)
    assert len(calls) == 3
    await hub.user_context(model, max_age=0.0)
    assert len(calls) == 4


async def test_an_old_answer_is_not_reused(
        hub_api: tuple[Hub, list[str], dict[str, Any]]) -> None:
    hub, calls, groups = hub_api
    model = {"name": "nobody-here-1", "groups": ["viewers"]}
    await hub.user_context(model)
    groups["nobody-here-1"] = []
    await asyncio.sleep(0.3)
    context = await hub.user_context(model, max_age=0.2)
    assert len(calls) == 2 and "viewers" not in context.groups


async def test_the_hubs_empty_answer_beats_the_tokens_model(
        hub_api: tuple[Hub, list[str], dict[str, Any]]) -> None:
    """Removed from their last group, a viewer must not keep it through the token's model
    (which HubOAuth caches for minutes)."""
    hub, _, groups = hub_api
    groups["nobody-here-1"] = []
    context = await hub.user_context({"name": "nobody-here-1", "groups": ["viewers"]})
    assert "viewers" not in context.groups
    # A user the hub does not know (deleted): only then does the model's word count.
    gone = await hub.user_context({"name": "nobody-here-2", "groups": ["viewers"]})
    assert "viewers" in gone.groups


async def test_users_are_cached_apart(hub_api: tuple[Hub, list[str], dict[str, Any]]) -> None:
    hub, calls, groups = hub_api
    groups["nobody-here-3"] = ["other"]
    first = await hub.user_context({"name": "nobody-here-1"}, max_age=VIEWER_CACHE_S)
    second = await hub.user_context({"name": "nobody-here-3"}, max_age=VIEWER_CACHE_S)
    assert first.groups != second.groups and len(calls) == 2
