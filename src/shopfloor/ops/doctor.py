"""``shopfloor doctor``: does this host, this Slurm and this site file fit together?

Each check reads the site file and the live system and answers ``ok``, ``warn``, ``fail`` or
``skip`` in one line; every ``fail`` and ``warn`` carries a fix in one line (the command to run
or the setting to change). Exit code 0 when nothing failed, 1 otherwise; ``--json`` for scripts.

The checks, in order (their names are what ``--skip`` takes):

``slurm``
    the Slurm client works from this host and slurmctld answers (``sinfo``, ``scontrol ping``);
``munge``
    ``munge -n | unmunge`` works (Slurm authenticates every call with it);
``partitions``
    each partition of the site file exists in Slurm, is up, and allows at least the limits the
    site file offers users (walltime, nodes, CPUs, memory, GPUs per node);
``python``
    ``hub.python`` and its environment are readable and executable by an unprivileged user
    (jobs run as the user), run as ``--probe-user`` (default ``nobody``);
``connect``
    a tiny job on the default partition connects to ``hub.hub_bind_url`` (where sessions call
    home), bounded by ``--probe-timeout``; before the hub runs, the doctor listens there itself;
``sudo``
    with ``--service-user`` (default ``hub.service_user``): ``sudo -l -U USER`` allows exactly
    ``sbatch``, ``scancel`` and ``shopfloor-as-user`` as users other than root, only
    ``shopfloor-privileged`` as root, no shell, no environment beyond the named secrets;
``database``
    the hub database is reachable (SQLite: private file, readable; others: connects when the
    driver is installed);
``ports``
    every port of the site file is free or held by the hub, its proxy or its services.

Slurm commands go through the one seam (:class:`shopfloor.slurm.seam.Slurm`); every other
command through :func:`run_command`. Tests replace those two and nothing else. The doctor
needs no browser and imports no JupyterHub.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import errno
import json
import os
import pwd
import re
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from shopfloor.auth_site import TOKEN_ENV
from shopfloor.ops.privileged import Refused, check_slurm_conf
from shopfloor.site import PartitionPolicy, SiteConfig, SiteConfigError, load_site
from shopfloor.slurm.seam import Slurm, SlurmError, gpus_in_gres, parse_time_limit

#: The Slurm tools the hub runs *as a user* through sudo (the spawner and the apps runner
#: submit and cancel jobs under the user's own identity), beside ``shopfloor-as-user`` (the
#: file operations as a user) and, as root, ``shopfloor-privileged``. Nothing else.
SUDO_COMMANDS = ("sbatch", "scancel")
AS_USER_HELPER = "shopfloor-as-user"
PRIVILEGED_HELPER = "shopfloor-privileged"
#: Variables that may travel through sudo (``--preserve-env=NAME``): the session's token
#: (``extensions.spawner.SECRET_ENV``), the app job's secret (``apps.jobstart.SECRET_ENV``) and
#: the provider's tokens a site passes into sessions (``auth.oidc.pass_tokens``).
SUDO_ENV = ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN", "SHOPFLOOR_APP_SECRET", *TOKEN_ENV)
#: Not secrets, but kept through sudo for sbatch/scancel only: which cluster the user's
#: command talks to (``slurm.conf_file``). The hub can already submit any job as a user, so
#: this gives it nothing more; it is never kept for the root helper (a slurm.conf names
#: plugins to load).
SUDO_KEEP_ENV = ("SLURM_CONF",)
#: Commands that give a shell or any command; a sudoers rule for the hub must list none.
_SHELLS = {"ALL", "sh", "bash", "dash", "zsh", "ksh", "csh", "tcsh", "fish", "su", "sudo",
           "env", "python", "python3", "perl", "vi", "vim", "less", "more", "find", "xargs"}
#: Programs (argv items) that are the hub or its proxy; the hub's services run as
#: ``python -m shopfloor.extensions.<service>``.
HUB_PROGRAMS = ("jupyterhub", "configurable-http-proxy")
#: Check groups in the order they run; ``--skip`` takes these names.
CHECK_GROUPS = ("slurm", "munge", "partitions", "python", "connect", "sudo", "database", "ports")


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"  #: works, but an admin should look (the doctor still exits 0)
    FAIL = "fail"
    SKIP = "skip"  #: not applicable here or not asked for


@dataclass(frozen=True)
class Check:
    """The answer of one check: what was found and, unless ok, the fix in one line."""

    name: str
    status: Status
    summary: str
    fix: str = ""
    detail: str = ""  #: Slurm's or the tool's own words, for the admin
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        return data


@dataclass(frozen=True)
class Completed:
    """What a command did: its exit code and output (127: not found, 124: timed out)."""

    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def words(self) -> str:
        """The command's last line of output, for a check's detail."""
        lines = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return lines[-1] if lines else f"exit code {self.returncode}"


class Commands(Protocol):
    """How the doctor runs a command that is not a Slurm tool (munge, sudo, python)."""

    def __call__(
        self, argv: Sequence[str], *, timeout: float, stdin: str | None = None
    ) -> Completed: ...


def run_command(argv: Sequence[str], *, timeout: float, stdin: str | None = None) -> Completed:
    """Run ``argv`` from ``/`` (so no caller's folder shadows an import); never raises."""
    try:
        proc = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, timeout=timeout,
            cwd="/", check=False, start_new_session=True,
            stdin=None if stdin is not None else subprocess.DEVNULL,
        )
    except FileNotFoundError:
        return Completed(127, "", f"{argv[0]} not found")
    except subprocess.TimeoutExpired:
        return Completed(124, "", f"timed out after {timeout:g} s")
    return Completed(proc.returncode, proc.stdout, proc.stderr)


@dataclass(frozen=True)
class DoctorOptions:
    """What the command line adds to the site file."""

    site_path: str = "site file"
    service_user: str | None = None  #: the hub's Unix user; ``None`` skips the sudo check
    probe_user: str = "nobody"  #: an unprivileged user for the Python check
    job_user: str | None = None  #: submit the connect job as this user (sudo), else as self
    probe_timeout: float = 60.0  #: seconds the connect job may wait for a node and run
    db_url: str | None = None  #: the hub database; default: SQLite in ``hub.state_dir``
    skip: frozenset[str] = field(default_factory=frozenset)


def default_db_url(site: SiteConfig) -> str:
    """The hub database ``install()`` configures: ``hub.db_url``, else SQLite in
    ``hub.state_dir``."""
    return site.hub.database_url


class Doctor:
    """Runs the checks of one site file on this host."""

    def __init__(
        self,
        site: SiteConfig,
        options: DoctorOptions | None = None,
        *,
        slurm: Slurm | None = None,
        commands: Commands = run_command,
    ) -> None:
        self.site = site
        self.options = options or DoctorOptions()
        self.slurm = slurm or Slurm(
            bin_dir=site.slurm.bin_dir, env=site.slurm.environment(),
            timeout=max(30.0, self.options.probe_timeout + 15),
        )
        self.commands = commands

    # -- running ------------------------------------------------------------------------

    def run(self) -> list[Check]:
        """Every check not skipped, in :data:`CHECK_GROUPS` order."""
        groups: dict[str, Callable[[], list[Check]]] = {
            "slurm": self.check_slurm, "munge": self.check_munge,
            "partitions": self.check_partitions, "python": self.check_python,
            "connect": self.check_connect, "sudo": self.check_sudo,
            "database": self.check_database, "ports": self.check_ports,
        }
        results: list[Check] = []
        for group in CHECK_GROUPS:
            if group in self.options.skip:
                results.append(Check(group, Status.SKIP, "skipped (--skip)"))
                continue
            started = time.monotonic()
            checks = groups[group]()
            took = round(time.monotonic() - started, 3)
            results += [Check(**{**asdict(c), "seconds": took}) for c in checks]
        return results

    def _slurm(self, args: Sequence[str], user: str | None = None) -> str:
        return self.slurm.run_sync(list(args), user=user)

    # -- slurm and munge ----------------------------------------------------------------

    def check_slurm(self) -> list[Check]:
        bin_hint = (f"slurm.bin_dir is {self.site.slurm.bin_dir!r}" if self.site.slurm.bin_dir
                    else "slurm.bin_dir is empty (PATH)")
        conf = self.site.slurm.conf_file
        if conf and not os.path.isfile(conf):
            return [Check("slurm", Status.FAIL, f"slurm.conf_file {conf} is not a file",
                          fix=f"set slurm.conf_file in {self.options.site_path} to the "
                          "cluster's slurm.conf, or leave it empty for /etc/slurm/slurm.conf")]
        if conf and not os.stat(conf).st_mode & stat.S_IROTH:
            # The hub's user and every user's sbatch, srun and scontrol read it.
            return [Check("slurm", Status.FAIL, f"slurm.conf_file {conf} is not readable by "
                          "the hub's user and users", fix=f"chmod 644 {conf}")]
        where = f"slurm.conf_file {conf}" if conf else "this host's slurm.conf (or $SLURM_CONF)"
        try:
            version = self._slurm(["sinfo", "--version"]).strip()
        except SlurmError as exc:
            return [Check(
                "slurm", Status.FAIL, f"the Slurm client does not run here ({bin_hint})",
                fix="install the Slurm client (apt-get install slurm-client) with the "
                "cluster's slurm.conf, or set slurm.bin_dir to the folder of sbatch",
                detail=str(exc))]
        try:
            ping = self._slurm(["scontrol", "ping"]).strip()
        except SlurmError as exc:
            return [Check(
                "slurm", Status.FAIL, f"{version}: slurmctld does not answer from this host "
                f"({where})",
                fix=f"check SlurmctldHost and SlurmctldPort in {where} and that slurmctld "
                "runs: scontrol ping", detail=str(exc))]
        if " is UP" not in ping:
            return [Check("slurm", Status.FAIL, f"{version}: {ping}",
                          fix="start slurmctld (systemctl start slurmctld) and rerun",
                          detail=ping)]
        if conf:
            # Workshop reservations and accounting pass it to the root helper, which takes
            # only a file nobody but root could have written (sessions work either way).
            try:
                check_slurm_conf(conf)
            except Refused as exc:
                return [Check(
                    "slurm", Status.WARN, f"{version}; {ping}; workshops cannot use "
                    f"slurm.conf_file {conf}: the root helper refuses it",
                    fix=f"chown root:root {conf} && chmod 644 {conf} (and keep its folders "
                    "root-owned, writable by root only, with no link on the way)",
                    detail=str(exc))]
        return [Check("slurm", Status.OK, f"{version}; {ping}")]

    def check_munge(self) -> list[Check]:
        cred = self.commands(["munge", "-n"], timeout=10)
        check = (self.commands(["unmunge"], timeout=10, stdin=cred.stdout)
                 if cred.returncode == 0 else cred)
        if check.returncode == 0:
            return [Check("munge", Status.OK, "munge -n | unmunge works")]
        return [Check(
            "munge", Status.FAIL, "munge -n | unmunge fails: Slurm cannot authenticate calls",
            fix="start munged (systemctl start munge) with the cluster's /etc/munge/munge.key "
            "(same key on every node, owned by munge, mode 0400)", detail=check.words)]

    # -- partitions ---------------------------------------------------------------------

    def check_partitions(self) -> list[Check]:
        try:
            parts = parse_key_values(self._slurm(["scontrol", "-o", "show", "partition"]),
                                     "PartitionName")
            nodes = parse_key_values(self._slurm(["scontrol", "-o", "show", "node"]),
                                     "NodeName")
        except SlurmError as exc:
            return [Check("partitions", Status.FAIL, "cannot list Slurm's partitions",
                          fix="make `scontrol show partition` work from this host first",
                          detail=str(exc))]
        return [
            self._partition(name, policy, parts.get(name), parts, nodes)
            for name, policy in self.site.partitions.items()
        ]

    def _partition(
        self, name: str, policy: PartitionPolicy, live: dict[str, str] | None,
        parts: dict[str, dict[str, str]], nodes: dict[str, dict[str, str]],
    ) -> Check:
        where = self.options.site_path
        check = f"partition:{name}"
        if live is None:
            known = ", ".join(parts) or "none"
            return Check(
                check, Status.FAIL,
                f"partition {name!r} is in the site file but not in Slurm (Slurm has: {known})",
                fix=f"remove partitions.{name} from {where} or add PartitionName={name} to "
                "slurm.conf")
        members = [n for n in nodes.values()
                   if name in n.get("Partitions", "").split(",")]
        problems = partition_problems(name, policy, live, members)
        if problems:
            first_fix = problems[0][1]
            return Check(check, Status.FAIL, "; ".join(p for p, _ in problems),
                         fix=f"{first_fix} in {where} (or raise the limit in slurm.conf)",
                         detail=" ".join(f"{k}={live.get(k, '?')}" for k in _PARTITION_KEYS))
        if live.get("State", "UP") != "UP":
            return Check(check, Status.WARN, f"partition {name!r} is {live.get('State')} in "
                         "Slurm: sessions there will wait", fix="scontrol update "
                         f"PartitionName={name} State=UP (once it should take jobs)")
        return Check(check, Status.OK, f"exists, up, {len(members)} nodes; the site's limits "
                     f"fit Slurm's (MaxTime={live.get('MaxTime')})")

    # -- python environment -------------------------------------------------------------

    def check_python(self) -> list[Check]:
        python = self.site.hub.python
        user = self.options.probe_user
        if not os.path.exists(python):
            return [Check("python", Status.FAIL, f"hub.python {python} does not exist",
                          fix="set hub.python to the environment's python, e.g. "
                          "/opt/shopfloor/venv/bin/python")]
        blocked = blocking_path(python)
        probe = self.commands(
            ["sudo", "-n", "-u", user, "--", python, "-I", "-c", _PYTHON_PROBE], timeout=60)
        if probe.returncode == 0:
            prefix = probe.stdout.strip().splitlines()[-1:] or ["?"]
            return [Check("python", Status.OK,
                          f"{user} runs {python} (sys.prefix {prefix[0]}) and imports Shopfloor")]
        fix = (f"chmod o+rx {blocked} (or make the environment under /opt, readable by all)"
               if blocked else
               f"make {python}'s environment readable by every user: chmod -R o+rX <prefix>")
        if "password is required" in probe.stderr or "not allowed" in probe.stderr:
            status = Status.FAIL if blocked else Status.WARN
            return [Check("python", status,
                          f"cannot run as {user} to try it (no sudo here); "
                          + (f"{blocked} is not open to other users" if blocked else
                             "the path to it is open to other users"),
                          fix=fix if blocked else "rerun as root for a real test",
                          detail=probe.words)]
        return [Check("python", Status.FAIL,
                      f"{user} cannot run {python} with Shopfloor (jobs run as the user)",
                      fix=fix, detail=probe.words)]

    # -- compute node to hub ------------------------------------------------------------

    def check_connect(self) -> list[Check]:
        url = urlparse(self.site.hub.hub_bind_url)
        host = url.hostname or "127.0.0.1"
        if host in ("0.0.0.0", "::"):
            host = socket.getfqdn()
        port = url.port or (443 if url.scheme == "https" else 80)
        partition = self.site.initial_partition
        timeout = max(5, int(self.options.probe_timeout))
        name = "connect"
        try:
            with stand_in_listener(host, port) as listening:
                out = self._slurm([
                    "srun", f"--partition={partition}", "--nodes=1", "--ntasks=1",
                    "--cpus-per-task=1", "--mem=64M", "--time=1", f"--immediate={timeout}",
                    "--job-name=shopfloor-doctor", "--quiet",
                    "bash", "-c", _CONNECT_PROBE, "probe", host, str(port),
                ], user=self.options.job_user)
        except OSError as exc:
            return [Check(name, Status.FAIL, f"hub.hub_bind_url {self.site.hub.hub_bind_url}: "
                          f"{host} is not an address of this host ({exc.strerror})",
                          fix="set hub.hub_bind_url to an address of this host that compute "
                          "nodes reach")]
        except SlurmError as exc:
            text = f"{exc.stdout} {exc.stderr}"
            if "unable to allocate" in text.lower() or "immediate" in text.lower():
                return [Check(name, Status.WARN, f"no node of {partition!r} was free within "
                              f"{timeout} s to run the probe job",
                              fix="rerun when a node is free, or pass --probe-timeout 300",
                              detail=exc.slurm_message)]
            if "connect-failed" in text or "connect-timeout" in text:
                return [Check(name, Status.FAIL, f"a job on {partition!r} cannot reach "
                              f"hub.hub_bind_url {self.site.hub.hub_bind_url}",
                              fix=f"set hub.hub_bind_url to an address the compute nodes reach "
                              f"(not 127.0.0.1 on a multi-host site) and open TCP {port} from "
                              "the compute nodes to the hub", detail=exc.stdout.strip()
                              + " " + exc.slurm_message)]
            return [Check(name, Status.FAIL, f"the probe job on {partition!r} failed",
                          fix="run the same by hand: srun -p "
                          f"{partition} -t 1 hostname, and fix what Slurm says",
                          detail=str(exc))]
        who = "the doctor's stand-in listener" if listening else "the running hub"
        node = out.strip().rpartition(" ")[2] or "a node"
        return [Check(name, Status.OK, f"a job on {node} ({partition}) reached "
                      f"{host}:{port} ({who})")]

    # -- sudo ---------------------------------------------------------------------------

    def check_sudo(self) -> list[Check]:
        user = self.options.service_user or self.site.hub.service_user
        if not user:
            return [Check("sudo", Status.SKIP, "no --service-user given: the hub runs as "
                          f"{pwd.getpwuid(os.getuid()).pw_name}")]
        try:
            pwd.getpwnam(user)
        except KeyError:
            return [Check("sudo", Status.FAIL, f"service user {user!r} does not exist",
                          fix=f"useradd --system --home-dir /var/lib/shopfloor --shell "
                          f"/usr/sbin/nologin {user}")]
        listed = self.commands(["sudo", "-n", "-l", "-U", user], timeout=15)
        if listed.returncode != 0:
            return [Check("sudo", Status.WARN, f"cannot list {user}'s sudo rules from here",
                          fix="rerun shopfloor doctor as root", detail=listed.words)]
        venv_bin = os.path.dirname(sys.executable)  # the doctor runs from the hub's environment
        needed = {self._tool_path(t) for t in SUDO_COMMANDS} | {
            os.path.join(venv_bin, AS_USER_HELPER)}
        privileged = {os.path.join(venv_bin, PRIVILEGED_HELPER)}
        problems = sudo_problems(parse_sudo_list(listed.stdout), needed, privileged,
                                 keep=(*self.site.slurm.environment(), *passed_tokens(self.site)))
        if problems:
            return [Check("sudo", Status.FAIL, f"{user}'s sudo rules: " + "; ".join(problems),
                          fix=f"install the shipped rule: shopfloor service-user {user} "
                          f"--sudoers-only (writes /etc/sudoers.d/shopfloor from "
                          f"units/shopfloor.sudoers; docs/deploy.md)",
                          detail=" ".join(listed.stdout.split()))]
        return [Check("sudo", Status.OK, f"{user} may run exactly {', '.join(sorted(needed))} "
                      f"as users other than root and {', '.join(privileged)} as root, with "
                      "only the named variables")]

    def _tool_path(self, tool: str) -> str:
        if self.site.slurm.bin_dir:
            return os.path.join(self.site.slurm.bin_dir, tool)
        return shutil.which(tool) or f"/usr/bin/{tool}"

    # -- database -----------------------------------------------------------------------

    def check_database(self) -> list[Check]:
        url = self.options.db_url or default_db_url(self.site)
        if url.startswith("sqlite:///"):
            return [self._sqlite(Path(url.removeprefix("sqlite:///")))]
        return [self._sql_database(url)]

    def _sqlite(self, path: Path) -> Check:
        if not path.exists():
            folder = path.parent
            if folder.exists() and not os.access(folder, os.W_OK):
                return Check("database", Status.FAIL, f"{folder} is not writable: the hub "
                             f"cannot create {path.name}", fix=f"chown the hub's user {folder}")
            return Check("database", Status.OK, f"SQLite {path} will be made on first start")
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            return Check("database", Status.FAIL,
                         f"{path} is mode {mode:04o}: other users can read sessions and tokens",
                         fix=f"chmod 600 {path}; chmod 700 {path.parent}")
        owner = pwd.getpwuid(path.stat().st_uid).pw_name
        user = self.options.service_user
        if user and owner != user:
            return Check("database", Status.FAIL, f"{path} belongs to {owner}, not {user}",
                         fix=f"chown {user}: {path} {path.parent}")
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True,
                                                    timeout=5)) as db:
                tables = db.execute("select count(*) from sqlite_master").fetchone()[0]
        except sqlite3.Error as exc:
            return Check("database", Status.FAIL, f"{path} cannot be read as SQLite",
                         fix=f"restore {path} from the last backup (docs/deploy.md)",
                         detail=str(exc))
        return Check("database", Status.OK, f"SQLite {path} ({tables} tables, mode "
                     f"{mode:04o}, owner {owner})")

    def _sql_database(self, url: str) -> Check:
        import sqlalchemy  # a JupyterHub dependency; imported only for non-SQLite URLs
        from sqlalchemy.exc import NoSuchModuleError, SQLAlchemyError

        from shopfloor.ops.database import connect_url

        try:
            # With the password as the hub gets it (hub.db_password_file); shown without.
            if url == self.site.hub.database_url:
                url = connect_url(self.site)
            parsed = sqlalchemy.engine.make_url(url)
            shown = parsed.render_as_string(hide_password=True)
        except SiteConfigError as exc:
            return Check("database", Status.FAIL, "cannot read the database password",
                         fix=str(exc))
        except SQLAlchemyError as exc:
            return Check("database", Status.FAIL, "the database URL is not valid",
                         fix="write it as postgresql://USER@HOST/DB (password in "
                         "hub.db_password_file, ~/.pgpass or $PGPASSWORD)",
                         detail=str(exc).splitlines()[0])
        try:
            engine = sqlalchemy.create_engine(parsed, pool_pre_ping=False)
        except (NoSuchModuleError, ModuleNotFoundError, ImportError) as exc:
            return Check("database", Status.FAIL, f"no database driver for {url.split(':')[0]}",
                         fix="install it into the hub's environment, e.g. pip install "
                         "\"shopfloor[postgresql]\" (psycopg) for postgresql://", detail=str(exc))
        except SQLAlchemyError as exc:
            return Check("database", Status.FAIL, "the database URL is not valid",
                         fix="write it as postgresql://USER@HOST/DB (password in ~/.pgpass "
                         "or $PGPASSWORD)", detail=str(exc).splitlines()[0])
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("select 1"))
        except SQLAlchemyError as exc:
            return Check("database", Status.FAIL, f"cannot connect to {shown}",
                         fix="check the server runs and pg_hba.conf lets the hub's user in: "
                         f"psql '{shown}' -c 'select 1'",
                         detail=str(exc.orig if hasattr(exc, "orig") else exc).splitlines()[0])
        finally:
            engine.dispose()
        return Check("database", Status.OK, f"connected to {shown}")

    # -- ports --------------------------------------------------------------------------

    def check_ports(self) -> list[Check]:
        return [self._port(setting, host, port) for setting, host, port in site_ports(self.site)]

    def _port(self, setting: str, host: str, port: int) -> Check:
        name = f"port:{setting}"
        try:
            free = port_free(host, port)
        except OSError as exc:
            return Check(name, Status.FAIL, f"{host}:{port} ({setting}) is not an address of "
                         f"this host ({exc.strerror})", fix=f"set {setting} to an address of "
                         "this host")
        if free:
            return Check(name, Status.OK, f"{host}:{port} is free")
        owner = port_owner(port)
        if owner and is_hub_process(owner[1]):
            return Check(name, Status.OK, f"{host}:{port} is held by the hub (pid {owner[0]})")
        who = f"pid {owner[0]} ({' '.join(owner[1])[:80]})" if owner else "another process"
        return Check(name, Status.FAIL, f"{host}:{port} ({setting}) is taken by {who}",
                     fix=f"stop that process or choose another port for {setting} in "
                     f"{self.options.site_path}")


# -- pure helpers (tested without a cluster) -----------------------------------------------

_PARTITION_KEYS = ("State", "MaxTime", "MaxNodes", "TotalNodes", "MaxCPUsPerNode",
                   "MaxMemPerNode")
_PYTHON_PROBE = ("import sys, shopfloor, jupyterhub.singleuser, jupyter_server; "
                 "print(sys.prefix)")
#: Run on the compute node: connect to $1:$2 within 5 s; say how it went in one word.
_CONNECT_PROBE = ('if timeout 5 bash -c ": >/dev/tcp/$1/$2" 2>/dev/null; then '
                  'echo "connected from $SLURMD_NODENAME"; elif [ $? = 124 ]; then '
                  'echo connect-timeout; exit 2; else echo connect-failed; exit 3; fi')


def parse_key_values(text: str, key: str) -> dict[str, dict[str, str]]:
    """``scontrol -o show ...`` lines (``Key=Value`` pairs), keyed by the value of ``key``."""
    items: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        fields = dict(t.split("=", 1) for t in line.split() if "=" in t)
        if key in fields:
            items[fields[key]] = fields
    return items


def _slurm_number(value: str | None) -> int | None:
    """``scontrol``'s counts: a number, or ``None`` for UNLIMITED/absent."""
    return int(value) if value and value.isdigit() else None


def partition_problems(
    name: str, policy: PartitionPolicy, live: dict[str, str], nodes: Sequence[dict[str, str]]
) -> list[tuple[str, str]]:
    """Where the site file offers more than Slurm allows: (problem, fix) pairs.

    A tighter limit in the site file is a site's choice and fine; a looser one means users are
    offered what Slurm then refuses (or what never starts).
    """
    problems: list[tuple[str, str]] = []
    prefix = f"partitions.{name}"
    slurm_minutes = parse_time_limit(live.get("MaxTime", "UNLIMITED"))
    if slurm_minutes is not None:
        for key in ("max_walltime", "default_walltime"):
            value = getattr(policy, key)
            if value is None:
                if key == "max_walltime":
                    problems.append((f"{prefix}.max_walltime is unset but Slurm's MaxTime is "
                                     f"{live['MaxTime']}", f"set {prefix}.max_walltime: "
                                     f"'{live['MaxTime']}'"))
                continue
            minutes = parse_time_limit(value) or 0
            if minutes > slurm_minutes:
                problems.append((f"{prefix}.{key} is {value} but Slurm's MaxTime for {name} is "
                                 f"{live['MaxTime']}", f"set {prefix}.{key}: '{live['MaxTime']}'"))
    node_limits = [_slurm_number(live.get("MaxNodes")), _slurm_number(live.get("TotalNodes"))]
    most_nodes = min((n for n in node_limits if n is not None), default=None)
    if policy.max_nodes and most_nodes is not None and policy.max_nodes > most_nodes:
        problems.append((f"{prefix}.max_nodes is {policy.max_nodes} but Slurm allows "
                         f"{most_nodes}", f"set {prefix}.max_nodes: {most_nodes}"))
    cpus = [_slurm_number(n.get("CPUTot")) or 0 for n in nodes]
    cap = _slurm_number(live.get("MaxCPUsPerNode"))
    most_cpus = min(max(cpus, default=0), cap) if cap else max(cpus, default=0)
    if policy.max_cpus and nodes and policy.max_cpus > most_cpus:
        problems.append((f"{prefix}.max_cpus is {policy.max_cpus} but its largest node has "
                         f"{most_cpus} CPUs", f"set {prefix}.max_cpus: {most_cpus}"))
    memory = [_slurm_number(n.get("RealMemory")) or 0 for n in nodes]
    mem_cap = _slurm_number(live.get("MaxMemPerNode"))
    most_mb = min(max(memory, default=0), mem_cap) if mem_cap else max(memory, default=0)
    if policy.max_memory_gb and nodes and policy.max_memory_gb * 1024 > most_mb:
        problems.append((f"{prefix}.max_memory_gb is {policy.max_memory_gb:g} but its largest "
                         f"node has {most_mb} MiB", f"set {prefix}.max_memory_gb: "
                         f"{most_mb // 1024 if most_mb >= 1024 else most_mb / 1024:g}"))
    gpus = max((gpus_in_gres(n.get("Gres", "")) for n in nodes), default=0)
    if policy.max_gpus and policy.max_gpus > gpus:
        problems.append((f"{prefix}.max_gpus is {policy.max_gpus} but its nodes have {gpus} "
                         "GPUs", f"set {prefix}.max_gpus: {gpus}"))
    return problems


def blocking_path(python: str) -> str | None:
    """The first folder or file on the way to ``python`` that other users cannot enter or run.

    Both the path as written (a venv's ``bin/python``) and the interpreter it links to are
    walked: jobs need every folder above them searchable (o+x) and the interpreter o+rx.
    """
    for target in dict.fromkeys([Path(python).absolute(), Path(python).resolve()]):
        for folder in reversed(target.parents):
            if not os.stat(folder).st_mode & stat.S_IXOTH:
                return str(folder)
        mode = os.stat(target).st_mode
        if not (mode & stat.S_IXOTH and mode & stat.S_IROTH):
            return str(target)
    return None


@dataclass(frozen=True)
class SudoEntry:
    """One ``(runas) TAGS: commands`` line of ``sudo -l``."""

    runas: str
    tags: frozenset[str]
    commands: tuple[str, ...]


@dataclass(frozen=True)
class SudoList:
    """What ``sudo -l -U USER`` says: the defaults that apply and the commands allowed."""

    defaults: str
    entries: tuple[SudoEntry, ...]


_ENTRY_RE = re.compile(r"\(([^)]*)\)\s*((?:[A-Z_]+:\s*)*)(.*?)(?=\s\(|$)", re.S)


def parse_sudo_list(text: str) -> SudoList:
    """Parse ``sudo -l -U USER`` (sudo 1.9; wrapped lines are joined)."""
    defaults, commands = [], ""
    section = ""
    for line in text.splitlines():
        if line and not line[0].isspace():
            section = "commands" if "may run the following commands" in line else (
                "defaults" if "efaults" in line else "")
            continue
        if section == "defaults":
            defaults.append(line.strip())
        elif section == "commands":
            commands += " " + line.strip()
    entries = []
    for runas, tags, cmds in _ENTRY_RE.findall(commands.strip()):
        entries.append(SudoEntry(
            runas=runas.strip(),
            tags=frozenset(t.strip() for t in tags.split(":") if t.strip()),
            commands=tuple(c.strip() for c in cmds.split(",") if c.strip()),
        ))
    return SudoList(" ".join(defaults), tuple(entries))


def sudo_problems(rules: SudoList, needed: set[str],
                  privileged: set[str] | frozenset[str] = frozenset(),
                  keep: Sequence[str] = ()) -> list[str]:
    """What is wrong with a hub's sudo rules: missing, extra or too broad (empty: fine).

    ``needed`` are allowed as users other than root, ``privileged`` (the privileged helper)
    as root and nothing else as root; ``keep`` are variables the rule must keep (``SLURM_CONF``
    when the site sets ``slurm.conf_file``).
    """
    problems = []
    allowed = {c for e in rules.entries for c in e.commands}
    if missing := sorted((needed | privileged) - {c.split()[0] for c in allowed}):
        problems.append(f"missing {', '.join(missing)}")
    extra = sorted(c for c in allowed if c.split()[0] not in needed | privileged
                   or (c.split()[0] in privileged and len(c.split()) > 1))
    if shells := [c for c in extra if os.path.basename(c.split()[0]) in _SHELLS]:
        problems.append(f"allows a shell or any command ({', '.join(shells)})")
    elif extra:
        problems.append(f"allows more than needed ({', '.join(extra)})")
    for entry in rules.entries:
        runas = [r.strip() for r in entry.runas.split(":")[0].split(",")]
        as_root = "root" in runas or ("ALL" in runas and "!root" not in runas)
        if as_root and {c.split()[0] for c in entry.commands} - privileged:
            problems.append(f"may run them as root (runas ({entry.runas}); write (ALL, !root))")
        elif as_root and runas != ["root"]:
            problems.append(f"may run {', '.join(entry.commands)} as any user (runas "
                            f"({entry.runas}); write (root))")
        elif not as_root and set(entry.commands) & privileged:
            problems.append(f"{', '.join(sorted(privileged))} must run as root")
        if "SETENV" in entry.tags:
            problems.append("SETENV lets the hub pass any variable")
    if "!env_reset" in rules.defaults:
        problems.append("!env_reset passes the hub's whole environment")
    kept = set()
    for match in re.finditer(r'env_keep\s*\+?=\s*"?([^",]*)"?', rules.defaults):
        kept |= set(match.group(1).split())
    if extra_env := sorted(kept - set(SUDO_ENV) - set(SUDO_KEEP_ENV)):
        problems.append(f"keeps variables beyond the named secrets ({', '.join(extra_env)})")
    dropped = [name for name in keep if name not in kept]
    # slurm.conf_file set, an older rule: sbatch as the user would reach another cluster;
    # pass_tokens set: sudo's env_reset drops the tokens and sessions start without them.
    by_setting: dict[str, list[str]] = {}
    for name in dropped:
        setting = "auth.oidc.pass_tokens" if name in TOKEN_ENV else "slurm.conf_file"
        by_setting.setdefault(setting, []).append(name)
    for setting, names in by_setting.items():
        problems.append(f"does not keep {', '.join(names)} ({setting}) for sbatch")
    return problems


def passed_tokens(site: SiteConfig) -> tuple[str, ...]:
    """The token variables the site passes into sessions (``auth.oidc.pass_tokens``), which
    the sudoers rule must keep for sbatch."""
    oidc = site.auth.oidc
    if site.auth.method != "oidc" or oidc.pass_tokens == "none":
        return ()
    return TOKEN_ENV if oidc.pass_tokens == "access_and_id" else TOKEN_ENV[:1]


def sudoers_rule(user: str, commands: Sequence[str],
                 venv_bin: str = "/opt/shopfloor/venv/bin", tag: str = "") -> str:
    """The sudoers rule the hub needs (also shipped as ``units/shopfloor.sudoers``):
    ``commands`` (sbatch, scancel) and ``shopfloor-as-user`` of ``venv_bin`` as users other
    than root, ``shopfloor-privileged`` as root, and nothing else.

    sudoers aliases are global: a rule for another user, or a second rule (``tag``), gets
    alias names of its own, so that several rules can sit side by side in sudoers.d.
    """
    suffix = "" if user == "shopfloor" and not tag else "_" + re.sub(
        r"[^A-Z0-9]", "_", f"{user}{tag}".upper())
    slurm, as_user, root = (f"SHOPFLOOR_{n}{suffix}" for n in ("SLURM", "AS_USER",
                                                                 "PRIVILEGED"))
    cmds = ", ".join(commands)
    return (f"Cmnd_Alias {slurm} = {cmds}\n"
            f"Cmnd_Alias {as_user} = {os.path.join(venv_bin, AS_USER_HELPER)}\n"
            f"Cmnd_Alias {root} = {os.path.join(venv_bin, PRIVILEGED_HELPER)}\n"
            f'Defaults!{slurm} env_keep += "{" ".join((*SUDO_ENV, *SUDO_KEEP_ENV))}"\n'
            f"{user} ALL=(ALL, !root) NOPASSWD: {slurm}, {as_user}\n"
            f"{user} ALL=(root) NOPASSWD: {root}")


def site_ports(site: SiteConfig) -> list[tuple[str, str, int]]:
    """(setting, host, port) of every address the hub, proxy and services listen on."""
    from shopfloor.apps.model import app_origin, default_service_port

    def split(url: str) -> tuple[str, int]:
        parsed = urlparse(url)
        return parsed.hostname or "127.0.0.1", parsed.port or (
            443 if parsed.scheme == "https" else 80)

    hub_host, hub_port = split(site.hub.hub_bind_url)
    ports = [("hub.bind_url", *split(site.hub.bind_url)),
             ("hub.hub_bind_url", hub_host, hub_port),
             ("hub.proxy_api_url", *split(site.hub.proxy_api_url)),
             ("apps.service_port", hub_host, default_service_port(hub_port, site.apps)),
             # Same rule as extensions.workshops_service.default_service_port (hub port + 12).
             ("workshops.service_port", hub_host,
              site.workshops.service_port or hub_port + 12)]
    with contextlib.suppress(ValueError):  # a bad origin is the site model's error, not ours
        origin = app_origin(site.hub.bind_url, site.apps)
        ports.append(("apps.origin_bind_url", origin.bind_host, origin.bind_port))
    return ports


def port_free(host: str, port: int) -> bool:
    """True if something could listen on ``host:port`` now; OSError if host is not ours."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def port_owner(port: int) -> tuple[int, list[str]] | None:
    """(pid, argv) of the process listening on TCP ``port`` (root sees every process)."""
    import psutil  # a Ray dependency; only the ports check needs it

    with contextlib.suppress(psutil.Error):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
                with contextlib.suppress(psutil.Error):
                    return conn.pid, psutil.Process(conn.pid).cmdline()
                return conn.pid, ["unknown command"]
    return None


def is_hub_process(argv: Sequence[str]) -> bool:
    """True for the hub, its proxy and its managed services (by their command line)."""
    return any(os.path.basename(arg) in HUB_PROGRAMS or arg.startswith("shopfloor.extensions.")
               for arg in argv)


@contextlib.contextmanager
def stand_in_listener(host: str, port: int) -> Iterator[bool]:
    """Listen on ``host:port`` while the block runs if nothing does yet; yield whether we did.

    Lets the connect check run before the hub is installed. OSError if the host is not ours.
    """
    if not port_free(host, port):
        yield False
        return
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(8)
    sock.settimeout(0.5)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = sock.accept()
                conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield True
    finally:
        stop.set()
        thread.join(2)
        sock.close()


# -- command line --------------------------------------------------------------------------


def default_site_path() -> Path:
    """$SHOPFLOOR_SITE, else the packaged demo site file."""
    env = os.environ.get("SHOPFLOOR_SITE")
    if env:
        return Path(env)
    return Path(str(resources.files("shopfloor.hub_config") / "demo_site.yaml"))


def format_text(checks: Sequence[Check]) -> str:
    """The report people read: one line per check, the fix below each that is not ok."""
    width = max((len(c.name) for c in checks), default=0)
    lines = []
    for c in checks:
        lines.append(f"{c.status.value:4}  {c.name:{width}}  {c.summary}")
        if c.fix and c.status in (Status.FAIL, Status.WARN):
            lines.append(f"{'':4}  {'':{width}}  fix: {c.fix}")
    failed = sum(c.status is Status.FAIL for c in checks)
    lines.append(f"{failed} failed, {sum(c.status is Status.WARN for c in checks)} warnings, "
                 f"{sum(c.status is Status.OK for c in checks)} ok")
    return "\n".join(lines)


def run_doctor(args: argparse.Namespace) -> int:
    """``shopfloor doctor``: 0 when no check failed, 1 otherwise (SiteConfigError: caller's)."""
    path = Path(args.site) if args.site else default_site_path()
    site = load_site(path)
    options = DoctorOptions(
        site_path=str(path), service_user=args.service_user, probe_user=args.probe_user,
        job_user=args.job_user, probe_timeout=args.probe_timeout, db_url=args.db_url,
        skip=frozenset(args.skip or ()),
    )
    checks = Doctor(site, options).run()
    ok = not any(c.status is Status.FAIL for c in checks)
    if args.json:
        print(json.dumps({"ok": ok, "site": str(path), "checks": [c.to_json() for c in checks]},
                         indent=1))
    else:
        print(format_text(checks))
    return 0 if ok else 1


def add_doctor_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``shopfloor doctor`` to the ``shopfloor`` command's subparsers."""
    doctor = sub.add_parser("doctor", help="check this host, Slurm and the site file together",
                            description=__doc__.split("\n\n")[0])
    doctor.add_argument("--site", help="site file (default $SHOPFLOOR_SITE, else the demo's)")
    doctor.add_argument("--json", action="store_true", help="print the results as JSON")
    doctor.add_argument("--service-user", help="the hub's Unix user, whose sudo rules to check "
                        "(e.g. shopfloor); without it the sudo check is skipped")
    doctor.add_argument("--probe-user", default="nobody",
                        help="unprivileged user who tries hub.python (default nobody)")
    doctor.add_argument("--job-user", help="submit the connect probe job as this user "
                        "(through sudo), e.g. where Slurm refuses root's jobs")
    doctor.add_argument("--probe-timeout", type=float, default=60.0,
                        help="seconds the connect probe may wait for a node (default 60)")
    doctor.add_argument("--db-url", help="the hub database URL (default: SQLite in "
                        "hub.state_dir), e.g. postgresql://shopfloor@db/jupyterhub")
    doctor.add_argument("--skip", action="append", choices=CHECK_GROUPS,
                        help="skip a check (repeatable)")
    doctor.set_defaults(func=run_doctor)
    return doctor


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m shopfloor.ops.doctor``: the same as ``shopfloor doctor``."""
    parser = argparse.ArgumentParser(prog="shopfloor")
    add_doctor_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["doctor", *(sys.argv[1:] if argv is None else argv)])
    from shopfloor.site import SiteConfigError

    try:
        return run_doctor(args)
    except SiteConfigError as exc:
        print(f"shopfloor: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "CHECK_GROUPS",
    "SUDO_COMMANDS",
    "SUDO_ENV",
    "SUDO_KEEP_ENV",
    "Check",
    "Completed",
    "Doctor",
    "DoctorOptions",
    "Status",
    "add_doctor_parser",
    "parse_sudo_list",
    "partition_problems",
    "passed_tokens",
    "run_command",
    "run_doctor",
    "sudo_problems",
    "sudoers_rule",
]
