"""``GET /hub/api/shopfloor/home/models?server=<name>``: my fine-tuned models, as my session
lists them.

The home page cannot fetch ``<server url>shopfloor/lab/models`` from the browser: the
session's server accepts a cookie-authenticated ``fetch`` only with its own XSRF token
(JupyterHub checks XSRF on every request that is not a page navigation), and that token is in
a cookie of the server's path, which the hub's page cannot read. Without it the server
answers with its OAuth redirect, again and again (Chromium: ``ERR_TOO_MANY_REDIRECTS``,
"Failed to fetch"), even once the browser has the server's login cookie.

So the hub asks the session on the user's behalf, with a token of the user's that may open
that one server only (``access:servers!server=<user>/<name>``), lives at most a minute and is
deleted as soon as the answer is in. The hub never opens the user's files: the session lists
them, as the user (:func:`shopfloor.finetune.mine.my_models`).
"""

from __future__ import annotations

import json
from typing import Any

from jupyterhub import orm
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.httpclient import AsyncHTTPClient

from shopfloor.extensions.compat import register_api_handler
from shopfloor.extensions.resources_api import _ShopfloorHandler

#: Seconds the hub's token for one listing may live (it is deleted at once after use).
TOKEN_SECONDS = 60
#: Seconds the session has to answer.
ANSWER_SECONDS = 20


class MyModelsApiHandler(_ShopfloorHandler):
    """The caller's saved models and runs, from their running session ``server``."""

    async def get(self) -> None:
        caller = self.caller()  # 403 for anyone but a user
        server = self.get_argument("server", "")
        if len(server) > 255:
            raise web.HTTPError(400, "server: the name of one of your sessions")
        user = self.current_user
        spawner = user.spawners[server] if server in user.orm_user.orm_spawners else None
        if spawner is None or not spawner.ready:
            raise web.HTTPError(404, f"you have no running session {server or 'default'!r}")
        scope = f"access:servers!server={caller.name}/{server}"
        # The caller's own token may be narrower than their login: lend no more than it has.
        if not self.has_scope(scope):
            raise web.HTTPError(403, "this token may not open that session")
        token = user.new_api_token(note="shopfloor home: list my models",
                                   scopes=[scope], expires_in=TOKEN_SECONDS)
        try:
            response = await AsyncHTTPClient().fetch(
                url_path_join(spawner.server.url, "shopfloor/lab/models"),
                headers={"Authorization": f"token {token}", "Accept": "application/json"},
                follow_redirects=False, raise_error=False, request_timeout=ANSWER_SECONDS)
        finally:
            orm_token = orm.APIToken.find(self.db, token)
            if orm_token is not None:
                self.db.delete(orm_token)
                self.db.commit()
        listing: Any = None
        if response.code == 200:
            try:
                listing = json.loads(response.body)
            except ValueError:
                listing = None
        if not isinstance(listing, dict) or not isinstance(listing.get("models"), list):
            raise web.HTTPError(502, f"your session {server or 'default'!r} could not list "
                                f"your models (HTTP {response.code})")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(listing))


def register_home_models_handler() -> None:
    """Serve :class:`MyModelsApiHandler` at ``/hub/api/shopfloor/home/models``."""
    register_api_handler(r"/api/shopfloor/home/models", MyModelsApiHandler)


__all__ = ["MyModelsApiHandler", "register_home_models_handler"]
