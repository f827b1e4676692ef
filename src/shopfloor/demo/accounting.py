"""Slurm accounting for the embedded cluster: MariaDB, ``slurmdbd``, accounts, QOS and budgets.

:class:`LocalAccounting` belongs to a :class:`~shopfloor.demo.localcluster.LocalCluster` and
is started by its ``up()`` *before* slurmctld is (re)started with accounting on, so that every
association exists when Slurm begins to enforce them (a running cluster switches over with a
single restart of its daemons). It runs, all under ``<state_dir>/accounting``:

* a private MariaDB (data folder owned by ``mysql``, mode 0700) on ``127.0.0.1`` only, port
  ``slurmctld_port + 1``; slurmdbd's database password is generated once, kept 0600;
* ``slurmdbd`` (port ``slurmctld_port + 2``), configured by ``slurmdbd.conf`` (0600) beside
  ``slurm.conf``, where Slurm looks for it;

then makes the demo's accounts idempotently with ``sacctmgr`` (through the seam,
:class:`shopfloor.slurm.accounting.AccountingSync`): a QOS per partition, the projects of
:data:`DEFAULT_PROJECTS` with their budgets (``GrpTRESMins``), the demo users' associations,
and one account per workshop for the participants that exist (``ws-<workshop>-<n>``).
Budgets and QOS are brought to the layout's values at every ``up()``; use is kept.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shopfloor.slurm.accounting import AccountingSync
from shopfloor.slurm.seam import SlurmError, SlurmSync
from shopfloor.workshops.ops import WORKSHOPS_ACCOUNT

log = logging.getLogger(__name__)

#: A workshop participant's login (``ws-<workshop>-<n>``, shopfloor.workshops.model).
_PARTICIPANT = re.compile(r"^(ws-[A-Za-z0-9][A-Za-z0-9_.-]*)-\d+$")
_DB_NAME = "slurm_acct_db"
_DB_USER = "slurm"


class AccountingError(RuntimeError):
    """Accounting cannot start; the message says what to do next."""


@dataclass(frozen=True)
class QosSpec:
    """A QOS and its limits as ``sacctmgr`` settings (``MaxWall=00:30:00``)."""

    name: str
    settings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProjectSpec:
    """A project: a Slurm account with a budget, its users and the QOS they may use.

    ``default_for`` are the users for whom it is the default account.
    """

    name: str
    description: str
    users: tuple[str, ...]
    cpu_minutes: int
    gpu_minutes: int
    qos: tuple[str, ...]
    default_for: tuple[str, ...] = ()


#: One QOS per partition: the partition's limits as Slurm enforces them per user.
DEFAULT_QOS: tuple[QosSpec, ...] = (
    QosSpec("cpu", ("MaxWall=08:00:00",)),
    QosSpec("gpu", ("MaxWall=04:00:00", "MaxTRESPerUser=gres/gpu=2")),
    QosSpec("debug", ("MaxWall=00:30:00", "MaxJobsPerUser=4")),
)
#: proj-ml is shared by alice and bob; proj-chem is alice's alone (and has no GPU time).
DEFAULT_PROJECTS: tuple[ProjectSpec, ...] = (
    ProjectSpec("proj-ml", "Machine learning (alice and bob)", ("alice", "bob", "admin"),
                cpu_minutes=500_000, gpu_minutes=50_000, qos=("normal", "cpu", "gpu", "debug"),
                default_for=("alice", "bob")),
    ProjectSpec("proj-chem", "Computational chemistry (alice)", ("alice", "admin"),
                cpu_minutes=100_000, gpu_minutes=0, qos=("normal", "cpu", "debug")),
    ProjectSpec("training", "Trainers and site staff", ("trainer", "admin"),
                cpu_minutes=200_000, gpu_minutes=10_000, qos=("normal", "cpu", "gpu", "debug"),
                default_for=("trainer", "admin")),
)


def workshop_account(username: str) -> str | None:
    """The Slurm account of a workshop participant's login (``ws-intro-3`` -> ``ws-intro``)."""
    match = _PARTICIPANT.match(username)
    return match.group(1) if match else None


class LocalAccounting:
    """MariaDB + slurmdbd + the demo's accounts for one local cluster (see the module doc)."""

    def __init__(
        self,
        state_dir: Path,
        slurm_conf: Path,
        slurm: SlurmSync,
        *,
        cluster_name: str = "shopfloor",
        db_port: int = 6818,
        dbd_port: int = 6819,
        qos: Sequence[QosSpec] = DEFAULT_QOS,
        projects: Sequence[ProjectSpec] = DEFAULT_PROJECTS,
    ) -> None:
        self.dir = state_dir / "accounting"
        self.slurm_conf = slurm_conf
        self.accounts = AccountingSync(slurm)
        self.cluster_name = cluster_name
        self.db_port = db_port
        self.dbd_port = dbd_port
        self.qos = tuple(qos)
        self.projects = tuple(projects)

    # -- paths ----------------------------------------------------------------------------

    @property
    def db_dir(self) -> Path:
        """MariaDB's private folder (data, socket, pid, log), owned by ``mysql``, 0700."""
        return self.dir / "mysql"

    @property
    def dbd_conf(self) -> Path:
        """``slurmdbd.conf``: Slurm reads it from the folder of ``slurm.conf``."""
        return self.slurm_conf.with_name("slurmdbd.conf")

    @property
    def dbd_pid_file(self) -> Path:
        return self.dir / "slurmdbd.pid"

    @property
    def dbd_log(self) -> Path:
        return self.dir / "slurmdbd.log"

    @property
    def _password_file(self) -> Path:
        return self.dir / "db-password"

    # -- configuration --------------------------------------------------------------------

    def slurm_conf_lines(self) -> list[str]:
        """What ``slurm.conf`` says about accounting (replaces ``accounting_storage/none``)."""
        return [
            "# Accounting: slurmdbd (MariaDB) keeps accounts, QOS, budgets and job history.",
            "AccountingStorageType=accounting_storage/slurmdbd",
            "AccountingStorageHost=127.0.0.1",
            f"AccountingStoragePort={self.dbd_port}",
            "AccountingStorageTRES=gres/gpu",
            "# Slurm refuses jobs without an association, over a limit, or that could not",
            "# finish within their account's remaining budget (safe).",
            "AccountingStorageEnforce=associations,limits,qos,safe",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "# Budgets (GrpTRESMins) need usage, which only multifactor tracks; it never decays:",
            "# an allocation is used up, not forgiven over time.",
            "PriorityType=priority/multifactor",
            "PriorityDecayHalfLife=0",
            "PriorityUsageResetPeriod=NONE",
            "PriorityWeightAge=1000",
            "PriorityMaxAge=1-0",
        ]

    def render_dbd_conf(self, password: str) -> str:
        return "\n".join([
            "# Written by shopfloor.demo.accounting: slurmdbd of the demo cluster.",
            "AuthType=auth/munge",
            "DbdHost=localhost",
            "DbdAddr=127.0.0.1",
            f"DbdPort={self.dbd_port}",
            "SlurmUser=root",
            "DebugLevel=info",
            f"LogFile={self.dbd_log}",
            f"PidFile={self.dbd_pid_file}",
            "StorageType=accounting_storage/mysql",
            "StorageHost=127.0.0.1",
            f"StoragePort={self.db_port}",
            f"StorageUser={_DB_USER}",
            f"StoragePass={password}",
            f"StorageLoc={_DB_NAME}",
            "",
        ])

    # -- lifecycle --------------------------------------------------------------------------

    def up(self, timeout: float = 60) -> None:
        """Start MariaDB and slurmdbd if they are not running, then make every account.

        Safe to call again: what runs is kept, what exists is kept (budgets and QOS limits
        are set to the layout's values again).
        """
        deadline = time.monotonic() + timeout
        for name in ("mariadbd", "mariadb-install-db", "mariadb", "slurmdbd", "sacctmgr"):
            _which_or_fail(name)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o711)  # mysql must reach its folder; nobody may list ours
        password = self._password()
        self._start_db(deadline)
        self._grant(password)
        self._start_dbd(password, deadline)
        self.seed()

    def down(self) -> None:
        """Stop slurmdbd, then MariaDB (a no-op for what does not run)."""
        _stop(self._dbd_pids())
        _stop(self._db_pids())

    def running(self) -> bool:
        return bool(self._dbd_pids()) and bool(self._db_pids())

    # -- MariaDB ----------------------------------------------------------------------------

    def _password(self) -> str:
        with contextlib.suppress(OSError):
            text = self._password_file.read_text().strip()
            if text:
                return text
        password = secrets.token_urlsafe(24)
        fd = os.open(self._password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        return password

    def _db_pids(self) -> list[int]:
        marker = f"--datadir={self.db_dir / 'data'}"
        return [pid for pid, argv in _processes()
                if os.path.basename(argv[0]) == "mariadbd" and marker in argv]

    def _start_db(self, deadline: float) -> None:
        mysql = pwd.getpwnam("mysql")
        self.db_dir.mkdir(mode=0o700, exist_ok=True)
        os.chown(self.db_dir, mysql.pw_uid, mysql.pw_gid)
        self.db_dir.chmod(0o700)
        data = self.db_dir / "data"
        if not (data / "mysql").is_dir():
            log.info("creating the accounting database in %s", data)
            _run([_which_or_fail("mariadb-install-db"), "--user=mysql", f"--datadir={data}",
                  "--auth-root-authentication-method=socket", "--skip-test-db"],
                 what="mariadb-install-db")
        if self._db_pids():
            return
        log.info("starting MariaDB for slurmdbd on 127.0.0.1:%d", self.db_port)
        with (self.db_dir / "mariadbd.out").open("ab") as out:
            server = subprocess.Popen(
                [_which_or_fail("mariadbd"), "--no-defaults", f"--datadir={data}",
                 "--user=mysql", f"--socket={self._socket}", f"--port={self.db_port}",
                 "--bind-address=127.0.0.1", f"--pid-file={self.db_dir / 'mariadbd.pid'}",
                 f"--log-error={self.db_dir / 'mariadbd.err'}", "--skip-name-resolve",
                 "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=64M",
                 "--innodb-lock-wait-timeout=900", "--max-connections=50"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
            )
        while not self._sql_answers():
            if time.monotonic() > deadline or server.poll() is not None:
                raise AccountingError(
                    "MariaDB for slurmdbd did not start; its log is below."
                    f"{_tail_block(self.db_dir / 'mariadbd.err')}")
            time.sleep(0.3)

    @property
    def _socket(self) -> Path:
        return self.db_dir / "mariadbd.sock"

    def _sql(self, statements: str) -> subprocess.CompletedProcess[str]:
        """Run SQL as MariaDB's root (socket login, root only); statements on stdin."""
        return subprocess.run(
            [_which_or_fail("mariadb"), "--no-defaults", f"--socket={self._socket}", "-u", "root",
             "--batch"], input=statements, capture_output=True, text=True, timeout=30,
            check=False,
        )

    def _sql_answers(self) -> bool:
        return self._socket.exists() and self._sql("SELECT 1;").returncode == 0

    def _grant(self, password: str) -> None:
        """slurmdbd's database and login; the password travels on stdin, never in argv."""
        quoted = password.replace("\\", "\\\\").replace("'", "\\'")
        proc = self._sql(
            f"CREATE DATABASE IF NOT EXISTS {_DB_NAME};\n"
            f"CREATE USER IF NOT EXISTS '{_DB_USER}'@'127.0.0.1' IDENTIFIED BY '{quoted}';\n"
            f"ALTER USER '{_DB_USER}'@'127.0.0.1' IDENTIFIED BY '{quoted}';\n"
            f"GRANT ALL ON {_DB_NAME}.* TO '{_DB_USER}'@'127.0.0.1';\n"
        )
        if proc.returncode != 0:
            raise AccountingError(f"cannot prepare the accounting database: {proc.stderr.strip()}")

    # -- slurmdbd ---------------------------------------------------------------------------

    def _dbd_pids(self) -> list[int]:
        """slurmdbd has no ``-f``: ours is the one whose ``SLURM_CONF`` is our slurm.conf."""
        wanted = f"SLURM_CONF={self.slurm_conf}".encode()
        pids = []
        for pid, argv in _processes():
            if os.path.basename(argv[0]) != "slurmdbd":
                continue
            with contextlib.suppress(OSError):
                if wanted in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                    pids.append(pid)
        return pids

    def _start_dbd(self, password: str, deadline: float) -> None:
        text = self.render_dbd_conf(password)
        changed = True
        with contextlib.suppress(OSError):
            changed = self.dbd_conf.read_text() != text
        if changed:
            fd = os.open(self.dbd_conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
        self.dbd_conf.chmod(0o600)
        running = self._dbd_pids()
        if running and not changed:
            self._wait_dbd(deadline)
            return
        _stop(running)
        log.info("starting slurmdbd on 127.0.0.1:%d", self.dbd_port)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
        env["SLURM_CONF"] = str(self.slurm_conf)
        proc = subprocess.run(
            [_which_or_fail("slurmdbd")], env=env, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, start_new_session=True, timeout=60, check=False,
        )
        if proc.returncode != 0:
            raise AccountingError(f"slurmdbd exited with {proc.returncode}: "
                                  f"{(proc.stderr or proc.stdout).strip()}"
                                  f"{_tail_block(self.dbd_log)}")
        self._wait_dbd(deadline)

    def _wait_dbd(self, deadline: float) -> None:
        while True:
            try:
                self.accounts.add_cluster(self.cluster_name)
                return
            except SlurmError as exc:
                if time.monotonic() > deadline or not self._dbd_pids():
                    raise AccountingError(
                        f"slurmdbd does not answer ({exc.slurm_message}); its log is below."
                        f"{_tail_block(self.dbd_log)}") from exc
            time.sleep(0.5)

    # -- accounts ---------------------------------------------------------------------------

    def seed(self) -> None:
        """QOS, projects with CPU budgets, the demo users and existing workshop participants.

        Only what exists is kept; nothing that mentions GPUs: slurmdbd learns the
        ``gres/gpu`` TRES when slurmctld first connects with accounting on, so GPU limits
        follow in :meth:`apply_limits`, once slurmctld runs.
        """
        known = {(a.account, a.user) for a in self.accounts.associations()}
        current = self.accounts.qos()
        for qos in self.qos:
            self.accounts.ensure_qos(qos.name, [s for s in qos.settings if "gres/" not in s],
                                     current)
        for project in self.projects:
            if (project.name, "") not in known:
                self.accounts.add_account(project.name, description=project.description)
                self.accounts.set_budget(project.name, {"cpu": project.cpu_minutes})
                self.accounts.set_account_qos(project.name, project.qos)
            for user in project.users:
                # Slurm keys associations by name: the Unix account may come later
                # (then slurmctld needs `scontrol reconfigure` to learn its uid).
                if (project.name, user) not in known:
                    self.accounts.add_user(user, project.name,
                                           default_account=user in project.default_for)
        if (WORKSHOPS_ACCOUNT, "") not in known:
            self.accounts.add_account(WORKSHOPS_ACCOUNT,
                                      description="Workshops (one account each)")
        for user in _all_unix_users():
            account = workshop_account(user)
            if account and (account, user) not in known:
                if (account, "") not in known:
                    self.accounts.add_account(account, parent=WORKSHOPS_ACCOUNT)
                    known.add((account, ""))
                self.accounts.add_user(user, account, default_account=True)

    def learn_new_users(self) -> None:
        """Tell slurmctld about demo users whose Unix account appeared since it last looked
        (``shopfloor cluster up`` may run before the demo's users are created)."""
        record = self.dir / "users-with-uid"
        known: set[str] = set()
        with contextlib.suppress(OSError):
            known = set(record.read_text().split())
        existing = {u for p in self.projects for u in p.users if _unix_user(u)}
        if not record.exists() or existing - known:
            self.accounts.learn_uids()
            record.write_text("\n".join(sorted(existing)) + "\n")

    def apply_limits(self) -> None:
        """QOS limits and budgets as the layout says (GPU ones too); slurmctld must run."""
        current = {a.account: a.grp_tres_mins for a in self.accounts.associations()
                   if not a.user}
        have = self.accounts.qos()
        for qos in self.qos:
            self.accounts.ensure_qos(qos.name, qos.settings, have)
        for project in self.projects:
            budget = {"cpu": project.cpu_minutes, "gres/gpu": project.gpu_minutes}
            if any(current.get(project.name, {}).get(k) != v for k, v in budget.items()):
                self.accounts.set_budget(project.name, budget)


# -- helpers --------------------------------------------------------------------------------


def _which_or_fail(name: str) -> str:
    path = os.environ.get("PATH", os.defpath) + os.pathsep + "/usr/sbin:/sbin"
    found = shutil.which(name, path=path)
    if found is None:
        raise AccountingError(
            f"{name} not found: install Debian's slurmdbd and mariadb-server "
            "(apt-get install slurmdbd mariadb-server), as scripts/bootstrap.sh does")
    return found


def _run(argv: list[str], *, what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise AccountingError(f"{what} failed ({proc.returncode}): "
                              f"{(proc.stderr or proc.stdout).strip()[-800:]}")


def _unix_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _all_unix_users() -> list[str]:
    return [entry.pw_name for entry in pwd.getpwall()]


def _processes() -> list[tuple[int, list[str]]]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            raw = (entry / "cmdline").read_bytes()
            argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
            if argv:
                out.append((int(entry.name), argv))
    return out


def _stop(pids: Sequence[int], grace: float = 15.0) -> None:
    """SIGTERM, then SIGKILL what is left after ``grace`` seconds."""
    import signal

    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in alive if Path(f"/proc/{pid}").exists()
                 and not _is_zombie(pid)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


def _tail_block(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    tail = "\n".join(text.splitlines()[-lines:])
    return f"\n--- last lines of {path} ---\n{tail}" if tail else ""
