"""Every example notebook opens and runs top to bottom on the demo as it ships.

Four examples run in their own tests (with the hub pieces they show: the compute panel, the
fine-tuning wizard, the workshop service). The others run here, as alice, in a session-like
environment: her own kernel (``jupyter execute`` under ``sudo -u alice``), in a folder of her
home, with the hub's URL and her token in the environment as a session has them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from support import REPO, RunningHub

EXAMPLES = REPO / "example_notebooks"
#: Examples executed top to bottom by another test (that test file names the notebook).
RUN_ELSEWHERE = {
    "compute_panel.ipynb": "tests/integration/test_compute.py",
    "finetune_classifier.ipynb": "tests/integration/test_finetune_notebook.py",
    "workshop_intro.ipynb": "tests/integration/test_workshop_notebooks.py",
    "trainer_workshop.ipynb": "tests/integration/test_workshop_notebooks.py",
}
#: Examples run here, with the seconds each may take (the Ray one starts a real cluster).
RUN_HERE = {"slider_app.ipynb": 120, "ray_cluster.ipynb": 420}
JUPYTER = "/opt/shopfloor/venv/bin/jupyter"
PYTHON = "/opt/shopfloor/venv/bin/python"
SESSION_ENV = ("JUPYTERHUB_API_URL", "JUPYTERHUB_API_TOKEN", "JUPYTERHUB_USER")


def test_every_example_is_run_by_a_test() -> None:
    shipped = {p.name for p in EXAMPLES.glob("*.ipynb")}
    assert shipped == set(RUN_ELSEWHERE) | set(RUN_HERE), "run a new example in a test"
    for name, test in RUN_ELSEWHERE.items():
        assert name in (REPO / test).read_text(), f"{test} no longer runs {name}"


def _as_alice(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float
              ) -> subprocess.CompletedProcess[str]:
    """``cmd`` as alice with the session's variables (passed by name: the token never
    appears in a command line)."""
    return subprocess.run(
        ["sudo", "-n", "-u", "alice", f"--preserve-env={','.join(SESSION_ENV)}", "--", *cmd],
        env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True, timeout=timeout,
        check=False)


@pytest.fixture
def alice_folder() -> Iterator[Path]:
    """A fresh folder of alice's (her home is where a session's notebooks live)."""
    folder = Path(f"/home/alice/shopfloor-examples-test-{os.getpid()}")
    subprocess.run(["sudo", "-u", "alice", "mkdir", "-m", "700", str(folder)], check=True)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _stop_notebook_cluster(env: dict[str, str], folder: Path, since: float) -> None:
    """Stop and forget the example's Ray cluster if this test made it (and it is left)."""
    code = (
        "from shopfloor.ray.cluster import RayCluster, RayClusterError, default_hub, "
        "fetch_settings\n"
        "c = RayCluster('notebook-demo', settings=fetch_settings(default_hub()))\n"
        "try:\n"
        f"    mine = c.config()['created'] >= {since}\n"
        "except RayClusterError:\n"
        "    mine = False\n"
        "if mine:\n"
        "    c.stop()\n"
        "    c.forget()\n"
    )
    _as_alice([PYTHON, "-c", code], env, folder, timeout=90)


@pytest.mark.hub
@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RUN_HERE))
def test_example_runs_top_to_bottom_as_alice(hub: RunningHub, alice_folder: Path,
                                             name: str) -> None:
    env = {"JUPYTERHUB_API_URL": f"{hub.site.hub.hub_bind_url}/hub/api",
           "JUPYTERHUB_API_TOKEN": hub.client("alice").token(), "JUPYTERHUB_USER": "alice"}
    notebook = alice_folder / name
    subprocess.run(["sudo", "-u", "alice", "cp", str(EXAMPLES / name), str(notebook)],
                   check=True)
    started = time.time()
    try:
        out = _as_alice([JUPYTER, "execute", "--inplace", f"--timeout={RUN_HERE[name]}",
                         "--startup_timeout=60", name], env, alice_folder,
                        timeout=RUN_HERE[name] + 90)
    finally:
        if name == "ray_cluster.ipynb":
            _stop_notebook_cluster(env, alice_folder, started)
    assert out.returncode == 0, out.stderr[-3000:]
    nb = nbformat.read(notebook, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") + json.dumps(o.get("data", {})) for o in outputs)
    assert env["JUPYTERHUB_API_TOKEN"] not in text  # nothing prints the session's token
    widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in
               o.get("data", {})]
    assert widgets, "the example's panel or widgets did not show"
    if name == "ray_cluster.ipynb":
        assert "'CPU'" in text  # the Ray job printed the cluster's resources
