"""A private PostgreSQL cluster for the tests of a hub on PostgreSQL (test_ops_postgresql.py,
test_site_deploy.py): Debian's ``postgresql`` run as the postgres user on a loopback port of
the caller's test range, a role with a password and a database it owns; stopped and removed
afterwards, whatever happened."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def pg_bin() -> Path:
    """The newest installed PostgreSQL's ``bin`` folder."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parts[-3]))
    if not versions:
        pytest.fail("PostgreSQL is not installed: scripts/bootstrap.sh --test installs "
                    "Debian's postgresql")
    return versions[-1].parent


def as_postgres(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["sudo", "-n", "-u", "postgres", *args], input=stdin, text=True,
                          capture_output=True, check=False, cwd="/")
    assert proc.returncode == 0, f"{args[0]} failed: {proc.stderr or proc.stdout}"
    return proc


@dataclass
class Postgres:
    folder: Path  #: 0711, root's: the data and socket folders (postgres's) and test files
    socket_dir: Path
    port: int
    role: str
    database: str
    password: str

    @property
    def url(self) -> str:
        """The hub's ``hub.db_url``: TCP on loopback, no password (that is in a file)."""
        return f"postgresql://{self.role}@127.0.0.1:{self.port}/{self.database}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        # Statements on stdin: secrets never on a command line.
        return as_postgres(str(pg_bin() / "psql"), "-X", "-q", "-A", "-t", "-v",
                           "ON_ERROR_STOP=1", "-h", str(self.socket_dir), "-p", str(self.port),
                           "-d", database, "-f", "-", stdin=statement).stdout.strip()

    def password_file(self, name: str = "db-password") -> Path:
        """The password in a root-owned 0600 file (``hub.db_password_file``)."""
        path = self.folder / name
        path.write_text(self.password + "\n")
        path.chmod(0o600)
        return path


@contextlib.contextmanager
def private_postgres(port: int, role: str = "shopfloor_hub",
                     database: str = "shopfloor_hub") -> Iterator[Postgres]:
    """A PostgreSQL cluster on 127.0.0.1:``port`` with ``role`` (a random password) owning
    ``database``. Local socket: peer (the postgres user administers); TCP: password."""
    folder = Path(tempfile.mkdtemp(prefix="shopfloor-pg-"))
    folder.chmod(0o711)
    data, sockets = folder / "data", folder / "sockets"
    for path in (data, sockets):
        path.mkdir(mode=0o700)
        shutil.chown(path, "postgres", "postgres")
    password = secrets.token_urlsafe(24)
    started = False
    try:
        as_postgres(str(pg_bin() / "initdb"), "-D", str(data), "-U", "postgres",
                    "--auth-local=peer", "--auth-host=scram-sha-256", "--no-sync")
        as_postgres(str(pg_bin() / "pg_ctl"), "-D", str(data), "-l", str(data / "server.log"),
                    "-w", "-t", "60", "-o",
                    f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1", "start")
        started = True
        pg = Postgres(folder, sockets, port, role, database, password)
        pg.sql(f"CREATE ROLE {role} LOGIN PASSWORD '{password}';")
        pg.sql(f"CREATE DATABASE {database} OWNER {role};")
        yield pg
    finally:
        if started:
            as_postgres(str(pg_bin() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)
