"""Hub-side registration of the ``apps`` service (called by ``install``).

Adds the managed service; the ``apps-viewer`` OAuth client that logs viewers in on the apps'
own origin (``apps.origin_url``); a role that lets the service read users and groups (to check
audiences and viewers' groups); lets every user open both (``access:services!service=apps``
and ``...=apps-viewer``, which OAuth and users' own tokens need), and lets session tokens reach
the service, so that the Python API and ``shopfloor apps`` work from inside a session.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shopfloor.extensions.apps_service import (
    SERVICE_NAME,
    VIEWER_SERVICE,
    apps_service_config,
    viewer_client_config,
)
from shopfloor.site import SiteConfig

ACCESS_SCOPE = f"access:services!service={SERVICE_NAME}"
#: Viewers log in on the app origin through this OAuth client.
VIEWER_ACCESS_SCOPE = f"access:services!service={VIEWER_SERVICE}"
#: JupyterHub's default scopes of $JUPYTERHUB_API_TOKEN (the "server" role), used when
#: install() set none.
_SERVER_ROLE_SCOPES = ["users:activity!user", "access:servers!server"]


def _site_file(site: SiteConfig, source: str | None) -> str:
    """The site file the service reads (written out when install() got a loaded site)."""
    if source:
        return str(Path(source).resolve())
    path = Path(site.hub.state_dir) / "apps-site.json"
    path.write_text(json.dumps(site.model_dump(mode="json")))
    path.chmod(0o600)
    return str(path)


def _configured(section: Any, key: str) -> list[Any]:
    """A list setting of a traitlets Config section, or [] where nothing set it yet."""
    value = section[key] if key in section else []
    return list(value) if isinstance(value, list | tuple) else []


def _role(roles: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    for role in roles:
        if role.get("name") == name:
            return role
    return None


def install_apps(c: Any, site: SiteConfig, site_source: str | None) -> None:
    """Register the apps service with JupyterHub (additive to whatever is configured)."""
    services = [s for s in _configured(c.JupyterHub, "services")
                if s.get("name") not in (SERVICE_NAME, VIEWER_SERVICE)]
    c.JupyterHub.services = [*services, apps_service_config(site, _site_file(site, site_source)),
                             viewer_client_config(site)]
    roles = _configured(c.JupyterHub, "load_roles")
    roles.append({
        "name": "shopfloor-apps-service",
        "description": "The apps service reads users and groups to check audiences.",
        "scopes": ["read:users", "read:groups", "list:users", "list:groups"],
        "services": [SERVICE_NAME],
    })
    user_role = _role(roles, "user")
    if user_role is None:
        roles.append({"name": "user", "scopes": ["self", ACCESS_SCOPE, VIEWER_ACCESS_SCOPE]})
    else:
        user_role["scopes"] = [*user_role.get("scopes", ["self"]), ACCESS_SCOPE,
                               VIEWER_ACCESS_SCOPE]
    c.JupyterHub.load_roles = roles
    scopes = _configured(c.ShopfloorSpawner, "server_token_scopes") or _SERVER_ROLE_SCOPES
    if ACCESS_SCOPE not in scopes:
        c.ShopfloorSpawner.server_token_scopes = [*scopes, ACCESS_SCOPE]
