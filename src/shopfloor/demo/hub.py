"""``shopfloor demo``: an AI factory in a box on one Debian machine.

Installs what is missing (system packages, the proxy), creates the demo users with generated
passwords, brings up the embedded Slurm cluster and starts JupyterHub on it. Every step checks
first and says what it does, so a second run is cheap and a failed run says what to fix.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from shopfloor.demo.localcluster import ClusterError, LocalCluster
from shopfloor.site import SiteConfig, load_site
from shopfloor.slurm.seam import SlurmError, SlurmSync
from shopfloor.userfiles import private_dir, private_file

DEMO_USERS = ("alice", "bob", "trainer", "admin", "support")
#: Debian packages the demo needs, by the command that shows they are installed.
SYSTEM_PACKAGES = {
    "slurmctld": "slurm-wlm",
    "slurmdbd": "slurmdbd",
    "mariadbd": "mariadb-server",
    "munged": "munge",
    "sudo": "sudo",
    "node": "nodejs",
    "npm": "npm",
    "chpasswd": "passwd",
}
PROXY = "configurable-http-proxy"


class DemoError(RuntimeError):
    """A step of the demo failed; the message says what to do."""


def say(message: str) -> None:
    print(f"shopfloor: {message}", flush=True)


def default_site_file() -> Path:
    return Path(str(resources.files("shopfloor.hub_config") / "demo_site.yaml"))


def hub_config_file() -> Path:
    return Path(str(resources.files("shopfloor.hub_config") / "jupyterhub_config.py"))


def _run(cmd: list[str], what: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise DemoError(
            f"{what} failed ({' '.join(cmd)} exited {proc.returncode}):\n"
            f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
        )
    return proc


def ensure_system_packages() -> None:
    """apt-get install whatever the demo needs and is missing; npm install the proxy."""
    missing = sorted({pkg for cmd, pkg in SYSTEM_PACKAGES.items() if not _which(cmd)})
    if missing:
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            raise DemoError(
                f"missing system packages: {', '.join(missing)}. Install them "
                f"(apt-get install {' '.join(missing)}) or run the demo as root on Debian."
            )
        say(f"installing {', '.join(missing)} (apt-get)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        _run(["apt-get", "update", "-q"], "apt-get update", env=env)
        _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
             "apt-get install", env=env)
    if not _which(PROXY):
        say(f"installing {PROXY} (npm)")
        _run(["npm", "install", "-g", "--no-fund", "--no-audit", PROXY], "npm install")
        if not _which(PROXY):
            raise DemoError(f"{PROXY} is not on PATH after npm install -g; check npm's prefix")


def _which(cmd: str) -> str | None:
    return shutil.which(cmd, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/local/bin")


@dataclass
class Credentials:
    path: Path

    def load(self) -> dict[str, str]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def ensure(self, users: tuple[str, ...] = DEMO_USERS) -> dict[str, str]:
        """Create the Unix users and their passwords (generated once, kept in ``path``)."""
        creds = self.load()
        for user in users:
            creds.setdefault(user, secrets.token_urlsafe(9))
        # The hub's state folder: private from the start (the hub would find it 0755 else).
        private_dir(self.path.parent)
        private_file(self.path)
        fd = os.open(self.path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
        with os.fdopen(fd, "w") as fh:
            json.dump(creds, fh, indent=1)
        for user in users:
            if subprocess.run(["id", "-u", user], capture_output=True).returncode != 0:
                say(f"creating Unix user {user}")
                _run(["useradd", "--create-home", "--shell", "/bin/bash", user], "useradd")
        _run(["chpasswd"], "setting demo passwords",
             input="".join(f"{u}:{creds[u]}\n" for u in users))
        return creds


def hub_url(site: SiteConfig) -> str:
    return site.hub.bind_url.rstrip("/") + "/hub/"


def hub_answers(site: SiteConfig, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(site.hub.bind_url.rstrip("/") + "/hub/api/",
                                    timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


class Hub:
    """The JupyterHub process the demo runs (pid file and log in the hub's state folder)."""

    def __init__(self, site: SiteConfig, site_file: Path) -> None:
        self.site = site
        self.site_file = site_file
        self.state = Path(site.hub.state_dir)
        self.pid_file = self.state / "jupyterhub.pid"
        self.log_file = self.state / "jupyterhub.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _process_alive(pid) else None

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "jupyterhub", "-f", str(hub_config_file()),
            "--JupyterHub.pid_file=" + str(self.pid_file),
        ]

    def environment(self) -> dict[str, str]:
        bin_dir = str(Path(sys.executable).parent)
        env = {
            **os.environ,
            "SHOPFLOOR_SITE": str(self.site_file),
            "PATH": f"{bin_dir}:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        }
        if self.site.hub.service_user:
            # The service user has no home: node (the proxy) and Python want a writable one.
            env.update(HOME=str(self.state), USER=self.site.hub.service_user,
                       LOGNAME=self.site.hub.service_user)
        return env

    def _service_account(self) -> pwd.struct_passwd | None:
        """As root with ``hub.service_user`` set: set the user up (account, sudoers rule,
        state handed over, the demo passwords kept root's) and return it; else None."""
        if not self.site.hub.service_user:
            return None
        if os.geteuid() != 0:
            raise DemoError("hub.service_user is set: start the hub as root, which hands it "
                            f"over to {self.site.hub.service_user}")
        from shopfloor.ops.serviceuser import ServiceUserError, prepare

        try:
            account = prepare(self.site, keep=(credentials_path().name,))
        except ServiceUserError as exc:
            raise DemoError(str(exc)) from None
        # The site file is read by the hub and its services, as the service user.
        os.chmod(self.site_file, os.stat(self.site_file).st_mode | 0o004)
        return account

    def start(self, detach: bool, timeout: float = 90) -> None:
        if self.pid() and hub_answers(self.site):
            say(f"the hub is already running (pid {self.pid()})")
            return
        if self.pid() is None and self._stop_orphaned_proxy():
            self._wait_port_free(15)  # left by a hub that crashed or was killed
        port_owner = self._port_in_use()
        if port_owner:
            raise DemoError(
                f"{self.site.hub.bind_url} is already in use by another program; stop it or "
                "set hub.bind_url in the site file to a free port"
            )
        # Private even if it exists already: the hub's database and log hold every user's
        # server options, job ids and OAuth codes.
        private_dir(self.state)
        private_file(self.log_file)
        account = self._service_account()
        who = f" as {account.pw_name}" if account else ""
        if not detach:
            say(f"starting JupyterHub{who} at {hub_url(self.site)} (Ctrl-C stops it)")
            os.chdir(self.state)
            if account:
                from shopfloor.ops.serviceuser import drop_privileges

                drop_privileges(account)
                os.umask(0o077)
            os.execve(self.command()[0], self.command(), self.environment())
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                self.command(), cwd=self.state, env=self.environment(), stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                user=account.pw_uid if account else None,
                group=account.pw_gid if account else None,
                extra_groups=os.getgrouplist(account.pw_name, account.pw_gid) if account
                else None,
                # As the shipped unit (UMask=0077): what the hub writes is its own.
                umask=0o077 if account else -1,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DemoError(
                    f"JupyterHub exited with {proc.returncode}; last lines of {self.log_file}:\n"
                    + _tail(self.log_file)
                )
            if hub_answers(self.site):
                return
            time.sleep(0.5)
        raise DemoError(f"JupyterHub did not answer within {timeout:.0f} s; see {self.log_file}")

    def _wait_port_free(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self._port_in_use():
            time.sleep(0.2)

    def _port_in_use(self) -> bool:
        import socket
        from urllib.parse import urlparse

        url = urlparse(self.site.hub.bind_url)
        with socket.socket() as sock:
            sock.settimeout(1)
            return sock.connect_ex((url.hostname or "127.0.0.1", url.port or 80)) == 0

    def stop(self, timeout: float = 20) -> None:
        pid = self.pid()
        if pid is None:
            return
        say(f"stopping JupyterHub (pid {pid})")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid():
            time.sleep(0.2)
        if self.pid():
            os.kill(pid, signal.SIGKILL)
        self._stop_orphaned_proxy()
        self.pid_file.unlink(missing_ok=True)
        if self.site.hub.service_user and self.site.slurm.bin_dir and os.geteuid() == 0:
            from shopfloor.ops.serviceuser import SUDOERS_PATH, sudoers_path

            # A rule for Slurm tools of this hub only (a test's stand-ins): gone with it.
            if sudoers_path(self.site) != SUDOERS_PATH:
                sudoers_path(self.site).unlink(missing_ok=True)
        # The proxy's port is free only once the exited proxy is reaped: wait for it, so that
        # a restart right after a stop finds the port free.
        self._wait_port_free(15)

    def _stop_orphaned_proxy(self) -> bool:
        """Stop a proxy left on our port by a hub that crashed or was killed.

        The hub stops the proxy it started, but a killed hub leaves it running (in the hub's
        state folder, beside a stale ``jupyterhub.pid``). Only such orphans are stopped.
        """
        from urllib.parse import urlparse

        stopped = False
        port = str(urlparse(self.site.hub.bind_url).port or 80)
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                if not any(PROXY.encode() in a for a in argv):
                    continue
                args = [a.decode(errors="replace") for a in argv]
                if "--port" not in args or args[args.index("--port") + 1] != port:
                    continue
                hub_pid_file = Path(os.readlink(proc / "cwd")) / "jupyterhub.pid"
                if _alive(hub_pid_file):
                    continue
                say(f"stopping an orphaned proxy (pid {proc.name}) left on port {port}")
                os.kill(int(proc.name), signal.SIGTERM)
                stopped = True
            except (OSError, ValueError, IndexError):
                continue
        (self.state / "jupyterhub-proxy.pid").unlink(missing_ok=True)
        return stopped


def _alive(pid_file: Path) -> bool:
    try:
        return _process_alive(int(pid_file.read_text().strip()))
    except (OSError, ValueError):
        return False


def _process_alive(pid: int) -> bool:
    """True for a running process; a killed one not yet reaped (a zombie) counts as dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(True)[-lines:])
    except OSError:
        return "(no log)"


def credentials_path(site: SiteConfig | None = None) -> Path:
    """Where the demo users' passwords live: one file per machine, like the Unix accounts.

    Not in the site's state folder: several hubs (the demo, tests, benchmarks) share the same
    Unix users, and each generating passwords of its own would lock the others out.
    """
    base = os.environ.get("SHOPFLOOR_STATE_DIR", "/var/lib/shopfloor")
    return Path(base) / "hub" / "demo-credentials.json"


def demo_up(site_file: Path | None = None, detach: bool = False) -> None:
    """Install what is missing, start cluster and hub, print URL and logins."""
    site_file = site_file or default_site_file()
    site = load_site(site_file)
    if os.geteuid() != 0:
        raise DemoError("the demo creates Unix users and runs Slurm daemons: run it as root")
    ensure_system_packages()
    creds = Credentials(credentials_path(site)).ensure()
    say("starting the embedded Slurm cluster")
    try:
        status = LocalCluster().up()
    except ClusterError as exc:
        raise DemoError(str(exc)) from None
    print(status.table(), flush=True)
    hub = Hub(site, site_file)
    if detach:
        hub.start(detach=True)
    say(f"open {hub_url(site)} and log in as one of:")
    for user, password in creds.items():
        print(f"    {user:8} {password}", flush=True)
    say("`shopfloor demo --credentials` prints these again; `shopfloor demo --down` stops all")
    if not detach:
        hub.start(detach=False)


def demo_down(site_file: Path | None = None) -> None:
    """Stop the hub, cancel demo jobs and stop the cluster."""
    site = load_site(site_file or default_site_file())
    Hub(site, site_file or default_site_file()).stop()
    slurm = SlurmSync()
    for user in DEMO_USERS:
        # No Slurm (never installed, or already down) means no jobs to cancel.
        with contextlib.suppress(SlurmError):
            slurm.cancel_jobs_of(user)
    LocalCluster().down()
    say("stopped the hub and the cluster")


def demo_credentials(site_file: Path | None = None) -> dict[str, str]:
    site = load_site(site_file or default_site_file())
    return Credentials(credentials_path(site)).load()
