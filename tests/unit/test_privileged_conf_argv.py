"""How the hub side hands ``slurm.conf_file`` to ``shopfloor-privileged`` (``--slurm-conf``),
and the helper's path check on plain strings and real files (the attacks run for real, as
the service user, in tests/integration/test_privileged_slurm_conf.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from shopfloor.ops.privileged import (
    SLURM_VERBS,
    Refused,
    check_slurm_conf,
    privileged_argv,
)
from shopfloor.slurm.seam import Slurm, create_reservation_call, delete_reservation_call
from shopfloor.workshops import ops

CONF = "/etc/slurm-prod/slurm.conf"
HELPER = os.path.join(os.path.dirname(sys.executable), "shopfloor-privileged")


@pytest.mark.parametrize("verb", sorted(SLURM_VERBS))
def test_the_slurm_verbs_get_the_conf_before_the_verb(verb: str) -> None:
    argv = privileged_argv(verb, "ws-abc-1", python=sys.executable, slurm_conf=CONF)
    at = argv.index(HELPER)
    assert argv[at:at + 4] == [HELPER, "--slurm-conf", CONF, verb]


@pytest.mark.parametrize("verb", ["create-account", "disable-account", "delete-account"])
def test_the_account_verbs_never_get_it(verb: str) -> None:
    assert "--slurm-conf" not in privileged_argv(verb, "ws-abc-1", slurm_conf=CONF)


def test_no_conf_means_no_option() -> None:
    assert "--slurm-conf" not in privileged_argv("reservation", "delete", slurm_conf="")


def test_an_unprivileged_seam_passes_its_slurm_conf_to_the_helper(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import datetime

    monkeypatch.setattr(os, "geteuid", lambda: 999)
    create = create_reservation_call("ws-abc", start=None, end=datetime(2030, 1, 1),
                                     partition="cpu", users=["trainer"], cores=1)
    cmd = Slurm(env={"SLURM_CONF": CONF}).command(list(create.args))
    at = cmd.index(HELPER)
    assert cmd[:5] == ["sudo", "-n", "-u", "root", "--"]
    assert cmd[at:at + 5] == [HELPER, "--slurm-conf", CONF, "reservation", "create"]
    plain = Slurm().command(list(delete_reservation_call("ws-abc").args))
    assert "--slurm-conf" not in plain and plain[-3:] == ["reservation", "delete",
                                                         "ReservationName=ws-abc"]


async def test_the_workshop_accounting_steps_pass_the_conf(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    async def run(cmd: Sequence[str], **_: object) -> bytes:
        seen.append(list(cmd))
        return b""

    monkeypatch.setattr(ops, "run", run)
    await ops.associate_participants(["ws-abc-1", "ws-abc-2"], slurm_conf=CONF)
    await ops.remove_participant_association("ws-abc-1", slurm_conf=CONF)
    await ops.remove_workshop_account("abc", slurm_conf=CONF)
    await ops.associate_participants(["ws-abc-1"])
    verbs = [c[c.index(HELPER) + 1:] for c in seen]
    assert verbs == [["--slurm-conf", CONF, "slurm-associate", "ws-abc-1", "ws-abc-2"],
                     ["--slurm-conf", CONF, "slurm-dissociate", "ws-abc-1"],
                     ["--slurm-conf", CONF, "slurm-remove-account", "ws-abc"],
                     ["slurm-associate", "ws-abc-1"]]


@pytest.mark.parametrize("path", [
    "slurm.conf", "etc/slurm/slurm.conf", "/etc/slurm/slurm.conf\n", "/etc/\nslurm.conf",
    "/etc/slurm.conf\0", "/etc/../tmp/slurm.conf", "/etc/./passwd", "//etc/passwd",
    "/etc//passwd", "/etc/", "/", "",
])
def test_paths_that_are_not_plain_absolute_paths_are_refused(path: str) -> None:
    with pytest.raises(Refused, match="--slurm-conf"):
        check_slurm_conf(path)


def test_a_root_owned_file_in_root_owned_folders_is_accepted() -> None:
    if os.stat("/etc/passwd").st_uid != 0 or os.stat("/etc").st_mode & 0o022:
        pytest.skip("/etc/passwd is not root's here")
    assert check_slurm_conf("/etc/passwd") == "/etc/passwd"


def test_a_file_under_a_world_writable_folder_is_refused(tmp_path: Path) -> None:
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=x\n")
    conf.chmod(0o644)
    with pytest.raises(Refused, match="--slurm-conf"):
        check_slurm_conf(str(conf))  # under /tmp (1777), or owned by a non-root user
