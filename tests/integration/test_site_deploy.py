"""Shopfloor deployed as a site deploys it: the built wheel, a fresh environment under /opt, a
site file written by hand, the hub started with the shipped unit's command line as an
unprivileged service user, against the real Slurm cluster; then ``shopfloor doctor``.

What is real and what is shortened (to fit a 2-core test machine):

* the wheel is built from this checkout (``pip wheel --no-deps``) and installed with
  ``--no-deps`` into a new ``python -m venv`` under /opt; its dependencies (JupyterHub,
  JupyterLab, ...) come from the main environment's site-packages through one ``.pth`` line
  (a plain path: the main environment's own ``.pth`` files, its editable Shopfloor among them,
  are not run), and the ``jupyterhub``/``jupyterhub-singleuser`` launchers are written from
  those packages' own entry points, as pip writes them;
* the Slurm cluster is the local one (a second cluster is too heavy here), but nothing comes
  from the demo: the site file below is written by hand and names its own partitions;
* the hub runs the shipped unit's ``ExecStart`` (paths of /opt/shopfloor/venv and
  /etc/shopfloor moved to this test's), as its own service user ``sfsite``, with the unit's
  ``UMask``, ``WorkingDirectory`` and ``Environment``, as systemd would start it;
* the database is SQLite (the PostgreSQL part of issue 16 is tested on its own).
"""

from __future__ import annotations

import configparser
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
from serviceuser_support import SITE_DEPLOY_OFFSET, cancel_jobs_reporting_to, hub_ports
from support import REPO

from shopfloor.ops import unit_dir

pytestmark = [pytest.mark.hub, pytest.mark.cluster, pytest.mark.slow]

SERVICE_USER = "sfsite"
SUDOERS = Path("/etc/sudoers.d/shopfloor-sitetest")


@dataclass
class Site:
    root: Path  #: /opt/shopfloor-sitetest-XXXX: venv/, etc/, state/
    venv: Path
    site_file: Path
    state: Path
    hub_url: str
    api_port: int
    process: subprocess.Popen[bytes]
    log: Path

    def shopfloor(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.venv / "bin" / "shopfloor"), *args], capture_output=True,
                              text=True, timeout=timeout, check=False, cwd="/")

    def doctor(self) -> tuple[int, dict[str, dict[str, str]]]:
        done = self.shopfloor("doctor", "--site", str(self.site_file), "--json",
                              "--probe-timeout", "90")
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
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    wheel = _build_wheel(Path(tempfile.mkdtemp(prefix="shopfloor-wheel-")))
    subprocess.run([str(venv / "bin" / "pip"), "install", "--no-deps", "--no-index", "--quiet",
                    str(wheel)], check=True, timeout=300)
    shutil.rmtree(wheel.parent, ignore_errors=True)
    site_packages = next((venv / "lib").glob("python3*/site-packages"))
    main = next((Path(sys.prefix) / "lib").glob("python3*/site-packages"))
    (site_packages / "zz-shopfloor-deps.pth").write_text(f"{main}\n")
    for name in ("jupyterhub", "jupyterhub-singleuser"):
        _launcher(venv, name)
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
    return venv


def _site_file(etc: Path, venv: Path, state: Path) -> Path:
    """A site's own file, written by hand: two partitions of the cluster, its own paths."""
    ports = hub_ports(SITE_DEPLOY_OFFSET)
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
auth:
  allowed_users: [alice]
default_partition: debug
partitions:
  debug:
    description: Short tests.
    max_cpus: 2
    max_memory_gb: 2
    max_walltime: "0:30:00"
    default_cpus: 1
    default_memory_gb: 0.5
    default_walltime: "0:10:00"
  cpu:
    description: CPU nodes.
    max_cpus: 4
    max_memory_gb: 3
    max_walltime: "2:00:00"
    default_cpus: 1
    default_memory_gb: 1
    default_walltime: "1:00:00"
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


@pytest.fixture(scope="module")
def site(local_cluster: object) -> Iterator[Site]:
    if os.geteuid() != 0:
        pytest.skip("deploying as a site needs root (service user, sudoers, /opt)")
    root = Path(tempfile.mkdtemp(prefix="shopfloor-sitetest-", dir="/opt"))
    root.chmod(0o755)
    etc, state = root / "etc", root / "state"
    etc.mkdir(mode=0o755)
    process = None
    api_port = int(hub_ports(SITE_DEPLOY_OFFSET)["hub_bind_url"].rsplit(":", 1)[1])
    try:
        venv = _make_environment(root)
        site_file = _site_file(etc, venv, state)
        shutil.copy(venv / "lib" / next(p.name for p in (venv / "lib").iterdir())
                    / "site-packages/shopfloor/hub_config/jupyterhub_config.py",
                    etc / "jupyterhub_config.py")
        # As the deployment guide says: the account, the rule, the private state.
        shopfloor = str(venv / "bin" / "shopfloor")
        subprocess.run([shopfloor, "service-user", SERVICE_USER, "--sudoers-file",
                        str(SUDOERS), "--state", f"{state}/hub", "--state", f"{state}/apps"],
                       check=True, timeout=60, cwd="/")
        os.chmod(state, 0o711)  # app owners' jobs pass through to the app store
        command, env, _ = _unit_command(venv, etc)
        account = pwd.getpwnam(SERVICE_USER)
        log = root / "hub.log"
        log_fd = os.open(log, os.O_WRONLY | os.O_CREAT, 0o600)
        cancel_jobs_reporting_to(api_port)
        process = subprocess.Popen(
            command, cwd=f"{state}/hub", stdout=log_fd, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, umask=0o077,
            user=account.pw_uid, group=account.pw_gid,
            extra_groups=os.getgrouplist(SERVICE_USER, account.pw_gid),
            # What systemd gives a User= service, and the unit's Environment=.
            env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                 "HOME": account.pw_dir, "USER": SERVICE_USER, "LOGNAME": SERVICE_USER,
                 "SHELL": account.pw_shell, "LANG": "C.UTF-8",
                 **{k: (str(site_file) if k == "SHOPFLOOR_SITE" else v)
                    for k, v in env.items()}},
        )
        os.close(log_fd)
        url = hub_ports(SITE_DEPLOY_OFFSET)["bind_url"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                if requests.get(f"{url}/hub/api/", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(1)
        else:
            raise AssertionError("the hub did not answer:\n" + log.read_text()[-3000:])
        yield Site(root, venv, site_file, state, url, api_port, process, log)
    finally:
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        cancel_jobs_reporting_to(api_port)
        SUDOERS.unlink(missing_ok=True)
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run(["userdel", SERVICE_USER], capture_output=True, check=False)


def test_site_deploy_spawn_doctor_and_a_broken_piece(site: Site, passwords: dict[str, str]
                                                     ) -> None:
    # The installed package is the wheel's, not this checkout's editable one.
    where = subprocess.run([str(site.venv / "bin" / "python"), "-c",
                            "import shopfloor; print(shopfloor.__file__)"],
                           capture_output=True, text=True, check=True, cwd="/").stdout
    assert where.startswith(str(site.venv)), where
    assert (site.venv / "bin" / "shopfloor-as-user").exists()

    alice = HubClient(site.hub_url)
    alice.login("alice", passwords["alice"])  # PAM, as the unprivileged service user
    resp = alice.spawn_form("site", partition="debug", cpus=1, memory_gb=0.5, walltime=10)
    assert resp.status_code == 302, site.log.read_text()[-3000:]
    try:
        model = alice.wait_ready("site", timeout=200)
        assert model["ready"]
        jobs = subprocess.run(["squeue", "-h", "-u", "alice", "-n", "shopfloor-alice-site",
                               "-o", "%u|%T"], capture_output=True, text=True,
                              check=True).stdout.split()
        assert jobs == ["alice|RUNNING"]

        code, checks = site.doctor()
        failed = {n: c for n, c in checks.items() if c["status"] == "fail"}
        assert code == 0 and not failed, failed
        assert checks["sudo"]["status"] == "ok" and SERVICE_USER in checks["sudo"]["summary"]
        assert checks["connect"]["status"] == "ok", checks["connect"]
    finally:
        alice.stop("site")

    # Broken on purpose, one piece at a time: the doctor names each.
    SUDOERS.unlink()
    code, checks = site.doctor()
    assert code == 1 and checks["sudo"]["status"] == "fail"
    assert "missing" in checks["sudo"]["summary"] and "sbatch" in checks["sudo"]["summary"]
    assert "service-user" in checks["sudo"]["fix"]

    lib = next((site.venv / "lib").iterdir())
    lib.chmod(0o700)  # the environment jobs run is no longer readable by users
    try:
        code, checks = site.doctor()
        assert code == 1 and checks["python"]["status"] == "fail", checks["python"]
    finally:
        lib.chmod(0o755)
