"""Reading py-spy's collapsed stacks (benchmarks.hubprofile): pure tests on its output format."""

from __future__ import annotations

import sys
from pathlib import Path

# ``benchmarks`` is a top-level folder run as ``python -m benchmarks.<name>`` from the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.hubprofile import HubProfiler, frame_name, parse_collapsed, top_functions

SP = "/opt/shopfloor/venv/lib/python3.11/site-packages"
RAW = [
    f"<module> (jupyterhub:8);start (tornado/ioloop.py:1);_run_once ({SP}/../asyncio/"
    "base_events.py:1922);select (/usr/lib/python3.11/selectors.py:468) 70\n",
    f"<module> (jupyterhub:8);spawn ({SP}/jupyterhub/handlers/base.py:1001);"
    "_submit (/work/main/extensions/spawner.py:380);run (/work/main/src/shopfloor/slurm/"
    "seam.py:120) 20\n",
    f"<module> (jupyterhub:8);spawn ({SP}/jupyterhub/handlers/base.py:1010);"
    f"commit ({SP}/sqlalchemy/orm/session.py:2000) 10\n",
    "garbage without a count\n",
]


def test_frames_lose_line_numbers_and_long_paths() -> None:
    assert frame_name(f"commit ({SP}/sqlalchemy/orm/session.py:2000)") == (
        "commit (sqlalchemy/orm/session.py)")
    assert frame_name("run (/work/main/src/shopfloor/slurm/seam.py:120)") == (
        "run (src/shopfloor/slurm/seam.py)")
    assert frame_name("select (/usr/lib/python3.11/selectors.py:468)") == (
        "select (selectors.py)")
    assert frame_name("odd frame") == "odd frame"


def test_collapsed_lines_give_stacks_and_counts_and_bad_lines_are_skipped() -> None:
    stacks = parse_collapsed(RAW)
    assert [count for _, count in stacks] == [70, 20, 10]
    assert stacks[1][0][-1] == "run (src/shopfloor/slurm/seam.py)"


def test_busy_time_is_counted_per_function_self_and_inclusive() -> None:
    top = top_functions(RAW)
    assert (top["samples"], top["busy_samples"], top["busy_percent"]) == (100, 30, 30.0)
    assert top["self"][0] == {"function": "run (src/shopfloor/slurm/seam.py)", "samples": 20}
    inclusive = {row["function"]: row["samples"] for row in top["inclusive"]}
    # One function at two lines of the same stack set counts once per sample.
    assert inclusive["spawn (jupyterhub/handlers/base.py)"] == 30
    assert "select (selectors.py)" not in inclusive
    assert top_functions([])["busy_percent"] is None


def test_stopping_a_profiler_that_never_started_gives_nothing(tmp_path: Path) -> None:
    assert HubProfiler(1, tmp_path / "p.txt").stop() is None
