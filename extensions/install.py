"""The one call a ``jupyterhub_config.py`` makes: :func:`install`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from shopfloor.apps.client import SERVICE_NAME as APPS_SERVICE
from shopfloor.extensions import metrics
from shopfloor.extensions.compat import check_when_hub_config_loaded, refuse_batchspawner_settings
from shopfloor.extensions.context import ShopfloorContext
from shopfloor.ops import database
from shopfloor.site import SiteConfig, load_site
from shopfloor.userfiles import private_dir, private_file
from shopfloor.workshops.client import SERVICE_NAME as WORKSHOP_SERVICE

_CONTEXT: ShopfloorContext | None = None

#: What session code needs to find Shopfloor's services (shopfloor.session.hubapi reads
#: ``GET /hub/api/services``): list them and read their URL, of these services only. Every
#: user holds these (the "user" role), so their own tokens and their sessions' tokens do.
SERVICE_DISCOVERY_SCOPES = tuple(
    f"{scope}!service={name}" for name in (APPS_SERVICE, WORKSHOP_SERVICE)
    for scope in ("list:services", "read:services")
)

#: Scopes of each session's own API token: JupyterHub's "server" role (report activity, be
#: reached through the hub) plus the user's own servers: read (with spawn progress), start,
#: stop; and finding Shopfloor's services. Code that needs more sets
#: ``c.ShopfloorSpawner.server_token_scopes = [*SERVER_TOKEN_SCOPES, ...]`` after ``install``.
SERVER_TOKEN_SCOPES = (
    "access:servers!server",
    "users:activity!user",
    "read:servers!user",
    "start:servers!user",
    "delete:servers!user",
    *SERVICE_DISCOVERY_SCOPES,
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
        # A secret another user keeps here (the demo's passwords stay root's when the hub runs
        # as hub.service_user) is theirs to keep private, and unreadable to us anyway.
        if (state / name).is_file() and (state / name).stat().st_uid == os.geteuid():
            private_file(state / name)


def install(c: Any, site: SiteConfig | str | os.PathLike[str]) -> ShopfloorContext:
    """Configure JupyterHub for Shopfloor from a site file (or an already-loaded site).

    Sets the spawner (:class:`~shopfloor.extensions.spawner.ShopfloorSpawner`), the safe port
    callback, authentication (:mod:`~shopfloor.extensions.auth`: PAM or OpenID Connect),
    named servers and the hub's state folder. Returns the shared context so a config file may
    adjust it. Raises :class:`~shopfloor.site.SiteConfigError` for a bad site file.
    """
    site_source = None if isinstance(site, SiteConfig) else str(site)
    if not isinstance(site, SiteConfig):
        site = load_site(site)
    global _CONTEXT
    from shopfloor.extensions.resources_api import register_api_handlers
    from shopfloor.extensions.spawn_callback import replace_batchspawner_handler
    from shopfloor.extensions.spawner import ShopfloorSpawner

    ctx = _CONTEXT = ShopfloorContext.from_site(site)
    # Slurm command latency, batched polls, pending reasons, Ray clusters on /hub/metrics.
    metrics.watch_context(ctx)
    replace_batchspawner_handler()
    register_api_handlers()
    from shopfloor.extensions.ray_api import register_ray_handlers

    register_ray_handlers()
    from shopfloor.extensions.accounts_api import register_accounts_handlers

    register_accounts_handlers()
    from shopfloor.extensions.jobs_api import register_jobs_handlers

    register_jobs_handlers()
    state = Path(site.hub.state_dir)
    secure_hub_state(state)

    c.JupyterHub.bind_url = site.hub.bind_url
    c.JupyterHub.hub_bind_url = site.hub.hub_bind_url
    c.ConfigurableHTTPProxy.api_url = site.hub.proxy_api_url
    # SQLite in the state folder, or the site's PostgreSQL. The password (hub.db_password_file)
    # joins the URL only here, in memory: JupyterHub's schema check (alembic) reads nothing
    # else, and JupyterHub redacts it from every log line.
    c.JupyterHub.db_url = database.connect_url(site)
    c.JupyterHub.db_kwargs = database.engine_kwargs(site)  # SQLite: WAL (hub.sqlite_wal)
    c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
    # Sessions are Slurm jobs: they outlive hub restarts and are reattached, not killed.
    c.JupyterHub.cleanup_servers = False
    c.JupyterHub.allow_named_servers = True
    c.JupyterHub.named_server_limit_per_user = site.hub.named_server_limit_per_user
    c.JupyterHub.spawner_class = ShopfloorSpawner
    c.JupyterHub.template_vars = {"announcement_login": site.hub.login_message or (
        f"{site.name}: log in with your cluster account.")}

    from shopfloor.extensions.auth import install_auth

    # Login: PAM, or the site's OpenID Connect provider (auth.method).
    install_auth(c, site)

    c.JupyterHub.tornado_settings = {"shopfloor": ctx}
    c.ShopfloorSpawner.context = ctx
    c.ShopfloorSpawner.python = site.hub.python
    c.ShopfloorSpawner.start_timeout = site.hub.start_timeout
    c.ShopfloorSpawner.http_timeout = site.hub.http_timeout
    c.ShopfloorSpawner.default_url = site.hub.default_url
    c.ShopfloorSpawner.pending_poll_interval = site.slurm.pending_poll_interval
    c.ShopfloorSpawner.slurm_poll_interval = site.slurm.poll_interval
    c.ShopfloorSpawner.poll_interval = site.hub.server_poll_interval or max(
        10, int(site.slurm.poll_interval * 2))
    c.ShopfloorSpawner.job_log_dir = site.slurm.job_log_dir
    # Fine-tuning in sessions (shopfloor.finetune.recipe) finds the site model catalog and the
    # users' run folder here; sessions cannot read the site file.
    c.ShopfloorSpawner.environment.update({
        "SHOPFLOOR_MODEL_CATALOG": site.models.catalog_dir,
        "SHOPFLOOR_RUNS_DIR": site.models.runs_dir,
        # Read by shopfloor.lab in the session (the Help card, the walltime warnings).
        "SHOPFLOOR_HELP_URL": site.hub.help_url,
        "SHOPFLOOR_WARN_MINUTES": ",".join(str(m) for m in site.hub.warn_minutes),
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
    from shopfloor.extensions.home import install_home

    # The front door: home page (replaces /hub/home), catalog, help requests with expiry.
    install_home(c, site)
    from shopfloor.extensions.idle_culler import install_idle_culler

    # Idle sessions end (jupyterhub-idle-culler, idle minutes per partition).
    install_idle_culler(c, site)
    # Every user may find the services (install_apps made sure the "user" role is listed).
    user_role = next(r for r in c.JupyterHub.load_roles if r.get("name") == "user")
    user_role["scopes"] = [*user_role.get("scopes", ["self"]), *SERVICE_DISCOVERY_SCOPES]

    from shopfloor.extensions.spawn_reattach import detach_unstarted_servers, schedule_reattach

    detach_unstarted_servers(c.JupyterHub.db_url)
    schedule_reattach()
    # batchspawner settings (req_partition, batch_script, ...) would be silently ignored:
    # refuse those set so far, and those set later in the config, before the hub serves.
    refuse_ignored_spawner_settings(c)
    check_when_hub_config_loaded(lambda app: refuse_ignored_spawner_settings(app.config,
                                                                             app.spawner_class))
    return ctx


def refuse_ignored_spawner_settings(config: Any, spawner_class: type | None = None) -> None:
    """Raise :class:`~shopfloor.extensions.compat.IgnoredSettingError` if ``config`` sets
    a batchspawner ``SlurmSpawner`` setting that ``spawner_class`` (a ShopfloorSpawner) ignores.
    """
    from shopfloor.extensions.spawner import ShopfloorSpawner

    spawner_class = spawner_class or ShopfloorSpawner
    if isinstance(spawner_class, type) and issubclass(spawner_class, ShopfloorSpawner):
        refuse_batchspawner_settings(config, spawner_class.section_names())
