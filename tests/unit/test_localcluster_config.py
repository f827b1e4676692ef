"""The local cluster's generated config and its error messages; no daemon is started."""

from __future__ import annotations

import os
import socket
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from shopfloor.demo import localcluster
from shopfloor.demo.localcluster import (
    DEFAULT_NODES,
    DEFAULT_PARTITIONS,
    ClusterError,
    ClusterStatus,
    LocalCluster,
    NodeSpec,
    PartitionSpec,
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _cluster_on_free_ports(state_dir: Path, **kwargs: object) -> LocalCluster:
    """A cluster that shares no port with the real one this machine may be running."""
    nodes = tuple(replace(n, port=_free_port()) for n in DEFAULT_NODES)
    return LocalCluster(state_dir, nodes=nodes, slurmctld_port=_free_port(), **kwargs)


@pytest.fixture
def conf(tmp_path: Path) -> str:
    return LocalCluster(tmp_path / "cluster").render_slurm_conf()


def _lines(text: str, prefix: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(prefix)]


def test_every_node_has_its_own_address_and_port(conf: str) -> None:
    nodes = _lines(conf, "NodeName=")
    assert len(nodes) == 4
    expected = {
        "node1": ("127.0.2.1", 6821), "node2": ("127.0.2.2", 6822),
        "gpu1": ("127.0.2.3", 6823), "debug1": ("127.0.2.4", 6824),
    }
    for line in nodes:
        fields = dict(token.split("=", 1) for token in line.split())
        address, port = expected[fields["NodeName"]]
        assert fields["NodeAddr"] == address
        assert fields["Port"] == str(port)
        assert fields["NodeHostname"] == fields["NodeName"]
        assert fields["CPUs"] == "4"
        assert fields["RealMemory"] == "4000"


def test_only_the_gpu_node_declares_gpus(conf: str) -> None:
    gres = {ln.split()[0]: "Gres=gpu:2" in ln for ln in _lines(conf, "NodeName=")}
    assert gres == {
        "NodeName=node1": False, "NodeName=node2": False,
        "NodeName=gpu1": True, "NodeName=debug1": False,
    }
    assert "GresTypes=gpu" in conf.splitlines()


def test_partitions_limits_and_default(conf: str) -> None:
    parts = {
        fields["PartitionName"]: fields
        for fields in (
            dict(t.split("=", 1) for t in ln.split()) for ln in _lines(conf, "PartitionName=")
        )
    }
    assert parts["cpu"]["Nodes"] == "node1,node2"
    assert parts["cpu"]["MaxTime"] == "8:00:00"
    assert parts["cpu"]["Default"] == "YES"
    assert parts["gpu"]["Nodes"] == "gpu1"
    assert parts["gpu"]["MaxTime"] == "4:00:00"
    assert parts["debug"]["Nodes"] == "debug1"
    assert parts["debug"]["MaxTime"] == "00:30:00"
    assert [p for p, f in parts.items() if f["Default"] == "YES"] == ["cpu"]
    # safe budgets never start a job whose time limit is unset: each partition defaults it.
    assert all(f["DefaultTime"] == f["MaxTime"] for f in parts.values())


def test_gpu_partition_says_its_gpus_are_demo_gpus(conf: str) -> None:
    gpu = next(p for p in DEFAULT_PARTITIONS if p.name == "gpu")
    assert "DEMO GPUs" in gpu.description
    assert "not real" in gpu.description
    assert any("DEMO GPUs" in ln for ln in _lines(conf, "# gpu:"))


def test_settings_for_one_small_machine(conf: str, tmp_path: Path) -> None:
    lines = set(conf.splitlines())
    host = socket.gethostname().split(".", 1)[0]
    for setting in (
        f"SlurmctldHost={host}(127.0.0.1)",
        "SlurmctldPort=6817",
        "SlurmdParameters=config_overrides",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "AccountingStorageType=accounting_storage/slurmdbd",
        "AccountingStoragePort=6819",
        "AccountingStorageEnforce=associations,limits,qos,safe",
        "AccountingStorageTRES=gres/gpu",
        "PriorityType=priority/multifactor",
        "PriorityDecayHalfLife=0",
        "JobAcctGatherType=jobacct_gather/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU_Memory",
        "SlurmUser=root",
        "SlurmdUser=root",
        "MpiDefault=none",
        "ReturnToService=2",
        "EnforcePartLimits=ALL",
        "MinJobAge=300",
        "KillWait=5",
        "InactiveLimit=0",
    ):
        assert setting in lines, setting
    assert any(ln.startswith("SchedulerParameters=sched_interval=") for ln in lines)


def test_all_state_lives_under_the_state_dir(conf: str, tmp_path: Path) -> None:
    state = tmp_path / "cluster"
    keys = (
        "StateSaveLocation", "SlurmdSpoolDir", "SlurmctldPidFile", "SlurmdPidFile",
        "SlurmctldLogFile", "SlurmdLogFile",
    )
    values = {ln.split("=", 1)[0]: ln.split("=", 1)[1] for ln in conf.splitlines() if "=" in ln}
    for key in keys:
        assert values[key].startswith(f"{state}/"), key
    # several slurmd on one host: one spool dir, pid file and log per node
    for key in ("SlurmdSpoolDir", "SlurmdPidFile", "SlurmdLogFile"):
        assert "%n" in values[key], key


def test_gres_conf_points_at_character_devices(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "cluster")
    gres = _lines(cluster.render_gres_conf(), "NodeName=")
    assert gres == [f"NodeName=gpu1 Name=gpu File={tmp_path}/cluster/dev/gpu1/nvidia[0-1]"]
    assert cluster.gres_conf.parent == cluster.slurm_conf.parent


def test_layout_without_gpus_has_no_gres(tmp_path: Path) -> None:
    nodes = (
        NodeSpec("a1", "127.0.3.1", 7001, partition="all"),
        NodeSpec("g1", "127.0.3.2", 7002, gpus=1, partition="all"),
    )
    parts = (PartitionSpec("all", ("a1", "g1"), "1:00:00", default=True),)
    cluster = LocalCluster(tmp_path, nodes=nodes, partitions=parts, slurmctld_port=7000)
    assert _lines(cluster.render_gres_conf(), "NodeName=") == [
        f"NodeName=g1 Name=gpu File={tmp_path}/dev/g1/nvidia0"
    ]
    plain = LocalCluster(tmp_path, nodes=nodes[:1], partitions=(), slurmctld_port=7000)
    assert "GresTypes" not in plain.render_slurm_conf()
    assert _lines(plain.render_gres_conf(), "NodeName=") == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"slurmctld_port": 6821}, "port of their own"),
        ({"partitions": (PartitionSpec("x", ("nope",), "1:00"),)}, "unknown nodes"),
        ({"nodes": (*DEFAULT_NODES, DEFAULT_NODES[0])}, "unique"),
        ({"nodes": (replace(DEFAULT_NODES[0], partition="gpu"), *DEFAULT_NODES[1:])}, "list"),
    ],
)
def test_inconsistent_layouts_are_refused(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        LocalCluster(tmp_path, **kwargs)  # type: ignore[arg-type]


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of the demo GPU devices needs root")
def test_write_config_makes_devices_and_readable_files(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "cluster")
    assert cluster.write_config() is True
    assert cluster.write_config() is False  # unchanged: daemons need no restart
    for device in ("nvidia0", "nvidia1"):
        mode = (tmp_path / "cluster" / "dev" / "gpu1" / device).stat().st_mode
        assert stat.S_ISCHR(mode)
        assert mode & stat.S_IROTH
    for path in (cluster.slurm_conf, cluster.gres_conf):
        assert path.stat().st_mode & 0o777 == 0o644
    assert cluster.slurm_conf.read_text() == cluster.render_slurm_conf()


def test_default_state_dir_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SHOPFLOOR_STATE_DIR", str(tmp_path))
    assert LocalCluster().state_dir == tmp_path / "cluster"
    monkeypatch.delenv("SHOPFLOOR_STATE_DIR")
    assert LocalCluster().state_dir == Path("/var/lib/shopfloor/cluster")


def test_missing_binary_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real_which = localcluster.shutil.which

    def which(name: str, *args: object, **kwargs: object) -> str | None:
        return None if name == "slurmctld" else real_which(name, *args, **kwargs)

    monkeypatch.setattr(localcluster.shutil, "which", which)
    with pytest.raises(ClusterError) as info:
        _cluster_on_free_ports(tmp_path / "cluster").up(timeout=5)
    message = str(info.value)
    assert message.startswith("slurmctld not found")
    assert "apt-get install slurm-wlm munge" in message
    assert "shopfloor demo" in message


def test_port_in_use_names_the_port_and_its_owner(tmp_path: Path) -> None:
    cluster = _cluster_on_free_ports(tmp_path / "cluster", system_config_dir=tmp_path / "etc")
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", cluster.slurmctld_port))
        squatter.listen()
        with pytest.raises(ClusterError) as info:
            cluster.up(timeout=5)
    message = str(info.value)
    assert f"port {cluster.slurmctld_port}" in message
    assert "slurmctld" in message
    assert f"pid {os.getpid()}" in message
    assert "other ports" in message
    assert not (tmp_path / "etc").exists()  # nothing touched before the check


def test_existing_site_config_is_left_alone(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "slurm.conf").write_text("ClusterName=site\n")
    cluster = _cluster_on_free_ports(tmp_path / "cluster", system_config_dir=etc)
    with pytest.raises(ClusterError, match="already has a Slurm config") as info:
        cluster.up(timeout=5)
    assert str(etc / "slurm.conf") in str(info.value)
    assert (etc / "slurm.conf").read_text() == "ClusterName=site\n"
    assert not (etc / "slurm.conf").is_symlink()


def test_state_dir_closed_to_users_is_refused(tmp_path: Path) -> None:
    closed = tmp_path / "private"
    closed.mkdir(mode=0o700)
    closed.chmod(0o700)
    cluster = _cluster_on_free_ports(closed / "cluster", system_config_dir=tmp_path / "etc")
    with pytest.raises(ClusterError, match="closed to other users"):
        cluster.up(timeout=5)
    assert not (tmp_path / "etc").exists()


def test_status_of_a_cluster_that_never_ran(tmp_path: Path) -> None:
    status = _cluster_on_free_ports(tmp_path / "cluster").status()
    assert status.running is False
    assert status.controller_pid is None
    assert status.nodes == {}
    assert status.slurmd_pids == {n.name: None for n in DEFAULT_NODES}
    table = status.table()
    assert "slurmctld: not running" in table
    assert "shopfloor cluster up" in table


def test_status_table_lists_nodes() -> None:
    status = ClusterStatus(
        running=True, controller_pid=10, nodes={"node1": "idle", "gpu1": "down*"},
        slurmd_pids={"node1": 11, "gpu1": None},
    )
    rows = status.table().splitlines()
    assert rows[0] == "slurmctld: running (pid 10)"
    assert rows[1].split() == ["NODE", "STATE", "SLURMD"]
    assert rows[2].split() == ["node1", "idle", "pid", "11"]
    assert rows[3].split() == ["gpu1", "down*", "not", "running"]
