"""The two fixed commands of an unprivileged hub, against bad input, run for real.

``shopfloor-as-user`` (what the hub does as a user) and ``shopfloor-privileged`` (the only
things it does as root) are started as processes, as sudo starts them; the privileged one's
refusals are checked as root, where a missing check would do harm.
"""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from shopfloor.ops.privileged import Refused, privileged_argv, reservation_args
from shopfloor.ops.serviceuser import render_sudoers
from shopfloor.slurm.seam import Slurm, create_reservation_call, update_reservation_call
from shopfloor.userfiles import helper_argv

ROOT = os.geteuid() == 0


def as_user(*args: str, stdin: bytes | None = None, timeout: str = "10"
            ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "shopfloor.ops.asuser", "--timeout", timeout,
                           *args], input=stdin, capture_output=True, timeout=30, check=False)


def privileged(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shopfloor.ops.privileged", *args],
                          capture_output=True, text=True, timeout=30, check=False)


# -- shopfloor-as-user ------------------------------------------------------------------------


def test_tail_reads_the_end_of_a_regular_file(tmp_path: Path) -> None:
    log = tmp_path / "1.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    done = as_user("tail", str(log), "20")
    assert done.returncode == 0 and done.stdout.endswith(b"line 99\n") and len(done.stdout) == 20


@pytest.mark.parametrize("kind", ["symlink", "fifo", "folder"])
def test_tail_refuses_what_is_not_a_regular_file_without_blocking(tmp_path: Path,
                                                                    kind: str) -> None:
    path = tmp_path / "1.log"
    if kind == "symlink":
        path.symlink_to("/etc/shadow")
    elif kind == "fifo":
        os.mkfifo(path)  # opening it for reading would block forever
    else:
        path.mkdir()
    done = as_user("tail", str(path), "100", timeout="5")
    assert done.returncode == 3, done.stderr
    assert done.stdout == b""


@pytest.mark.parametrize(("args", "named"), [
    (("tail", "relative/1.log", "10"), b"PATH"),
    (("tail", "/tmp/../etc/shadow", "10"), b"PATH"),
    (("tail", "/tmp/x", "-5"), b"MAX_BYTES"),
    (("tail", "/tmp/x", "99999999999"), b"MAX_BYTES"),
    (("read", "/tmp/x"), b"takes PATH MAX_BYTES"),
    (("mkdir-private", "~/x"), b"PATH"),
    (("write", "x.csv"), b"PATH"),
    (("place-material", "/tmp/dest", "relative/src"), b"SOURCE"),
    (("archive-home", "/etc"), b"takes no arguments"),
])
def test_bad_arguments_are_refused_by_name(args: tuple[str, ...], named: bytes) -> None:
    done = as_user(*args)
    assert done.returncode == 2, done
    assert named in done.stderr


def test_an_unknown_verb_is_refused() -> None:
    done = as_user("sh", "-c", "id")
    assert done.returncode == 2 and b"invalid choice" in done.stderr


def test_mkdir_private_tightens_a_loose_folder(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    assert as_user("mkdir-private", str(folder / "deeper")).returncode == 0
    assert as_user("mkdir-private", str(folder)).returncode == 0
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "deeper").stat().st_mode) == 0o700


def test_write_is_private_and_complete_or_absent(tmp_path: Path) -> None:
    target = tmp_path / "exports" / "progress.csv"
    assert as_user("write", str(target), stdin=b"a,b\n").returncode == 0
    assert target.read_bytes() == b"a,b\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    assert not (tmp_path / "exports" / "progress.csv.part").exists()


def test_read_stops_after_max_bytes_plus_one(tmp_path: Path) -> None:
    path = tmp_path / "nb.ipynb"
    path.write_bytes(b"x" * 1000)
    assert as_user("read", str(path), "10").stdout == b"x" * 11


def test_place_material_copies_once_and_never_overwrites(tmp_path: Path) -> None:
    source = tmp_path / "material"
    source.mkdir()
    (source / "01-intro.ipynb").write_text("{}")
    dest = tmp_path / "home" / "ws"
    (tmp_path / "home").mkdir()
    assert as_user("place-material", str(dest), str(source)).stdout == b"placed\n"
    (dest / "01-intro.ipynb").write_text("my work")
    assert as_user("place-material", str(dest), str(source)).stdout == b"present\n"
    assert (dest / "01-intro.ipynb").read_text() == "my work"


def test_the_time_limit_ends_a_blocked_verb(tmp_path: Path) -> None:
    fifo = tmp_path / "material"
    os.mkfifo(fifo)
    # write's stdin never ends: the helper's own alarm ends it.
    proc = subprocess.Popen([sys.executable, "-m", "shopfloor.ops.asuser", "--timeout", "1",
                             "write", str(tmp_path / "out")], stdin=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.wait(timeout=20) == 124


def test_the_hub_runs_the_helper_beside_its_own_python() -> None:
    argv = helper_argv("tail", "/home/alice/x.log", "4096", timeout=5)
    assert argv[0] == os.path.join(os.path.dirname(sys.executable), "shopfloor-as-user")
    assert argv[1:] == ["--timeout", "5", "tail", "/home/alice/x.log", "4096"]


# -- shopfloor-privileged ---------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "alice", "root", "shopfloor", "ws-x-1", "ws-abc-0", "ws-abc-1;id", "ws-abc-1 ", "ws-ABC-1",
    "ws-abc-1\nroot", "ws-abcdefghijklm-1", "ws-abc-12345", "../ws-abc-1",
])
@pytest.mark.parametrize("verb", ["create-account", "disable-account", "delete-account"])
def test_only_workshop_account_names_are_accepted(verb: str, name: str) -> None:
    if not ROOT:
        pytest.skip("the helper refuses to run at all without root")
    done = privileged(verb, name)
    assert done.returncode == 2, done
    assert "NAME" in done.stderr
    if name in ("alice", "root", "shopfloor"):
        pwd.getpwnam("root")  # still there: nothing was done


def test_an_option_for_a_name_is_refused() -> None:
    if not ROOT:
        pytest.skip("the helper refuses to run at all without root")
    done = privileged("delete-account", "--remove-all-files")
    assert done.returncode == 2 and "unrecognized arguments" in done.stderr


def test_accounts_the_helper_did_not_make_are_refused() -> None:
    if not ROOT:
        pytest.skip("needs root to make a look-alike account")
    name = "ws-sfprivtest-7"
    subprocess.run(["userdel", "--remove", name], capture_output=True, check=False)
    subprocess.run(["useradd", "--no-create-home", name], check=True)
    try:
        for verb in ("disable-account", "delete-account"):
            done = privileged(verb, name)
            assert done.returncode == 2 and "was not made by" in done.stderr, done
        assert privileged("create-account", name).returncode == 2  # exists already
        pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], capture_output=True, check=False)


def test_create_disable_delete_round_trip() -> None:
    if not ROOT:
        pytest.skip("needs root")
    name = "ws-sfprivtest-8"
    subprocess.run(["userdel", "--remove", name], capture_output=True, check=False)
    made = privileged("create-account", name)
    try:
        assert made.returncode == 0, made.stderr
        password = made.stdout.strip()
        assert len(password) >= 12 and password not in made.stderr
        home = Path(pwd.getpwnam(name).pw_dir)
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        assert privileged("disable-account", name).returncode == 0
        assert privileged("delete-account", name).returncode == 0
        with pytest.raises(KeyError):
            pwd.getpwnam(name)
        assert not home.exists()
    finally:
        subprocess.run(["userdel", "--remove", name], capture_output=True, check=False)


@pytest.mark.parametrize(("action", "settings"), [
    ("create", ["ReservationName=root", "PartitionName=cpu"]),
    ("create", ["PartitionName=cpu", "ReservationName=ws-abc"]),
    ("create", ["ReservationName=ws-abc", "Nodes=ALL"]),
    ("create", ["ReservationName=ws-abc", "Accounts=root"]),
    ("create", ["ReservationName=ws-abc", "Flags=MAINT"]),
    ("create", ["ReservationName=ws-abc", "Users=alice;id"]),
    ("create", ["ReservationName=ws-abc", "Users=alice\nNodes=ALL"]),
    ("create", ["ReservationName=ws-abc", "CoreCnt=0"]),
    ("create", ["ReservationName=ws-abc", "StartTime=now", "StartTime=now"]),
    ("update", ["ReservationName=ws-abc", "Users-=alice"]),
    ("delete", ["ReservationName=ws-abc", "Users=alice"]),
    ("shutdown", ["ReservationName=ws-abc"]),
])
def test_reservations_outside_what_workshops_write_are_refused(action: str,
                                                                settings: list[str]) -> None:
    with pytest.raises(Refused):
        reservation_args(action, settings)


def test_the_seam_reservations_pass_the_helper_and_go_through_it_when_not_root(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import datetime

    create = create_reservation_call(
        "ws-abc", start=None, end=datetime(2030, 1, 1, 12), partition="cpu",
        users=["ws-abc-1", "trainer"], cores=2, flags=["IGNORE_JOBS"])
    update = update_reservation_call("ws-abc", "Users+=ws-abc-2")
    assert reservation_args("create", list(create.args[3:])) == list(create.args)
    assert reservation_args("update", list(update.args[2:])) == list(update.args)
    monkeypatch.setattr(os, "geteuid", lambda: 999)
    cmd = Slurm().command(list(create.args))
    assert cmd[:5] == ["sudo", "-n", "-u", "root", "--"]
    assert cmd[5:8] == [os.path.join(os.path.dirname(sys.executable), "shopfloor-privileged"),
                        "reservation", "create"]
    assert privileged_argv("delete-account", "ws-abc-1")[:4] == ["sudo", "-n", "-u", "root"]


def test_the_rendered_sudoers_rule_is_valid_and_names_this_environment(tmp_path: Path) -> None:
    text = render_sudoers("shopfloor", venv_bin="/opt/x/bin", slurm_bin_dir="/opt/slurm/bin")
    assert "Cmnd_Alias SHOPFLOOR_SLURM = /opt/slurm/bin/sbatch, /opt/slurm/bin/scancel" in text
    assert "shopfloor ALL=(root) NOPASSWD: SHOPFLOOR_PRIVILEGED" in text
    assert "/opt/x/bin/shopfloor-privileged" in text and "ALL=(ALL) " not in text
    path = tmp_path / "rule"
    path.write_text(text)
    visudo = subprocess.run(["visudo", "-c", "-f", str(path)], capture_output=True, text=True,
                            check=False)
    if visudo.returncode == 127:
        pytest.skip("visudo is not installed")
    assert visudo.returncode == 0, visudo.stdout + visudo.stderr
