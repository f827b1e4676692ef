"""The plain objects behind the compute panel: Hub, Sessions, BatchRun, Compute (no browser)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import nbformat
import pytest
from fakes import TOKEN, FakeHub, RecordingSlurm

from shopfloor.resources import RequestError
from shopfloor.session import batch
from shopfloor.session.batch import (
    BatchError,
    BatchRun,
    check_parameters,
    parse_parameters,
    run_status,
)
from shopfloor.session.compute import estimate_wait, idle_gpus, partition_rows
from shopfloor.session.hubapi import RETRIES, Hub, HubError
from shopfloor.session.notebookrun import execute, parameters_cell
from shopfloor.session.sessions import Session, SessionError, Sessions, check_name
from shopfloor.slurm.jobscript import build_script
from shopfloor.slurm.seam import JobInfo


@pytest.fixture
def fake() -> Iterator[FakeHub]:
    hub = FakeHub()
    yield hub
    hub.close()


@pytest.fixture
def hub(fake: FakeHub) -> Hub:
    return Hub(fake.url, TOKEN)


def job(state: str, reason: str = "None", start: datetime | None = None,
        partition: str = "cpu") -> JobInfo:
    return JobInfo(job_id="7", state=state, reason=reason, batch_host="node1", nodes="node1",
                   start=start, user="alice", partition=partition, name="x")


# -- Hub ------------------------------------------------------------------------------------


def test_hub_from_env_and_explicit(monkeypatch: pytest.MonkeyPatch, fake: FakeHub) -> None:
    monkeypatch.delenv("JUPYTERHUB_API_URL", raising=False)
    with pytest.raises(HubError, match="JUPYTERHUB_API_URL"):
        Hub()
    monkeypatch.setenv("JUPYTERHUB_API_URL", fake.url)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", TOKEN)
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    assert Hub().user == "alice" and not fake.requests  # from the env, no call
    # An explicit URL is another hub: its user is asked for, not taken from the env.
    monkeypatch.setenv("JUPYTERHUB_USER", "mallory")
    assert Hub(fake.url, TOKEN).user == "alice"
    assert TOKEN not in repr(Hub(fake.url, TOKEN))


def test_hub_errors_in_plain_words(fake: FakeHub) -> None:
    quick = RETRIES.new(backoff_factor=0.05)  # the default policy, backing off faster
    with pytest.raises(HubError, match="refused") as refused:
        Hub(fake.url, "wrong").partitions()
    assert refused.value.status == 403 and "wrong" not in str(refused.value)
    fake.fail["/shopfloor/partitions"] = (503, "Slurm is not answering: timed out")
    with pytest.raises(HubError, match=r"Slurm is not answering: timed out\. Try again"):
        Hub(fake.url, TOKEN, retries=quick).partitions()
    with pytest.raises(HubError, match="Cannot reach the hub"):
        Hub("http://127.0.0.1:9/hub/api", TOKEN, retries=quick).partitions()


def test_validate_returns_request_or_field_problems(hub: Hub) -> None:
    request = hub.validate({"partition": "debug", "walltime": "20"})
    assert request.partition == "debug" and request.walltime_minutes == 20
    with pytest.raises(RequestError) as bad:
        hub.validate({"partition": "debug", "walltime": "90"})
    assert bad.value.problems == {"walltime": "the debug partition allows at most 30 minutes"}


def test_progress_reads_past_the_hubs_first_event(fake: FakeHub, hub: Hub) -> None:
    fake.progress["q"] = [
        {"progress": 0, "message": "Server requested"},
        {"progress": 20, "message": "Queued on debug: waiting for free resources on the debug "
                                    "partition; expected to start around 10:05 (in 5 minutes)."},
    ]
    assert hub.progress("q")["message"].startswith("Queued on debug")
    assert hub.progress("not-starting") is None


# -- Sessions ---------------------------------------------------------------------------------


def test_session_states_reason_and_eta() -> None:
    queued = Session.from_model(
        {"name": "q", "ready": False, "pending": "spawn", "url": "/user/alice/q/",
         "user_options": {"partition": "debug"}},
        "Queued on debug: waiting for free resources on the debug partition; position 1 in "
        "the queue; expected to start around 10:05 (in 5 minutes).",
    )
    assert (queued.state, queued.partition) == ("starting", "debug")
    assert queued.reason == "waiting for free resources on the debug partition"
    assert queued.eta == "around 10:05"
    assert Session.from_model({"name": "", "ready": True}).state == "running"
    assert Session.from_model({"name": "", "ready": True}).label == "(default)"
    assert Session.from_model({"name": "a", "ready": True, "pending": "stop"}).state == "stopping"
    running = Session.from_model({"name": "a", "ready": False}, "Running on node1; waiting")
    assert running.reason == "" and running.eta == ""


def test_session_names_are_checked() -> None:
    assert check_name(" gpu-work ") == "gpu-work"
    for bad in ("", "Has Space", "a/b", "-x", "x" * 33, "ümlaut"):
        with pytest.raises(SessionError, match="lowercase letters"):
            check_name(bad)


def test_sessions_start_list_stop(fake: FakeHub, hub: Hub) -> None:
    sessions = Sessions(hub)
    fake.add_server("", ready=True)
    session = sessions.start("work", partition="debug", cpus=2, walltime=20)
    assert session.state == "starting" and session.partition == "debug"
    [body] = [b for m, p, b in fake.requests if (m, p) == ("POST", "/users/alice/servers/work")]
    # What the hub gets is the validated request, not the raw input.
    assert body["user_options"] == {"partition": "debug", "nodes": 1, "cpus": 2,
                                    "memory_gb": 1.0, "gpus": 0, "walltime": "20"}
    with pytest.raises(SessionError, match="already exists"):
        sessions.start("work", partition="debug")
    with pytest.raises(RequestError):
        sessions.start("other", partition="debug", walltime=90)
    assert "other" not in fake.servers
    assert [s.name for s in sessions.list()] == ["", "work"]
    sessions.stop("work")
    assert ("DELETE", "/users/alice/servers/work", None) in fake.requests
    assert [s.name for s in sessions.list()] == [""]


def test_a_start_that_failed_is_listed_with_the_hubs_reason(fake: FakeHub, hub: Hub) -> None:
    sessions = Sessions(hub)
    fake.add_server("q", ready=False, pending="spawn")
    fake.progress["q"] = [{"progress": 0, "message": "Server requested"},
                          {"progress": 20, "message": "Queued on debug: it was just submitted."}]
    assert sessions.list()[0].reason == "it was just submitted"
    del fake.servers["q"]
    fake.progress["q"] = [{"progress": 100, "failed": True,
                           "message": "Spawn failed: Your session job 9 ended (cancelled)"}]
    [failed] = sessions.list()
    assert failed.state == "failed" and "job 9 ended" in failed.message
    sessions.forget_failed("q")
    assert sessions.list() == []


# -- partitions --------------------------------------------------------------------------------


def test_idle_gpus_counts_usable_nodes_of_the_partition() -> None:
    nodes = {
        "gpu1": {"Partitions": "gpu", "State": "MIXED", "Gres": "gpu:2",
                 "GresUsed": "gpu:1(IDX:0)"},
        "gpu2": {"Partitions": "gpu,debug", "State": "IDLE", "Gres": "gpu:a100:4",
                 "GresUsed": "gpu:a100:0"},
        "gpu3": {"Partitions": "gpu", "State": "DOWN*", "Gres": "gpu:2", "GresUsed": "gpu:0"},
        "node1": {"Partitions": "cpu", "State": "IDLE", "Gres": "(null)", "GresUsed": "gpu:0"},
    }
    assert idle_gpus(nodes, "gpu") == 5
    assert idle_gpus(nodes, "cpu") == 0


def test_estimate_wait() -> None:
    now = datetime(2025, 1, 1, 10, 0)
    kw = {"up": True, "cpus_wanted": 1, "now": now}
    assert estimate_wait("cpu", cpus_idle=4, jobs=[], **kw) == "starts now"
    assert estimate_wait("cpu", cpus_idle=4, jobs=None, **kw) == "unknown"
    assert estimate_wait("cpu", up=False, cpus_idle=4, cpus_wanted=1, jobs=[]) == \
        "partition is down"
    queued = [job("PENDING", "Resources", datetime(2025, 1, 1, 10, 30)),
              job("PENDING", "Priority", datetime(2025, 1, 1, 10, 20))]
    assert estimate_wait("cpu", cpus_idle=4, jobs=queued, **kw) == \
        "after 10:30 (~30 minutes)"
    assert estimate_wait("debug", cpus_idle=4, jobs=queued, **kw) == "starts now"
    assert estimate_wait("cpu", cpus_idle=0, jobs=[job("PENDING")] * 2, **kw) == \
        "after 2 queued jobs"
    assert estimate_wait("cpu", cpus_idle=0, jobs=[job("RUNNING")], **kw) == \
        "when running jobs end"


def test_partition_rows_from_the_hubs_answer() -> None:
    from fakes import PARTITIONS

    rows = partition_rows(PARTITIONS, {}, [job("PENDING", partition="debug")])
    cpu, debug = rows
    assert (cpu.name, cpu.nodes_idle, cpu.nodes_total, cpu.cpus_idle) == ("cpu", 1, 2, 6)
    assert cpu.memory_gb_per_node == 3.9 and cpu.max_walltime_text == "8 hours"
    assert cpu.estimated_wait == "starts now" and debug.estimated_wait == "after 1 queued job"
    assert debug.limits["max_walltime_minutes"] == 30 and debug.defaults["memory_gb"] == 0.5
    assert partition_rows(PARTITIONS, None, None)[0].gpus_idle is None


# -- batch runs --------------------------------------------------------------------------------


def test_parameters_are_literals_with_variable_names() -> None:
    assert parse_parameters("epochs = 3\n# comment\nname = 'x'\nrates=[0.1, 0.2]\n") == \
        {"epochs": 3, "name": "x", "rates": [0.1, 0.2]}
    for text, words in (("epochs 3", "name = value"), ("x = open('f')", "not a value"),
                        ("class = 1", "not a Python variable name"),
                        ("1x = 1", "not a Python variable name")):
        with pytest.raises(BatchError, match=words):
            parse_parameters(text)
    with pytest.raises(BatchError, match="cannot be passed"):
        check_parameters({"f": object()})
    cell = parameters_cell({"epochs": 3, "name": "it's"})
    assert cell.source.splitlines()[1:] == ["epochs = 3", 'name = "it\'s"']
    assert cell.metadata["tags"] == ["injected-parameters"]


def test_run_status_combines_slurm_and_progress() -> None:
    running = {"state": "running", "cell": 2, "cells": 5}
    assert run_status(job("PENDING", "Resources"), None, False).state == "queued"
    status = run_status(job("RUNNING"), running, False)
    assert (status.state, status.progress_text, status.node) == ("running", "cell 2 of 5",
                                                                 "node1")
    done = run_status(None, {"state": "completed", "cell": 5, "cells": 5}, False)
    assert done.state == "completed" and done.finished
    failed = run_status(job("COMPLETED"), {"state": "failed", "cell": 3, "cells": 5,
                                           "error": "ZeroDivisionError: division by zero"}, False)
    assert failed.state == "failed" and "ZeroDivisionError" in failed.message
    assert run_status(job("CANCELLED"), running, False).state == "cancelled"
    assert run_status(None, running, True).state == "cancelled"
    # Cancelling kills the kernel: the job may still report "failed" on its way out.
    assert run_status(None, {"state": "failed", "error": "DeadKernelError"}, True).state == \
        "cancelled"
    assert "walltime" in run_status(job("TIMEOUT"), running, False).message
    assert "ended before the notebook finished" in run_status(None, running, False).message


def small_notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# test"),
                *(nbformat.v4.new_code_cell(s) for s in sources)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)
    return path


def test_submit_validates_snapshots_and_builds_the_script(tmp_path: Path, hub: Hub) -> None:
    notebook = small_notebook(tmp_path / "analysis.ipynb", "print(n)")
    slurm = RecordingSlurm()
    run = BatchRun.submit(notebook, parameters={"n": 3}, hub=hub, slurm=slurm,  # type: ignore[arg-type]
                          runs_dir=tmp_path / "runs", partition="debug", walltime=20)
    assert run.job_id == "4242" and run.request.partition == "debug"
    assert (run.directory / "input.ipynb").read_text() == notebook.read_text()
    assert run.parameters == {"n": 3} and run.spec["workdir"] == str(tmp_path)
    [script] = slurm.scripts
    assert "#SBATCH --partition=debug" in script and "#SBATCH --time=0-00:20:00" in script
    assert f"#SBATCH --output={run.directory}/job.log" in script
    assert f"-m shopfloor.session.notebookrun {run.directory}" in script
    assert TOKEN not in script
    assert run.status().state == "queued"
    assert [r.id for r in BatchRun.list(tmp_path / "runs")] == [run.id]
    run.cancel()
    assert slurm.cancelled == ["4242"]
    assert BatchRun.load(run.id, tmp_path / "runs").spec["cancel_requested"] is True


def test_submit_refusals_leave_nothing_behind(tmp_path: Path, hub: Hub) -> None:
    notebook = small_notebook(tmp_path / "a.ipynb", "1")
    runs = tmp_path / "runs"
    with pytest.raises(RequestError, match="walltime"):
        BatchRun.submit(notebook, hub=hub, slurm=RecordingSlurm(), runs_dir=runs,  # type: ignore[arg-type]
                        partition="debug", walltime=90)
    with pytest.raises(BatchError, match="Slurm refused the job: Invalid account"):
        BatchRun.submit(notebook, hub=hub, slurm=RecordingSlurm("Invalid account"),  # type: ignore[arg-type]
                        runs_dir=runs, partition="debug")
    with pytest.raises(BatchError, match="no notebook at"):
        BatchRun.submit(tmp_path / "missing.ipynb", hub=hub, runs_dir=runs)
    (tmp_path / "bad.ipynb").write_text("not json")
    with pytest.raises(BatchError, match="not a valid notebook"):
        BatchRun.submit(tmp_path / "bad.ipynb", hub=hub, runs_dir=runs)
    assert not list(runs.glob("*")) if runs.exists() else True


def test_job_script_is_safe_for_odd_run_folders(tmp_path: Path) -> None:
    from shopfloor.resources import ResourceRequest
    from shopfloor.slurm.jobscript import JobScriptError

    with pytest.raises(JobScriptError):
        build_script(batch._job_spec(tmp_path / "with space", ResourceRequest(partition="cpu"),
                                     "/opt/py/bin/python"))


def test_executor_runs_notebook_with_parameters_and_reports_progress(tmp_path: Path) -> None:
    """The job side for real: nbclient and a real kernel, in this process."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    small_notebook(run_dir / "input.ipynb", "total = n * 2", "import os; cwd = os.getcwd()",
                   "print(total, cwd)")
    (run_dir / "run.json").write_text(json.dumps(
        {"parameters": {"n": 21}, "workdir": str(tmp_path)}))
    assert execute(run_dir) == 0
    progress = json.loads((run_dir / "progress.json").read_text())
    assert (progress["state"], progress["cell"], progress["cells"]) == ("completed", 4, 4)
    out = nbformat.read(run_dir / "output.ipynb", as_version=4)
    assert out.cells[0].metadata["tags"] == ["injected-parameters"]
    assert out.cells[-1].outputs[0]["text"] == f"42 {tmp_path}\n"


def test_executor_reports_a_failing_cell(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    small_notebook(run_dir / "input.ipynb", "x = 1", "1 / 0", "print('never')")
    (run_dir / "run.json").write_text("{}")
    assert execute(run_dir) == 1
    progress = json.loads((run_dir / "progress.json").read_text())
    assert progress["state"] == "failed" and progress["cell"] == 2 and progress["cells"] == 3
    assert progress["error"].startswith("ZeroDivisionError")
    assert (run_dir / "output.ipynb").exists()
