"""The privileged steps of a workshop: Unix accounts, the Slurm reservation, material, exports.

Run by the ``workshop`` service and the hub (root, or the service user ``hub.service_user``).
Accounts are made and removed by the one privileged helper (:mod:`shopfloor.ops.privileged`,
which accepts only ``ws-<workshop>-<n>``). Anything that reads or writes a user's home runs
*as that user* through ``shopfloor-as-user`` (:func:`shopfloor.userfiles.helper_argv`), so a
trainer's or participant's symlinks cannot steer a privileged write. Scheduler commands are
the typed methods of :class:`shopfloor.slurm.seam.Slurm`; no Slurm command line is spelled here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import shlex
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from shopfloor.ops.privileged import WORKSHOPS_ACCOUNT, privileged_argv
from shopfloor.slurm.seam import Slurm, SlurmError
from shopfloor.userfiles import helper_argv, sudo_argv
from shopfloor.workshops.model import GIT_URL, WorkshopSpec, reservation_name

log = logging.getLogger("shopfloor.workshops.client")
#: The most bytes :func:`read_as` returns (an exported archive of one participant's home).
MAX_READ = 1 << 30


class OperationError(RuntimeError):
    """A system command failed; ``str()`` says what and how it failed (for admins' logs)."""


async def run(cmd: Sequence[str], *, stdin: bytes | None = None, timeout: float = 120,
              what: str = "") -> bytes:
    """Run a command; return stdout or raise :class:`OperationError` with its stderr."""
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise OperationError(f"{what or cmd[0]}: timed out after {timeout:.0f} s") from None
    if proc.returncode:
        raise OperationError(
            f"{what or cmd[0]} failed ({shlex.join(cmd)} exited {proc.returncode}): "
            f"{err.decode(errors='replace').strip()[-500:]}")
    return out


def unix_user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def home_of(name: str) -> str:
    return pwd.getpwnam(name).pw_dir


# -- accounts -------------------------------------------------------------------------------


async def create_account(username: str) -> str:
    """Create the Unix account (private home) and return its generated password."""
    if unix_user_exists(username):
        raise OperationError(f"the Unix account {username} already exists")
    out = await run(privileged_argv("create-account", username), what="create-account")
    return out.decode().strip()


async def associate_participants(usernames: Sequence[str], *, slurm_conf: str = "") -> None:
    """Let new participants charge their workshop's Slurm account (``ws-<workshop>``, made on
    first use under ``workshops``) by default; Slurm refuses jobs without an association.

    Called after the Unix accounts exist: slurmctld learns a user's uid from it. Changing
    associations needs a Slurm administrator, so it goes through the privileged helper (one
    run for all of ``usernames``, which checks that Slurm kept each one), which reaches the
    cluster of ``slurm_conf`` (``slurm.conf_file``; empty: the default). Never run two at
    once: ``sacctmgr`` adds at the same moment can be lost (the workshop service queues them).
    """
    await run(privileged_argv("slurm-associate", *usernames, slurm_conf=slurm_conf),
              what="slurm-associate")


async def remove_participant_association(username: str, *, slurm_conf: str = "") -> None:
    """Remove a participant's associations (at the end of the workshop)."""
    await run(privileged_argv("slurm-dissociate", username, slurm_conf=slurm_conf),
              what="slurm-dissociate")


async def remove_workshop_account(workshop: str, *, slurm_conf: str = "") -> None:
    """Remove the workshop's Slurm account once its participants are gone (history stays)."""
    await run(privileged_argv("slurm-remove-account", reservation_name(workshop),
                              slurm_conf=slurm_conf),
              what="slurm-remove-account")


async def disable_account(username: str) -> None:
    """Lock the password and expire the account; the home folder stays."""
    if unix_user_exists(username):
        await run(privileged_argv("disable-account", username), what="disable-account")


async def delete_account(username: str) -> None:
    """Remove the Unix account and its home (after its work was exported)."""
    if unix_user_exists(username):
        await run(privileged_argv("delete-account", username), what="delete-account")


# -- the reservation ------------------------------------------------------------------------


async def create_reservation(slurm: Slurm, spec: WorkshopSpec, users: Sequence[str]) -> str:
    """``scontrol create reservation`` for the workshop window; returns its name.

    By cores (``CoreCnt``) the rest of a node stays shared. Slurm is first asked for cores
    that no job holds during the window, so participants start at once beside whatever
    else runs on the partition. Only when there are not enough such cores is the
    reservation made with ``IGNORE_JOBS`` (it may then include busy cores, and participants
    wait until those jobs end by their walltime). Either way it ends up with ``IGNORE_JOBS``:
    without it Slurm checks the nodes again at every update and refuses to add a
    participant ("Requested nodes are busy") once other jobs run there.
    """
    name = reservation_name(spec.name)

    async def create(flags: Sequence[str] = ()) -> None:
        await slurm.create_reservation(
            name, start=None if spec.start <= datetime.now() else spec.start, end=spec.end,
            partition=spec.partition, users=users, cores=spec.cores, nodes=spec.nodes,
            flags=flags)

    try:
        await create()
    except SlurmError as exc:
        size = f"CoreCnt={spec.cores}" if spec.cores else f"NodeCnt={spec.nodes}"
        log.warning("workshop %s: no free %s on %s (%s); reserving over running jobs",
                    spec.name, size, spec.partition, exc.slurm_message)
        await create(["IGNORE_JOBS"])
        return name
    try:
        await slurm.set_reservation_flags(name, ["IGNORE_JOBS"])
    except SlurmError:
        await delete_reservation(slurm, name)
        raise
    return name


async def add_reservation_user(slurm: Slurm, reservation: str, username: str) -> None:
    """Let ``username`` into the workshop's reservation."""
    await slurm.add_reservation_user(reservation, username)


async def delete_reservation(slurm: Slurm, reservation: str) -> None:
    """Release the reservation; one that is already gone counts as released."""
    await slurm.delete_reservation(reservation)


async def cancel_jobs(slurm: Slurm, username: str, wait: float = 20) -> None:
    """Cancel every job of ``username`` and wait until Slurm lists none."""
    await slurm.cancel_jobs_of(username)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while loop.time() < deadline:
        jobs = await slurm.squeue(user=username)
        if not [j for j in jobs.values() if not j.is_finished]:
            return
        await asyncio.sleep(0.5)


# -- material -------------------------------------------------------------------------------


async def place_material(username: str, source: str, folder: str) -> bool:
    """Copy (or ``git clone``) ``source`` into ``~/<folder>`` as the user, once.

    Returns False when the folder was already there (an earlier start placed it, or the
    participant made their own): nothing is overwritten.
    """
    dest = Path(home_of(username)) / folder
    # A shortcut for a hub that can look into the 0700 home (root); a service user cannot
    # (lexists is False then) and the helper, as the user, tells "present" from "placed".
    if os.path.lexists(dest):
        return False
    if not GIT_URL.match(source):
        source = source.rstrip("/") or "/"
    out = await run(sudo_argv(username, helper_argv("place-material", str(dest), source,
                                                    timeout=110)),
                    timeout=120, what=f"placing material for {username}")
    return out.strip() == b"placed"


# -- exports --------------------------------------------------------------------------------


async def write_as(user: str, path: Path, data_cmd: Sequence[str] | None = None,
                   data: bytes | None = None) -> None:
    """Write ``data`` (or the stdout of ``data_cmd``) to ``path`` as ``user``.

    Written to ``path.part`` first and renamed, so an interrupted export leaves no archive
    that looks complete. Private to ``user``: folders it makes are 0700, the file is 0600
    (``shopfloor-as-user write``), whatever the user's own umask.
    """
    writer = sudo_argv(user, helper_argv("write", str(path), timeout=3600))
    if data_cmd is None:
        await run(writer, stdin=data or b"", what=f"writing {path}")
        return
    read_fd, write_fd = os.pipe()
    producer = await asyncio.create_subprocess_exec(
        *data_cmd, stdout=write_fd, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL)
    os.close(write_fd)
    consumer = await asyncio.create_subprocess_exec(
        *writer, stdin=read_fd, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    os.close(read_fd)
    (_, perr), (_, cerr) = await asyncio.gather(producer.communicate(), consumer.communicate())
    if producer.returncode or consumer.returncode:
        raise OperationError(
            f"exporting to {path} failed: {(perr or cerr).decode(errors='replace')[-300:]}")


async def private_folder(user: str, folder: Path) -> None:
    """Make ``folder`` (and missing parents) as ``user``, and make ``folder`` itself 0700.

    Exports hold participants' whole homes: only the trainer who ended the workshop (and
    root) may read them, even where an older export folder was made 0755.
    """
    await run(sudo_argv(user, helper_argv("mkdir-private", str(folder))),
              what=f"making {folder} private")


async def read_as(user: str, path: Path, timeout: float = 300) -> bytes:
    """The bytes of ``path``, read as ``user`` (the hub never opens a path a user controls)."""
    return await run(sudo_argv(user, helper_argv("read", str(path), str(MAX_READ),
                                                 timeout=timeout)),
                     timeout=timeout + 5, what=f"reading {path}")


async def export_home(username: str, trainer: str, target: Path) -> Path:
    """A ``.tar.gz`` of the participant's home (caches left out), read as the participant
    and written as the trainer: no privileged process opens either home."""
    archive = target / f"{username}.tar.gz"
    await write_as(trainer, archive, data_cmd=sudo_argv(
        username, helper_argv("archive-home", timeout=3600)))
    return archive


__all__ = [
    "WORKSHOPS_ACCOUNT",
    "OperationError",
    "add_reservation_user",
    "cancel_jobs",
    "create_account",
    "create_reservation",
    "delete_account",
    "delete_reservation",
    "disable_account",
    "export_home",
    "place_material",
    "private_folder",
    "read_as",
    "write_as",
]
