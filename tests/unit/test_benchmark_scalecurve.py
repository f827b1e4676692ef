"""The scale benchmark's new measurements: hub memory, ready counts, and our hub's config
without the apps service. Pure tests (no hub, no Slurm)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from traitlets.config import Config

# ``benchmarks`` is a top-level folder run as ``python -m benchmarks.<name>`` from the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import scale
from benchmarks.hubprocess import HubPorts


def test_resident_memory_is_read_from_proc_status_in_mb() -> None:
    assert scale.parse_vmrss("Name:\tpython\nVmRSS:\t  162816 kB\nVmSwap:\t0 kB\n") == 159.0
    assert scale.parse_vmrss("Name:\tkthreadd\n") is None  # kernel threads have no VmRSS
    assert scale.parse_vmrss("VmRSS:\tlots kB\n") is None
    own = scale.rss_mb(os.getpid())
    assert own is not None and own > 5
    assert scale.rss_mb(2**22 + 12345) is None


def test_only_ready_servers_count_as_known_again() -> None:
    servers = {"s001": {"ready": True}, "s002": {"ready": False, "pending": "spawn"},
               "s003": {"ready": True}}
    assert scale.count_ready(servers) == 2
    assert scale.count_ready({}) == 0


def test_our_bench_hub_leaves_the_apps_service_out_so_restarts_do_not_wait_for_it(
    tmp_path: Path,
) -> None:
    scene = scale.Scene(tmp_path / "scene")
    scene.root.mkdir()
    scene.make(["ours"])
    state = tmp_path / "ours"
    state.mkdir()
    text = scale.ours_config(scene, state, HubPorts(9200), 5, 2, "t0k")
    config = Config()
    exec(compile(text, "jupyterhub_config.py", "exec"), {"get_config": lambda: config})
    names = [s["name"] for s in config.JupyterHub.services]
    assert "apps" not in names and "bench" in names
    for role in config.JupyterHub.load_roles:
        assert "apps" not in role.get("services", [])
    # Accounting tools are linked when the cluster has them (the hub validates with them).
    for tool in ("sbatch", "squeue", "scontrol"):
        assert (scene.bin_dir("ours") / tool).exists()
