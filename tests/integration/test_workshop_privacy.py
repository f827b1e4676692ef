"""Workshop exports and the workshop service's state are readable only by whom they belong to.

The attack (issue 11, hole 4): exports of participants' homes were 0644 in a 0755 folder of
the trainer's 0755 home, so any user (another user, a fellow participant) read everyone's
work. Now the export folder is 0700 and each file 0600, owned by the trainer who ended the
workshop; the service's folder (database with codes, names and the end journal) is root's.
The trainer still gets each file through the service, read with their own rights.
"""

from __future__ import annotations

import io
import pwd
import secrets
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from support import RunningHub
from workshopsupport import EXPORTS, running_workshop, service_url, trainer_client, wait_for_service

from shopfloor.workshops.client import WorkshopClient, WorkshopError
from shopfloor.workshops.model import store_path

pytestmark = [pytest.mark.hub, pytest.mark.cluster, pytest.mark.slow]


def as_user(user: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` with ``user``'s uid, gid and groups (no PAM: works for locked accounts)."""
    pw = pwd.getpwnam(user)
    return subprocess.run(["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
                           "--init-groups", "--", *cmd],
                          capture_output=True, text=True, timeout=30, check=False)


def assert_denied(user: str, *cmd: str, secret: str = "") -> None:
    result = as_user(user, *cmd)
    assert result.returncode != 0 and "Permission denied" in result.stderr, (
        user, cmd, result.returncode, result.stdout[:200], result.stderr[:200])
    assert not secret or secret not in result.stdout


def test_exports_and_state_are_private(hub: RunningHub) -> None:
    wait_for_service(hub)
    trainer = trainer_client(hub)
    with running_workshop(hub, trainer, "p", hours=1, capacity=2, partition="debug") as info:
        name = str(info["name"])
        anon = WorkshopClient(service_url(hub), "")
        victim = anon.join(info["code"], "Victim")["username"]
        peer = anon.join(info["code"], "Peer")["username"]
        secret = secrets.token_hex(12)
        notes = Path(f"/home/{victim}/notes.txt")
        subprocess.run(["sudo", "-u", victim, "tee", str(notes)], input=secret, text=True,
                       capture_output=True, check=True)
        # An export folder an older version (or the trainer's umask) made world-readable.
        subprocess.run(["sudo", "-u", "trainer", "mkdir", "-p", "-m", "755",
                        str(EXPORTS / name)], check=True)
        # Accounts disabled, not deleted: the fellow participant is still there to attack.
        report = trainer.end(name, accounts="disable")
        export = Path(report["steps"]["export"])
        archive = export / f"{victim}.tar.gz"
        trainer_uid = pwd.getpwnam("trainer").pw_uid
        assert export == EXPORTS / name
        assert stat.S_IMODE(export.stat().st_mode) == 0o700
        for path in (archive, export / "progress.csv"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            assert path.stat().st_uid == trainer_uid, path

        store = store_path(hub.site)
        for attacker in ("bob", peer):
            assert_denied(attacker, "cat", str(archive), secret=secret)
            assert_denied(attacker, "cat", str(export / "progress.csv"))
            assert_denied(attacker, "ls", str(export))
            assert_denied(attacker, "cat", str(store))
            assert_denied(attacker, "ls", str(store.parent))
        assert_denied(peer, "cat", str(notes), secret=secret)

        # The trainer gets the export through the service, read with their rights.
        data = trainer.export(name, f"{victim}.tar.gz")
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            member = tar.extractfile(f"{victim}/notes.txt")
            assert member is not None and member.read().decode() == secret
        assert trainer.export(name, "progress.csv").decode().startswith("username,")
        # Nobody else does, and no name leaves the export folder.
        bob = WorkshopClient(service_url(hub), hub.client("bob").token())
        with pytest.raises(WorkshopError) as refused:
            bob.export(name, f"{victim}.tar.gz")
        assert refused.value.status == 403
        for odd in ("..%2F..%2F.bashrc", ".bashrc", f"{peer}.tar.gz.part", "%2Fetc%2Fshadow"):
            with pytest.raises(WorkshopError) as missing:
                trainer.export(name, odd)
            assert missing.value.status == 404, odd
