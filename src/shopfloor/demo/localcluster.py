"""A real multi-node Slurm cluster on this one machine: Shopfloor's embedded default.

Debian's ``slurm-wlm`` and ``munge`` run one ``slurmctld`` and one ``slurmd`` per node, every
node on its own loopback address (``127.0.2.N``) and port, so jobs, partitions, multi-node
``srun`` and (demo) GPUs behave as on a real site. Everything the cluster writes lives under
one state directory; ``/etc/slurm/slurm.conf`` is a symlink to the cluster's config so that
``sinfo``, ``sbatch`` and friends work with no environment variable, for root and users alike.

Typical use (what ``shopfloor cluster up|down|status`` does)::

    cluster = LocalCluster()
    print(cluster.up().table())
    cluster.down()

Scheduler queries go through the seam (:class:`shopfloor.slurm.seam.SlurmSync`); only the
daemons themselves (``slurmctld``, ``slurmd``, ``munged``) are started here with
:mod:`subprocess`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from shopfloor.demo.accounting import LocalAccounting
from shopfloor.slurm.seam import Slurm, SlurmError

log = logging.getLogger(__name__)

#: Where the cluster keeps its state when neither ``state_dir`` nor ``$SHOPFLOOR_STATE_DIR``
#: says otherwise.
DEFAULT_STATE_DIR = Path("/var/lib/shopfloor/cluster")
#: Where Slurm's client tools look for ``slurm.conf`` when ``$SLURM_CONF`` is unset (Debian).
SYSTEM_CONFIG_DIR = Path("/etc/slurm")
#: Debian's munge key, created by the ``munge`` package.
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_RUN_DIR = Path("/run/munge")
MUNGE_LOG = Path("/var/log/munge/munged.log")
#: The first line of every config file we write; also how we recognise our own files.
CONFIG_HEADER = "# Written by shopfloor.demo.localcluster"
#: Binaries the cluster needs, all from Debian's slurm-wlm, slurm-client and munge packages.
REQUIRED_BINARIES = (
    "slurmctld", "slurmd", "sinfo", "scontrol", "munged", "munge", "unmunge",
)
#: Node states (``sinfo %t``, flags stripped) in which a node takes jobs.
_READY_STATES = frozenset({"idle", "mix", "alloc", "comp", "resv", "plnd"})
#: States that ``scontrol update state=resume`` fixes once the node's slurmd is back.
_RESUMABLE_STATES = frozenset({"down", "drain", "drng", "drained", "fail", "failg"})
#: Flags ``sinfo %t`` appends to a state (``*`` = not responding).
_STATE_FLAGS = "*~#!%$@^-"
#: How slurmstepd names itself: ``slurmstepd: [123.batch]``, ``[123.0]``, ``[123.extern]``.
_STEPD_TITLE = re.compile(r"slurmstepd: \[(\d+)[.\]]")
#: Seconds between SIGTERM and SIGKILL when stopping a daemon.
_STOP_GRACE = 8.0


class ClusterError(RuntimeError):
    """The local cluster cannot start or stop. The message says what to do next."""


@dataclass(frozen=True)
class NodeSpec:
    """One compute node: a ``slurmd`` of its own on its own loopback address and port.

    ``cpus`` and ``memory_mb`` are what Slurm schedules, not what the machine has
    (``SlurmdParameters=config_overrides``). ``gpus`` are demo GPUs: character devices that
    stand in for ``/dev/nvidiaN`` so that Slurm hands out ``CUDA_VISIBLE_DEVICES``.
    ``partition`` is the node's home partition, which must list it in
    :attr:`PartitionSpec.nodes` (what Slurm is told).
    """

    name: str
    address: str
    port: int
    cpus: int = 4
    memory_mb: int = 4000
    gpus: int = 0
    partition: str = "cpu"


@dataclass(frozen=True)
class PartitionSpec:
    """One Slurm partition. ``max_time`` uses Slurm's syntax (``8:00:00``, ``00:30:00``)."""

    name: str
    nodes: tuple[str, ...]
    max_time: str
    default: bool = False
    description: str = ""


DEFAULT_NODES: tuple[NodeSpec, ...] = (
    NodeSpec("node1", "127.0.2.1", 6821, partition="cpu"),
    NodeSpec("node2", "127.0.2.2", 6822, partition="cpu"),
    NodeSpec("gpu1", "127.0.2.3", 6823, gpus=2, partition="gpu"),
    NodeSpec("debug1", "127.0.2.4", 6824, partition="debug"),
)
DEFAULT_PARTITIONS: tuple[PartitionSpec, ...] = (
    PartitionSpec(
        "cpu", ("node1", "node2"), "8:00:00", default=True,
        description="CPU nodes for notebooks, Ray clusters and batch work (up to 8 hours).",
    ),
    PartitionSpec(
        "gpu", ("gpu1",), "4:00:00",
        description=(
            "DEMO GPUs: 2 simulated GPUs per node, not real hardware. Jobs get "
            "CUDA_VISIBLE_DEVICES, but nothing can compute on them (up to 4 hours)."
        ),
    ),
    PartitionSpec(
        "debug", ("debug1",), "00:30:00",
        description="Short interactive tests (up to 30 minutes).",
    ),
)


@dataclass
class ClusterStatus:
    """What is running: the controller, each node's ``slurmd``, and each node's Slurm state.

    ``nodes`` maps node name to its ``sinfo`` state (``idle``, ``alloc``, ``mix``, ``down*``
    ...); it is empty when the controller does not answer.
    """

    running: bool
    controller_pid: int | None
    nodes: dict[str, str]
    slurmd_pids: dict[str, int | None] = field(default_factory=dict)
    slurm_conf: Path | None = None

    def table(self) -> str:
        """A few lines for humans, as ``shopfloor cluster status`` prints them."""
        if self.controller_pid is not None:
            head = f"slurmctld: running (pid {self.controller_pid})"
        else:
            head = "slurmctld: not running"
        lines = [head]
        if self.slurm_conf is not None:
            lines.append(f"config:    {self.slurm_conf}")
        names = list(dict.fromkeys([*self.slurmd_pids, *self.nodes]))
        if names:
            width = max(len("NODE"), *(len(n) for n in names))
            lines.append(f"{'NODE':<{width}}  {'STATE':<10}  SLURMD")
            for name in names:
                pid = self.slurmd_pids.get(name)
                daemon = f"pid {pid}" if pid is not None else "not running"
                state = self.nodes.get(name, "unknown")
                lines.append(f"{name:<{width}}  {state:<10}  {daemon}")
        if not self.running:
            lines.append("Not (fully) running: start it with `shopfloor cluster up`.")
        return "\n".join(lines)


def default_state_dir() -> Path:
    """``$SHOPFLOOR_STATE_DIR/cluster`` if that variable is set, else :data:`DEFAULT_STATE_DIR`."""
    base = os.environ.get("SHOPFLOOR_STATE_DIR")
    return Path(base) / "cluster" if base else DEFAULT_STATE_DIR


class LocalCluster:
    """A Slurm cluster of several nodes on this machine, started and stopped as a whole.

    ``up()`` is idempotent and recovers from crashes (stale pid files, a dead controller or
    node daemon, nodes left DOWN); ``down()`` stops every daemon of this cluster. The daemons
    run as root, jobs as their users, so the state directory must be readable by everyone.
    """

    def __init__(
        self,
        state_dir: Path | None = None,
        nodes: Sequence[NodeSpec] = DEFAULT_NODES,
        partitions: Sequence[PartitionSpec] = DEFAULT_PARTITIONS,
        slurmctld_port: int = 6817,
        *,
        system_config_dir: Path = SYSTEM_CONFIG_DIR,
    ) -> None:
        self.state_dir = Path(state_dir) if state_dir is not None else default_state_dir()
        self.state_dir = self.state_dir.absolute()
        self.nodes = tuple(nodes)
        self.partitions = tuple(partitions)
        self.slurmctld_port = slurmctld_port
        self.system_config_dir = system_config_dir
        self._validate_layout()
        self.slurm = Slurm(env={"SLURM_CONF": str(self.slurm_conf)}, timeout=15.0)
        #: MariaDB + slurmdbd + the demo's accounts (ports next to slurmctld's).
        self.accounting = LocalAccounting(
            self.state_dir, self.slurm_conf, self.slurm.sync,
            db_port=slurmctld_port + 1, dbd_port=slurmctld_port + 2,
        )

    def _validate_layout(self) -> None:
        names = [n.name for n in self.nodes]
        if not names:
            raise ValueError("a LocalCluster needs at least one node")
        if len(set(names)) != len(names):
            raise ValueError(f"node names must be unique, got {names}")
        ports = [self.slurmctld_port, *(n.port for n in self.nodes)]
        if len(set(ports)) != len(ports):
            raise ValueError(f"slurmctld and every slurmd need a port of their own, got {ports}")
        for part in self.partitions:
            unknown = sorted(set(part.nodes) - set(names))
            if unknown:
                raise ValueError(f"partition {part.name!r} lists unknown nodes {unknown}")
        members = {p.name: p.nodes for p in self.partitions}
        for node in self.nodes if self.partitions else ():
            if node.name not in members.get(node.partition, ()):
                raise ValueError(
                    f"node {node.name!r} says it is in partition {node.partition!r}, "
                    "which does not list it"
                )
        if sum(p.default for p in self.partitions) > 1:
            raise ValueError("at most one partition can be the default")

    # -- paths ----------------------------------------------------------------------------

    @property
    def slurm_conf(self) -> Path:
        """The cluster's ``slurm.conf`` (``/etc/slurm/slurm.conf`` links here once it is up)."""
        return self.state_dir / "etc" / "slurm.conf"

    @property
    def system_config_link(self) -> Path:
        """Where Slurm's client tools look for ``slurm.conf``: a symlink to ours once up."""
        return self.system_config_dir / "slurm.conf"

    @property
    def gres_conf(self) -> Path:
        """``gres.conf``; Slurm reads it from the directory of ``slurm.conf``."""
        return self.slurm_conf.with_name("gres.conf")

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    def controller_log(self) -> Path:
        return self.log_dir / "slurmctld.log"

    def node_log(self, node: str) -> Path:
        return self.log_dir / f"slurmd-{node}.log"

    def _pid_file(self, role: str) -> Path:
        name = "slurmctld.pid" if role == "slurmctld" else f"slurmd-{role}.pid"
        return self.run_dir / name

    def _gpu_devices(self, node: NodeSpec) -> list[Path]:
        return [self.state_dir / "dev" / node.name / f"nvidia{i}" for i in range(node.gpus)]

    # -- configuration text ---------------------------------------------------------------

    def render_slurm_conf(self) -> str:
        """The text of ``slurm.conf`` for this layout (pure: writes nothing)."""
        state = self.state_dir
        host = socket.gethostname().split(".", 1)[0]
        has_gpus = any(n.gpus for n in self.nodes)
        lines = [
            f"{CONFIG_HEADER}: a demo Slurm cluster on one machine.",
            "# Regenerated by `shopfloor cluster up`: edit the LocalCluster layout, not this file.",
            "ClusterName=shopfloor",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={self.slurmctld_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CryptoType=crypto/munge",
            "MpiDefault=none",
            "MailProg=/bin/true",
            f"StateSaveLocation={state}/ctld",
            f"SlurmdSpoolDir={state}/spool/%n",
            f"SlurmctldPidFile={self.run_dir}/slurmctld.pid",
            f"SlurmdPidFile={self.run_dir}/slurmd-%n.pid",
            f"SlurmctldLogFile={self.log_dir}/slurmctld.log",
            f"SlurmdLogFile={self.log_dir}/slurmd-%n.log",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "# One machine, no cgroups: track processes by parent, bind nothing.",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            *self.accounting.slurm_conf_lines(),
            "# Jobs share nodes by CPU and memory.",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU_Memory",
            "DefMemPerCPU=500",
            "SchedulerType=sched/backfill",
            "# sbatch never starts a job itself (22.05 queues it for the scheduler): the main",
            "# loop's next pass (about once a second) or a backfill pass does. bf_interval=1",
            "# makes that wait ~0.3 s instead of ~0.5 s on median; fine for a short queue,",
            "# a site with thousands of pending jobs keeps backfill slower.",
            "SchedulerParameters=sched_interval=2,bf_interval=1,batch_sched_delay=1",
            "# sbatch refuses what a partition can never run (e.g. too long a time limit).",
            "EnforcePartLimits=ALL",
            "ReturnToService=2",
            "MinJobAge=300",
            "KillWait=5",
            "InactiveLimit=0",
            "SlurmdTimeout=60",
            "# The machine has fewer cores than the nodes declare: trust this file.",
            "SlurmdParameters=config_overrides",
        ]
        if has_gpus:
            lines.append("GresTypes=gpu")
        lines.append("")
        for node in self.nodes:
            gres = f" Gres=gpu:{node.gpus}" if node.gpus else ""
            lines.append(
                f"NodeName={node.name} NodeHostname={node.name} NodeAddr={node.address} "
                f"Port={node.port} CPUs={node.cpus} RealMemory={node.memory_mb}{gres} "
                "State=UNKNOWN"
            )
        lines.append("")
        for part in self.partitions:
            if part.description:
                lines.append(f"# {part.name}: {part.description}")
            default = "YES" if part.default else "NO"
            # DefaultTime: with AccountingStorageEnforce=safe, a job without --time would
            # otherwise never start on an account with a budget (its limit counts as unknown).
            lines.append(
                f"PartitionName={part.name} Nodes={','.join(part.nodes)} Default={default} "
                f"MaxTime={part.max_time} DefaultTime={part.max_time} State=UP"
            )
        return "\n".join(lines) + "\n"

    def render_gres_conf(self) -> str:
        """The text of ``gres.conf``: each GPU node's demo devices."""
        lines = [
            f"{CONFIG_HEADER}: demo GPUs are character devices, not real GPUs.",
        ]
        for node in self.nodes:
            if not node.gpus:
                continue
            folder = self.state_dir / "dev" / node.name
            files = "nvidia0" if node.gpus == 1 else f"nvidia[0-{node.gpus - 1}]"
            lines.append(f"NodeName={node.name} Name=gpu File={folder}/{files}")
        return "\n".join(lines) + "\n"

    def write_config(self) -> bool:
        """Create the state tree, demo GPU devices and config files. True if the config changed.

        Needs root (``mknod``). Every directory is world-readable: jobs run as their users
        and ``srun`` inside a job reads ``slurm.conf``.
        """
        for folder in (
            self.state_dir, self.slurm_conf.parent, self.log_dir, self.run_dir,
            self.state_dir / "ctld", self.state_dir / "spool", self.state_dir / "dev",
        ):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o755)
        for node in self.nodes:
            (self.state_dir / "spool" / node.name).mkdir(mode=0o755, exist_ok=True)
            for device in self._gpu_devices(node):
                _make_char_device(device)
        changed = _write_if_changed(self.gres_conf, self.render_gres_conf())
        return _write_if_changed(self.slurm_conf, self.render_slurm_conf()) or changed

    # -- public lifecycle -----------------------------------------------------------------

    def up(self, timeout: float = 60) -> ClusterStatus:
        """Start whatever is not running and wait until every node takes jobs.

        Safe to call again at any time: running daemons are kept (restarted only if the
        layout changed), dead ones restarted, stale pid files ignored, nodes left DOWN or
        DRAINED resumed, and jobs that lost their processes in a crash cancelled. Starts
        munged if it does not answer. Raises :class:`ClusterError`, with the daemon's last
        log lines where there are any, if it cannot.
        """
        deadline = time.monotonic() + timeout
        self._check_binaries()
        with self._lock():
            running = self._daemon_pids()
            self._check_ports(running)
            self._check_system_config()
            self._check_readable_by_users()
            self._check_root()
            ensure_munge(timeout=max(5.0, deadline - time.monotonic()))
            # Also a config that an interrupted up() wrote after the controller started.
            changed = self.write_config() or self._config_newer_than(running)
            # Every association exists before slurmctld (re)starts enforcing them.
            self.accounting.up(timeout=max(30.0, deadline - time.monotonic()))
            if changed and any(running.values()):
                log.info("cluster layout changed: restarting its daemons")
                self._stop_all(running)
                running = self._daemon_pids()
            self._link_system_config()
            controller_started = self._start_missing(running)
            # Jobs that began before the controller now running (or 10 s ago) have their
            # slurmstepd by now, unless they died with a crash.
            cutoff = controller_started or datetime.now() - timedelta(seconds=10)
            self._cancel_lost_jobs(cutoff)
            status = self._wait_ready(deadline)
            self.accounting.apply_limits()
            self.accounting.learn_new_users()
            return status

    def down(self) -> None:
        """Stop this cluster's ``slurmctld`` and every ``slurmd``; a no-op if none runs.

        Jobs already running keep their ``slurmstepd`` and are found again by the next
        ``up()``.
        """
        with self._lock():
            self._stop_all(self._daemon_pids())
            self.accounting.down()

    def status(self) -> ClusterStatus:
        """Which daemons are alive, and each node's state as the controller sees it."""
        pids = self._daemon_pids()
        controller = _first(pids.get("slurmctld", []))
        slurmd = {n.name: _first(pids.get(n.name, [])) for n in self.nodes}
        states = self._node_states() if controller is not None else {}
        running = controller is not None and all(p is not None for p in slurmd.values())
        return ClusterStatus(
            running=running, controller_pid=controller, nodes=states, slurmd_pids=slurmd,
            slurm_conf=self.slurm_conf,
        )

    # -- checks ---------------------------------------------------------------------------

    def _check_binaries(self) -> None:
        for name in REQUIRED_BINARIES:
            _which_or_fail(name)

    def _check_root(self) -> None:
        if os.geteuid() != 0:
            raise ClusterError(
                "the local cluster's daemons run as root (they start jobs as their users): "
                "run `sudo shopfloor cluster up`."
            )

    def _check_ports(self, running: dict[str, list[int]]) -> None:
        """Every daemon we are about to start needs its port free."""
        wanted = [("slurmctld", "slurmctld", self.slurmctld_port)]
        wanted += [(n.name, f"slurmd of node {n.name}", n.port) for n in self.nodes]
        ours = {pid for pids in running.values() for pid in pids}
        for role, what, port in wanted:
            if running.get(role) or _port_free(port):
                continue
            owner = _port_owner(port)
            if owner is not None and owner[0] in ours:
                continue
            who = f"pid {owner[0]} ({owner[1]})" if owner else "another program"
            raise ClusterError(
                f"port {port}, needed by the {what}, is in use by {who}. Stop that program "
                "(if it is another Shopfloor cluster, `shopfloor cluster down` with its state "
                "directory), or give this cluster other ports (LocalCluster(slurmctld_port=...), "
                "NodeSpec.port)."
            )

    def _check_system_config(self) -> None:
        """``/etc/slurm/slurm.conf`` must be absent or a link we may point at our config.

        Only ``slurm.conf`` is linked: the daemons get ``-f`` and read ``gres.conf`` from
        the directory of that file, and the client tools do not read ``gres.conf``.
        """
        link = self.system_config_link
        if not _may_replace_link(link, self.slurm_conf):
            raise ClusterError(
                f"this machine already has a Slurm config at {link}, so Slurm's tools would "
                f"not find the local cluster's {self.slurm_conf}. To use that site's Slurm, "
                "point Shopfloor at it instead of the local cluster; to use the local cluster, "
                f"move {link} away and run `shopfloor cluster up` again."
            )

    def _check_readable_by_users(self) -> None:
        for folder in (self.state_dir, *self.state_dir.parents):
            if not folder.exists():
                continue
            if not folder.stat().st_mode & stat.S_IXOTH:
                raise ClusterError(
                    f"jobs run as their users and must read {self.slurm_conf}, but {folder} "
                    "is closed to other users. Choose a state directory outside it (set "
                    f"SHOPFLOOR_STATE_DIR, default {DEFAULT_STATE_DIR.parent}) or "
                    f"`chmod o+x {folder}`."
                )

    # -- daemons --------------------------------------------------------------------------

    def _daemon_pids(self) -> dict[str, list[int]]:
        """This cluster's live daemons: ``slurmctld`` and node name -> pids.

        Found by their command line (``-f <our slurm.conf>``), so daemons whose pid file is
        gone are found too, and a pid file whose process died is ignored.
        """
        found: dict[str, list[int]] = {}
        conf = str(self.slurm_conf)
        for pid, argv in _processes():
            if len(argv) < 3 or _arg_after(argv, "-f") != conf:
                continue
            program = os.path.basename(argv[0])
            if program == "slurmctld":
                found.setdefault("slurmctld", []).append(pid)
            elif program == "slurmd":
                # Also slurmd of nodes no longer in the layout, so that down() stops them.
                node = _arg_after(argv, "-N") or "?"
                found.setdefault(node, []).append(pid)
        return found

    def _start_missing(self, running: dict[str, list[int]]) -> datetime | None:
        """Start the daemons that are not running; when slurmctld was started, return when."""
        controller_started = None
        roles = ["slurmctld", *(n.name for n in self.nodes)]
        for role in roles:
            if running.get(role):
                continue
            self._pid_file(role).unlink(missing_ok=True)  # stale: its daemon is not running
            if role == "slurmctld":
                controller_started = datetime.now().replace(microsecond=0)
                self._spawn(role, [_which_or_fail("slurmctld"), "-f", str(self.slurm_conf)])
                self._wait_controller()
            else:
                args = [_which_or_fail("slurmd"), "-f", str(self.slurm_conf), "-N", role]
                self._spawn(role, args)
        return controller_started

    def _config_newer_than(self, running: dict[str, list[int]]) -> bool:
        """Whether ``slurm.conf`` changed after the running controller started."""
        started = [_process_start(pid) for pid in running.get("slurmctld", [])]
        known = [t for t in started if t is not None]
        with contextlib.suppress(OSError):
            return bool(known) and self.slurm_conf.stat().st_mtime > min(known) + 1
        return False

    def _cancel_lost_jobs(self, started_before: datetime) -> None:
        """Cancel jobs Slurm believes RUNNING whose processes are gone.

        slurmctld saves job state lazily (a job's start and end can go unsaved for minutes),
        so after it is killed it may recover jobs as RUNNING that ended meanwhile, or whose
        processes died with it. No slurmd reports them missing (the machine did not reboot):
        they would hold their nodes until their time limit. Every node is on this machine, so
        a RUNNING job without a ``slurmstepd`` here is such a ghost.
        """
        try:
            jobs = self.slurm.sync.squeue()
        except SlurmError as exc:
            log.warning("cannot look for jobs lost in a crash: %s", exc)
            return
        alive = _jobs_with_stepd()
        for job_id, job in jobs.items():
            started = job.start
            if job.state != "RUNNING" or job_id in alive or started is None \
                    or started >= started_before:
                continue
            log.warning(
                "job %s is RUNNING for Slurm but has no process left (lost in a crash of "
                "slurmctld): cancelling it to free its nodes", job_id,
            )
            with contextlib.suppress(SlurmError):
                self.slurm.sync.scancel(job_id)

    def _spawn(self, role: str, argv: list[str]) -> None:
        """Start one daemon (it forks into the background itself)."""
        log.info("starting %s", " ".join(argv))
        out_path = self.log_dir / ("slurmctld.out" if role == "slurmctld" else f"slurmd-{role}.out")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
        with out_path.open("ab") as out:
            proc = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                start_new_session=True, check=False, timeout=60,
            )
        if proc.returncode != 0:
            what = "slurmctld" if role == "slurmctld" else f"slurmd of node {role}"
            raise ClusterError(
                f"{what} exited with {proc.returncode} at start; its own words are below."
                f"{self._log_tail(role, out_path)}"
            )

    def _wait_controller(self, timeout: float = 30.0) -> None:
        """Wait until slurmctld answers, failing early with its log if it died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._daemon_pids().get("slurmctld"):
                time.sleep(0.3)
                if not self._daemon_pids().get("slurmctld"):
                    raise ClusterError(f"slurmctld stopped right after starting.{self._log_tail()}")
            with contextlib.suppress(SlurmError):
                self.slurm.sync.ping()
                return
            time.sleep(0.3)
        raise ClusterError(f"slurmctld did not answer within {timeout:.0f} s.{self._log_tail()}")

    def _wait_ready(self, deadline: float) -> ClusterStatus:
        """Poll ``sinfo`` until every node takes jobs, resuming nodes left DOWN."""
        resumed: set[str] = set()
        invalid_since: dict[str, float] = {}
        states: dict[str, str] = {}
        while True:
            pids = self._daemon_pids()
            dead = [r for r in ("slurmctld", *(n.name for n in self.nodes)) if not pids.get(r)]
            if dead:
                time.sleep(0.5)  # a daemon may still be forking into the background
                pids = self._daemon_pids()
                dead = [r for r in dead if not pids.get(r)]
            if dead:
                what = "slurmctld" if dead[0] == "slurmctld" else f"slurmd of node {dead[0]}"
                raise ClusterError(
                    f"{what} stopped right after starting.{self._log_tail(dead[0])}"
                )
            states = self._node_states()
            for name, state in states.items():
                base = state.rstrip(_STATE_FLAGS)
                if base in _RESUMABLE_STATES and "*" not in state and name not in resumed:
                    log.info("node %s is %s after a restart: resuming it", name, state)
                    with contextlib.suppress(SlurmError):
                        self.slurm.sync.resume_node(name)
                    resumed.add(name)
                if state == "inval":
                    # slurmd registered with less than slurm.conf declares (e.g. GPUs):
                    # no restart fixes that, so say so instead of waiting out the timeout.
                    since = invalid_since.setdefault(name, time.monotonic())
                    if time.monotonic() - since > 5:
                        raise ClusterError(
                            f"node {name} does not match its configuration "
                            f"({self._node_reasons().get(name, 'no reason given')}); check "
                            f"{self.gres_conf} and the node's log.{self._log_tail(name)}"
                        )
            if all(_is_ready(states.get(n.name, "")) for n in self.nodes):
                return self.status()
            if time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        waiting = [n.name for n in self.nodes if not _is_ready(states.get(n.name, ""))]
        reasons = self._node_reasons()
        detail = ", ".join(
            f"{n}: {states.get(n, 'unknown')} ({reasons.get(n, 'no reason given')})"
            for n in waiting
        )
        raise ClusterError(
            f"nodes did not become ready in time: {detail}. Check the logs below or call "
            f"up() again with a longer timeout.{self._log_tail(waiting[0])}"
        )

    def _node_states(self) -> dict[str, str]:
        """Node name -> compact ``sinfo`` state (``idle``, ``down*`` ...); {} if no answer."""
        try:
            return self.slurm.sync.node_states()
        except SlurmError as exc:
            log.debug("sinfo failed: %s", exc)
            return {}

    def _node_reasons(self) -> dict[str, str]:
        """Node name -> why Slurm set it down, drained or invalid (``none`` if it did not)."""
        try:
            return self.slurm.sync.node_reasons()
        except SlurmError as exc:
            log.debug("sinfo failed: %s", exc)
            return {}

    def _stop_all(self, running: dict[str, list[int]]) -> None:
        """SIGTERM every daemon (nodes first), SIGKILL what is left after a grace period."""
        roles = [n.name for n in self.nodes] + ["slurmctld"]
        nodes_first = sorted(running, key=lambda role: role == "slurmctld")
        ordered = [pid for role in nodes_first for pid in running[role]]
        ordered += sorted(self._pids_from_files() - set(ordered))
        pids = set(ordered)
        for pid in ordered:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE
        while time.monotonic() < deadline and self._alive(pids):
            time.sleep(0.2)
        left = self._alive(pids) | {p for ps in self._daemon_pids().values() for p in ps}
        for pid in left:
            log.warning("daemon pid %d ignored SIGTERM: killing it", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (self._alive(left) or self._daemon_pids()):
            time.sleep(0.1)
        for role in roles:
            self._pid_file(role).unlink(missing_ok=True)

    def _pids_from_files(self) -> set[int]:
        """Pids in our pid files whose process is still one of our daemons."""
        pids: set[int] = set()
        for role in ("slurmctld", *(n.name for n in self.nodes)):
            with contextlib.suppress(OSError, ValueError):
                pid = int(self._pid_file(role).read_text().strip())
                if self._is_our_daemon(pid):
                    pids.add(pid)
        return pids

    def _is_our_daemon(self, pid: int) -> bool:
        argv = _cmdline(pid)
        return bool(argv) and _arg_after(argv, "-f") == str(self.slurm_conf)

    def _alive(self, pids: set[int]) -> set[int]:
        return {pid for pid in pids if self._is_our_daemon(pid)}

    # -- files ----------------------------------------------------------------------------

    def _link_system_config(self) -> None:
        link = self.system_config_link
        if link.is_symlink() and os.readlink(link) == str(self.slurm_conf):
            return
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{link.name}.shopfloor-tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(self.slurm_conf)
        tmp.replace(link)
        log.info("linked %s -> %s", link, self.slurm_conf)

    def _log_tail(self, role: str = "slurmctld", extra: Path | None = None) -> str:
        path = self.controller_log() if role == "slurmctld" else self.node_log(role)
        parts = []
        for p in (extra, path):
            if p is not None:
                tail = _tail(p)
                if tail:
                    parts.append(f"\n--- last lines of {p} ---\n{tail}")
        return "".join(parts)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One ``up``/``down`` at a time per state directory."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / ".lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


# -- munge ----------------------------------------------------------------------------------


def munge_works() -> bool:
    """True if ``munge -n | unmunge`` succeeds, i.e. munged runs with a usable key."""
    try:
        cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=10, check=False)
        if cred.returncode != 0:
            return False
        check = subprocess.run(
            ["unmunge"], input=cred.stdout, capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return check.returncode == 0


def ensure_munge(timeout: float = 20.0) -> None:
    """Make sure munged runs (Debian's, with its key); start it if it does not."""
    if munge_works():
        return
    if not MUNGE_KEY.exists():
        log.info("creating the munge key %s", MUNGE_KEY)
        _run_as_munge([_which_or_fail("mungekey"), "--create"])
    MUNGE_RUN_DIR.mkdir(parents=True, exist_ok=True)
    shutil.chown(MUNGE_RUN_DIR, "munge", "munge")
    MUNGE_RUN_DIR.chmod(0o755)
    log.info("starting munged")
    _run_as_munge([_which_or_fail("munged")])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if munge_works():
            return
        time.sleep(0.2)
    raise ClusterError(
        f"munged does not answer (munge -n | unmunge fails) {timeout:.0f} s after starting it; "
        f"see {MUNGE_LOG} or start it by hand: runuser -u munge -- /usr/sbin/munged"
        f"{_tail_block(MUNGE_LOG)}"
    )


def _run_as_munge(argv: list[str]) -> None:
    proc = subprocess.run(
        ["runuser", "-u", "munge", "--", *argv], capture_output=True, text=True,
        stdin=subprocess.DEVNULL, start_new_session=True, timeout=30, check=False,
    )
    if proc.returncode != 0:
        raise ClusterError(
            f"`runuser -u munge -- {' '.join(argv)}` failed ({proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()}{_tail_block(MUNGE_LOG)}"
        )


# -- small helpers --------------------------------------------------------------------------


def _which(name: str) -> str | None:
    """Find a binary on PATH, also in the sbin folders that a user's PATH may lack."""
    path = os.environ.get("PATH", os.defpath) + os.pathsep + "/usr/sbin:/sbin"
    return shutil.which(name, path=path)


def _which_or_fail(name: str) -> str:
    found = _which(name)
    if found is None:
        raise ClusterError(
            f"{name} not found: install Debian's slurm-wlm and munge "
            "(apt-get install slurm-wlm munge) or run `shopfloor demo`, which installs them"
        )
    return found


def _is_ready(state: str) -> bool:
    return "*" not in state and state.rstrip(_STATE_FLAGS) in _READY_STATES


def _first(pids: list[int]) -> int | None:
    return min(pids) if pids else None


def _arg_after(argv: Sequence[str], flag: str) -> str | None:
    for i, arg in enumerate(argv[:-1]):
        if arg == flag:
            return argv[i + 1]
    return None


def _cmdline(pid: int) -> list[str]:
    """A process's argv, empty for zombies and processes that are gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, IndexError, StopIteration, ValueError):
        return None
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _processes() -> Iterator[tuple[int, list[str]]]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            argv = _cmdline(int(entry.name))
            if argv:
                yield int(entry.name), argv


def _jobs_with_stepd() -> set[str]:
    """Ids of the jobs that have a ``slurmstepd`` on this machine (titled ``[123.batch]``)."""
    jobs = set()
    for _pid, argv in _processes():
        match = _STEPD_TITLE.match(argv[0])
        if match:
            jobs.add(match.group(1))
    return jobs


def _port_free(port: int) -> bool:
    """True if a daemon could listen on ``port`` on every address."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def _port_owner(port: int) -> tuple[int, str] | None:
    """(pid, command line) of the process listening on TCP ``port``, if /proc tells."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) < 10 or fields[3] != "0A":  # 0A: listening
                    continue
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in targets:
                        pid = int(entry.name)
                        return pid, " ".join(_cmdline(pid)) or "unknown command"
    return None


def _may_replace_link(link: Path, ours: Path) -> bool:
    """Whether ``link`` may become a symlink to ``ours``: absent, ours, dangling, or one of
    ours (another Shopfloor state directory)."""
    if not link.is_symlink():
        return not link.exists()
    target = Path(os.readlink(link))
    if target == ours or not link.exists():
        return True
    with contextlib.suppress(OSError):
        return link.read_text().startswith(CONFIG_HEADER)
    return False


def _make_char_device(path: Path) -> None:
    """A character device like /dev/null (Slurm refuses plain files as GPU devices)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o755)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISCHR(path.lstat().st_mode):
            return
        path.unlink()
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError as exc:
        raise ClusterError(
            f"cannot create the demo GPU device {path}: mknod needs root. Run "
            "`shopfloor cluster up` as root."
        ) from exc
    path.chmod(0o666)


def _write_if_changed(path: Path, text: str) -> bool:
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    tmp.replace(path)
    return True


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _tail_block(path: Path) -> str:
    tail = _tail(path)
    return f"\n--- last lines of {path} ---\n{tail}" if tail else ""
