"""The scale benchmark's pure parts: counting, CPU, latency, spawn bookkeeping, configs.

Nothing here starts a hub or touches Slurm; the stand-in server and the counting ``squeue``
wrapper run for real (a local HTTP server on a thread, a bash script).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from jupyterhub.app import JupyterHub
from traitlets.config import Config

# ``benchmarks`` is a top-level folder run as ``python -m benchmarks.<name>`` from the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import scale, standin
from benchmarks.hubprocess import HubPorts
from shopfloor.extensions.spawner import ShopfloorSpawner
from shopfloor.site import load_site

# -- counting and statistics ---------------------------------------------------------------


def test_calls_are_counted_in_a_half_open_window() -> None:
    lines = ["99.9", "100.0", "100.5", "", "garbage", "104.999", "105.0", "200"]
    assert scale.count_calls(lines, 100.0, 105.0) == 3
    assert scale.count_calls([], 0, 1) == 0


def test_proc_stat_fields_are_counted_after_the_command_name() -> None:
    # The name may hold spaces and parentheses; utime..cstime are fields 14-17.
    stat = "4242 (jupyter (hub) x) S 1 4242 4242 0 -1 4194560 9 0 0 0 250 50 1000 300 20 0 5"
    times = scale.parse_proc_stat(stat, 100)
    assert times == scale.CpuTimes(own=3.0, children=13.0)


def test_cpu_percent_is_of_one_core_over_the_window() -> None:
    before, after = scale.CpuTimes(10.0, 1.0), scale.CpuTimes(13.0, 7.0)
    assert scale.cpu_percent(before, after, 60.0) == {"own": 5.0, "children": 10.0}
    assert scale.cpu_percent(None, after, 60.0) == {"own": None, "children": None}


def test_own_process_cpu_times_are_readable() -> None:
    import os

    times = scale.cpu_times(os.getpid())
    assert times is not None and times.own > 0
    assert scale.cpu_times(-1) is None


def test_latency_summary_counts_errors_and_reports_milliseconds() -> None:
    samples = [0.010, None, 0.020, 0.030, 0.040, 0.050]
    summary = scale.latency_summary(samples)
    assert summary == {"requests": 6, "errors": 1, "p50_ms": 30.0, "p95_ms": 48.0,
                       "max_ms": 50.0}
    assert scale.latency_summary([None])["p95_ms"] is None


def test_server_names_are_padded_to_sort_in_spawn_order() -> None:
    assert scale.server_names(3) == ["s001", "s002", "s003"]
    assert scale.server_names(1200)[-1] == "s1200"
    assert scale.server_names(1200)[0] == "s0001"


# -- spawn bookkeeping ---------------------------------------------------------------------


def test_tracker_keeps_at_most_concurrency_spawns_in_flight() -> None:
    tracker = scale.SpawnTracker(scale.server_names(5), concurrency=2, timeout=60)
    first = tracker.next_batch()
    assert first == ["s001", "s002"]
    for name in first:
        tracker.posted(name, now=0.0)
    assert tracker.next_batch() == []
    tracker.update({"s001": {"ready": True}, "s002": {"ready": False, "pending": "spawn"}}, 4.0)
    assert tracker.ready == {"s001": 4.0}
    assert tracker.next_batch() == ["s003"]


def test_tracker_tells_failures_timeouts_and_retries_apart() -> None:
    tracker = scale.SpawnTracker(scale.server_names(4), concurrency=4, timeout=10)
    s1, s2, s3, s4 = tracker.next_batch()
    tracker.posted(s1, 0.0)
    tracker.posted(s2, 0.0)
    tracker.refused(s3, "POST answered 429", retry=True)
    tracker.refused(s4, "POST answered 400: bad options", retry=False)
    tracker.update({s2: {"ready": False, "pending": "spawn"}}, 11.0)
    assert tracker.failed[s1].startswith("spawn failed")
    assert tracker.failed[s2] == "not ready within 10 s"
    assert tracker.failed[s4] == "POST answered 400: bad options"
    assert not tracker.done
    assert tracker.next_batch() == [s3]  # the 429 is tried again
    tracker.posted(s3, 12.0)
    tracker.give_up("out of time")
    assert tracker.done and tracker.failed[s3] == "out of time"
    assert tracker.progress() == "0/4 ready, 0 spawning, 4 failed"


# -- the generated files -------------------------------------------------------------------


def test_counting_squeue_logs_each_call_and_passes_arguments(tmp_path: Path) -> None:
    folder, counter = tmp_path / "bin", tmp_path / "count"
    scale.make_counting_bin(folder, counter)
    assert (folder / "sbatch").is_symlink()
    # Point the wrapper at echo instead of the real squeue: it must pass arguments through.
    wrapper = folder / "squeue"
    wrapper.write_text(scale.counting_squeue("/bin/echo", counter))
    before = datetime.now().timestamp()
    for _ in range(3):
        out = subprocess.run([str(wrapper), "-h", "-j", "1,2"], capture_output=True, text=True,
                             check=True).stdout
    assert out == "-h -j 1,2\n"
    lines = counter.read_text().splitlines()
    assert scale.count_calls(lines, before, datetime.now().timestamp() + 1) == 3
    assert counter.stat().st_mode & 0o777 == 0o666  # stock's squeue runs as the user


def test_stock_queries_through_the_wrapper_with_its_own_default_command() -> None:
    cmd = scale.stock_query_cmd(Path("/b/bin-stock/squeue"))
    assert cmd == "/b/bin-stock/squeue -h -j {job_id} -o '%T %B'"


def _apply(text: str, config: Config | None = None) -> JupyterHub:
    config = Config() if config is None else config
    exec(compile(text, "jupyterhub_config.py", "exec"), {"get_config": lambda: config})
    return JupyterHub(config=config)


def _scene(tmp_path: Path) -> scale.Scene:
    scene = scale.Scene(tmp_path)
    scene.public.mkdir()
    return scene


def test_stock_config_runs_the_standin_on_the_bench_partition(tmp_path: Path) -> None:
    scene = _scene(tmp_path)
    (tmp_path / "stock").mkdir()
    text = scale.stock_config(scene, tmp_path / "stock", HubPorts(8450), 300, 20, "t0k", "")
    c = Config()
    app = _apply(text, c)
    assert c.SlurmSpawner.req_partition == "sfbench"
    assert c.SlurmSpawner.req_memory == "16M"
    assert c.SlurmSpawner.batchspawner_singleuser_cmd == ""
    assert c.Spawner.cmd == [str(scene.standin), "--report-port"]
    assert c.SlurmSpawner.batch_query_cmd.startswith(str(scene.bin_dir("stock") / "squeue"))
    # Poll interval untouched: JupyterHub's default (30 s) is what stock sites run.
    assert "poll_interval" not in c.Spawner and "poll_interval" not in c.SlurmSpawner
    assert app.named_server_limit_per_user == 310
    assert app.cleanup_servers is False
    assert app.tornado_settings == {"slow_spawn_timeout": 0}
    assert app.services == [{"name": "bench", "api_token": "t0k"}]
    assert app.load_roles[0]["scopes"] == ["admin:users", "admin:servers"]


def test_bench_lines_add_to_what_install_already_set() -> None:
    config = Config()
    config.JupyterHub.tornado_settings = {"shopfloor": "ctx"}
    config.JupyterHub.services = [{"name": "other"}]
    app = _apply("\n".join(["c = get_config()", *scale.bench_lines(50, 20, "t")]), config)
    assert app.tornado_settings == {"shopfloor": "ctx", "slow_spawn_timeout": 0}
    assert [s["name"] for s in app.services] == ["other", "bench"]


def test_ours_config_installs_the_bench_site_with_the_counting_bin(tmp_path: Path) -> None:
    scene = _scene(tmp_path)
    state = tmp_path / "ours"
    state.mkdir()
    text = scale.ours_config(scene, state, HubPorts(8350), 300, 20, "t0k")
    assert f"install(c, {str(state / 'site.yaml')!r})" in text
    assert f"c.ShopfloorSpawner.cmd = [{str(scene.standin)!r}]" in text
    site = load_site(state / "site.yaml")
    assert site.slurm.bin_dir == str(scene.bin_dir("ours"))
    assert site.slurm.poll_interval == 5
    bench = site.partitions["sfbench"]
    assert bench.default_memory_gb == scale.OURS_MEMORY_GB
    assert site.hub.bind_url == "http://127.0.0.1:8350"


def test_our_spawner_runs_the_configured_server_through_the_launcher() -> None:
    default = ShopfloorSpawner(python="/opt/env/bin/python").job_command()
    assert default == ["/opt/env/bin/python", "-m", "shopfloor.session.singleuser",
                       "/opt/env/bin/jupyterhub-singleuser"]
    custom = ShopfloorSpawner(python="/opt/env/bin/python", cmd=["/b/standin", "-x"])
    assert custom.job_command()[3:] == ["/b/standin", "-x"]


def test_standin_wrapper_runs_the_module_with_the_hub_version(tmp_path: Path) -> None:
    text = scale.standin_wrapper(Path("/opt/env/bin/python"), Path("/r/standin.py"), "6.1.1")
    assert text.startswith("#!/opt/env/bin/python\n")
    assert "'--hub-version=6.1.1'" in text and "'/r/standin.py'" in text
    compile(text, "standin", "exec")


# -- the stand-in server -------------------------------------------------------------------


def _args(*argv: str) -> argparse.Namespace:
    return standin.parse_args(argv)


def test_standin_listens_where_it_is_told() -> None:
    env = {"JUPYTERHUB_SERVICE_URL": "http://0.0.0.0:4321/user/alice/s001/"}
    # Ours: the launcher passes --ip/--port (extra JupyterHub arguments are ignored).
    assert standin.listen_address(_args("--ip=127.0.2.1", "--port=555", "--debug"), env) == (
        "127.0.2.1", 555)
    # Stock: the port is picked and reported by the stand-in itself.
    assert standin.listen_address(_args("--report-port"), env) == ("0.0.0.0", 0)
    assert standin.listen_address(_args(), env) == ("0.0.0.0", 4321)
    assert standin.listen_address(_args(), {}) == ("0.0.0.0", 0)


def test_activity_body_matches_jupyterhub_singleuser() -> None:
    body = standin.activity_body("s001", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert body == {"servers": {"s001": {"last_activity": "2026-01-02T03:04:05Z"}},
                    "last_activity": "2026-01-02T03:04:05Z"}


@pytest.fixture
def standin_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), standin.make_handler("6.1.1"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_standin_answers_any_path_with_the_hub_version(standin_server: str) -> None:
    with urllib.request.urlopen(f"{standin_server}/user/alice/s001/lab") as resp:
        assert resp.status == 200
        assert resp.headers["X-JupyterHub-Version"] == "6.1.1"
        assert resp.read() == standin.BODY


# -- the document --------------------------------------------------------------------------


def _arm_result(rate: float, p95: float) -> dict[str, object]:
    latency = {"p50_ms": p95 / 2, "p95_ms": p95, "max_ms": p95, "requests": 10, "errors": 0}
    return {
        "spawn": {"requested": 300, "ready": 300, "failed": 0, "seconds": 100.0,
                  "squeue_calls_per_s": 1.0},
        "window": {"squeue_calls_per_s": rate, "hub_cpu_percent": {"own": 4.0, "children": 1.0},
                   "slurmctld_cpu_percent": 2.0,
                   "latency": {"user_model": latency, "whoami": latency}},
    }


def test_targets_need_twenty_times_fewer_calls_and_a_fast_hub() -> None:
    met = scale.targets(_arm_result(0.2, 60.0), _arm_result(10.0, 90.0), 300)
    assert met["squeue_reduction"] == {"want_at_least": 20.0, "got": 50.0, "met": True}
    assert met["ours_hub_p95_ms"]["met"] is True
    missed = scale.targets(_arm_result(1.0, 120.0), _arm_result(10.0, 90.0), 300)
    assert missed["squeue_reduction"]["met"] is False
    assert missed["ours_hub_p95_ms"]["met"] is False
    assert scale.targets({}, {}, 300)["squeue_reduction"]["met"] is False


def test_document_and_table_compare_stock_with_ours(tmp_path: Path) -> None:
    args = scale.parse_args(["--servers", "300"])
    arms = []
    for key, rate in (("ours", 0.2), ("stock", 10.0)):
        arm = scale.Arm(key, key, None, {}, lambda home, job: tmp_path, "t")  # type: ignore[arg-type]
        arm.result = _arm_result(rate, 50.0)
        arms.append(arm)
    document = scale.build_document(arms, args, datetime.now(), {})
    json.dumps(document)
    assert document["ratio_stock_over_ours"]["squeue_calls_per_s"] == 50.0
    assert document["ratio_stock_over_ours"]["hub_cpu_own"] == 1.0
    table = scale.table_for(document)
    assert "squeue calls/s (window)" in table and "50" in table
    assert "(met)" in table


def test_arguments_are_checked() -> None:
    with pytest.raises(SystemExit):
        scale.parse_args(["--arms", "ours,other"])
    with pytest.raises(SystemExit):
        scale.parse_args(["--servers", "0"])
    assert scale.parse_args(["--arms", "stock"]).arm_keys == ["stock"]


# -- what the benchmark found --------------------------------------------------------------


def test_spawners_share_one_context_and_so_one_batched_squeue() -> None:
    # traitlets deep-copies config values into every configurable; a copied context would
    # give each spawner its own JobWatcher, i.e. one squeue per server again.
    from shopfloor.extensions.context import ShopfloorContext
    from shopfloor.site import parse_site

    ctx = ShopfloorContext.from_site(parse_site({"partitions": {"cpu": {}}}))
    config = Config()
    config.ShopfloorSpawner.context = ctx
    first, second = ShopfloorSpawner(config=config), ShopfloorSpawner(config=config)
    assert first.ctx is ctx and second.ctx is ctx
    assert first.ctx.job_watcher is second.ctx.job_watcher
