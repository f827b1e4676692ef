"""Running as a user, and private files: users' files touched only *as the user*.

:func:`sudo_argv` is the one way Shopfloor runs a command as another Unix user (``sudo -n -u
USER -- argv``, never a shell command line); :func:`run_as_user` and :func:`run_as_user_sync`
run one, bounded in time and output. The Slurm seam, the spawner, the apps and workshop
services all build their command lines with it.

A user controls every path under their home: a job log can be a symlink to the munge key, a
FIFO that blocks whoever opens it, or a device. So the hub (root) makes and reads such files
through ``sudo -n -u USER -- shopfloor-as-user VERB ARGS`` (:func:`helper_argv`, one fixed
command a sudoers rule can name), with the user's own rights, without following a final
symlink, refusing anything but a regular file, bounded in bytes and in time, and never on the
event loop (an async subprocess). The hub's own state (database, log, secrets) is made 0700/0600
with :func:`private_dir` and :func:`private_file`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import NamedTuple

log = logging.getLogger(__name__)


def sudo_argv(user: str, argv: Sequence[str], *, preserve_env: Sequence[str] = ()) -> list[str]:
    """The command line that runs ``argv`` as ``user``: ``sudo -n -u USER -- argv``.

    ``-n`` fails at once where a password would be asked. ``preserve_env`` names variables
    that must reach the command (``--preserve-env=A,B``): passed by name, so their values
    (tokens) never appear in a command line. ``argv`` is never given to a shell.
    """
    if not argv:
        raise ValueError("sudo_argv needs a command to run")
    cmd = ["sudo", "-n", "-u", user]
    if preserve_env:
        cmd.append("--preserve-env=" + ",".join(preserve_env))
    return [*cmd, "--", *argv]


class UserCommand(NamedTuple):
    """What a command run as a user did: exit code, then the tails of stdout and stderr."""

    returncode: int
    stdout: bytes
    stderr: bytes


async def run_as_user(
    user: str, argv: Sequence[str], *, timeout: float = 5.0, max_output: int = 16384,
    stdin: bytes | None = None,
) -> UserCommand:
    """Run ``argv`` as ``user``; return (exit code, stdout, stderr), each at most ``max_output``.

    ``argv`` is a command the hub's sudoers rule names (``shopfloor-as-user``, which keeps its
    own ``--timeout``). One still running after ``timeout`` seconds gets SIGTERM, which sudo
    passes on to it (an unprivileged hub cannot signal the user's process itself), then
    SIGKILL; the exit code is then 137.
    """
    proc = await asyncio.create_subprocess_exec(
        *sudo_argv(user, argv),
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        return UserCommand(137, b"", b"timed out")
    return UserCommand(proc.returncode or 0, out[-max_output:], err[-max_output:])


def run_as_user_sync(
    user: str, argv: Sequence[str], *, timeout: float = 5.0, max_output: int = 16384,
    stdin: bytes | None = None,
) -> UserCommand:
    """Blocking :func:`run_as_user`, for code that has no event loop."""
    proc = subprocess.Popen(
        sudo_argv(user, argv), stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()  # sudo passes SIGTERM on to the user's command
        try:
            proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        return UserCommand(137, b"", b"timed out")
    return UserCommand(proc.returncode, out[-max_output:], err[-max_output:])


async def tail_as_user(
    user: str,
    path: str,
    *,
    lines: int = 15,
    max_bytes: int = 4096,
    timeout: float = 5.0,
    python: str | None = None,
) -> str:
    """The last ``lines`` lines (of the last ``max_bytes`` bytes) of ``path``, read as ``user``.

    Empty when the file is missing, unreadable to the user, not a regular file, a symlink,
    or too slow to read (``shopfloor-as-user tail``). ``python`` is the interpreter of the
    environment whose ``shopfloor-as-user`` runs (default: this one's).
    """
    code, out, err = await run_as_user(
        user, helper_argv("tail", path, str(max_bytes), timeout=timeout, python=python),
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
        user, helper_argv("mkdir-private", path, timeout=timeout), timeout=timeout
    )
    return "" if code == 0 else (err.decode(errors="replace").strip() or f"exit code {code}")


def helper_argv(verb: str, *args: str, timeout: float = 30.0,
                python: str | None = None) -> list[str]:
    """``shopfloor-as-user --timeout T VERB ARGS``: the fixed command the hub runs as a user
    (:mod:`shopfloor.ops.asuser`), from the environment of ``python`` (default: this one)."""
    helper = os.path.join(os.path.dirname(python or sys.executable), "shopfloor-as-user")
    return [helper, "--timeout", f"{timeout:g}", verb, *args]


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


__all__ = [
    "UserCommand",
    "helper_argv",
    "private_dir",
    "private_dir_as_user",
    "private_file",
    "run_as_user",
    "run_as_user_sync",
    "sudo_argv",
    "tail_as_user",
]
