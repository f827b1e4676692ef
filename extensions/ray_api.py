"""``GET /hub/api/shopfloor/ray``: the site's Ray settings, for code in users' sessions.

:mod:`shopfloor.ray.cluster` runs in users' kernels, which cannot read the site file; it asks
here for the idle timeout, object store sizing and folders (see
:class:`shopfloor.site.RaySettings`). Any valid token of a user may read them.
"""

from __future__ import annotations

import json

from shopfloor.extensions.compat import register_api_handler
from shopfloor.extensions.resources_api import _ShopfloorHandler


class RaySettingsHandler(_ShopfloorHandler):
    """The ``ray:`` section of the site file."""

    async def get(self) -> None:
        self.caller()
        self.finish(json.dumps(self.ctx.site.ray.model_dump()))


def register_ray_handlers() -> None:
    """Add the handler to the hub's API (once)."""
    register_api_handler(r"/api/shopfloor/ray", RaySettingsHandler)
