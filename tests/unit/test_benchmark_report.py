"""Benchmark helpers: statistics, the JSON/table output, and the spawn benchmark's configs.

Pure tests: nothing here starts a hub or touches Slurm.
"""

from __future__ import annotations

import io
import json
import sys
from datetime import datetime
from pathlib import Path

import pytest
from traitlets.config import Config

# ``benchmarks`` is a top-level folder run as ``python -m benchmarks.<name>`` from the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import spawn
from benchmarks.hubprocess import HubPorts
from benchmarks.report import (
    RunResult,
    emit,
    format_table,
    median,
    p90,
    percentile,
    ratio,
    summarize,
)
from shopfloor.site import load_site


def test_percentiles_interpolate_like_numpy() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([1.0, 2.0, 3.0, 4.0]) == 2.5
    assert p90([1.0, 2.0, 3.0, 4.0]) == pytest.approx(3.7)
    assert p90([5.0]) == 5.0
    assert percentile([1.0, 2.0], 0) == 1.0
    assert percentile([1.0, 2.0], 100) == 2.0


def test_no_values_give_no_statistics() -> None:
    assert median([]) is None
    assert p90([]) is None


def test_percentile_outside_range_is_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0], 101)


def test_ratio_needs_both_values_and_a_divisor() -> None:
    assert ratio(6.0, 3.0) == 2.0
    assert ratio(None, 3.0) is None
    assert ratio(3.0, None) is None
    assert ratio(3.0, 0.0) is None


def test_summarize_counts_failures_and_excludes_them_from_statistics() -> None:
    runs = [
        RunResult(1, True, 2.0, detail={"job_id": "7"}),
        RunResult(2, False, error="not ready within 120 s"),
        RunResult(3, True, 4.0),
    ]
    block = summarize("ours", runs, user_options={"cpus": 1})
    assert block["label"] == "ours"
    assert block["user_options"] == {"cpus": 1}
    assert block["seconds"] == [2.0, 4.0]
    assert (block["ok"], block["failures"]) == (2, 1)
    assert block["median"] == 3.0
    assert (block["min"], block["max"]) == (2.0, 4.0)
    assert block["runs"][0] == {
        "run": 1, "ok": True, "seconds": 2.0, "error": None, "job_id": "7",
    }
    assert block["runs"][1]["error"] == "not ready within 120 s"


def test_summarize_rounds_to_milliseconds() -> None:
    block = summarize("x", [RunResult(1, True, 1.23456789)])
    assert block["seconds"] == [1.235]
    assert block["runs"][0]["seconds"] == 1.235


def test_table_lists_each_arm_with_failures_marked() -> None:
    arms = {
        "ours": summarize("ours (ShopfloorSpawner)", [RunResult(1, True, 2.5)]),
        "stock": summarize("stock", [RunResult(1, False, error="boom")]),
    }
    table = format_table("title", arms, footer=["ratio: -"])
    lines = table.splitlines()
    assert lines[0] == "title"
    assert lines[1].split()[:3] == ["arm", "ok", "median"]
    assert "ours (ShopfloorSpawner)" in lines[2] and "2.50" in lines[2]
    assert lines[3].split()[1] == "0/1" and lines[3].endswith("FAIL")
    assert lines[-1] == "ratio: -"


def test_emit_prints_json_on_stdout_table_on_stderr_and_writes_file(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    target = tmp_path / "result.json"
    emit({"a": 1}, "TABLE\n", json_out=target, stdout=out, stderr=err)
    assert json.loads(out.getvalue()) == {"a": 1}
    assert err.getvalue() == "TABLE\n"
    assert json.loads(target.read_text()) == {"a": 1}


def test_emit_can_put_the_table_on_stdout_instead() -> None:
    out, err = io.StringIO(), io.StringIO()
    emit({"a": 1}, "TABLE\n", table_on_stdout=True, stdout=out, stderr=err)
    assert out.getvalue() == "TABLE\n"
    assert err.getvalue() == ""


# -- the spawn benchmark's generated configuration --------------------------------------


def _load_config(text: str) -> Config:
    config = Config()
    exec(compile(text, "jupyterhub_config.py", "exec"), {"get_config": lambda: config})
    return config


def test_stock_config_is_stock_batchspawner_on_its_own_ports(tmp_path: Path) -> None:
    c = _load_config(spawn.stock_config(tmp_path, HubPorts(8400), "alice"))
    assert c.JupyterHub.spawner_class == "batchspawner.SlurmSpawner"
    assert c.JupyterHub.bind_url == "http://127.0.0.1:8400"
    assert c.JupyterHub.hub_bind_url == "http://127.0.0.1:8401"
    assert c.ConfigurableHTTPProxy.api_url == "http://127.0.0.1:8402"
    assert str(tmp_path) in c.JupyterHub.db_url
    assert c.Authenticator.allowed_users == {"alice"}
    assert c.SlurmSpawner.req_partition == "cpu"
    assert c.SlurmSpawner.req_runtime == "0:30:00"
    assert c.SlurmSpawner.req_srun == "srun"
    # The one change stock needs here: the node name from squeue does not resolve.
    assert c.SlurmSpawner.state_exechost_exp == "127.0.0.1"
    assert c.Spawner.cmd == [str(spawn.VENV_BIN / "jupyterhub-singleuser")]


def test_ours_config_installs_shopfloor_from_a_site_file_on_its_own_ports(
    tmp_path: Path,
) -> None:
    text = spawn.ours_config(tmp_path, HubPorts(8300))
    assert f"install(c, {str(tmp_path / 'site.yaml')!r})" in text
    assert "c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:8302'" in text
    site = load_site(tmp_path / "site.yaml")
    assert site.hub.bind_url == "http://127.0.0.1:8300"
    assert site.hub.hub_bind_url == "http://127.0.0.1:8301"
    assert site.hub.state_dir == str(tmp_path)
    assert "cpu" in site.partitions


def test_server_listening_time_is_read_from_the_job_log(tmp_path: Path) -> None:
    log = tmp_path / "42.log"
    log.write_text(
        "shopfloor: starting jupyterhub-singleuser on 127.0.2.1:4242\n"
        "[I 2026-11-27 05:01:24.669 ServerApp] Jupyter Server 2.21.1 is running at:\n"
    )
    at = spawn.server_listening_at(str(log))
    assert at is not None
    assert datetime.fromtimestamp(at).strftime("%H:%M:%S.%f") == "05:01:24.669000"
    assert spawn.server_listening_at(str(tmp_path / "missing.log")) is None
    assert spawn.server_listening_at(None) is None
