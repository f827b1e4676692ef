"""``shopfloor-as-user``: the few file operations the hub runs *as a user*, as one fixed command.

The hub (and its services) never open a path a user controls with their own rights: they run
``sudo -n -u USER -- <venv>/bin/shopfloor-as-user VERB ARGS``
(:func:`shopfloor.userfiles.helper_argv`). Being one
fixed program, the hub's sudoers rule can name it (``docs/deploy.md``), where a shell command
line or ``python -c`` could not be named without allowing anything. Each verb validates its
arguments and does exactly one thing:

``tail PATH MAX_BYTES``
    the last ``MAX_BYTES`` of a regular file; a symlink, FIFO, socket or device is refused
    (exit 3) before anything is read, and a FIFO never blocks the open;
``read PATH MAX_BYTES``
    at most ``MAX_BYTES + 1`` bytes of a regular file (links are followed, with the user's
    rights: the user could read the target anyway);
``mkdir-private PATH``
    make ``PATH`` and missing parents, and ``PATH`` itself 0700 even if it existed looser;
``write PATH``
    stdin to ``PATH`` (through ``PATH.part``, renamed when complete), 0600 in 0700 folders;
``place-material DEST SOURCE``
    copy a folder (or ``git clone`` a ``*.git`` URL) to ``DEST`` once; prints ``placed`` or
    ``present`` (an earlier copy, or the user's own folder, is never overwritten);
``archive-home``
    a ``.tar.gz`` of the user's own home (caches left out) on stdout.

Exit codes: 0 done, 2 a bad argument (the message names it), 3 not a regular file, 4 the
operation failed (the system's words on stderr), 124 out of time (``--timeout SECONDS``).
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

#: The name of the installed command (``[project.scripts]``), beside the hub's Python.
COMMAND = "shopfloor-as-user"
#: Exit codes, for callers that tell the cases apart.
BAD_ARGUMENT, NOT_REGULAR, FAILED, TIMED_OUT = 2, 3, 4, 124
#: Left out of exported homes: rebuilt on demand, often large, never the participant's work.
ARCHIVE_EXCLUDES = (".cache", ".local/share/jupyter/runtime")


class _Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _absolute(value: str, what: str = "PATH") -> str:
    if not value.startswith("/") or "\0" in value or ".." in Path(value).parts:
        raise _Refused(BAD_ARGUMENT, f"{what} must be an absolute path without '..': {value!r}")
    return os.path.normpath(value)


def _size(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) <= 1 << 30:
        raise _Refused(BAD_ARGUMENT, f"MAX_BYTES must be a number of bytes up to 1 GiB: {value!r}")
    return int(value)


def _open_regular(path: str, *, follow: bool) -> int:
    """A read-only descriptor of the regular file ``path``; FIFOs never block the open."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | (0 if follow else os.O_NOFOLLOW)
    if not follow and not stat.S_ISREG(os.lstat(path).st_mode):
        raise _Refused(NOT_REGULAR, f"{path} is not a regular file")
    fd = os.open(path, flags)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _Refused(NOT_REGULAR, f"{path} is not a regular file")
    return fd


def _copy_out(fd: int, limit: int) -> None:
    left = limit
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 16))
        if not chunk:
            break
        sys.stdout.buffer.write(chunk)
        left -= len(chunk)
    sys.stdout.buffer.flush()


def tail(path: str, max_bytes: str) -> None:
    limit = _size(max_bytes)
    fd = _open_regular(_absolute(path), follow=False)
    try:
        os.lseek(fd, max(0, os.fstat(fd).st_size - limit), os.SEEK_SET)
        _copy_out(fd, limit)
    finally:
        os.close(fd)


def read(path: str, max_bytes: str) -> None:
    limit = _size(max_bytes)
    fd = _open_regular(_absolute(path), follow=True)
    try:
        _copy_out(fd, limit + 1)
    finally:
        os.close(fd)


def mkdir_private(path: str) -> None:
    target = _absolute(path)
    os.makedirs(target, mode=0o700, exist_ok=True)
    info = os.lstat(target)
    if not stat.S_ISDIR(info.st_mode):
        raise _Refused(FAILED, f"{target} is not a folder")
    if info.st_mode & 0o077:
        os.chmod(target, 0o700)


def write(path: str) -> None:
    target = Path(_absolute(path))
    os.makedirs(target.parent, mode=0o700, exist_ok=True)
    part = target.with_name(target.name + ".part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(sys.stdin.buffer, out, 1 << 16)
    os.replace(part, target)


def place_material(dest: str, source: str) -> None:
    from shopfloor.workshops.model import GIT_URL

    target = Path(_absolute(dest, "DEST"))
    if os.path.lexists(target):
        print("present")
        return
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    if GIT_URL.match(source):
        proc = subprocess.run(["git", "clone", "--quiet", "--depth", "1", "--", source, str(tmp)],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              check=False)
        if proc.returncode:
            raise _Refused(FAILED, f"git clone {source} failed: {proc.stderr.strip()[-300:]}")
    else:
        shutil.copytree(_absolute(source, "SOURCE"), tmp, symlinks=True)
    os.rename(tmp, target)
    print("placed")


def archive_home() -> None:
    home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    argv = ["tar", "--create", "--gzip", "--file", "-", "--warning=no-file-changed",
            *(f"--exclude={home.name}/{e}" for e in ARCHIVE_EXCLUDES),
            "-C", str(home.parent), home.name]
    sys.stdout.flush()
    code = subprocess.run(argv, stdin=subprocess.DEVNULL, check=False).returncode
    # tar exits 1 when files changed while it read them (a running session): still an archive.
    if code not in (0, 1):
        raise _Refused(FAILED, f"tar exited {code}")


_VERBS = {
    "tail": (tail, ("PATH", "MAX_BYTES")),
    "read": (read, ("PATH", "MAX_BYTES")),
    "mkdir-private": (mkdir_private, ("PATH",)),
    "write": (write, ("PATH",)),
    "place-material": (place_material, ("DEST", "SOURCE")),
    "archive-home": (archive_home, ()),
}


def _on_alarm(_signum: int, _frame: object) -> None:
    sys.stderr.write("shopfloor-as-user: out of time\n")
    os._exit(TIMED_OUT)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb as whoever runs this (sudo made that the user); returns the exit code."""
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("verb", choices=sorted(_VERBS))
    parser.add_argument("args", nargs="*")
    ns = parser.parse_args(argv)
    func, names = _VERBS[ns.verb]
    if len(ns.args) != len(names):
        print(f"{COMMAND} {ns.verb} takes {' '.join(names) or 'no arguments'}", file=sys.stderr)
        return BAD_ARGUMENT
    os.umask(0o077)
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(max(1, int(ns.timeout)))
    try:
        func(*ns.args)
    except _Refused as exc:
        print(f"{COMMAND}: {exc}", file=sys.stderr)
        return exc.code
    except OSError as exc:
        # The system's words last: callers show what follows the last colon.
        print(f"{COMMAND}: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
