"""A Slurm cluster of a site's own, configured by hand as a site admin would, for
test_site_deploy.py: a slurm.conf written here (its own ClusterName, ports, state, spool, pid
and log files, its own node and partition names), Debian's ``slurmctld``/``slurmd`` started
directly with ``-f``, beside the shared demo cluster (which keeps /etc/slurm/slurm.conf).

Only munge is shared with the demo cluster (one munge key per host, as at a site). Nothing
of :mod:`shopfloor.demo` is used: this is what the product must cope with, not what it made.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: What a job of the site's own cluster looks like in squeue here: "id|user|state|node".
_SQUEUE_FORMAT = "%i|%u|%T|%N"


@dataclass
class SiteCluster:
    conf: Path  #: the hand-written slurm.conf (0644 in a 0755 folder: users' tools read it)
    state: Path  #: root's: controller state, pid and log files (0700), the slurmd spool
    name: str  #: ClusterName
    node: str  #: the one node's NodeName
    partition: str
    ctld_port: int
    slurmd_port: int
    slurmctld: subprocess.Popen[bytes] | None = None
    slurmd: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """This process's environment with Slurm's tools pointed at this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def tool(self, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        """A Slurm client command against this cluster (never raises)."""
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False, cwd="/")

    def jobs(self) -> list[dict[str, str]]:
        out = self.tool("squeue", "-h", "-o", _SQUEUE_FORMAT).stdout
        return [dict(zip(("id", "user", "state", "node"), line.split("|"), strict=True))
                for line in out.splitlines() if line.count("|") == 3]

    def log(self, daemon: str = "slurmctld") -> str:
        name = "slurmctld.log" if daemon == "slurmctld" else f"slurmd-{self.node}.log"
        path = self.state / "log" / name
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def render(self) -> str:
        host = socket.gethostname().split(".", 1)[0]
        state = self.state
        return "\n".join([
            "# A site's own slurm.conf, written by hand (tests/sitecluster.py).",
            f"ClusterName={self.name}",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={self.ctld_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CryptoType=crypto/munge",
            "MpiDefault=none",
            "MailProg=/bin/true",
            f"StateSaveLocation={state}/ctld",
            f"SlurmdSpoolDir={state}/spool/%n",
            f"SlurmctldPidFile={state}/run/slurmctld.pid",
            f"SlurmdPidFile={state}/run/slurmd-%n.pid",
            f"SlurmctldLogFile={state}/log/slurmctld.log",
            f"SlurmdLogFile={state}/log/slurmd-%n.log",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU_Memory",
            "DefMemPerCPU=500",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_interval=2,bf_interval=2,batch_sched_delay=1",
            "EnforcePartLimits=ALL",
            "ReturnToService=2",
            "MinJobAge=60",
            "KillWait=5",
            "InactiveLimit=0",
            "SlurmdParameters=config_overrides",
            f"NodeName={self.node} NodeHostname={self.node} NodeAddr=127.0.0.1 "
            f"Port={self.slurmd_port} CPUs=2 RealMemory=2000 State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=1:00:00 "
            "DefaultTime=0:30:00 State=UP",
            "",
        ])

    # -- daemons ----------------------------------------------------------------------------

    def start_slurmctld(self, timeout: float = 60) -> None:
        self.slurmctld = _daemon(["slurmctld", "-D", "-c", "-f", str(self.conf)],
                                 self.state / "log" / "slurmctld.out")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.slurmctld.poll() is not None:
                raise AssertionError(f"slurmctld exited: {self.log()}")
            if " is UP" in self.tool("scontrol", "ping").stdout:
                return
            time.sleep(0.5)
        raise AssertionError(f"slurmctld did not answer in {timeout:g} s: {self.log()}")

    def start_slurmd(self, timeout: float = 60) -> None:
        self.slurmd = _daemon(["slurmd", "-D", "-N", self.node, "-f", str(self.conf)],
                              self.state / "log" / "slurmd.out")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.slurmd.poll() is not None:
                raise AssertionError(f"slurmd exited: {self.log('slurmd')}")
            state = self.tool("sinfo", "-h", "-n", self.node, "-o", "%T").stdout.strip()
            if state in ("idle", "mixed", "allocated"):
                return
            time.sleep(0.5)
        raise AssertionError(f"{self.node} did not come up in {timeout:g} s: "
                             f"{self.log('slurmd')}")

    def stop_slurmctld(self) -> None:
        _stop(self.slurmctld)

    def stop(self) -> None:
        """Cancel every job (so no session outlives the cluster), then both daemons."""
        if self.slurmctld is not None and self.slurmctld.poll() is None:
            ids = [j["id"] for j in self.jobs()]
            if ids:
                self.tool("scancel", *ids)
                deadline = time.monotonic() + 30
                while self.jobs() and time.monotonic() < deadline:
                    time.sleep(0.5)
        _stop(self.slurmd)
        _stop(self.slurmctld)


def _daemon(argv: list[str], out: Path) -> subprocess.Popen[bytes]:
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        return subprocess.Popen(argv, stdout=fd, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd="/")
    finally:
        os.close(fd)


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@contextlib.contextmanager
def site_cluster(etc: Path, state: Path, *, name: str, ctld_port: int, slurmd_port: int,
                 node: str = "sitenode1", partition: str = "sitebatch") -> Iterator[SiteCluster]:
    """The cluster with its slurm.conf in ``etc`` (readable by all, as /etc/slurm is) and its
    daemons' files in ``state`` (root's); both daemons stopped afterwards, whatever happened."""
    etc.mkdir(mode=0o755, parents=True, exist_ok=True)
    state.mkdir(mode=0o755, parents=True, exist_ok=True)
    for sub in ("ctld", "run", "log"):
        (state / sub).mkdir(mode=0o700, exist_ok=True)
    # slurmstepd runs the job's script from the spool as the user, as in /var/spool/slurmd.
    (state / "spool").mkdir(mode=0o755, exist_ok=True)
    cluster = SiteCluster(etc / "slurm.conf", state, name, node, partition, ctld_port,
                          slurmd_port)
    cluster.conf.write_text(cluster.render())
    cluster.conf.chmod(0o644)
    try:
        cluster.start_slurmctld()
        cluster.start_slurmd()
        yield cluster
    finally:
        cluster.stop()
