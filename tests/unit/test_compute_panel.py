"""ComputePanel's state and behaviour in plain Python (no browser, no kernel)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import ipywidgets as w
import pytest
from fakes import TOKEN, FakeHub, RecordingSlurm
from test_compute_objects import small_notebook

from shopfloor.session.compute import Compute
from shopfloor.session.hubapi import Hub
from shopfloor.widgets import ComputePanel
from shopfloor.widgets.common import Ticker, lab_link, plain_message


@pytest.fixture
def fake() -> Iterator[FakeHub]:
    hub = FakeHub()
    yield hub
    hub.close()


@pytest.fixture
def slurm() -> RecordingSlurm:
    return RecordingSlurm()


@pytest.fixture
def panel(fake: FakeHub, slurm: RecordingSlurm, tmp_path: Path) -> Iterator[ComputePanel]:
    compute = Compute(Hub(fake.url, TOKEN), slurm, tmp_path / "runs")  # type: ignore[arg-type]
    panel = ComputePanel(compute, auto_refresh=False)
    yield panel
    panel.close()


def rows_of(box: w.Box, css: str) -> list[w.Widget]:
    return [c for c in box.children if css in c._dom_classes]


def text_of(row: w.Box) -> str:
    return " ".join(c.value for c in row.children if isinstance(c, w.HTML))


def button(row: w.Box, css: str) -> w.Button:
    return next(c for c in row.children if isinstance(c, w.Button) and css in c._dom_classes)


def test_table_and_chooser_come_from_the_hub(panel: ComputePanel) -> None:
    assert 'data-partition="cpu"' in panel.table.value
    assert 'data-partition="debug"' in panel.table.value
    assert "1 / 2" in panel.table.value and "8 hours" in panel.table.value
    # Expected waits come from Slurm's queue (here: one job queued on debug).
    assert "starts now" in panel.table.value and "after 1 queued job" in panel.table.value
    chooser = panel.chooser
    assert chooser.partition.options == ("cpu", "debug") and chooser.partition.value == "cpu"
    assert (chooser.cpus.max, chooser.walltime.max, chooser.walltime.value) == (4, 480, 120)
    chooser.partition.value = "debug"
    assert (chooser.cpus.max, chooser.memory_gb.max, chooser.walltime.max) == (2, 2, 30)
    assert (chooser.walltime.value, chooser.memory_gb.value) == (30, 0.5)
    assert "30 minutes" in chooser.limits.value
    assert chooser.options() == {"partition": "debug", "cpus": 1, "memory_gb": 0.5, "gpus": 0,
                                 "walltime": "30"}
    # The user's choice survives a refresh.
    panel.refresh()
    assert chooser.partition.value == "debug"


def test_start_list_and_stop_a_session(panel: ComputePanel, fake: FakeHub) -> None:
    assert "No sessions" in panel.session_box.children[0].value
    panel.chooser.partition.value = "debug"
    panel.session_name.value = "work"
    panel.start_button.click()
    assert fake.servers["work"]["user_options"]["partition"] == "debug"
    assert "Starting session work on debug" in panel.status.value
    [row] = rows_of(panel.session_box, "sf-session")
    assert "starting" in text_of(row) and "sf-session-starting" in row._dom_classes
    fake.servers["work"].update(ready=True, pending=None)
    panel.refresh()
    [row] = rows_of(panel.session_box, "sf-session")
    assert 'href="/user/alice/work/"' in text_of(row) and "running" in text_of(row)
    panel.own_session = "work"  # as if the panel ran in it ($JUPYTERHUB_SERVER_NAME)
    panel._render_sessions()
    [row] = rows_of(panel.session_box, "sf-session")
    assert "this session" in text_of(row) and not [
        c for c in row.children if isinstance(c, w.Button)]
    panel.own_session = ""
    panel._render_sessions()
    [row] = rows_of(panel.session_box, "sf-session")
    button(row, "sf-stop").click()
    assert "work" not in fake.servers and "Stopping session work" in panel.status.value
    assert not rows_of(panel.session_box, "sf-session")


def test_pending_session_shows_reason_and_eta(panel: ComputePanel, fake: FakeHub) -> None:
    fake.add_server("queued", ready=False, pending="spawn", partition="debug")
    fake.progress["queued"] = [
        {"progress": 0, "message": "Server requested"},
        {"progress": 20, "message": "Queued on debug: waiting for free resources on the debug "
                                    "partition; expected to start around 10:05 (in 5 minutes)."},
    ]
    panel.refresh()
    [row] = rows_of(panel.session_box, "sf-session")
    assert "waiting for free resources on the debug partition; starts around 10:05" in \
        text_of(row)
    assert panel._interval() == 3.0  # something is starting: poll faster


def test_errors_show_in_plain_words(panel: ComputePanel, fake: FakeHub) -> None:
    panel.session_name.value = "Not Valid"
    panel.start_button.click()
    assert "is not a session name you can use" in panel.status.value
    assert "sf-error" in panel.status.value and "Traceback" not in panel.status.value
    panel.session_name.value = "ok"
    fake.fail["/shopfloor/validate"] = (400, "gpus: the cpu partition has no GPUs")
    panel.start_button.click()
    assert "Please change: options: gpus: the cpu partition has no GPUs" in panel.status.value
    assert "ok" not in fake.servers
    fake.fail["/users/alice"] = (500, "database is locked")
    panel.refresh()
    assert "The hub had a problem: database is locked. Try again" in panel.status.value
    del fake.fail["/users/alice"]
    panel.refresh()
    assert panel.status.value == ""  # the problem is over, and so is the message


def test_panel_without_a_hub_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JUPYTERHUB_API_URL", raising=False)
    panel = ComputePanel(auto_refresh=False)
    assert "Run this inside a Shopfloor session" in panel.status.value
    panel.start_button.click()
    assert "not connected to a hub" in panel.status.value
    down = ComputePanel(Compute(Hub("http://127.0.0.1:9/hub/api", TOKEN), RecordingSlurm()),  # type: ignore[arg-type]
                        auto_refresh=False)
    assert "Cannot reach the hub" in down.status.value


def test_run_a_notebook_follow_and_cancel(panel: ComputePanel, slurm: RecordingSlurm,
                                          tmp_path: Path) -> None:
    notebook = small_notebook(tmp_path / "analysis.ipynb", "print(n)")
    panel.run_button.click()
    assert "Type the path of the notebook" in panel.status.value
    panel.notebook.value = str(notebook)
    panel.parameters.value = "n = oops"
    panel.run_button.click()
    assert "parameters line 1" in panel.status.value and not slurm.scripts
    panel.parameters.value = "n = 3"
    panel.chooser.partition.value = "debug"
    panel.run_button.click()
    assert "as job 4242" in panel.status.value and len(slurm.scripts) == 1
    assert "#SBATCH --partition=debug" in slurm.scripts[0]
    [row] = rows_of(panel.run_box, "sf-run")
    assert "analysis.ipynb" in text_of(row) and "queued" in text_of(row)
    button(row, "sf-cancel").click()
    assert slurm.cancelled == ["4242"]
    [row] = rows_of(panel.run_box, "sf-run")
    assert "cancelled" in text_of(row)
    assert not [c for c in row.children if isinstance(c, w.Button)]


def test_ticker_refreshes_until_stopped() -> None:
    calls = threading.Semaphore(0)
    ticker = Ticker(calls.release, lambda: 0.01).start()
    assert all(calls.acquire(timeout=2) for _ in range(3))
    ticker.stop()
    assert not ticker.running


def test_close_stops_auto_refresh(fake: FakeHub, tmp_path: Path) -> None:
    compute = Compute(Hub(fake.url, TOKEN), RecordingSlurm(), tmp_path)  # type: ignore[arg-type]
    panel = ComputePanel(compute, refresh_seconds=0.05)
    assert panel.ticker is not None and panel.ticker.running
    panel.close()
    assert not panel.ticker.running


def test_plain_message_and_links(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert plain_message(KeyError("x")).startswith("Something went wrong")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/alice/work/")
    link = lab_link(tmp_path / "shopfloor-batch" / "r 1" / "output.ipynb", "out")
    assert 'href="/user/alice/work/lab/tree/shopfloor-batch/r%201/output.ipynb"' in link
    assert lab_link(Path("/etc/passwd"), "x") == "/etc/passwd"


def test_accounts_and_budgets_are_offered_as_the_hub_says(panel: ComputePanel,
                                                          fake: FakeHub) -> None:
    assert panel.chooser.account.layout.display == "none"  # a site without accounting
    assert "account" not in panel.chooser.options() and panel.budgets.value == ""
    fake.partitions_extra = {"accounts": ["proj-chem", "proj-ml"], "default_account": "proj-ml"}
    fake.budgets = {"budgets": [{"account": "proj-chem", "items": [{
        "tres": "cpu", "label": "CPU-minutes", "granted": 1000, "used": 900, "running": 50,
        "remaining": 50, "percent_used": 95.0}], "warnings": ["proj-chem: only 50 of 1,000 "
                                                              "CPU-minutes left"]}],
        "warnings": ["proj-chem: only 50 of 1,000 CPU-minutes left"]}
    panel.refresh()
    chooser = panel.chooser
    assert chooser.account.options == ("proj-chem", "proj-ml")
    assert chooser.account.value == "proj-ml" and chooser.account.layout.display == ""
    chooser.account.value = "proj-chem"
    assert chooser.options()["account"] == "proj-chem"
    assert "950 used / 1,000 granted (50 left)" in panel.budgets.value
    assert "width:95.0%" in panel.budgets.value
    assert "Budget running out: proj-chem: only 50" in panel.budgets.value
    panel.refresh()
    assert chooser.account.value == "proj-chem"  # the user's choice survives a refresh
