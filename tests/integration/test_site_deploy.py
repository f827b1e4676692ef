"""Shopfloor deployed as a site deploys it: its own Slurm cluster configured by hand, the built
wheel in a fresh environment under /opt, a site file written by hand, the hub started with the
shipped unit's command line as an unprivileged service user, its database in PostgreSQL; a
session spawned as a user; then ``shopfloor doctor``, whole and with one piece broken at a time.

What is real and what is shortened (to fit a 2-core test machine):

* the Slurm cluster is the site's own (tests/sitecluster.py): a slurm.conf written by hand in
  this test's /etc-like folder (its own ClusterName, SlurmctldPort, SlurmdPort, state, spool,
  pid and log files, node ``sitenode1`` and partition ``sitebatch``), Debian's ``slurmctld``
  and ``slurmd -N sitenode1 -f CONF`` started directly, beside the shared demo cluster, which
  keeps /etc/slurm/slurm.conf; only munge is shared. The hub finds it through the site file's
  ``slurm.conf_file`` alone (no accounting: ``accounting_storage/none``, one node);
* the wheel is built from this checkout (``pip wheel --no-deps``) and installed with
  ``--no-deps`` into a new ``python -m venv`` under /opt; its dependencies (JupyterHub,
  JupyterLab, psycopg, ...) come from the main environment's site-packages through one ``.pth``
  line (a plain path: the main environment's own ``.pth`` files, its editable Shopfloor among
  them, are not run), and the ``jupyterhub``/``jupyterhub-singleuser`` launchers are written
  from those packages' own entry points, as pip writes them;
* the hub runs the shipped unit's ``ExecStart`` (paths of /opt/shopfloor/venv and
  /etc/shopfloor moved to this test's), as its own service user ``sfsite``, with the unit's
  ``UMask``, ``WorkingDirectory`` and ``Environment``, as systemd would start it;
* the database is a private PostgreSQL cluster (tests/pgsupport.py), the password in a 0600
  file of the service user's (``hub.db_password_file``).

Ports ($SHOPFLOOR_TEST_PORT_BASE +): hub 6..8 (apps service 17, workshop service 19),
PostgreSQL 9, slurmctld 10, slurmd 12: clear of the shared test hub's 0..2, 11, 13.
"""

from __future__ import annotations

import configparser
import contextlib
import importlib.metadata
import json
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from hubclient import HubClient
from pgsupport import Postgres, private_postgres
from serviceuser_support import hub_ports
from sitecluster import SiteCluster, site_cluster
from support import PORT_BASE, REPO

from shopfloor.ops import unit_dir

pytestmark = [pytest.mark.hub, pytest.mark.cluster, pytest.mark.slow]

SERVICE_USER = "sfsite"
SUDOERS = Path("/etc/sudoers.d/shopfloor-sitetest")
SITE_OFFSET = 6
PG_PORT, CTLD_PORT, SLURMD_PORT = PORT_BASE + 9, PORT_BASE + 10, PORT_BASE + 12


@dataclass
class Site:
    root: Path  #: /opt/shopfloor-sitetest-XXXX: venv/, etc/, state/, slurm/
    venv: Path
    site_file: Path
    state: Path
    hub_url: str
    process: subprocess.Popen[bytes]
    log: Path
    cluster: SiteCluster
    postgres: Postgres
    seconds: dict[str, float]  #: how long each step of the set-up took

    def shopfloor(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        # No SLURM_CONF here: the doctor must find the cluster from the site file alone.
        env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
        return subprocess.run([str(self.venv / "bin" / "shopfloor"), *args], capture_output=True,
                              text=True, timeout=timeout, check=False, cwd="/", env=env)

    def doctor(self, *skip: str) -> tuple[int, dict[str, dict[str, str]]]:
        done = self.shopfloor("doctor", "--site", str(self.site_file), "--json",
                              "--probe-timeout", "90", *(f"--skip={s}" for s in skip))
        checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
        return done.returncode, checks


def _build_wheel(out: Path) -> Path:
    """``pip wheel --no-deps`` of this checkout: tracked and new files, plus the built
    JupyterLab extension (ignored by git, carried by the wheel)."""
    src = out / "src-copy"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    labext = REPO / "src/shopfloor/lab/labextension"
    if labext.is_dir():
        shutil.copytree(labext, src / "src/shopfloor/lab/labextension", dirs_exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(out), str(src)], check=True, timeout=600)
    return next(out.glob("shopfloor-*.whl"))


def _launcher(venv: Path, name: str) -> None:
    """The console script ``name`` as pip writes it, from its package's entry point."""
    entry = next(e for e in importlib.metadata.entry_points(group="console_scripts")
                 if e.name == name)
    module, _, func = entry.value.partition(":")
    path = venv / "bin" / name
    path.write_text(f"#!{venv}/bin/python\nimport sys\nfrom {module} import {func}\n"
                    f"if __name__ == '__main__':\n    sys.exit({func}())\n")
    path.chmod(0o755)


def _make_environment(root: Path) -> Path:
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    wheel = _build_wheel(Path(tempfile.mkdtemp(prefix="wheel-", dir=root)))
    # The main environment's pip installs for the new one's interpreter (``--python``): a venv
    # without pip of its own is made in a fraction of the time, and the wheel goes in exactly
    # as ``venv/bin/pip install`` puts it (scripts with the new interpreter's #!).
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                    "install", "--no-deps", "--no-index", "--quiet", str(wheel)], check=True,
                   timeout=300)
    shutil.rmtree(wheel.parent, ignore_errors=True)
    site_packages = next((venv / "lib").glob("python3*/site-packages"))
    main = next((Path(sys.prefix) / "lib").glob("python3*/site-packages"))
    (site_packages / "zz-shopfloor-deps.pth").write_text(f"{main}\n")
    for name in ("jupyterhub", "jupyterhub-singleuser"):
        _launcher(venv, name)
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
    return venv


def _site_file(etc: Path, venv: Path, state: Path, cluster: SiteCluster,
               postgres: Postgres, password_file: Path) -> Path:
    """A site's own file, written by hand: its own Slurm (slurm.conf_file), its partition,
    its paths, its PostgreSQL."""
    ports = hub_ports(SITE_OFFSET)
    text = f"""\
name: Site deploy test
hub:
  bind_url: {ports["bind_url"]}
  hub_bind_url: {ports["hub_bind_url"]}
  proxy_api_url: {ports["proxy_api_url"]}
  state_dir: {state}/hub
  python: {venv}/bin/python
  service_user: {SERVICE_USER}
  start_timeout: 240
  db_url: {postgres.url}
  db_password_file: {password_file}
slurm:
  conf_file: {cluster.conf}
auth:
  allowed_users: [alice]
default_partition: {cluster.partition}
partitions:
  {cluster.partition}:
    description: The site's one small node.
    max_cpus: 2
    max_memory_gb: 1.5
    max_walltime: "1:00:00"
    default_cpus: 1
    default_memory_gb: 0.5
    default_walltime: "0:10:00"
apps:
  store_dir: {state}/apps
"""
    path = etc / "site.yaml"
    path.write_text(text)
    path.chmod(0o644)
    return path


def _unit_command(venv: Path, etc: Path) -> tuple[list[str], dict[str, str], str]:
    """ExecStart, Environment and WorkingDirectory of the shipped hub unit, for this site."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((unit_dir() / "shopfloor-hub.service").read_text())
    service = unit["Service"]
    assert service["User"] == "shopfloor" and service["UMask"] == "0077"

    def moved(text: str) -> str:
        return text.replace("/opt/shopfloor/venv", str(venv)).replace("/etc/shopfloor", str(etc))

    env = dict(pair.split("=", 1) for pair in shlex.split(moved(service["Environment"])))
    return shlex.split(moved(service["ExecStart"])), env, service["WorkingDirectory"]


def _hub_lines(log: Path) -> str:
    """The end of the hub's log without the proxy's lines (it logs every probe's 404)."""
    lines = [line for line in log.read_text(errors="replace").splitlines()
             if "[ConfigProxy]" not in line and not line.startswith(" ")]
    return "\n".join(lines)[-4000:]


def _wait_for_hub(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, _hub_lines(log)
        try:
            if requests.get(f"{url}/hub/api/", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError("the hub did not answer:\n" + _hub_lines(log))


def _stop_orphan_proxy(hub_state: Path) -> None:
    """The hub starts its proxy in a session of its own and stops it when it stops cleanly;
    a hub that failed leaves it (and its ports) behind: stop it by the hub's pid file."""
    pid_file = hub_state / "jupyterhub-proxy.pid"
    with contextlib.suppress(OSError, ValueError):
        pid = int(pid_file.read_text().strip())
        if b"configurable-http-proxy" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGTERM)


@pytest.fixture(scope="module")
def site(local_cluster: object) -> Iterator[Site]:
    # local_cluster: the shared demo cluster runs (and munge with it) while the site's own does.
    if os.geteuid() != 0:
        pytest.skip("deploying as a site needs root (service user, sudoers, /opt, slurmctld)")
    seconds: dict[str, float] = {}
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="shopfloor-sitetest-", dir="/opt"))
    root.chmod(0o755)
    etc, state = root / "etc", root / "state"
    etc.mkdir(mode=0o755)
    process = None
    with contextlib.ExitStack() as stack:
        # Undone last, whatever failed: the account and the whole tree.
        stack.callback(subprocess.run, ["userdel", SERVICE_USER], capture_output=True,
                       check=False)
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        try:
            cluster = stack.enter_context(site_cluster(
                etc / "slurm", root / "slurm", name=f"site{PORT_BASE}", ctld_port=CTLD_PORT,
                slurmd_port=SLURMD_PORT))
            postgres = stack.enter_context(private_postgres(PG_PORT))
            seconds["cluster and PostgreSQL up"] = time.monotonic() - started
            venv = _make_environment(root)
            seconds["wheel built and installed"] = time.monotonic() - started
            # As the deployment guide says: the account, the rule, the private state.
            shopfloor = str(venv / "bin" / "shopfloor")
            subprocess.run([shopfloor, "service-user", SERVICE_USER, "--sudoers-file",
                            str(SUDOERS), "--state", f"{state}/hub", "--state",
                            f"{state}/apps"], check=True, timeout=60, cwd="/")
            os.chmod(state, 0o711)  # app owners' jobs pass through to the app store
            account = pwd.getpwnam(SERVICE_USER)
            password_file = etc / "db-password"  # 0600, owner the service user (deploy.md)
            shutil.copy(postgres.password_file(), password_file)
            os.chown(password_file, account.pw_uid, account.pw_gid)
            password_file.chmod(0o600)
            site_file = _site_file(etc, venv, state, cluster, postgres, password_file)
            shutil.copy(next((venv / "lib").glob("python3*/site-packages"))
                        / "shopfloor/hub_config/jupyterhub_config.py",
                        etc / "jupyterhub_config.py")
            command, env, _ = _unit_command(venv, etc)
            log = root / "hub.log"
            log_fd = os.open(log, os.O_WRONLY | os.O_CREAT, 0o600)
            process = subprocess.Popen(
                command, cwd=f"{state}/hub", stdout=log_fd, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, umask=0o077,
                user=account.pw_uid, group=account.pw_gid,
                extra_groups=os.getgrouplist(SERVICE_USER, account.pw_gid),
                # What systemd gives a User= service, and the unit's Environment= (no
                # SLURM_CONF: the hub finds its cluster from the site file alone).
                env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                     "HOME": account.pw_dir, "USER": SERVICE_USER, "LOGNAME": SERVICE_USER,
                     "SHELL": account.pw_shell, "LANG": "C.UTF-8",
                     **{k: (str(site_file) if k == "SHOPFLOOR_SITE" else v)
                        for k, v in env.items()}},
            )
            os.close(log_fd)
            url = hub_ports(SITE_OFFSET)["bind_url"]
            _wait_for_hub(process, url, log)
            seconds["hub answering"] = time.monotonic() - started
            yield Site(root, venv, site_file, state, url, process, log, cluster, postgres,
                       seconds)
        finally:
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
            _stop_orphan_proxy(state / "hub")
            SUDOERS.unlink(missing_ok=True)
            # The ExitStack then stops PostgreSQL and the cluster (its jobs cancelled first),
            # removes the tree and the account.


def test_site_deploy_spawn_doctor_and_a_broken_piece(site: Site, passwords: dict[str, str]
                                                     ) -> None:
    timings = dict(site.seconds)
    started = time.monotonic()
    # The installed package is the wheel's, not this checkout's editable one.
    where = subprocess.run([str(site.venv / "bin" / "python"), "-c",
                            "import shopfloor; print(shopfloor.__file__)"],
                           capture_output=True, text=True, check=True, cwd="/").stdout
    assert where.startswith(str(site.venv)), where
    assert (site.venv / "bin" / "shopfloor-as-user").exists()

    alice = HubClient(site.hub_url)
    alice.login("alice", passwords["alice"])  # PAM, as the unprivileged service user
    resp = alice.spawn_form("site", partition=site.cluster.partition, cpus=1, memory_gb=0.5,
                            walltime=10)
    assert resp.status_code == 302, site.log.read_text()[-3000:]
    try:
        model = alice.wait_ready("site", timeout=200)
        assert model["ready"]
        timings["spawn to ready"] = time.monotonic() - started
        # The session is a job of the site's own cluster, on its node (which, like its
        # partition, only that cluster has), submitted as alice (sbatch through sudo, with
        # SLURM_CONF kept: without it sbatch would ask the demo cluster, which has neither).
        [job] = [j for j in site.cluster.jobs() if j["user"] == "alice"]
        assert (job["state"], job["node"]) == ("RUNNING", site.cluster.node), job
        # The hub keeps its state in PostgreSQL: the server row holds the job id; no SQLite.
        rows = site.postgres.sql("SELECT s.state FROM spawners s JOIN users u ON "
                                 "u.id = s.user_id WHERE u.name = 'alice' AND s.name = 'site';",
                                 site.postgres.database)
        assert job["id"] in rows, rows
        sqlite = site.state / "hub" / "jupyterhub.sqlite"
        assert not sqlite.exists() or sqlite.stat().st_size == 0
        assert site.postgres.password not in site.log.read_text()

        started = time.monotonic()
        code, checks = site.doctor()
        timings["doctor, all checks"] = time.monotonic() - started
        failed = {n: c for n, c in checks.items() if c["status"] == "fail"}
        assert code == 0 and not failed, failed
        assert checks["slurm"]["status"] == "ok"
        assert checks[f"partition:{site.cluster.partition}"]["status"] == "ok"
        assert checks["sudo"]["status"] == "ok" and SERVICE_USER in checks["sudo"]["summary"]
        assert checks["connect"]["status"] == "ok", checks["connect"]
        assert checks["database"]["status"] == "ok"
        assert f"127.0.0.1:{PG_PORT}/" in checks["database"]["summary"]
    finally:
        alice.stop("site")

    # SLURM_CONF goes through sudo for sbatch/scancel only: the hub's user cannot hand a
    # slurm.conf of its choosing (which names plugins to load) to the root helper.
    helper = str(site.venv / "bin" / "shopfloor-privileged")
    denied = subprocess.run(["runuser", "-u", SERVICE_USER, "--", "sudo", "-n",
                             f"SLURM_CONF={site.cluster.conf}", helper, "--help"],
                            capture_output=True, text=True, check=False, cwd="/")
    assert denied.returncode != 0 and "SLURM_CONF" in denied.stderr, denied

    # Broken on purpose, one piece at a time: the doctor names each.
    started = time.monotonic()
    # (A rule that drops SLURM_CONF cannot be shown here: sudoers' Defaults!/usr/bin/sbatch
    # are global, and the demo's rule on this machine keeps it for every user's sbatch.
    # tests/unit/test_site_slurm_conf.py checks that the doctor names such a rule.)
    SUDOERS.unlink()
    code, checks = site.doctor("connect", "python")  # only what the broken piece needs
    assert code == 1 and checks["sudo"]["status"] == "fail"
    assert "missing" in checks["sudo"]["summary"] and "sbatch" in checks["sudo"]["summary"]
    assert "service-user" in checks["sudo"]["fix"]

    lib = next((site.venv / "lib").iterdir())
    lib.chmod(0o700)  # the environment jobs run is no longer readable by users
    try:
        code, checks = site.doctor("connect")
        assert code == 1 and checks["python"]["status"] == "fail", checks["python"]
    finally:
        lib.chmod(0o755)

    # The site's own slurmctld stops: the doctor names Slurm and the site's slurm.conf.
    site.cluster.stop_slurmctld()
    code, checks = site.doctor("connect", "partitions", "python")
    assert code == 1 and checks["slurm"]["status"] == "fail", checks["slurm"]
    assert str(site.cluster.conf) in checks["slurm"]["summary"], checks["slurm"]
    assert "slurmctld" in checks["slurm"]["fix"]
    timings["doctor, three broken pieces"] = time.monotonic() - started
    print("site deploy timings (s; set-up steps counted from the fixture's start):",
          {k: round(v, 1) for k, v in timings.items()})
