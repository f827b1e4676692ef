"""The JupyterLab server extension inside a real Slurm job: status, help, cards, examples.

Starts JupyterLab in an ``srun`` step on the debug partition (what a session job runs, without
the hub), with ``shopfloor.lab`` enabled and the built lab extension on its extension path,
and asks its REST API what the status bar and Help view will show.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import requests
from support import PORT_BASE, REPO

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

TOKEN = "lab-test-token"
PORT = PORT_BASE + 50
BUILT = REPO / "src" / "shopfloor" / "lab" / "labextension"


def _get(path: str, **kwargs: object) -> requests.Response:
    return requests.get(f"http://127.0.0.1:{PORT}/{path}",
                        headers={"Authorization": f"token {TOKEN}"}, timeout=30, **kwargs)


@pytest.fixture(scope="module")
def lab(local_cluster: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if not (BUILT / "package.json").exists():
        pytest.fail("the lab extension is not built: cd extensions/jupyterlab && npm ci && "
                    "npm run build")
    tmp = tmp_path_factory.mktemp("lab")
    home, config, labext = tmp / "home", tmp / "config", tmp / "labextensions"
    home.mkdir()
    config.mkdir()
    (labext / "@shopfloor").mkdir(parents=True)
    (labext / "@shopfloor" / "jupyterlab").symlink_to(BUILT)
    (home / "mine.ipynb").write_text("my own notebook")  # must survive the examples copy
    (home / "shopfloor-examples").mkdir()
    (home / "shopfloor-examples" / "slider_app.ipynb").write_text("my edited copy")
    (config / "jupyter_server_config.json").write_text(json.dumps({
        "ServerApp": {"jpserver_extensions": {"shopfloor.lab": True}},
        "LabServerApp": {"extra_labextensions_path": [str(labext)]},
    }))
    env = {**os.environ, "JUPYTER_CONFIG_PATH": str(config), "HOME": str(home),
           "SHOPFLOOR_EXAMPLES_SOURCE": str(REPO / "example_notebooks"),
           "SHOPFLOOR_HELP_URL": "https://hpc.example.org/help",
           "SHOPFLOOR_WARN_MINUTES": "15,5", "JUPYTERHUB_USER": "tester"}
    log = (tmp / "lab.log").open("w")
    proc = subprocess.Popen(
        ["srun", "--partition=debug", "--time=10", "--mem=1G", "--cpus-per-task=1",
         "--job-name=shopfloor-lab-test", sys.executable, "-m", "jupyterlab",
         "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={PORT}",
         f"--ServerApp.root_dir={home}", f"--IdentityProvider.token={TOKEN}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if _get("shopfloor/lab/status").status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab ended: {(tmp / 'lab.log').read_text()[-3000:]}")
            time.sleep(1)
        else:
            pytest.fail(f"JupyterLab did not start: {(tmp / 'lab.log').read_text()[-3000:]}")
        yield home
    finally:
        proc.terminate()  # srun passes it on to the step and the job ends
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_status_is_the_jobs_own(lab: Path) -> None:
    status = _get("shopfloor/lab/status").json()
    job = subprocess.run(["squeue", "-h", "-n", "shopfloor-lab-test", "-o", "%i|%P|%N|%e"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert job, "the test's job is not in squeue"
    job_id, partition, node, end = job[0].split("|")
    assert status["in_job"] and status["job_id"] == job_id
    assert (status["partition"], status["node"]) == (partition, node) == ("debug", node)
    assert status["end_epoch"] == datetime.fromisoformat(end).timestamp()
    assert 8 * 60 < status["end_epoch"] - status["now_epoch"] <= 10 * 60
    assert status["memory_limit_bytes"] == 2**30
    assert 20 * 2**20 < status["memory_used_bytes"] < 2**30
    assert status["warn_minutes"] == [15, 5] and status["problem"] == ""
    assert status["help_url"] == "https://hpc.example.org/help"


def test_help_has_what_support_needs(lab: Path) -> None:
    text = _get("shopfloor/lab/help").json()["text"]
    for line in ("user:       tester", "partition:  debug", "time limit: 00:10:00"):
        assert line in text
    assert TOKEN not in text


def test_examples_arrive_without_touching_the_users_files(lab: Path) -> None:
    examples = lab / "shopfloor-examples"
    assert (examples / "compute_panel.ipynb").exists()
    assert (examples / "data" / "reviews.csv").exists()
    assert (examples / "slider_app.ipynb").read_text() == "my edited copy"
    assert (examples / "slider_app.v{}.ipynb".format(
        _get("shopfloor/lab/status").json()["version"])).exists()
    assert (lab / "mine.ipynb").read_text() == "my own notebook"


def test_cards_write_their_notebooks(lab: Path) -> None:
    def post(card: str, body: dict[str, str]) -> requests.Response:
        return requests.post(f"http://127.0.0.1:{PORT}/shopfloor/lab/panels/{card}",
                             json=body, headers={"Authorization": f"token {TOKEN}"}, timeout=30)

    assert post("compute", {}).json() == {"path": "shopfloor-panels/Compute.ipynb"}
    reply = post("publish", {"notebook": "mine.ipynb"})
    assert reply.json() == {"path": "shopfloor-panels/Publish mine.ipynb"}
    assert post("publish", {"notebook": "../etc/x.ipynb"}).status_code == 400
    assert post("nope", {}).status_code == 400


def test_the_lab_extension_is_served_and_login_is_required(lab: Path) -> None:
    names = [e["name"] for e in _get("lab/api/extensions").json()]
    assert "shopfloor-jupyterlab" in names
    anonymous = requests.get(f"http://127.0.0.1:{PORT}/shopfloor/lab/status", timeout=30)
    assert anonymous.status_code == 403


def test_no_npm_runs_as_the_user_at_server_start(lab: Path) -> None:
    """jupyter-lsp (a JupyterLab dependency) looked for language servers at every start by
    running ``npm prefix -g`` as the user, leaving ``~/.npm/_logs``. We ship no language
    servers (and JupyterLab's LSP is off by default): the environment's ``shopfloor-lsp.json``
    turns the server extension off."""
    assert _get("lsp/status").status_code == 404
    assert _get("shopfloor/lab/status").status_code == 200  # the server itself is fine
    assert not (lab / ".npm").exists(), sorted(str(p) for p in (lab / ".npm").rglob("*"))
