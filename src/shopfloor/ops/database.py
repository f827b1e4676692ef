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
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any
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


def engine_kwargs(site: SiteConfig) -> dict[str, Any]:
    """``c.JupyterHub.db_kwargs``: for a SQLite file with ``hub.sqlite_wal``, connections in
    write-ahead-log mode; otherwise JupyterHub's defaults (empty).

    JupyterHub commits on its event loop several times per spawn; in SQLite's default
    rollback-journal mode each commit waits for two or more ``fsync`` calls, in WAL mode for
    one (``synchronous`` stays FULL: a committed spawn survives a power cut). Measured here:
    1.0-8.8 ms against 0.2-2.5 ms per commit, and it is most of a 300-session burst's hub
    time (``benchmarks.scale --bursts``). JupyterHub passes ``db_kwargs`` to SQLAlchemy's
    ``create_engine``, whose documented ``creator`` makes each connection; the mode is set
    per connection and persists in the file (``jupyterhub.sqlite-wal``/``-shm`` appear
    beside it, so the folder must be on a local disk, as SQLite already requires).
    """
    url = site.hub.database_url  # SQLite URLs never carry a password
    if not is_sqlite(url) or not site.hub.sqlite_wal or url.endswith(":memory:"):
        return {}
    return {"creator": wal_connector(url)}


def wal_connector(url: str) -> Callable[[], sqlite3.Connection]:
    """A function opening the SQLite database of ``url`` as SQLAlchemy would (its own
    connect arguments for the URL; JupyterHub's ``check_same_thread=False``), in WAL mode."""
    from sqlalchemy.engine import make_url  # a JupyterHub dependency, on the hub host

    parsed = make_url(url)
    args, kwargs = parsed.get_dialect()().create_connect_args(parsed)
    kwargs.setdefault("check_same_thread", False)

    def connect() -> sqlite3.Connection:
        connection = sqlite3.connect(*args, **kwargs)
        connection.execute("PRAGMA journal_mode=WAL").fetchall()
        return connection

    return connect


def shown_url(url: str) -> str:
    """``url`` fit for a log line or a report: any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


__all__ = ["connect_url", "engine_kwargs", "is_sqlite", "read_password_file", "shown_url",
           "wal_connector"]
