"""Helpers of the anchored benchmarks: rotation, phases, load; the Ray anchor's shell parts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# ``benchmarks`` is a top-level folder run as ``python -m benchmarks.<name>`` from the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.anchors import load_average, phase_medians, rotate, spread
from benchmarks.ray_cluster import (
    COUNT_ALIVE,
    LOOP_SCRIPT,
    arms_for,
    summarize_ray,
)
from benchmarks.report import RunResult, summarize


def test_rotate_starts_each_round_one_arm_later() -> None:
    arms = ["ours", "loop", "docs"]
    assert [rotate(arms, r) for r in range(4)] == [
        ["ours", "loop", "docs"], ["loop", "docs", "ours"], ["docs", "ours", "loop"],
        ["ours", "loop", "docs"]]
    assert rotate([], 3) == []


def test_phase_medians_skip_failed_runs_and_unobserved_phases() -> None:
    runs = [
        RunResult(1, True, 3.0, detail={"phases": {"head_up": 1.0, "joined": 2.0}}),
        RunResult(2, True, 5.0, detail={"phases": {"head_up": 3.0, "joined": None}}),
        RunResult(3, False, error="boom", detail={"phases": {"head_up": 99.0}}),
        RunResult(4, True, 4.0),
    ]
    assert phase_medians(runs) == {"head_up": 2.0, "joined": 2.0}


def test_load_average_and_spread() -> None:
    load = load_average()
    assert set(load) == {"load1", "load5", "load15", "cpus"} and load["cpus"] >= 1
    block = summarize("a", [RunResult(1, True, 2.0), RunResult(2, True, 4.0)])
    assert spread(block) == "3.00 (2.00-4.00)"
    assert spread(summarize("b", [RunResult(1, False, error="x")])) == "-"


def test_count_alive_reads_the_state_api_answer() -> None:
    answer = {"data": {"result": {"result": [
        {"state": "ALIVE"}, {"state": "DEAD"}, {"state": "ALIVE"}]}}}

    def count(stdin: str) -> str:
        return subprocess.run(["bash", "-c", COUNT_ALIVE], input=stdin, capture_output=True,
                              text=True, check=True).stdout.strip()

    assert count(json.dumps(answer)) == "2"
    # No answer yet (curl printed nothing) or an error page: 0, never a shell error.
    assert count("") == "0"
    assert count("<html>502</html>") == "0"


def test_the_readiness_loop_script_is_valid_bash_without_fixed_sleeps(tmp_path: Path) -> None:
    script = LOOP_SCRIPT.format(partition="cpu", nodes=2, workdir=tmp_path, ray="/x/ray",
                                gcs_port=9620, dashboard_port=9621, count_alive=COUNT_ALIVE)
    path = tmp_path / "job.sh"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True)
    assert "sleep 10" not in script and "sleep 5" not in script
    assert "--port=$port" in script and "--dashboard-port=9621" in script
    assert "/api/jobs/" in script  # ready means the Jobs API answers, as for ours


def test_ray_summary_ratios_and_targets() -> None:
    results = {
        "ours_2n": [RunResult(1, True, 4.0), RunResult(2, True, 4.4)],
        "ray_loop_2n": [RunResult(1, True, 8.0), RunResult(2, True, 6.0)],
    }
    summary = summarize_ray(results, [2])
    assert summary["ratio"]["ours_over_ray_loop_2n"] == pytest.approx(4.2 / 7.0)
    assert summary["target"]["met"] is True
    results["ours_2n"] = [RunResult(1, True, 6.0)]
    assert summarize_ray(results, [2])["target"]["met"] is False  # 6 s is over 5 s
    assert arms_for(False) == ["ours", "ray_loop"]
    assert arms_for(True) == ["ours", "ray_loop", "ray_docs"]


def test_workshop_anchor_uses_the_start_links_options_and_knows_a_lab_page() -> None:
    from benchmarks.workshop import is_lab_page, start_options

    link = "/hub/spawn?opt-partition=sfworkshop&opt-reservation=ws-x&next=%2Fhub%2F"
    assert start_options(link) == {"partition": "sfworkshop", "reservation": "ws-x"}
    assert start_options("/hub/spawn") == {}
    page = '<script id="jupyter-config-data">{"appName": "JupyterLab"}</script>'
    assert is_lab_page(200, page)
    assert not is_lab_page(200, "<html>Jupyter Hub login</html>")
    assert not is_lab_page(503, page)


def test_workshop_median_gap_skips_failed_and_incomplete_runs() -> None:
    from benchmarks.workshop import median_gap

    runs = [RunResult(1, True, 9.0, detail={"requested_s": 2.0, "lab_answers_s": 9.0}),
            RunResult(2, True, 8.0, detail={"requested_s": 3.0, "lab_answers_s": 8.0}),
            RunResult(3, True, 5.0, detail={"requested_s": 1.0}),
            RunResult(4, False, error="x", detail={"requested_s": 0.0, "lab_answers_s": 99.0})]
    assert median_gap(runs, "requested_s", "lab_answers_s") == 6.0
    assert median_gap([], "requested_s", "lab_answers_s") is None


def test_workshop_phases_say_which_step_the_rush_waits_on() -> None:
    from benchmarks.workshop import phases

    runs = [RunResult(1, True, 20.0, detail={"joined_s": 2.0, "logged_in_s": 3.0,
                                             "requested_s": 3.5, "running_s": 15.5,
                                             "lab_answers_s": 16.0}),
            RunResult(2, True, 30.0, detail={"joined_s": 12.0, "logged_in_s": 14.0,
                                             "requested_s": 14.5, "running_s": 28.5,
                                             "lab_answers_s": 30.0}),
            RunResult(3, False, error="x", detail={"joined_s": 40.0})]
    table = phases(runs)
    assert table["join"] == {"median": 7.0, "max": 12.0, "last_done_s": 12.0}
    assert table["spawn"] == {"median": 13.0, "max": 14.0, "last_done_s": 28.5}
    assert table["lab"] == {"median": 1.0, "max": 1.5, "last_done_s": 30.0}
    assert phases([])["login"] == {"median": None, "max": None, "last_done_s": None}


def test_workshop_refuses_nodes_whose_cores_other_jobs_hold() -> None:
    from benchmarks.workshop import idle_cores, too_busy

    sinfo = "debug1 4/0/0/4\ndebug1 4/0/0/4\ngpu1 2/2/0/4\nnode1 3/1/0/4\n"
    assert idle_cores(sinfo) == {"debug1": 0, "gpu1": 2, "node1": 1}
    assert too_busy("gpu1,debug1", 2, sinfo) is None
    assert too_busy("gpu1,node1", 3, sinfo) is None
    reason = too_busy("debug1", 2, sinfo)
    assert reason is not None and "debug1 have 0 idle cores" in reason
    assert too_busy("node9", 1, sinfo) is not None  # a node sinfo does not list


def test_apps_browser_targets_and_arms() -> None:
    from benchmarks.apps_browser import parse_args, targets

    blocks = {"warm": {"median": 1.1}, "direct_voila": {"median": 1.0},
              "lab_voila": {"median": 2.2}, "cold": {"median": 3.5}}
    verdict = targets(blocks)
    assert verdict["warm_over_direct_voila"] == pytest.approx(1.1)
    assert verdict["warm_over_lab_voila"] == pytest.approx(0.5)
    assert verdict["warm_met"] is True and verdict["cold_met"] is False
    assert targets({"warm": {"median": 1.0}})["warm_met"] is None  # no anchor, no verdict
    assert verdict["cold_first_met"] is None  # the empty-cache arm did not run
    assert targets({"cold_first": {"median": 2.9}})["cold_first_met"] is True
    assert parse_args(["--arms", "cold,cold_first"]).arms == ["cold", "cold_first"]
    assert parse_args(["--arms", "warm,cold"]).arms == ["warm", "cold"]
    assert parse_args([]).port_base >= 9600
    with pytest.raises(SystemExit):
        parse_args(["--arms", "warm,bogus"])


def test_our_arm_is_valid_python_and_always_stops_its_cluster() -> None:
    import ast

    from benchmarks.ray_cluster import OURS

    source = OURS.format(partition="cpu", nodes=2, name="bench-2n-1")
    tree = ast.parse(source)
    tries = [node for node in ast.walk(tree) if isinstance(node, ast.Try)]
    assert tries and any("c.stop()" in ast.unparse(t.finalbody) for t in tries)
