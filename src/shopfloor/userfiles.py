"""Private files: users' files touched only *as the user*, the hub's own kept to itself.

A user controls every path under their home: a job log can be a symlink to the munge key, a
FIFO that blocks whoever opens it, or a device. So the hub (root) makes and reads such files
through ``sudo -n -u USER``, with the user's own rights, without following a final symlink,
refusing anything but a regular file, bounded in bytes and in time, and never on the event
loop (an async subprocess). The hub's own state (database, log, secrets) is made 0700/0600
with :func:`private_dir` and :func:`private_file`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence

log = logging.getLogger(__name__)

#: Reads the last ``limit`` bytes of a regular file given as argv[1], as whoever runs it.
#: ``O_NOFOLLOW`` refuses a symlink, ``O_NONBLOCK`` keeps a FIFO from blocking the open, and
#: the ``fstat`` check refuses FIFOs, sockets and devices before anything is read.
_TAIL_SCRIPT = """
import os, stat, sys
path, limit = sys.argv[1], int(sys.argv[2])
if not stat.S_ISREG(os.lstat(path).st_mode):
    sys.exit(3)
fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
info = os.fstat(fd)
if not stat.S_ISREG(info.st_mode):
    sys.exit(3)
os.lseek(fd, max(0, info.st_size - limit), os.SEEK_SET)
sys.stdout.buffer.write(os.read(fd, limit))
"""


def as_user(user: str, argv: Sequence[str], timeout: float) -> list[str]:
    """``argv`` run as ``user`` (``sudo -n -u``), killed by ``timeout`` seconds."""
    return ["sudo", "-n", "-u", user, "--", "timeout", "-s", "KILL", f"{timeout:g}", *argv]


async def run_as_user(
    user: str, argv: Sequence[str], *, timeout: float = 5.0, max_output: int = 16384
) -> tuple[int, bytes, bytes]:
    """Run ``argv`` as ``user``; return (exit code, stdout, stderr), each at most ``max_output``.

    A command still running after ``timeout`` seconds is killed (exit code 124 or 137).
    """
    proc = await asyncio.create_subprocess_exec(
        *as_user(user, argv, timeout), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout + 5)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return 137, b"", b"timed out"
    return proc.returncode or 0, out[-max_output:], err[-max_output:]


async def tail_as_user(
    user: str,
    path: str,
    *,
    lines: int = 15,
    max_bytes: int = 4096,
    timeout: float = 5.0,
    python: str = sys.executable,
) -> str:
    """The last ``lines`` lines (of the last ``max_bytes`` bytes) of ``path``, read as ``user``.

    Empty when the file is missing, unreadable to the user, not a regular file, a symlink,
    or too slow to read. ``python`` must be runnable by the user.
    """
    code, out, err = await run_as_user(
        user, [python, "-I", "-S", "-c", _TAIL_SCRIPT, path, str(max_bytes)],
        timeout=timeout, max_output=max_bytes,
    )
    if code:
        log.debug("not reading %s as %s (exit %s): %s", path, user, code,
                  err.decode(errors="replace").strip()[-300:])
        return ""
    text = out.decode(errors="replace")
    return "".join(text.splitlines(keepends=True)[-lines:]).strip()


async def private_dir_as_user(user: str, path: str, *, timeout: float = 10.0) -> str:
    """Make ``path`` (and missing parents) as ``user``, mode 0700 even if it exists looser.

    Returns an empty string on success, else what went wrong (for the admin's log).
    """
    code, _, err = await run_as_user(
        user, ["install", "-d", "-m", "0700", "--", path], timeout=timeout
    )
    return "" if code == 0 else (err.decode(errors="replace").strip() or f"exit code {code}")


def private_dir(path: str | os.PathLike[str]) -> None:
    """Create ``path`` (parents as needed) owned by us and mode 0700, tightening it if looser."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    if os.stat(path).st_mode & 0o077:
        os.chmod(path, 0o700)


def private_file(path: str | os.PathLike[str]) -> None:
    """Create ``path`` empty if missing (never through a symlink) and make it mode 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


__all__ = ["private_dir", "private_dir_as_user", "private_file", "run_as_user", "tail_as_user"]
