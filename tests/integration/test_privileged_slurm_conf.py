"""``shopfloor-privileged --slurm-conf``: the root helper reaches a cluster whose slurm.conf is
not at the default path, and only through a file nobody but root can have written.

A second cluster, configured by hand (tests/sitecluster.py: its own slurm.conf, root-owned 0644
in root-owned 0755 folders under /opt, its own ClusterName and ports), runs beside the shared
demo cluster. Everything is called as a hub that runs as the service user would call it:
``sudo -u shopfloor`` and then the sudoers rule the demo installed (real sudo, which drops
``SLURM_CONF``). Attacks are the paths the hub could make root read: each is refused with
exit code 2 and a message naming ``--slurm-conf``, and no reservation appears on either
cluster. Then the real thing: the seam (``Slurm(env={"SLURM_CONF": ...})``, as the workshop
service builds it from ``slurm.conf_file``), run as ``shopfloor``, creates and deletes a
workshop reservation on the second cluster through the helper, and the demo cluster never
sees it.

Ports ($SHOPFLOOR_TEST_PORT_BASE +): slurmctld 14, slurmd 15 (test_site_deploy.py uses
9, 10 and 12, so both can run at once with one base).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sitecluster import SiteCluster, site_cluster
from support import PORT_BASE

from shopfloor.ops.privileged import COMMAND

SERVICE_USER = os.environ.get("SHOPFLOOR_TEST_SERVICE_USER", "shopfloor")
HELPER = str(Path(sys.executable).parent / COMMAND)
CTLD_PORT, SLURMD_PORT = PORT_BASE + 14, PORT_BASE + 15
#: The reservation every call asks for (a workshop's name: the helper accepts only those).
RESERVATION = f"ws-pcf{PORT_BASE % 100000}"
PARTITION, NODE = "privbatch", "privnode1"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="starts slurmctld/slurmd and sudo as root"),
    pytest.mark.skipif(shutil.which("slurmctld") is None, reason="Debian's slurmctld missing"),
]


def _service_user_may_sudo_the_helper() -> bool:
    listed = subprocess.run(["sudo", "-n", "-l", "-U", SERVICE_USER], capture_output=True,
                            text=True, check=False)
    return listed.returncode == 0 and HELPER in listed.stdout


def as_service_user(*argv: str) -> subprocess.CompletedProcess[str]:
    """``argv`` run as the hub's service user, from ``/`` (its home is /nonexistent)."""
    return subprocess.run(["sudo", "-n", "-u", SERVICE_USER, "--", *argv], capture_output=True,
                          text=True, timeout=90, check=False, cwd="/")


def helper_as_hub(*args: str) -> subprocess.CompletedProcess[str]:
    """The helper as the unprivileged hub runs it: through its sudoers rule, as root."""
    return as_service_user("sudo", "-n", "-u", "root", "--", HELPER, *args)


def reservation_args(cluster: SiteCluster) -> list[str]:
    end = (datetime.now() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    return ["reservation", "create", f"ReservationName={RESERVATION}", "StartTime=now",
            f"EndTime={end}", f"PartitionName={cluster.partition}", "CoreCnt=1", "Users=alice"]


def reservation_on(env: dict[str, str] | None) -> str:
    """``scontrol show reservation RESERVATION`` on the cluster of ``env`` ('' if none)."""
    shown = subprocess.run(["scontrol", "-o", "show", "reservation", RESERVATION], env=env,
                           capture_output=True, text=True, timeout=20, check=False)
    return shown.stdout if shown.returncode == 0 and RESERVATION in shown.stdout else ""


def demo_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}


@dataclass
class Layout:
    root: Path  #: /opt/shopfloor-privconf-XXXX (root, 0755)
    cluster: SiteCluster
    hub_dir: Path  #: a folder the service user owns (0755)
    bad: Path  #: a root-owned 0755 folder holding the bad files below


@pytest.fixture(scope="module")
def layout() -> Iterator[Layout]:
    if not _service_user_may_sudo_the_helper():
        pytest.skip(f"{SERVICE_USER} may not sudo {HELPER} (run `shopfloor service-user`)")
    # Under /opt, not /tmp: every folder above the conf must be root's and not world-writable.
    root = Path(tempfile.mkdtemp(prefix="shopfloor-privconf-", dir="/opt"))
    root.chmod(0o755)
    try:
        with site_cluster(root / "etc" / "slurm", root / "state", name=f"privconf{PORT_BASE}",
                          ctld_port=CTLD_PORT, slurmd_port=SLURMD_PORT, node=NODE,
                          partition=PARTITION) as cluster:
            for folder in (root, root / "etc", cluster.conf.parent):
                info = folder.lstat()
                assert info.st_uid == 0 and info.st_mode & 0o777 == 0o755, folder
            assert cluster.conf.lstat().st_uid == 0
            assert cluster.conf.lstat().st_mode & 0o777 == 0o644
            hub = pwd.getpwnam(SERVICE_USER)
            hub_dir = root / "hub-writable"
            hub_dir.mkdir(mode=0o755)
            os.chown(hub_dir, hub.pw_uid, hub.pw_gid)
            bad = root / "etc" / "bad"
            bad.mkdir(mode=0o755)
            try:
                yield Layout(root, cluster, hub_dir, bad)
            finally:
                cluster.tool("scontrol", "delete", f"ReservationName={RESERVATION}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _copy(conf: Path, to: Path, mode: int = 0o644, owner: str = "root") -> Path:
    to.write_text(conf.read_text())
    to.chmod(mode)
    entry = pwd.getpwnam(owner)
    os.chown(to, entry.pw_uid, entry.pw_gid)
    return to


def _attack(kind: str, lay: Layout) -> str:
    """A path to the second cluster's conf (or a copy of it) that root must not trust."""
    conf = lay.cluster.conf
    if kind == "owned by the hub":
        return str(_copy(conf, lay.bad / "hub-owned.conf", owner=SERVICE_USER))
    if kind == "group-writable":
        return str(_copy(conf, lay.bad / "group-writable.conf", mode=0o664))
    if kind == "world-writable":
        return str(_copy(conf, lay.bad / "world-writable.conf", mode=0o646))
    if kind == "link in a hub-writable folder":
        link = lay.hub_dir / "slurm.conf"
        link.unlink(missing_ok=True)
        link.symlink_to(conf)
        return str(link)
    if kind == "link in a root folder":
        link = lay.bad / "link.conf"
        link.unlink(missing_ok=True)
        link.symlink_to(conf)
        return str(link)
    if kind == "root's file in a hub-writable folder":
        return str(_copy(conf, lay.hub_dir / "copy.conf"))
    if kind == "a linked folder":
        link = lay.bad / "linked-folder"
        if not link.is_symlink():
            link.symlink_to(conf.parent)
        return str(link / conf.name)
    if kind == "a sticky world-writable folder":
        sticky = lay.root / "sticky"
        sticky.mkdir(exist_ok=True)
        sticky.chmod(0o1777)
        return str(_copy(conf, sticky / "slurm.conf"))
    if kind == "relative":
        return os.path.relpath(conf, "/")
    if kind == "newline":
        return f"{conf}\n"
    if kind == "newline inside":
        return f"{lay.hub_dir}\n{conf}"
    if kind == "dot-dot":
        return str(lay.hub_dir / ".." / "etc" / "slurm" / conf.name)
    if kind == "a folder":
        return str(conf.parent)
    if kind == "missing":
        return str(conf.parent / "nonexistent.conf")
    raise AssertionError(kind)


ATTACKS = ["owned by the hub", "group-writable", "world-writable",
           "link in a hub-writable folder", "link in a root folder",
           "root's file in a hub-writable folder", "a linked folder",
           "a sticky world-writable folder", "relative", "newline", "newline inside", "dot-dot",
           "a folder", "missing"]


@pytest.mark.parametrize("kind", ATTACKS)
def test_a_conf_root_cannot_trust_is_refused_and_nothing_runs(kind: str, layout: Layout) -> None:
    path = _attack(kind, layout)
    for args in (reservation_args(layout.cluster), ["slurm-remove-account", RESERVATION]):
        done = helper_as_hub("--slurm-conf", path, *args)
        assert done.returncode == 2, (kind, done)
        assert "--slurm-conf" in done.stderr, (kind, done.stderr)
        assert done.stdout == "", (kind, done.stdout)
    # Had the helper run scontrol with that conf, the reservation would be on the 2nd cluster.
    assert reservation_on(layout.cluster.env) == ""
    assert reservation_on(demo_env()) == ""


def test_the_option_is_refused_for_the_account_verbs(layout: Layout) -> None:
    for verb in ("create-account", "disable-account", "delete-account"):
        done = helper_as_hub("--slurm-conf", str(layout.cluster.conf), verb, "ws-pcfnone-1")
        assert done.returncode == 2 and "--slurm-conf is only for" in done.stderr, done
    with pytest.raises(KeyError):
        pwd.getpwnam("ws-pcfnone-1")


def test_sudo_still_drops_slurm_conf_for_the_helper(layout: Layout) -> None:
    """The old way stays closed: SLURM_CONF in the hub's environment never reaches root."""
    done = as_service_user("env", f"SLURM_CONF={layout.cluster.conf}", "sudo", "-n",
                           "--preserve-env=SLURM_CONF", "-u", "root", "--", HELPER,
                           *reservation_args(layout.cluster))
    assert done.returncode != 0, done
    assert reservation_on(layout.cluster.env) == ""


_SEAM = """
import asyncio, sys
from datetime import datetime, timedelta
from shopfloor.slurm.seam import Slurm

async def main(conf: str, name: str, partition: str, action: str) -> None:
    slurm = Slurm(env={"SLURM_CONF": conf})
    if action == "create":
        await slurm.create_reservation(name, start=None, partition=partition, users=["alice"],
                                       end=datetime.now() + timedelta(hours=1), cores=1)
    else:
        await slurm.delete_reservation(name)
    print(sorted(await slurm.reservations()))

asyncio.run(main(*sys.argv[1:]))
"""


def test_the_hub_creates_and_deletes_a_reservation_on_a_cluster_of_its_own(
        layout: Layout) -> None:
    cluster = layout.cluster

    def seam(action: str) -> subprocess.CompletedProcess[str]:
        return as_service_user(sys.executable, "-c", _SEAM, str(cluster.conf), RESERVATION,
                               cluster.partition, action)

    made = seam("create")
    assert made.returncode == 0, made.stderr
    assert RESERVATION in made.stdout  # the hub's own scontrol show reads the same cluster
    shown = reservation_on(cluster.env)
    assert f"Nodes={cluster.node}" in shown and f"PartitionName={PARTITION}" in shown, shown
    assert "Users=alice" in shown, shown
    assert reservation_on(demo_env()) == ""  # not on the cluster at the default path
    gone = seam("delete")
    assert gone.returncode == 0, gone.stderr
    assert RESERVATION not in gone.stdout
    assert reservation_on(cluster.env) == ""


def test_the_helper_runs_sacctmgr_against_the_named_cluster(layout: Layout) -> None:
    """slurm-remove-account asks sacctmgr about the account: with --slurm-conf it asks the
    second cluster (whose slurm.conf has no accounting, so sacctmgr says so and the helper
    fails), without it the demo's slurmdbd (where no such account exists: nothing to do)."""
    there = helper_as_hub("--slurm-conf", str(layout.cluster.conf), "slurm-remove-account",
                          RESERVATION)
    here = helper_as_hub("slurm-remove-account", RESERVATION)
    assert here.returncode == 0, here
    assert there.returncode == 4, there
    assert "sacctmgr" in there.stderr and "accounting_storage" in there.stderr, there.stderr
