"""The hub on PostgreSQL: a private PostgreSQL cluster (Debian's ``postgresql``, run as the
postgres user on a loopback port of the test range), a database and a role with a password,
a real hub on it (password from a 0600 file), a login and a spawn; ``shopfloor doctor``'s
database check passes against it and fails on a wrong password. Everything is dropped after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opssupport import private_hub
from pgsupport import Postgres, private_postgres
from support import PORT_BASE, RunningHub, squeue_jobs

pytestmark = [pytest.mark.hub, pytest.mark.cluster, pytest.mark.slow]

#: The hub's ports: base + 40..42 (services + 51, + 53); PostgreSQL: base + 60.
OFFSET = 40
PG_PORT = PORT_BASE + 60
ROLE, DATABASE = "shopfloor_hub", "shopfloor_hub"


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with private_postgres(PG_PORT, ROLE, DATABASE) as pg:
        yield pg


@pytest.fixture(scope="module")
def pg_hub(postgres: Postgres, local_cluster: object,
           passwords: dict[str, str]) -> Iterator[RunningHub]:
    secret = postgres.password_file()
    with private_hub(OFFSET, passwords, hub={
            "db_url": postgres.url, "db_password_file": str(secret)},
            hub_files=(secret,)) as hub:
        yield hub


def doctor(site_file: Path) -> dict[str, object]:
    skip = [f"--skip={g}" for g in
            ("slurm", "munge", "partitions", "python", "connect", "sudo", "ports")]
    proc = subprocess.run([sys.executable, "-m", "shopfloor.ops.doctor", "--site",
                           str(site_file), "--json", *skip], capture_output=True, text=True,
                          check=False, timeout=120)
    return {"rc": proc.returncode, **json.loads(proc.stdout)}


def test_hub_runs_on_postgresql(pg_hub: RunningHub, postgres: Postgres) -> None:
    alice = pg_hub.client("alice")
    assert alice.spawn_form("pg", partition="debug", cpus=1, memory_gb=0.5,
                            walltime=10).status_code == 302
    try:
        alice.wait_ready("pg", timeout=120)
        job = next(j for j in squeue_jobs("alice", other_hubs=True)
                   if j["name"] == "shopfloor-alice-pg")
        # The hub keeps its state in PostgreSQL: the server row and the job id are there,
        # and no SQLite database was written.
        rows = postgres.sql("SELECT s.name, s.state FROM spawners s JOIN users u "
                            "ON u.id = s.user_id WHERE u.name = 'alice';", DATABASE)
        assert "pg|" in rows and job["id"] in rows
        sqlite = Path(pg_hub.site.hub.state_dir) / "jupyterhub.sqlite"
        assert not sqlite.exists() or sqlite.stat().st_size == 0
    finally:
        alice.stop("pg")
    # The password reached the driver only: not in the hub's log, its command line or URL.
    assert postgres.password not in pg_hub.log_text()
    pid = pg_hub.process.pid()
    assert pid and postgres.password not in Path(f"/proc/{pid}/cmdline").read_text()
    assert postgres.password not in Path(f"/proc/{pid}/environ").read_bytes().decode(
        errors="replace")


def test_doctor_database_check_against_postgresql(pg_hub: RunningHub,
                                                 postgres: Postgres) -> None:
    report = doctor(pg_hub.site_file)
    database = [c for c in report["checks"] if c["name"] == "database"]  # type: ignore[union-attr]
    assert report["rc"] == 0 and database and database[0]["status"] == "ok", report
    assert f"127.0.0.1:{PG_PORT}/{DATABASE}" in database[0]["summary"]
    # A wrong password: the check fails, says where, and shows no password.
    wrong = postgres.folder / "wrong-password"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    site_text = pg_hub.site_file.read_text().replace(
        str(postgres.folder / "db-password"), str(wrong))
    broken = postgres.folder / "broken-site.yaml"
    broken.write_text(site_text)
    report = doctor(broken)
    database = [c for c in report["checks"] if c["name"] == "database"]  # type: ignore[union-attr]
    assert report["rc"] == 1 and database[0]["status"] == "fail", report
    assert "cannot connect" in database[0]["summary"]
    assert "not-the-password" not in json.dumps(report)
    assert os.environ.get("PGPASSWORD") is None  # nothing leaked into this process either
