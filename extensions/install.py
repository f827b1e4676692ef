"""The one call a ``jupyterhub_config.py`` makes: :func:`install`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from shopfloor.extensions.context import ShopfloorContext
from shopfloor.site import SiteConfig, load_site
from shopfloor.userfiles import private_dir, private_file

_CONTEXT: ShopfloorContext | None = None

#: Scopes of each session's own API token: JupyterHub's "server" role (report activity, be
#: reached through the hub) plus the user's own servers: read (with spawn progress), start,
#: stop. Code that needs more sets ``c.ShopfloorSpawner.server_token_scopes =
#: [*SERVER_TOKEN_SCOPES, ...]`` after ``install``.
SERVER_TOKEN_SCOPES = (
    "access:servers!server",
    "users:activity!user",
    "read:servers!user",
    "start:servers!user",
    "delete:servers!user",
)


def current_context() -> ShopfloorContext:
    """The context :func:`install` made for this hub process."""
    if _CONTEXT is None:
        raise RuntimeError("shopfloor.extensions.install.install() has not run in this process")
    return _CONTEXT


#: Files in the hub's state folder that hold users' data or secrets: made or kept 0600.
PRIVATE_STATE_FILES = ("jupyterhub.sqlite", "jupyterhub.log")
#: Secrets the hub writes itself (0600); tightened if an older run left them looser.
SECRET_STATE_FILES = ("jupyterhub_cookie_secret", "demo-credentials.json")


def secure_hub_state(state: Path) -> None:
    """Make the hub's state folder private (0700) and its database, log and secrets 0600.

    The folder may exist already (made by the demo or an older version, 0755): it is
    tightened, not trusted. The database is created empty here, 0600, because SQLite would
    create it with the process umask (0644), readable by every user.
    """
    private_dir(state)
    for name in PRIVATE_STATE_FILES:
        private_file(state / name)
    for name in SECRET_STATE_FILES:
        if (state / name).is_file():
            private_file(state / name)


def install(c: Any, site: SiteConfig | str | os.PathLike[str]) -> ShopfloorContext:
    """Configure JupyterHub for Shopfloor from a site file (or an already-loaded site).

    Sets the spawner (:class:`~shopfloor.extensions.spawner.ShopfloorSpawner`), the safe port
    callback, authentication (PAM: users log in with their Unix password), named servers and
    the hub's state folder. Returns the shared context so a config file may adjust it.
    Raises :class:`~shopfloor.site.SiteConfigError` for a bad site file.
    """
    site_source = None if isinstance(site, SiteConfig) else str(site)
    if not isinstance(site, SiteConfig):
        site = load_site(site)
    global _CONTEXT
    from shopfloor.extensions.resources_api import register_api_handlers
    from shopfloor.extensions.spawn_callback import replace_batchspawner_handler
    from shopfloor.extensions.spawner import ShopfloorSpawner

    ctx = _CONTEXT = ShopfloorContext.from_site(site)
    replace_batchspawner_handler()
    register_api_handlers()
    from shopfloor.extensions.ray_api import register_ray_handlers

    register_ray_handlers()
    state = Path(site.hub.state_dir)
    secure_hub_state(state)

    c.JupyterHub.bind_url = site.hub.bind_url
    c.JupyterHub.hub_bind_url = site.hub.hub_bind_url
    c.ConfigurableHTTPProxy.api_url = site.hub.proxy_api_url
    c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
    # Sessions are Slurm jobs: they outlive hub restarts and are reattached, not killed.
    c.JupyterHub.cleanup_servers = False
    c.JupyterHub.allow_named_servers = True
    c.JupyterHub.named_server_limit_per_user = 5
    c.JupyterHub.spawner_class = ShopfloorSpawner
    c.JupyterHub.template_vars = {"announcement_login": f"{site.name}: log in with your "
                                  "cluster account."}

    c.JupyterHub.authenticator_class = "pam"
    c.PAMAuthenticator.open_sessions = False
    c.Authenticator.admin_users = set(site.auth.admin_users)
    c.Authenticator.allowed_users = set(site.auth.allowed_users)
    if site.auth.allowed_groups:
        c.PAMAuthenticator.allowed_groups = set(site.auth.allowed_groups)

    c.JupyterHub.tornado_settings = {"shopfloor": ctx}
    c.ShopfloorSpawner.context = ctx
    c.ShopfloorSpawner.python = site.hub.python
    c.ShopfloorSpawner.start_timeout = site.hub.start_timeout
    c.ShopfloorSpawner.http_timeout = 120
    c.ShopfloorSpawner.default_url = "/lab"
    c.ShopfloorSpawner.pending_poll_interval = site.slurm.pending_poll_interval
    c.ShopfloorSpawner.slurm_poll_interval = site.slurm.poll_interval
    c.ShopfloorSpawner.poll_interval = max(10, int(site.slurm.poll_interval * 2))
    c.ShopfloorSpawner.job_log_dir = site.slurm.job_log_dir
    # Fine-tuning in sessions (shopfloor.finetune.recipe) finds the site model catalog and the
    # users' run folder here; sessions cannot read the site file.
    c.ShopfloorSpawner.environment.update({
        "SHOPFLOOR_MODEL_CATALOG": site.models.catalog_dir,
        "SHOPFLOOR_RUNS_DIR": site.models.runs_dir,
    })
    # The server's token ($JUPYTERHUB_API_TOKEN in the session) lets in-session code (the
    # compute panel, shopfloor.session.hubapi) list, start and stop the user's own servers and read
    # their spawn progress; nothing more (no tokens, no other users, no admin).
    c.ShopfloorSpawner.server_token_scopes = list(SERVER_TOKEN_SCOPES)

    from shopfloor.extensions.apps_install import install_apps

    install_apps(c, site, site_source)

    from shopfloor.extensions.workshops_hub import install_workshops

    # Workshops: the workshop service, trainer roles, participants' defaults and material.
    install_workshops(c, site, site_source)

    from shopfloor.extensions.spawn_reattach import detach_unstarted_servers, schedule_reattach

    detach_unstarted_servers(c.JupyterHub.db_url)
    schedule_reattach()
    return ctx
