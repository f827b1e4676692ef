"""``shopfloor-privileged``: the only things Shopfloor does as root, behind a narrow interface.

An unprivileged hub (``hub.service_user``) reaches this one command through its own sudoers
line (``shopfloor ALL=(root) NOPASSWD: <venv>/bin/shopfloor-privileged``); a hub that runs as
root runs it directly, so both take the same path (:func:`privileged_argv`). Each verb checks
every argument before anything happens and refuses with exit code 2 and a message naming it:

``create-account NAME``
    a workshop participant's Unix account with a private home; prints its new password
    (on stdout, never on a command line). ``NAME`` must be ``ws-<workshop>-<n>`` and new.
``disable-account NAME`` / ``delete-account NAME``
    lock, or remove with its home, an account this command created: ``ws-<workshop>-<n>``,
    a regular uid, and the comment ``create-account`` wrote. Any other account is refused.
``reservation create|update|delete KEY=VALUE...``
    ``scontrol`` on a workshop reservation (``ws-<workshop>``), with only the keys Shopfloor
    writes, each value checked (Slurm needs an operator to reserve; SlurmUser is often root).
    Slurm is found on sudo's ``secure_path``: no caller picks the program that runs as root.
``slurm-associate NAME...``
    the Slurm association of participants this command created (``ws-<workshop>-<n>``, up to
    100 in one call) with their workshop's account ``ws-<workshop>`` (their default), which
    is made on first use under ``workshops``; an account of that name under any other parent
    is refused. Each association is checked after it is made (see :func:`slurm_associate`).
``slurm-dissociate NAME`` / ``slurm-remove-account ACCOUNT``
    remove a participant's associations (``ws-<workshop>-<n>``; its Unix account, if still
    there, must be one this command made), or a workshop's account (``ws-<workshop>``, only
    under ``workshops``). ``sacctmgr`` needs a Slurm administrator: a Slurm *operator* role
    for the hub would let it change every account, budget and QOS instead.

``--slurm-conf PATH`` (before a Slurm verb: ``reservation`` and ``slurm-*``)
    which cluster: ``scontrol``/``sacctmgr`` run with ``SLURM_CONF=PATH`` (the site's
    ``slurm.conf_file``). sudo never keeps ``SLURM_CONF`` for this command, because a
    slurm.conf names plugins that root would load; so the path comes as an argument and is
    accepted only if nobody but root can have written it or can change it later (see
    :func:`check_slurm_conf`): an absolute, plain path to a regular file, no symbolic link
    anywhere on it, the file and every folder above it owned by root and writable by nobody
    else.

Nothing else here takes a path, and nothing takes a shell command or a user that is not a
workshop participant.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import pwd
import re
import secrets
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shopfloor.slurm.accounting import AccountingSync

COMMAND = "shopfloor-privileged"
BAD_ARGUMENT, FAILED = 2, 4
#: Participant accounts: ``ws-<workshop>-<n>`` (shopfloor.workshops.model.account_name).
ACCOUNT = re.compile(r"ws-[a-z][a-z0-9]{1,11}-[1-9][0-9]{0,3}")
RESERVATION = re.compile(r"ws-[a-z][a-z0-9]{1,11}")
#: The comment create-account writes, which disable/delete require.
MARK = "Shopfloor workshop participant"
_USER = r"[a-z_][a-z0-9_-]{0,31}"
_TIME = r"(now|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)"
#: The keys and values ``shopfloor.slurm.seam`` writes for workshop reservations.
RESERVATION_KEYS = {
    "StartTime": re.compile(_TIME),
    "EndTime": re.compile(_TIME),
    "PartitionName": re.compile(r"[A-Za-z0-9_.-]{1,64}"),
    "CoreCnt": re.compile(r"[1-9][0-9]{0,5}"),
    "NodeCnt": re.compile(r"[1-9][0-9]{0,4}"),
    "Users": re.compile(rf"{_USER}(,{_USER}){{0,999}}"),
    "Users+": re.compile(_USER),  # update: add one user (``Users+=name``)
    "Flags": re.compile(r"(IGNORE_JOBS)(,IGNORE_JOBS)?"),
}
#: The Slurm account every workshop's account hangs under (shopfloor.workshops.ops).
WORKSHOPS_ACCOUNT = "workshops"
_SHADOW_TOOLS = {"useradd", "usermod", "userdel", "chpasswd"}


class Refused(Exception):
    """An argument this command does not accept (exit code 2)."""


def check_slurm_conf(path: str) -> str:
    """``path`` if root may hand it to Slurm as ``SLURM_CONF``, else :class:`Refused`.

    Accepted: an absolute path with no ``.``, ``..`` or ``//`` in it, to a regular file; no
    component is a symbolic link; the file and every folder above it are owned by root and
    writable neither by their group nor by others. Then only root could have written what
    Slurm reads, and nobody else can swap it between this check and Slurm opening it (the
    check holds for the path as Slurm resolves it). What that root-owned file names in turn
    (``Include``, plugins) is the site admin's choice, as for /etc/slurm/slurm.conf.
    """
    def refuse(why: str) -> Refused:
        return Refused(f"--slurm-conf {path!r}: {why}")

    if any(c in path for c in "\n\r\0"):
        raise refuse("must be one line (no newline or NUL)")
    if not path.startswith("/"):
        raise refuse("must be an absolute path, e.g. /etc/slurm/slurm.conf")
    if path.startswith("//") or os.path.normpath(path) != path:
        raise refuse("must be a plain path, without '.', '..', '//' or a trailing '/'")
    parts = path.split("/")[1:]
    for depth in range(len(parts) + 1):
        here = "/" + "/".join(parts[:depth])
        try:
            info = os.lstat(here)
        except OSError as exc:
            raise refuse(f"{here}: {exc.strerror}") from None
        last = depth == len(parts)
        if stat.S_ISLNK(info.st_mode):
            raise refuse(f"{here} is a symbolic link; name the real path in slurm.conf_file")
        if not (stat.S_ISREG(info.st_mode) if last else stat.S_ISDIR(info.st_mode)):
            raise refuse(f"{here} is not a {'regular file' if last else 'folder'}")
        if info.st_uid != 0:
            raise refuse(f"{here} is owned by uid {info.st_uid}, not root")
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise refuse(f"{here} is writable by its group or by others "
                         f"(mode {stat.S_IMODE(info.st_mode):04o})")
    return path


def slurm_environment(conf: str) -> dict[str, str] | None:
    """What the helper's Slurm tools get in their environment for ``--slurm-conf conf``."""
    return {"SLURM_CONF": conf} if conf else None


def command_path(python: str | None = None) -> str:
    """``shopfloor-privileged`` of the environment whose interpreter is ``python``."""
    return str(Path(python or sys.executable).parent / COMMAND)


def privileged_argv(verb: str, *args: str, python: str | None = None,
                    slurm_conf: str = "") -> list[str]:
    """How to run ``shopfloor-privileged VERB ARGS``: directly as root, else through sudo.

    ``slurm_conf`` (the site's ``slurm.conf_file``; empty: Slurm's default) goes to the Slurm
    verbs as ``--slurm-conf``, which the helper checks before it sets ``SLURM_CONF``.
    """
    conf = ["--slurm-conf", slurm_conf] if slurm_conf and verb in SLURM_VERBS else []
    argv = [command_path(python), *conf, verb, *args]
    if os.geteuid() == 0:
        return argv
    from shopfloor.userfiles import sudo_argv

    return sudo_argv("root", argv)


def _account(name: str, *, ours: bool) -> str:
    if not ACCOUNT.fullmatch(name):
        raise Refused(f"NAME must be a workshop account ws-<workshop>-<n>, not {name!r}")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if ours:
            raise Refused(f"NAME {name!r}: no such account") from None
        return name
    if not ours:
        raise Refused(f"NAME {name!r}: the account exists already")
    if entry.pw_uid < 1000 or entry.pw_gecos.split(",")[0] != MARK:
        raise Refused(f"NAME {name!r} was not made by {COMMAND}: refusing to change it")
    return name


def _tool(name: str, *args: str, stdin: str | None = None) -> str:
    if name not in _SHADOW_TOOLS:
        raise Refused(f"no tool {name}")
    for _attempt in range(20):
        proc = subprocess.run([name, *args], input=stdin, capture_output=True, text=True,
                              check=False, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        # Another useradd/userdel (a second workshop, an admin) holds /etc/passwd: wait.
        if "cannot lock" not in proc.stderr:
            break
        time.sleep(0.5)
    if proc.returncode:
        raise OSError(f"{name} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return proc.stdout


def create_account(name: str) -> None:
    _tool("useradd", "--create-home", "--shell", "/bin/bash", "--comment", MARK,
          _account(name, ours=False))
    os.chmod(pwd.getpwnam(name).pw_dir, 0o700)
    password = secrets.token_urlsafe(9)
    _tool("chpasswd", stdin=f"{name}:{password}\n")
    print(password)


def disable_account(name: str) -> None:
    _tool("usermod", "--lock", "--expiredate", "1", _account(name, ours=True))


def delete_account(name: str) -> None:
    _tool("userdel", "--remove", "--force", _account(name, ours=True))


def _workshop_account(name: str) -> str:
    """``ws-<workshop>`` of participant ``name`` (already checked against ACCOUNT)."""
    return name.rsplit("-", 1)[0]


def _participant(name: str) -> str:
    """A participant whose association may change: ours, or whose Unix account is gone."""
    if not ACCOUNT.fullmatch(name):
        raise Refused(f"NAME must be a workshop account ws-<workshop>-<n>, not {name!r}")
    try:
        pwd.getpwnam(name)
    except KeyError:
        return name
    return _account(name, ours=True)


def _accounting(conf: str) -> AccountingSync:
    from shopfloor.slurm.accounting import AccountingSync
    from shopfloor.slurm.seam import SlurmSync

    return AccountingSync(SlurmSync(env=slurm_environment(conf)))


def _check_parent(accounting: AccountingSync, account: str) -> bool:
    """True if workshop ``account`` exists (under ``workshops``), False if it does not."""
    parent = accounting.account_parent(account)
    if parent is not None and parent != WORKSHOPS_ACCOUNT:
        raise Refused(f"ACCOUNT {account!r} is not under {WORKSHOPS_ACCOUNT!r}: "
                      "refusing to change it")
    return parent is not None


#: Most participants one ``slurm-associate`` takes (a class joining at once shares a call).
MOST_AT_ONCE = 100
#: Tries to make an association that a check right after does not find.
ASSOCIATE_TRIES = 3


def slurm_associate(names: Sequence[str], conf: str = "") -> None:
    """Associate each participant with its workshop's account, and check that Slurm kept it.

    ``sacctmgr -i add user`` run at the same moment as another one can answer success and
    keep nothing (Slurm 22.05: 6 of 8 such adds lost on the demo cluster): every name is
    looked up afterwards and added again, one by one, until Slurm shows it.
    """
    by_account: dict[str, list[str]] = {}
    for name in names:
        by_account.setdefault(_workshop_account(_account(name, ours=True)), []).append(name)
    with _accounting_lock():
        _associate(by_account, _accounting(conf))


def _associate(by_account: dict[str, list[str]], accounting: AccountingSync) -> None:
    for account, members in by_account.items():
        if not _check_parent(accounting, account):
            if accounting.account_parent(WORKSHOPS_ACCOUNT) is None:
                accounting.add_account(WORKSHOPS_ACCOUNT,
                                       description="Workshops (one account each)")
            accounting.add_account(account, parent=WORKSHOPS_ACCOUNT,
                                   description=f"workshop {account[3:]}")
        missing, problem = members, ""
        for _attempt in range(ASSOCIATE_TRIES):
            try:
                if len(missing) == len(members):
                    accounting.add_user(missing, account, default_account=True)
                else:
                    for name in missing:
                        accounting.add_user(name, account, default_account=True)
            except RuntimeError as exc:  # SlurmError; what Slurm kept is checked below
                problem = f": {exc}"
            missing = _not_associated(accounting, missing, account)
            if not missing:
                break
        else:
            raise RuntimeError(f"Slurm did not keep the association of {', '.join(missing)} "
                               f"with {account} after {ASSOCIATE_TRIES} tries{problem}")


#: Held while this helper changes Slurm accounting, so two helpers never add at once. In
#: ``/run``, which only root may write: no user can make the file or a link in its place.
ACCOUNTING_LOCK = "/run/shopfloor-privileged-accounting.lock"


@contextlib.contextmanager
def _accounting_lock(path: str = ACCOUNTING_LOCK) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (made 0600, never through a link); none without
    the folder."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _not_associated(accounting: AccountingSync, names: Sequence[str], account: str) -> list[str]:
    """Those of ``names`` without an association with ``account`` as their default."""
    kept = {a.user for a in accounting.associations(names) if a.account == account}
    defaults = accounting.user_defaults()
    return [n for n in names if n not in kept or defaults.get(n) != account]


def slurm_dissociate(name: str, conf: str = "") -> None:
    _accounting(conf).remove_user(_participant(name))


def slurm_remove_account(account: str, conf: str = "") -> None:
    if not RESERVATION.fullmatch(account):
        raise Refused(f"ACCOUNT must be a workshop account ws-<workshop>, not {account!r}")
    accounting = _accounting(conf)
    if _check_parent(accounting, account):
        accounting.remove_account(account)


def reservation_args(action: str, settings: Sequence[str]) -> list[str]:
    """The ``scontrol`` arguments for ``reservation ACTION KEY=VALUE...``, every value checked."""
    if action not in ("create", "update", "delete"):
        raise Refused(f"ACTION must be create, update or delete, not {action!r}")
    pairs = [s.partition("=") for s in settings]
    if not pairs or pairs[0][0] != "ReservationName" or not RESERVATION.fullmatch(pairs[0][2]):
        raise Refused("the first setting must be ReservationName=ws-<workshop>")
    seen = set()
    for key, eq, value in pairs[1:]:
        pattern = RESERVATION_KEYS.get(key)
        if not eq or pattern is None or action == "delete":
            raise Refused(f"setting {key!r} is not allowed for reservation {action}")
        if key in seen or not pattern.fullmatch(value):
            raise Refused(f"{key}={value!r} is not an allowed value")
        seen.add(key)
    head = ["create", "reservation"] if action == "create" else [action]
    return ["scontrol", *head, *settings]


def reservation(action: str, *settings: str, conf: str = "") -> None:
    from shopfloor.slurm.seam import SlurmError, SlurmSync

    args = reservation_args(action, settings)
    try:
        sys.stdout.write(SlurmSync(env=slurm_environment(conf)).run(args))
    except SlurmError as exc:
        # The caller's recover() reads Slurm's own words: pass them on unchanged.
        sys.stderr.write(exc.stderr)
        raise SystemExit(exc.returncode or FAILED) from None


_ACCOUNT_VERBS = {
    "create-account": create_account,
    "disable-account": disable_account,
    "delete-account": delete_account,
}
_SLURM_VERBS = {
    "slurm-dissociate": slurm_dissociate,
    "slurm-remove-account": slurm_remove_account,
}
#: The verbs that run Slurm tools, and so the only ones that take ``--slurm-conf``.
SLURM_VERBS = frozenset({*_SLURM_VERBS, "slurm-associate", "reservation"})


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb as root; returns the exit code (2: refused, 4: the system tool failed)."""
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--slurm-conf", metavar="PATH", default=None,
                        help="the cluster's slurm.conf (Slurm verbs only; root-owned, see "
                        "check_slurm_conf)")
    parser.add_argument("verb", choices=[*_ACCOUNT_VERBS, *sorted(SLURM_VERBS)])
    parser.add_argument("args", nargs="*")
    ns = parser.parse_args(argv)
    if os.geteuid() != 0:
        print(f"{COMMAND}: must run as root (through sudo)", file=sys.stderr)
        return FAILED
    os.umask(0o077)
    try:
        conf = ""
        if ns.slurm_conf is not None:
            if ns.verb not in SLURM_VERBS:
                raise Refused(f"--slurm-conf is only for the Slurm verbs, not {ns.verb}")
            conf = check_slurm_conf(ns.slurm_conf)
        if ns.verb == "reservation":
            if not ns.args:
                raise Refused("reservation needs an ACTION")
            reservation(ns.args[0], *ns.args[1:], conf=conf)
        elif ns.verb == "slurm-associate":
            if not 1 <= len(ns.args) <= MOST_AT_ONCE:
                raise Refused(f"slurm-associate takes 1 to {MOST_AT_ONCE} NAMEs")
            if len(set(ns.args)) != len(ns.args):
                raise Refused("slurm-associate: a NAME is given twice")
            slurm_associate(ns.args, conf)
        elif len(ns.args) != 1:
            raise Refused(f"{ns.verb} takes exactly one NAME")
        elif ns.verb in _SLURM_VERBS:
            _SLURM_VERBS[ns.verb](ns.args[0], conf)
        else:
            _ACCOUNT_VERBS[ns.verb](ns.args[0])
    except Refused as exc:
        print(f"{COMMAND}: {exc}", file=sys.stderr)
        return BAD_ARGUMENT
    except (OSError, RuntimeError) as exc:  # RuntimeError: SlurmError, with Slurm's words
        print(f"{COMMAND}: {exc}", file=sys.stderr)
        return FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
