"""The hub's database as the site file chooses it: URL, password, and how to show it.

SQLite in the hub's state folder is the demo's default; a site names PostgreSQL in
``hub.db_url``. The password never sits in the site file (the site model refuses a URL with
one): it comes from ``hub.db_password_file`` (0600) and joins the URL in the hub's memory only
(:func:`connect_url`; JupyterHub redacts it from its logs). Without that file libpq looks
itself (``$PGPASSWORD``, ``~/.pgpass``) or the server lets the hub's Unix user in (peer login).

Used by the hub's install (``c.JupyterHub.db_url``) and by ``shopfloor doctor``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from shopfloor.site import SiteConfig, SiteConfigError


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def read_password_file(path: str | os.PathLike[str]) -> str:
    """The first line of a password file that only its owner may read.

    Raises :class:`SiteConfigError` naming ``hub.db_password_file`` when the file is
    missing, empty, or readable by its group or others (a password others can read is no
    secret: the same rule as ssh's keys).
    """
    path = Path(path)
    try:
        info = path.stat()
        text = path.read_text()
    except OSError as exc:
        raise SiteConfigError(
            f"hub.db_password_file: cannot read {path}: {exc.strerror}") from None
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise SiteConfigError(
            f"hub.db_password_file: {path} is mode {stat.S_IMODE(info.st_mode):04o}; "
            f"only its owner may read it (chmod 600 {path})")
    password = text.splitlines()[0].strip() if text.strip() else ""
    if not password:
        raise SiteConfigError(f"hub.db_password_file: {path} is empty")
    return password


def connect_url(site: SiteConfig) -> str:
    """The URL the hub connects with: ``hub.database_url`` plus the password from
    ``hub.db_password_file`` (if set), for the hub process's memory only.

    JupyterHub checks its schema with alembic, which builds its own engine from the URL
    alone, so a password must be in the URL the hub gets (JupyterHub redacts it from its log
    lines); the site file never holds it. Raises :class:`SiteConfigError` for an unreadable
    or shared password file.
    """
    url = site.hub.database_url
    if is_sqlite(url) or not site.hub.db_password_file:
        return url
    from sqlalchemy.engine import make_url  # a JupyterHub dependency, on the hub host

    password = read_password_file(site.hub.db_password_file)
    return make_url(url).set(password=password).render_as_string(hide_password=False)


def shown_url(url: str) -> str:
    """``url`` fit for a log line or a report: any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


__all__ = ["connect_url", "is_sqlite", "read_password_file", "shown_url"]
