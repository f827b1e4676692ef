"""Where a spawn's time goes (benchmarks.timeline) and the launcher's timeline line.

Pure tests on log text in the formats JupyterHub, Jupyter Server and our launcher write; the
real logs are read by ``benchmarks.spawn`` against the real cluster.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

# ``benchmarks`` is a top-level folder run as ``python -m benchmarks.<name>`` from the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import spawn
from benchmarks.timeline import (
    LAB_MARKS,
    OURS_MARKS,
    STOCK_MARKS,
    breakdown,
    find_marks,
    first_stamp,
    largest,
    median_breakdown,
    parse_stamp,
    slurmctld_lines,
)
from shopfloor.session import singleuser

HUB_LOG = """\
[I 2026-11-30 09:33:34.741 JupyterHub provider:744] Creating oauth client jupyterhub-user-alice
[I 2026-11-30 09:33:34.915 JupyterHub spawner:388] alice: submitted job 679 to cpu
[I 2026-11-30 09:33:35.666 JupyterHub spawn_callback:69] alice: job reported port 55481
[I 2026-11-30 09:33:39.675 JupyterHub spawner:427] alice: job 679 ready on node1 (127.0.2.1:1)
[I 2026-11-30 09:33:39.686 JupyterHub base:1192] User alice took 4.978 seconds to start
"""
JOB_LOG = """\
shopfloor: starting /opt/venv/bin/jupyterhub-singleuser on 127.0.2.1:55481
[I 2026-11-30 09:33:35.667 shopfloor] port reported to the hub; job started at \
2026-11-30 09:33:35.577
/opt/venv/lib/python3.11/site-packages/traitlets/traitlets.py:1904: DeprecationWarning: x
[I 2026-11-30 09:33:38.175 ServerApp] Extension package jupyterlab took 0.1109s to import
[I 2026-11-30 09:33:39.478 JupyterHubSingleUser] Starting jupyterhub single-user server
[I 2026-11-30 09:33:39.634 ServerApp] Jupyter Server 2.21.1 is running at:
"""


def at(stamp: str) -> float:
    return parse_stamp(f"2026-11-30 {stamp}")


def test_the_first_matching_line_gives_the_mark_and_a_named_group_overrides_it() -> None:
    assert first_stamp(HUB_LOG, r"submitted job \d+") == at("09:33:34.915")
    assert first_stamp(JOB_LOG, r"ServerApp\] ") == at("09:33:38.175")
    assert first_stamp(JOB_LOG, r"port reported.*started at (?P<at>\S+ \S+)") == at(
        "09:33:35.577")
    assert first_stamp(HUB_LOG, r"never logged") is None
    # Lines without a timestamp (warnings, our plain line) never count.
    assert first_stamp(JOB_LOG, r"DeprecationWarning") is None


def test_a_bad_timestamp_gives_no_mark_rather_than_an_error() -> None:
    assert first_stamp("[I 2026-13-45 99:00:00.000 shopfloor] x\n", "x") is None


def test_our_spawn_breaks_down_into_segments_that_add_up_to_the_whole() -> None:
    posted = at("09:33:34.575")
    times = find_marks(OURS_MARKS, {"hub": HUB_LOG, "job": JOB_LOG})
    segments = breakdown(posted, times, at("09:33:39.700"))
    assert segments == {
        "submitted": 0.34,
        "scheduled": None,  # no controller log given: "job start" spans both
        "job_started": 0.662,
        "port_reported": 0.09,
        "server_first_line": 2.508,
        "server_listening": 1.459,
        "hub_saw_listener": 0.041,
        "proxy_added": 0.011,
        "ready_seen": 0.014,
    }
    assert sum(v for v in segments.values() if v) == pytest.approx(at("09:33:39.700") - posted)
    assert largest(segments) == "server_first_line"


def test_a_missing_mark_leaves_a_gap_and_the_next_segment_spans_it() -> None:
    posted = at("09:33:34.000")
    times = find_marks(STOCK_MARKS, {"hub": HUB_LOG.replace("submitted", "x"), "job": JOB_LOG})
    segments = breakdown(posted, times)
    assert segments["submitted"] is None
    assert segments["server_first_line"] == pytest.approx(4.175)
    assert "ready_seen" not in segments
    assert find_marks(LAB_MARKS, {})["server_listening"] is None


def test_medians_per_segment_skip_runs_without_that_segment() -> None:
    runs = [{"a": 1.0, "b": None}, {"a": 3.0, "b": 2.0}, {"a": 2.0, "c": 5.0}]
    assert median_breakdown(runs) == {"a": 2.0, "b": 2.0, "c": 5.0}
    assert median_breakdown([]) == {}
    assert largest({"a": None}) is None


def test_the_spawn_table_lists_each_segment_per_arm_and_stars_the_largest() -> None:
    arms = {
        "ours": {"breakdown_median": {"submitted": 0.3, "server_first_line": 1.5},
                 "largest_segment": "server_first_line"},
        "stock": {"breakdown_median": {"submitted": 0.1}, "largest_segment": "submitted"},
    }
    lines = spawn.breakdown_lines(arms)
    assert "(ours | stock)" in lines[0]
    assert lines[1].startswith("  submit") and lines[1].endswith("0.30 | 0.10*")
    assert lines[2].endswith("1.50* | -")
    assert spawn.breakdown_lines({"lab": {}}) == []


def test_the_launcher_knows_when_its_process_started(tmp_path: Path) -> None:
    started = singleuser.process_started_at()
    assert started is not None
    assert time.time() - 3600 < started <= time.time()
    assert singleuser.process_started_at(str(tmp_path)) is None
    stamp = singleuser.log_stamp(at("09:33:35.577"))
    assert stamp == "2026-11-30 09:33:35.577"
    assert datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f")


def test_the_launcher_blocks_only_modules_not_yet_imported() -> None:
    table: dict[str, object] = {}
    assert singleuser.skip_unused_slow_imports(table) == ["rfc3987_syntax"]
    assert table == {"rfc3987_syntax": None}
    loaded = object()
    table = {"rfc3987_syntax": loaded}
    assert singleuser.skip_unused_slow_imports(table) == []
    assert table["rfc3987_syntax"] is loaded


def test_the_server_still_validates_events_without_the_blocked_module() -> None:
    # A fresh interpreter as the job has it: the block in place, then what the server imports.
    code = (
        "import sys; from shopfloor.session.singleuser import skip_unused_slow_imports\n"
        "skip_unused_slow_imports()\n"
        "import jupyter_server.serverapp, jsonschema\n"
        "assert sys.modules['rfc3987_syntax'] is None\n"
        "checker = jsonschema.Draft7Validator.FORMAT_CHECKER\n"
        "assert 'iri' not in checker.checkers and 'date-time' in checker.checkers\n"
        "from jupyter_events import EventLogger\n"
        "EventLogger()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_only_scripts_of_this_environment_run_in_the_launchers_process(tmp_path: Path) -> None:
    venv = tmp_path / "venv" / "bin"
    other = tmp_path / "other" / "bin"
    venv.mkdir(parents=True)
    python = str(venv / "python")

    def script(name: str, first_line: bytes) -> str:
        path = tmp_path / name
        path.write_bytes(first_line + b"\nprint('hi')\n")
        return str(path)

    assert singleuser.is_script_of_this_python(script("a", f"#!{venv}/python".encode()), python)
    assert singleuser.is_script_of_this_python(
        script("b", f"#!{venv}/python3.11 -E".encode()), python)
    # Another environment's script needs that environment's modules: exec it instead.
    assert not singleuser.is_script_of_this_python(
        script("c", f"#!{other}/python".encode()), python)
    assert not singleuser.is_script_of_this_python(script("d", f"#!{venv}/bash".encode()), python)
    assert not singleuser.is_script_of_this_python(script("e", b"#!"), python)
    assert not singleuser.is_script_of_this_python(script("f", b"\x7fELF"), python)
    assert not singleuser.is_script_of_this_python(str(tmp_path / "missing"), python)
    # The real console scripts of our environment qualify.
    jupyter = Path(sys.executable).parent / "jupyterhub-singleuser"
    assert singleuser.is_script_of_this_python(str(jupyter))


def test_a_python_server_runs_in_the_launchers_process_with_its_arguments(
    tmp_path: Path,
) -> None:
    server = tmp_path / "server"
    server.write_text(
        f"#!{sys.executable}\nimport os, sys\n"
        "print('pid', os.getpid(), 'args', sys.argv[1:], 'blocked',\n"
        "      sys.modules.get('rfc3987_syntax', 'absent') is None)\n"
    )
    server.chmod(0o755)
    code = (
        "import os, sys\nfrom shopfloor.session import singleuser\n"
        "singleuser.node_address = lambda: '127.0.0.1'\n"
        "singleuser.report_port = lambda port: {}\n"
        "print('launcher', os.getpid())\n"
        f"singleuser.main([{str(server)!r}, '--x=1'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True, env={"PATH": "/usr/bin:/bin"}).stdout
    launcher_pid = out.split("launcher ", 1)[1].split()[0]
    assert f"pid {launcher_pid} args ['--x=1', '--ip=127.0.0.1', '--port=" in out
    assert "blocked True" in out


def test_paired_ratios_compare_runs_of_the_same_round_and_skip_failed_rounds() -> None:
    from benchmarks.report import RunResult, paired_ratios

    ours = [RunResult(1, True, 2.0), RunResult(2, True, 6.0), RunResult(3, True, 3.0),
            RunResult(4, False, error="x")]
    lab = [RunResult(1, True, 4.0), RunResult(2, True, 3.0), RunResult(3, False, error="y"),
           RunResult(4, True, 1.0)]
    assert paired_ratios(ours, lab) == {"rounds": 2, "median": 1.25, "min": 0.5, "max": 2.0}
    assert paired_ratios([], lab) == {"rounds": 0, "median": None, "min": None, "max": None}


SLURMCTLD_LOG = """\
[2026-11-30T09:33:34.910] _slurm_rpc_submit_batch_job: JobId=679 InitPrio=1 usec=455
[2026-11-30T09:33:34.950] _slurm_rpc_submit_batch_job: JobId=6790 InitPrio=1 usec=455
[2026-11-30T09:33:35.100] sched: Allocate JobId=6790 NodeList=node2 #CPUs=1 Partition=cpu
[2026-11-30T09:33:35.400] sched/backfill: _start_job: Started JobId=679 in cpu on node1
[2026-11-30T09:33:36.000] error: some other line
"""


def test_the_controller_log_splits_schedule_from_job_start() -> None:
    ctld = slurmctld_lines(SLURMCTLD_LOG, "679")
    # Only job 679's lines (not 6790's), in Jupyter's format.
    assert ctld.splitlines() == [
        "[I 2026-11-30 09:33:34.910 slurmctld] _slurm_rpc_submit_batch_job: JobId=679 "
        "InitPrio=1 usec=455",
        "[I 2026-11-30 09:33:35.400 slurmctld] sched/backfill: _start_job: Started JobId=679 "
        "in cpu on node1",
    ]
    posted = at("09:33:34.575")
    times = find_marks(OURS_MARKS, {"hub": HUB_LOG, "job": JOB_LOG, "slurmctld": ctld})
    segments = breakdown(posted, times, at("09:33:39.700"))
    assert segments["scheduled"] == pytest.approx(0.485)  # 34.915 -> 35.400
    assert segments["job_started"] == pytest.approx(0.177)  # 35.400 -> 35.577
    assert sum(v for v in segments.values() if v) == pytest.approx(at("09:33:39.700") - posted)
    assert slurmctld_lines(SLURMCTLD_LOG, "") == ""  # no job id matches no line
    main = slurmctld_lines(SLURMCTLD_LOG, "6790")
    assert find_marks(STOCK_MARKS, {"slurmctld": main})["scheduled"] == at("09:33:35.100")
