"""The one seam between Shopfloor and the Slurm command-line tools.

Every scheduler command (``sbatch``, ``squeue``, ``scancel``, ``sinfo``, ``scontrol``) is
spelled here, once, as a :class:`SlurmCall` (the command line and the parser of its answer),
and run by one of two runners with the same typed methods:

* :class:`Slurm`, async, for the hub and its services (:meth:`Slurm.run`);
* :class:`SlurmSync`, blocking, for code in a user's kernel, job-side launchers and setup
  (:meth:`SlurmSync.run`); ``Slurm(...).sync`` is one with the same settings.

Both log the command line and raise :class:`SlurmError` carrying the command, exit code and
Slurm's own words. A command run as another user goes through
:func:`shopfloor.userfiles.sudo_argv`, the one way Shopfloor runs anything as a user. Tests
that need a fake scheduler replace these classes and nothing else; everything else is tested
against the real local cluster.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Generic, TypeVar

from shopfloor.timeutil import parse_walltime
from shopfloor.userfiles import sudo_argv

if TYPE_CHECKING:
    from shopfloor.slurm.reservations import Reservation

T = TypeVar("T")

log = logging.getLogger(__name__)

#: squeue fields we read, in order. ``%B`` is the batch host (first node of the allocation),
#: ``%e`` the end time (start plus time limit while running: when the session is killed).
_SQUEUE_FORMAT = "%i|%T|%r|%B|%N|%S|%u|%P|%j|%Q|%e"
_SQUEUE_KEYS = (
    "job_id", "state", "reason", "batch_host", "nodes", "start", "user", "partition", "name",
    "priority", "end",
)
#: sinfo fields per partition: name, availability, time limit, nodes A/I/O/T, CPUs A/I/O/T,
#: memory per node (MB), generic resources, node count, node names (a hostlist); the default
#: flag is the trailing ``*`` on the name.
_SINFO_FORMAT = "%P|%a|%l|%F|%C|%m|%G|%D|%N"
#: What Slurm's tools print when slurmctld cannot be reached (as opposed to refusing a job).
_UNREACHABLE = (
    "unable to contact slurm controller", "socket timed out", "connection refused",
    "zero bytes were transmitted", "slurm_persist_conn_open", "communication connection failure",
)


class SlurmError(RuntimeError):
    """A Slurm command failed. Carries what an admin needs to see, and Slurm's own words."""

    def __init__(self, cmd: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.cmd = list(cmd)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr.strip()
        super().__init__(
            f"{shlex.join(self.cmd)} exited with {returncode}: {self.stderr or stdout.strip()}"
        )

    @property
    def slurm_message(self) -> str:
        """Slurm's own message, without the ``sbatch: error:`` prefix, for users."""
        lines = [ln.split("error:", 1)[-1].strip() for ln in self.stderr.splitlines()]
        return "; ".join(ln for ln in lines if ln) or f"exit code {self.returncode}"

    @property
    def unreachable(self) -> bool:
        """True when slurmctld did not answer (worth retrying), not when it refused."""
        text = self.stderr.lower()
        return self.returncode == -1 or any(words in text for words in _UNREACHABLE)


#: Told of every command :class:`Slurm` runs: (tool, seconds it took, the error or None).
SlurmObserver = Callable[[str, float, SlurmError | None], None]


@dataclass(frozen=True)
class JobInfo:
    """One job as ``squeue`` reports it."""

    job_id: str
    state: str
    reason: str
    batch_host: str
    nodes: str
    start: datetime | None
    user: str
    partition: str
    name: str
    priority: int = 0
    #: When Slurm ends the job (running: start + time limit); None if Slurm does not know.
    end: datetime | None = None

    @property
    def is_pending(self) -> bool:
        return self.state in {"PENDING", "CONFIGURING", "REQUEUED", "RESIZING"}

    @property
    def is_running(self) -> bool:
        return self.state in {"RUNNING", "COMPLETING"}

    @property
    def is_finished(self) -> bool:
        return not (self.is_pending or self.is_running or self.state == "SUSPENDED")


@dataclass(frozen=True)
class PartitionInfo:
    """Live state of one partition, from ``sinfo``."""

    name: str
    default: bool
    up: bool
    max_time_minutes: int | None
    nodes_allocated: int
    nodes_idle: int
    nodes_other: int
    nodes_total: int
    cpus_allocated: int
    cpus_idle: int
    cpus_other: int
    cpus_total: int
    memory_per_node_mb: int
    gpus_per_node: int
    gres: str
    extra: dict[str, str] = field(default_factory=dict)
    #: Names of the partition's nodes (``sinfo``'s hostlist, expanded).
    node_names: frozenset[str] = frozenset()


def parse_slurm_time(value: str) -> datetime | None:
    """Parse Slurm's ``YYYY-MM-DDTHH:MM:SS``; ``N/A``, ``Unknown`` and blanks are ``None``."""
    value = value.strip()
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def parse_time_limit(value: str) -> int | None:
    """Slurm time limits (``30:00``, ``4:00:00``, ``1-00:00:00``, ``infinite``) in minutes.

    The same grammar as every walltime users write (:func:`~shopfloor.timeutil.parse_walltime`).
    """
    value = value.strip()
    if value in {"infinite", "UNLIMITED", "NONE", "n/a", ""}:
        return None
    try:
        return parse_walltime(value)
    except ValueError:
        return None


_HOSTLIST_ITEM = re.compile(r"([^,\[]+)(?:\[([^\]]+)\])?([^,]*)")


def expand_hostlist(hostlist: str) -> frozenset[str]:
    """Node names in a Slurm hostlist: ``node[1-3,5],gpu1`` -> node1, node2, node3, node5, gpu1.

    Zero-padded ranges keep their width (``n[01-02]`` -> n01, n02); ``(null)`` is empty.
    """
    names: set[str] = set()
    if hostlist.strip() in {"", "(null)"}:
        return frozenset()
    for prefix, ranges, suffix in _HOSTLIST_ITEM.findall(hostlist.strip()):
        if not ranges:
            names.add(prefix + suffix)
            continue
        for part in ranges.split(","):
            low, _, high = part.partition("-")
            width = len(low)
            for number in range(int(low), int(high or low) + 1):
                names.add(f"{prefix}{number:0{width}d}{suffix}")
    return frozenset(names)


def gpus_in_gres(gres: str) -> int:
    """Count GPUs in a GRES string such as ``gpu:2``, ``gpu:a100:4(S:0-1)`` or ``(null)``."""
    total = 0
    for item in gres.split(","):
        item = item.split("(", 1)[0]
        parts = item.split(":")
        if parts[0] == "gpu" and len(parts) >= 2 and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def parse_squeue(text: str) -> dict[str, JobInfo]:
    """Parse ``squeue -h -o`` output in :data:`_SQUEUE_FORMAT`, keyed by job id."""
    jobs: dict[str, JobInfo] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) != len(_SQUEUE_KEYS):
            continue
        raw = dict(zip(_SQUEUE_KEYS, parts, strict=True))
        jobs[raw["job_id"]] = JobInfo(
            job_id=raw["job_id"],
            state=raw["state"],
            reason=raw["reason"],
            batch_host=raw["batch_host"],
            nodes=raw["nodes"],
            start=parse_slurm_time(raw["start"]),
            user=raw["user"],
            partition=raw["partition"],
            name=raw["name"],
            priority=int(raw["priority"]) if raw["priority"].isdigit() else 0,
            end=parse_slurm_time(raw["end"]),
        )
    return jobs


def parse_sinfo(text: str) -> list[PartitionInfo]:
    """Parse ``sinfo -h -o`` output in :data:`_SINFO_FORMAT` (one line per partition)."""
    merged: dict[str, PartitionInfo] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) != 9:
            continue
        name, avail, limit, nodes, cpus, mem, gres, _count, node_names = parts
        default = name.endswith("*")
        name = name.rstrip("*")
        na, ni, no, nt = (int(x) for x in nodes.split("/"))
        ca, ci, co, ct = (int(x) for x in cpus.split("/"))
        memory = int(mem.rstrip("+")) if mem.rstrip("+").isdigit() else 0
        info = PartitionInfo(
            name=name, default=default, up=avail == "up",
            max_time_minutes=parse_time_limit(limit),
            nodes_allocated=na, nodes_idle=ni, nodes_other=no, nodes_total=nt,
            cpus_allocated=ca, cpus_idle=ci, cpus_other=co, cpus_total=ct,
            memory_per_node_mb=memory, gpus_per_node=gpus_in_gres(gres), gres=gres,
            node_names=expand_hostlist(node_names)
            | (merged[name].node_names if name in merged else frozenset()),
        )
        merged[name] = info
    return list(merged.values())


def parse_scontrol_nodes(text: str) -> dict[str, dict[str, str]]:
    """Parse ``scontrol -o show node`` (one node per line of ``Key=Value`` pairs)."""
    nodes: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        fields: dict[str, str] = {}
        for token in line.split():
            if "=" in token:
                key, value = token.split("=", 1)
                fields[key] = value
        if "NodeName" in fields:
            nodes[fields["NodeName"]] = fields
    return nodes



def parse_node_values(text: str) -> dict[str, str]:
    """Parse ``sinfo -h -N -o '%N|<field>'``: node name -> that field (``idle``, ``down*``...)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        name, _, value = line.partition("|")
        if name.strip():
            values[name.strip()] = value.strip()
    return values


def parse_pending(text: str) -> dict[str, list[str]]:
    """Parse ``squeue -h -o '%P|%i'``: job ids per partition, in the order listed."""
    queues: dict[str, list[str]] = {}
    for line in text.split():
        parts, _, job_id = line.partition("|")
        for part in parts.split(","):
            queues.setdefault(part, []).append(job_id)
    return queues


def _slurm_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def _ignore(_: str) -> None:
    return None


# -- the dialect: every command line Shopfloor gives Slurm, and how its answer is read ------


@dataclass(frozen=True)
class SlurmCall(Generic[T]):
    """One Slurm command and how to read its answer; run by :class:`Slurm` or :class:`SlurmSync`.

    ``recover`` turns an error that is in fact an answer (``squeue -j`` of jobs Slurm forgot)
    into a result; it re-raises anything else.
    """

    args: tuple[str, ...]
    parse: Callable[[str], T]
    user: str | None = None
    stdin: str | None = None
    secret_env: Mapping[str, str] | None = None
    umask: int = -1
    recover: Callable[[SlurmError], T] | None = None


def _parse_job_id(out: str) -> str:
    job_id = out.strip().split(";", 1)[0]
    if not job_id.isdigit():
        raise SlurmError(["sbatch", "--parsable"], 0, out, "sbatch printed no job id")
    return job_id


def sbatch_call(
    script: str, *, user: str | None = None, secret_env: Mapping[str, str] | None = None
) -> SlurmCall[str]:
    """Submit ``script`` on stdin; the answer is the job id.

    The job gets only the environment its script sets, plus ``secret_env``, which travels by
    name (``--export=NAME``), never in the script or on a command line. sbatch runs with
    umask 077: Slurm gives the job the submitter's umask, so the job's output file (which
    Slurm creates) and what the job writes are private to the user.
    """
    names = sorted(secret_env or {})
    export = "--export=" + (",".join(names) if names else "NONE")
    return SlurmCall(("sbatch", "--parsable", export), _parse_job_id, user=user, stdin=script,
                     secret_env=secret_env, umask=0o077)


def squeue_call(
    job_ids: Sequence[str] | None = None, *, user: str | None = None
) -> SlurmCall[dict[str, JobInfo]]:
    """All jobs Slurm still knows (every state), optionally only ``job_ids`` or ``user``'s."""
    args = ["squeue", "-h", "--states=all", "-o", _SQUEUE_FORMAT]
    if job_ids:
        args += ["-j", ",".join(job_ids)]
    if user:
        args += ["-u", user]

    def forgotten(exc: SlurmError) -> dict[str, JobInfo]:
        # squeue -j fails when every listed job has left Slurm's memory.
        if job_ids and "Invalid job id" in exc.stderr:
            return {}
        raise exc

    return SlurmCall(tuple(args), parse_squeue, recover=forgotten)


def scancel_call(job_id: str, *, user: str | None = None) -> SlurmCall[None]:
    return SlurmCall(("scancel", job_id), _ignore, user=user)


def cancel_jobs_of_call(owner: str, names: Sequence[str] | None = None) -> SlurmCall[None]:
    """Cancel every job of ``owner``, or only those named one of ``names``."""
    args = ["scancel", "-u", owner]
    if names is not None:
        args[1:1] = ["--name", ",".join(names)]
    # As the owner: an unprivileged hub may cancel only through sudo (its sudoers rule).
    return SlurmCall(tuple(args), _ignore, user=owner)


def partitions_call() -> SlurmCall[list[PartitionInfo]]:
    return SlurmCall(("sinfo", "-h", "-o", _SINFO_FORMAT), parse_sinfo)


def pending_jobs_call() -> SlurmCall[dict[str, list[str]]]:
    """Pending job ids per partition, highest priority first (queue order)."""
    return SlurmCall(("squeue", "-h", "--states=PENDING", "--sort=-p,i", "-o", "%P|%i"),
                     parse_pending)


def nodes_call(node: str | None = None, *, details: bool = False
               ) -> SlurmCall[dict[str, dict[str, str]]]:
    """``scontrol show node`` as fields per node; ``details`` adds ``GresUsed`` (``-d``)."""
    args = ["scontrol", *(["-d"] if details else []), "-o", "show", "node"]
    return SlurmCall((*args, *([node] if node else [])), parse_scontrol_nodes)


def node_states_call(field_code: str = "%t") -> SlurmCall[dict[str, str]]:
    """One ``sinfo`` field per node: ``%t`` the compact state, ``%E`` why it is down."""
    return SlurmCall(("sinfo", "-h", "-N", "-o", f"%N|{field_code}"), parse_node_values)


def reservations_call() -> SlurmCall[dict[str, Reservation]]:
    def parse(text: str) -> dict[str, Reservation]:
        # reservations imports this module (hostlists): import its parser when first used.
        from shopfloor.slurm.reservations import parse_reservations

        return parse_reservations(text)

    return SlurmCall(("scontrol", "-o", "show", "reservation"), parse)


def create_reservation_call(
    name: str, *, start: datetime | None, end: datetime, partition: str, users: Sequence[str],
    cores: int = 0, nodes: int = 0, flags: Sequence[str] = (),
) -> SlurmCall[None]:
    """A reservation of ``cores`` (``CoreCnt``) or else ``nodes`` from ``start`` (None: now)."""
    size = f"CoreCnt={cores}" if cores else f"NodeCnt={nodes}"
    args = [
        "scontrol", "create", "reservation", f"ReservationName={name}",
        f"StartTime={'now' if start is None else _slurm_time(start)}",
        f"EndTime={_slurm_time(end)}", f"PartitionName={partition}", size,
        f"Users={','.join(users)}",
    ]
    if flags:
        args.append(f"Flags={','.join(flags)}")
    return SlurmCall(tuple(args), _ignore)


def update_reservation_call(name: str, *settings: str) -> SlurmCall[None]:
    """``scontrol update`` of reservation ``name`` with ``Key=Value`` settings."""
    return SlurmCall(("scontrol", "update", f"ReservationName={name}", *settings), _ignore)


def delete_reservation_call(name: str) -> SlurmCall[None]:
    """Release reservation ``name``; one that is already gone counts as released."""

    def gone(exc: SlurmError) -> None:
        if "invalid" not in exc.stderr.lower() and "not found" not in exc.stderr.lower():
            raise exc

    return SlurmCall(("scontrol", "delete", f"ReservationName={name}"), _ignore, recover=gone)


# -- the two runners ------------------------------------------------------------------------


class _Runner:
    """What both runners share: where the tools are, their environment, the command line."""

    def __init__(
        self,
        *,
        bin_dir: str = "",
        env: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.bin_dir = bin_dir
        self.env = dict(env) if env is not None else None
        self.timeout = timeout
        #: Commands run so far, by tool name (benchmarks and tests count them).
        self.calls: dict[str, int] = {}

    def command(
        self, args: Sequence[str], user: str | None = None, keep_env: Sequence[str] = ()
    ) -> list[str]:
        """The full command line for ``args`` (``args[0]`` is the Slurm tool's name).

        ``user`` runs it as that Unix user (:func:`~shopfloor.userfiles.sudo_argv`), which keeps
        job submission under the user's own identity. ``keep_env`` names variables that must
        reach the command through ``sudo``: they are passed by name (``--preserve-env``), so
        their values never appear in a command line. A hub that is not root changes
        reservations (which need a Slurm operator) through ``shopfloor-privileged``.
        """
        if args[0] == "scontrol" and list(args[1:2]) in (["create"], ["update"], ["delete"]) \
                and "reservation" in " ".join(args).lower() and os.geteuid() != 0:
            from shopfloor.ops.privileged import privileged_argv

            action = args[1]
            return privileged_argv("reservation", action,
                                   *args[3 if action == "create" else 2:],
                                   slurm_conf=(self.env or {}).get("SLURM_CONF", ""))
        tool = os.path.join(self.bin_dir, args[0]) if self.bin_dir else args[0]
        cmd = [tool, *args[1:]]
        if user is not None and user != pwd.getpwuid(os.geteuid()).pw_name:
            cmd = sudo_argv(user, cmd, preserve_env=keep_env)
        return cmd

    def _environ(self, extra: Mapping[str, str] | None = None) -> dict[str, str] | None:
        if self.env is None and not extra:
            return None
        return {**os.environ, **(self.env or {}), **(extra or {})}

    def _start(self, args: Sequence[str], user: str | None,
               secret_env: Mapping[str, str] | None) -> list[str]:
        cmd = self.command(args, user, keep_env=tuple(secret_env or ()))
        self.calls[args[0]] = self.calls.get(args[0], 0) + 1
        log.debug("slurm: %s", shlex.join(cmd))
        return cmd

    def _not_found(self, cmd: Sequence[str]) -> SlurmError:
        return SlurmError(cmd, 127, "", f"{cmd[0]} not found: is Slurm installed?")

    def _timed_out(self, cmd: Sequence[str]) -> SlurmError:
        return SlurmError(cmd, -1, "", f"timed out after {self.timeout:.0f} s")


class Slurm(_Runner):
    """Async access to the Slurm commands, as the hub (root) or as a user.

    ``bin_dir`` is the folder of the tools (empty: ``$PATH``), ``env`` what to add to their
    environment (e.g. ``SLURM_CONF``), ``timeout`` the most seconds one command may take.
    """

    def __init__(
        self,
        *,
        bin_dir: str = "",
        env: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(bin_dir=bin_dir, env=env, timeout=timeout)
        self._sync: SlurmSync | None = None
        #: Told of every command run: (tool, seconds, the error or None). The hub sets it to
        #: ``shopfloor.extensions.metrics.observe_slurm_command``; the seam imports no metrics.
        self.observer: SlurmObserver | None = None

    @property
    def sync(self) -> SlurmSync:
        """The blocking runner with the same settings (and the same :attr:`calls` count)."""
        if self._sync is None:
            self._sync = SlurmSync(bin_dir=self.bin_dir, env=self.env, timeout=self.timeout)
            self._sync.calls = self.calls
        return self._sync

    async def run(
        self,
        args: Sequence[str],
        *,
        user: str | None = None,
        stdin: str | None = None,
        secret_env: Mapping[str, str] | None = None,
        umask: int = -1,
    ) -> str:
        """Run one Slurm command; return its stdout or raise :class:`SlurmError`.

        ``secret_env`` is added to the command's environment (never to its arguments or logs).
        ``umask`` (if not -1) is the command's umask; ``sudo`` keeps a stricter one.
        """
        started = time.monotonic()
        error: SlurmError | None = None
        try:
            return await self._run(args, user, stdin, secret_env, umask)
        except SlurmError as exc:
            error = exc
            raise
        finally:
            if self.observer is not None:
                self.observer(args[0], time.monotonic() - started, error)

    async def _run(self, args: Sequence[str], user: str | None, stdin: str | None,
                   secret_env: Mapping[str, str] | None, umask: int) -> str:
        cmd = self._start(args, user, secret_env)
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._environ(secret_env),
                start_new_session=True,
                umask=umask,
            )
        except FileNotFoundError as exc:
            raise self._not_found(cmd) from exc
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(stdin.encode() if stdin is not None else None), self.timeout
            )
        except TimeoutError as exc:
            proc.kill()
            await proc.wait()
            raise self._timed_out(cmd) from exc
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        if proc.returncode != 0:
            raise SlurmError(cmd, proc.returncode or 0, stdout, stderr)
        return stdout

    def run_sync(self, args: Sequence[str], *, user: str | None = None) -> str:
        """Blocking :meth:`run`, for the command line and setup code (:meth:`SlurmSync.run`)."""
        return self.sync.run(args, user=user)

    async def call(self, call: SlurmCall[T]) -> T:
        """Run ``call`` and read its answer."""
        try:
            out = await self.run(call.args, user=call.user, stdin=call.stdin,
                                 secret_env=call.secret_env, umask=call.umask)
        except SlurmError as exc:
            if call.recover is None:
                raise
            return call.recover(exc)
        return call.parse(out)

    # -- typed commands (spelled once, in the *_call functions above) -----------------------

    async def sbatch(self, script: str, *, user: str | None = None,
                     secret_env: Mapping[str, str] | None = None) -> str:
        """Submit ``script`` (given on stdin) and return the job id (see :func:`sbatch_call`)."""
        return await self.call(sbatch_call(script, user=user, secret_env=secret_env))

    async def squeue(self, job_ids: Sequence[str] | None = None, *, user: str | None = None
                     ) -> dict[str, JobInfo]:
        """All jobs Slurm still knows (every state), optionally restricted to ``job_ids``."""
        return await self.call(squeue_call(job_ids, user=user))

    async def scancel(self, job_id: str, *, user: str | None = None) -> None:
        """Cancel job ``job_id`` (as ``user`` if given)."""
        await self.call(scancel_call(job_id, user=user))

    async def cancel_jobs_of(self, owner: str, *, names: Sequence[str] | None = None) -> None:
        """Cancel every job of ``owner`` (only those named one of ``names``, if given)."""
        if names is not None and not names:
            return  # an empty --name would match every job of the user
        await self.call(cancel_jobs_of_call(owner, names))

    async def partitions(self) -> list[PartitionInfo]:
        """Every partition's live state (``sinfo``)."""
        return await self.call(partitions_call())

    async def pending_jobs(self) -> dict[str, list[str]]:
        """Pending job ids per partition, highest priority first (queue order)."""
        return await self.call(pending_jobs_call())

    async def nodes(self, node: str | None = None, *, details: bool = False
              ) -> dict[str, dict[str, str]]:
        """``scontrol show node`` fields by node name (only ``node``'s if given); ``details``
        adds ``GresUsed``."""
        return await self.call(nodes_call(node, details=details))

    async def node_address(self, node: str) -> str:
        """The address to connect to for ``node`` (its ``NodeAddr``; the name if unknown)."""
        return (await self.call(nodes_call(node))).get(node, {}).get("NodeAddr", node)

    async def reservations(self) -> dict[str, Reservation]:
        """Every reservation, by name."""
        return await self.call(reservations_call())

    async def create_reservation(
        self, name: str, *, start: datetime | None, end: datetime, partition: str,
        users: Sequence[str], cores: int = 0, nodes: int = 0, flags: Sequence[str] = (),
    ) -> None:
        """Create reservation ``name`` (see :func:`create_reservation_call`)."""
        await self.call(create_reservation_call(
            name, start=start, end=end, partition=partition, users=users, cores=cores,
            nodes=nodes, flags=flags))

    async def set_reservation_flags(self, name: str, flags: Sequence[str]) -> None:
        """Set the ``Flags`` of reservation ``name``."""
        await self.call(update_reservation_call(name, f"Flags={','.join(flags)}"))

    async def add_reservation_user(self, name: str, user: str) -> None:
        """Let ``user`` into reservation ``name`` too."""
        await self.call(update_reservation_call(name, f"Users+={user}"))

    async def delete_reservation(self, name: str) -> None:
        """Release reservation ``name``; one that is already gone counts as released."""
        await self.call(delete_reservation_call(name))


class SlurmSync(_Runner):
    """Blocking access to the Slurm commands: the typed methods of :class:`Slurm`, no event loop.

    For code that is not async: a user's kernel (sessions, batch runs, Ray clusters), the
    job-side launchers and the embedded cluster's setup. Same arguments as :class:`Slurm`.
    """

    def run(
        self,
        args: Sequence[str],
        *,
        user: str | None = None,
        stdin: str | None = None,
        secret_env: Mapping[str, str] | None = None,
        umask: int = -1,
    ) -> str:
        """Run one Slurm command; return its stdout or raise :class:`SlurmError`."""
        cmd = self._start(args, user, secret_env)
        try:
            proc = subprocess.run(
                cmd, input=stdin, stdin=subprocess.DEVNULL if stdin is None else None,
                capture_output=True, text=True, errors="replace", env=self._environ(secret_env),
                timeout=self.timeout, check=False, start_new_session=True, umask=umask,
            )
        except FileNotFoundError as exc:
            raise self._not_found(cmd) from exc
        except subprocess.TimeoutExpired as exc:
            raise self._timed_out(cmd) from exc
        if proc.returncode != 0:
            raise SlurmError(cmd, proc.returncode, proc.stdout, proc.stderr)
        return proc.stdout

    def call(self, call: SlurmCall[T]) -> T:
        """Run ``call`` and read its answer."""
        try:
            out = self.run(call.args, user=call.user, stdin=call.stdin,
                           secret_env=call.secret_env, umask=call.umask)
        except SlurmError as exc:
            if call.recover is None:
                raise
            return call.recover(exc)
        return call.parse(out)

    # -- typed commands: the same as Slurm's ------------------------------------------------

    def sbatch(self, script: str, *, user: str | None = None,
               secret_env: Mapping[str, str] | None = None) -> str:
        """Submit ``script`` (given on stdin) and return the job id (see :func:`sbatch_call`)."""
        return self.call(sbatch_call(script, user=user, secret_env=secret_env))

    def squeue(self, job_ids: Sequence[str] | None = None, *, user: str | None = None
               ) -> dict[str, JobInfo]:
        """All jobs Slurm still knows (every state), optionally restricted to ``job_ids``."""
        return self.call(squeue_call(job_ids, user=user))

    def queue(self) -> list[JobInfo]:
        """The queue for expected waits: every job (``HubSlurm`` gives others' anonymously)."""
        return list(self.squeue().values())

    def scancel(self, job_id: str, *, user: str | None = None) -> None:
        """Cancel job ``job_id`` (as ``user`` if given)."""
        self.call(scancel_call(job_id, user=user))

    def cancel_jobs_of(self, owner: str, *, names: Sequence[str] | None = None) -> None:
        """Cancel every job of ``owner`` (only those named one of ``names``, if given)."""
        if names is not None and not names:
            return  # an empty --name would match every job of the user
        self.call(cancel_jobs_of_call(owner, names))

    def partitions(self) -> list[PartitionInfo]:
        """Every partition's live state (``sinfo``)."""
        return self.call(partitions_call())

    def nodes(self, node: str | None = None, *, details: bool = False
              ) -> dict[str, dict[str, str]]:
        """``scontrol show node`` fields by node name (only ``node``'s if given); ``details``
        adds ``GresUsed``."""
        return self.call(nodes_call(node, details=details))

    def node_address(self, node: str) -> str:
        """The address to connect to for ``node`` (its ``NodeAddr``; the name if unknown)."""
        return self.call(nodes_call(node)).get(node, {}).get("NodeAddr", node)

    def node_states(self) -> dict[str, str]:
        """Node name -> compact ``sinfo`` state (``idle``, ``down*``, ``inval`` ...)."""
        return self.call(node_states_call("%t"))

    def node_reasons(self) -> dict[str, str]:
        """Node name -> why Slurm set it down, drained or invalid (``none`` if it did not)."""
        return self.call(node_states_call("%E"))

    def resume_node(self, name: str) -> None:
        """Return node ``name`` to service (``scontrol update state=resume``)."""
        self.call(SlurmCall(("scontrol", "update", f"nodename={name}", "state=resume"), _ignore))

    def ping(self) -> None:
        """Raise :class:`SlurmError` unless slurmctld answers."""
        self.call(SlurmCall(("scontrol", "ping"), _ignore))
