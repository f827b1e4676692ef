"""benchmarks.panels' own parts: the counting wrapper, counts per caller, the plan, summaries."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# ``benchmarks`` is a top-level folder run as ``python -m benchmarks.<name>`` from the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.panels import (
    PANEL_CALLER,
    arm_summary,
    count_by_caller,
    counting_tool,
    schedule,
    window_summary,
)


def test_the_wrapper_logs_tool_and_caller_and_runs_the_real_tool(tmp_path: Path) -> None:
    real = tmp_path / "squeue"
    real.write_text("#!/bin/bash\necho \"real squeue $*\"\nexit 3\n")
    real.chmod(0o755)
    counter = tmp_path / "calls.log"
    wrapper = tmp_path / "bin-squeue"
    wrapper.write_text(counting_tool(str(real), counter))
    wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "SF_BENCH_CALLER"}
    hub = subprocess.run([str(wrapper), "-h", "-j", "1"], capture_output=True, text=True,
                         env=env)
    panel = subprocess.run([str(wrapper)], capture_output=True, text=True,
                           env={**env, "SF_BENCH_CALLER": PANEL_CALLER})
    assert hub.stdout == "real squeue -h -j 1\n" and hub.returncode == 3
    assert panel.returncode == 3
    lines = counter.read_text().splitlines()
    assert [line.split()[1:] for line in lines] == [["squeue", "hub"], ["squeue", "panels"]]
    assert all(float(line.split()[0]) > 1e9 for line in lines)


def test_counts_per_caller_and_tool_inside_the_window() -> None:
    lines = ["10.0 squeue hub", "11.5 squeue panels", "11.6 scontrol panels", "12.0 sinfo hub",
             "9.9 squeue panels", "garbage", "x squeue hub", "13.0 squeue panels"]
    assert count_by_caller(lines, 10.0, 13.0) == {
        "hub": {"squeue": 1, "sinfo": 1}, "panels": {"squeue": 1, "scontrol": 1}}


def test_windows_alternate_which_arm_goes_first() -> None:
    assert schedule(("direct", "hub"), 3) == [
        (0, "direct"), (0, "hub"), (1, "hub"), (1, "direct"), (2, "direct"), (2, "hub")]


def test_window_and_arm_summaries() -> None:
    counts = {"hub": {"squeue": 4}, "panels": {"squeue": 30, "scontrol": 10}}
    window = window_summary(counts, 20.0, [0.1, 0.2, 0.3], 3, ["E: x", "E: x", "E: y"])
    assert window["slurm_calls_per_s"] == 2.2
    assert window["hub_calls_per_s"] == 0.2 and window["panel_calls_per_s"] == 2.0
    assert window["refresh_ms_median"] == 200.0 and window["errors"] == 3
    assert window["first_errors"] == ["E: x", "E: y"]
    quiet = window_summary({}, 20.0, [], 0, [])
    assert quiet["slurm_calls_per_s"] == 0.0 and quiet["refresh_ms_p95"] is None
    summary = arm_summary([window, quiet])
    assert summary["slurm_calls_per_s"] == {"median": 1.1, "min": 0.0, "max": 2.2}
    assert summary["errors"] == 3 and summary["windows"] == 2
