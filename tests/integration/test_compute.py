"""Sessions and batch runs from Python objects, against the real hub and Slurm cluster."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import nbformat
import pytest
from support import RunningHub, squeue_jobs

from shopfloor.apps.client import AppsClient
from shopfloor.session.batch import BatchRun
from shopfloor.session.compute import Compute
from shopfloor.session.hubapi import Hub
from shopfloor.session.sessions import Sessions
from shopfloor.workshops.client import WorkshopClient

pytestmark = [pytest.mark.hub, pytest.mark.cluster, pytest.mark.slow]

PYTHON = "/opt/shopfloor/venv/bin/python"


def api_url(hub: RunningHub) -> str:
    """The hub's internal API, as sessions see it ($JUPYTERHUB_API_URL)."""
    return f"{hub.site.hub.hub_bind_url}/hub/api"


def job_env(job_id: str) -> dict[str, str]:
    """The environment of the session process of a Slurm job (as its user could read it)."""
    pids = subprocess.run(["pgrep", "-u", "alice", "-f", "jupyterhub-singleuser|singleuser"],
                          capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        env = dict(e.decode(errors="replace").split("=", 1) for e in raw if b"=" in e)
        if env.get("SLURM_JOB_ID") == job_id:
            return env
    raise AssertionError(f"no session process for job {job_id}")


def test_start_and_stop_a_session_from_python(hub: RunningHub) -> None:
    """Sessions() with a user token starts a real job; the session's own token may then list,
    start and stop the user's servers, and nothing beyond."""
    alice = hub.client("alice")
    sessions = Sessions(Hub(api_url(hub), alice.token()))
    session = sessions.start("pyobj", partition="debug", cpus=1, memory_gb=0.5, walltime=10)
    assert session.name == "pyobj" and session.partition == "debug"
    try:
        running = sessions.wait("pyobj", "running", timeout=90)
        assert running.url == "/user/alice/pyobj/"
        [job] = [j for j in squeue_jobs("alice") if j["name"] == "shopfloor-alice-pyobj"]
        assert job["partition"] == "debug" and job["state"] == "RUNNING"
        # What code inside that session holds: its server token.
        env = job_env(job["id"])
        assert env["JUPYTERHUB_API_URL"] == api_url(hub)
        inside = Hub(env["JUPYTERHUB_API_URL"], env["JUPYTERHUB_API_TOKEN"])
        assert inside.user == "alice"
        assert "pyobj" in inside.servers()
        assert inside.partitions()["default_partition"] == "cpu"
        assert inside.validate({"partition": "debug", "walltime": "5"}).walltime_minutes == 5
        # The compute panel's list: the running session with the time left in its Slurm job.
        [listed] = [s for s in Compute(inside).list_sessions() if s.name == "pyobj"]
        left = listed.minutes_left()
        assert left is not None and 7 <= left <= 10, listed
        # The session's token finds the services in the hub's list, and they answer it.
        assert set(inside.services()) == {"apps", "workshop"}
        assert WorkshopClient(hub=inside).list() == []
        assert isinstance(AppsClient(hub=inside).list("mine"), list)
        denied = {
            "tokens": inside.http.post(f"{inside.api_url}/users/alice/tokens", json={}),
            "other user": inside.http.get(f"{inside.api_url}/users/bob"),
            "list users": inside.http.get(f"{inside.api_url}/users"),
            "bob's server": inside.http.post(f"{inside.api_url}/users/bob/servers/x", json={}),
        }
        # JupyterHub answers 404 for other users' things a token may not see at all.
        assert {k: r.status_code for k, r in denied.items()} == {
            "tokens": 403, "other user": 404, "list users": 403, "bob's server": 404}
    finally:
        sessions.stop("pyobj")
    sessions.wait("pyobj", "stopped", timeout=60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(j["id"] == job["id"] for j in squeue_jobs("alice")):
        time.sleep(0.5)
    assert not any(j["id"] == job["id"] for j in squeue_jobs("alice"))


NOTEBOOK_CELLS = [
    "import getpass, os\nresult = n * 2",
    "print(getpass.getuser(), os.environ['SLURM_JOB_PARTITION'], result)",
    "import time\ntime.sleep(sleep_seconds)",
]


def _as_alice(hub: RunningHub, token: str, code: str) -> str:
    """Run Python as alice with a session-like environment (hub URL and token)."""
    env = {**os.environ, "JUPYTERHUB_API_URL": api_url(hub), "JUPYTERHUB_API_TOKEN": token}
    proc = subprocess.run(
        ["sudo", "-n", "-u", "alice", "--preserve-env=JUPYTERHUB_API_URL,JUPYTERHUB_API_TOKEN",
         "--", PYTHON, "-c", code],
        capture_output=True, text=True, env=env, cwd="/tmp", timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


@pytest.fixture
def alice_notebook() -> Path:
    folder = Path("/home/alice/shopfloor-batch-test")
    subprocess.run(["sudo", "-u", "alice", "mkdir", "-p", str(folder)], check=True)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in NOTEBOOK_CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = folder / "double.ipynb"
    subprocess.run(["sudo", "-u", "alice", "tee", str(path)], input=nbformat.writes(nb),
                   text=True, stdout=subprocess.DEVNULL, check=True)
    return path


def _wait(run: BatchRun, until: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = run.status()
        if until in (status.state, status.progress_text) or status.finished:
            return
        time.sleep(0.5)
    raise AssertionError(f"run {run.id}: not {until} in {timeout} s ({run.status()})")


def test_run_a_notebook_as_a_batch_job(hub: RunningHub, alice_notebook: Path) -> None:
    token = hub.client("alice").token()
    submit = (
        "from shopfloor.session.batch import BatchRun\n"
        f"run = BatchRun.submit({str(alice_notebook)!r}, partition='debug', cpus=1, "
        "memory_gb=0.5, walltime='5', parameters={'n': 21, 'sleep_seconds': 0})\n"
        "print(run.directory)"
    )
    run = BatchRun(_as_alice(hub, token, submit))
    try:
        assert run.directory.parent == Path("/home/alice/shopfloor-batch")
        assert run.directory.owner() == "alice"
        _wait(run, "completed")
        status = run.status()
        assert (status.state, status.progress_text) == ("completed", "cell 4 of 4"), status
        out = run.output()
        assert out.cells[0].source.splitlines()[1:] == ["n = 21", "sleep_seconds = 0"]
        assert out.cells[2].outputs[0]["text"] == "alice debug 42\n"
        assert json.loads((run.directory / "progress.json").read_text())["state"] == "completed"
        # The hub's limits apply: debug allows 30 minutes.
        bad = (
            "from shopfloor.session.batch import BatchRun\n"
            "from shopfloor.resources import RequestError\n"
            "try:\n"
            f"    BatchRun.submit({str(alice_notebook)!r}, partition='debug', walltime='2:00:00')\n"
            "except RequestError as exc:\n    print(exc.problems['walltime'])"
        )
        assert _as_alice(hub, token, bad) == \
            "the debug partition allows at most 30 minutes; you asked for 2 hours"
    finally:
        subprocess.run(["scancel", run.job_id], check=False)


def test_cancel_a_running_batch_job(hub: RunningHub, alice_notebook: Path) -> None:
    token = hub.client("alice").token()
    submit = (
        "from shopfloor.session.batch import BatchRun\n"
        f"run = BatchRun.submit({str(alice_notebook)!r}, partition='debug', memory_gb=0.5, "
        "walltime='5', parameters={'n': 1, 'sleep_seconds': 300})\n"
        "print(run.directory)"
    )
    run = BatchRun(_as_alice(hub, token, submit))
    try:
        _wait(run, "cell 3 of 4")  # the parameters and two cells ran; it sleeps in the last
        assert run.status().state == "running"
        _as_alice(hub, token, f"from shopfloor.session.batch import BatchRun\n"
                               f"BatchRun({str(run.directory)!r}).cancel()")
        run = BatchRun(run.directory)
        assert run.status().state == "cancelled"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
            j["id"] == run.job_id and j["state"] in {"RUNNING", "COMPLETING"}
            for j in squeue_jobs("alice")
        ):
            time.sleep(0.5)
        assert not any(j["id"] == run.job_id and j["state"] == "RUNNING"
                       for j in squeue_jobs("alice"))
    finally:
        subprocess.run(["scancel", run.job_id], check=False)


def test_example_notebook_runs_top_to_bottom(hub: RunningHub, tmp_path: Path) -> None:
    """example_notebooks/compute_panel.ipynb with a real kernel against the real hub."""
    from nbclient import NotebookClient

    source = Path(__file__).resolve().parents[2] / "example_notebooks" / "compute_panel.ipynb"
    nb = nbformat.read(source, as_version=4)
    env = {"JUPYTERHUB_API_URL": api_url(hub), "JUPYTERHUB_API_TOKEN": hub.client("alice").token(),
           "JUPYTERHUB_USER": "alice"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=120, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    text = "".join(o.get("text", "") for o in outputs)
    assert "debug" in text
