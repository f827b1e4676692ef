"""Time left in each running session: from its Slurm job's end time to the ComputePanel row."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import ipywidgets as w
import pytest
from fakes import TOKEN, FakeHub, RecordingSlurm

from shopfloor.extensions.jobs_api import job_json
from shopfloor.session.compute import Compute
from shopfloor.session.hubapi import Hub
from shopfloor.session.hubslurm import job_from_json
from shopfloor.session.sessions import Session
from shopfloor.slurm.jobscript import session_job_name
from shopfloor.slurm.seam import JobInfo, SlurmError
from shopfloor.widgets import ComputePanel

NOW = datetime(2026, 11, 30, 10, 0)


def job(job_id: str, name: str, *, state: str = "RUNNING", user: str = "alice",
        start: datetime | None = NOW - timedelta(minutes=5),
        end: datetime | None = NOW + timedelta(minutes=25)) -> JobInfo:
    return JobInfo(job_id, state, "None", "node1", "node1", start, user, "cpu", name, 0, end)


def running(name: str = "work", started: str | None = "2026-11-30T09:55:00Z") -> Session:
    return Session(name=name, state="running", url=f"/user/alice/{name}/", started=started)


def test_the_hub_names_session_jobs_so_panels_find_them() -> None:
    assert session_job_name("alice", "") == "shopfloor-alice-default"
    assert session_job_name("alice", "gpu-work") == "shopfloor-alice-gpu-work"


def test_end_time_travels_through_the_hubs_jobs_api() -> None:
    ended = job("7", "x")
    assert job_from_json(job_json(ended)) == ended
    assert job_from_json(job_json(job("8", "x", end=None))).end is None


def test_a_running_session_takes_its_own_jobs_end() -> None:
    jobs = [job("5", "shopfloor-alice-work", state="COMPLETED", end=NOW - timedelta(hours=1)),
            job("6", "shopfloor-alice-other"),
            job("7", "shopfloor-bob-work", user="bob"),
            job("8", "shopfloor-alice-work", end=NOW + timedelta(minutes=65))]
    session = running().with_job_end("alice", jobs)
    assert session.ends == NOW + timedelta(minutes=65)
    assert session.minutes_left(NOW) == 65
    assert session.time_left_text(NOW) == "1 hour 5 minutes left (ends 11:05)"
    assert session.time_left_text(NOW + timedelta(minutes=64, seconds=30)) == \
        "less than a minute left (ends 11:05)"
    assert session.minutes_left(NOW + timedelta(hours=2)) == 0
    # No running job of that name (or a session that is not running): no end, no text.
    assert running("gone").with_job_end("alice", jobs).time_left_text(NOW) == ""
    starting = Session(name="work", state="starting", url="")
    assert starting.with_job_end("alice", jobs).ends is None


def test_two_hubs_jobs_of_one_name_pick_the_one_started_with_the_server() -> None:
    local = datetime.fromisoformat("2026-11-30T09:55:00+00:00").astimezone().replace(
        tzinfo=None)
    ours = job("9", "shopfloor-alice-work", start=local + timedelta(seconds=3),
               end=local + timedelta(minutes=30))
    other = job("3", "shopfloor-alice-work", start=local - timedelta(hours=2),
                end=local + timedelta(hours=6))
    assert running().with_job_end("alice", [ours, other]).ends == ours.end
    assert running().with_job_end("alice", [other, ours]).ends == ours.end


class RunningJobSlurm(RecordingSlurm):
    """Slurm that lists alice's session ``work`` as running until 25 minutes from now."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def run(self, args: Sequence[str], *, stdin: str | None = None, **kw: object) -> str:
        if args[0] == "squeue":
            if self.down:
                raise SlurmError(list(args), 1, "", "squeue: error: Unable to contact slurm "
                                 "controller (connect failure)")
            start = datetime.now() - timedelta(minutes=5)
            end = start + timedelta(minutes=30, seconds=30)
            return (f"77|RUNNING|None|node1|node1|{start:%Y-%m-%dT%H:%M:%S}|alice|cpu|"
                    f"shopfloor-alice-work|0|{end:%Y-%m-%dT%H:%M:%S}\n")
        return super().run(args, stdin=stdin, **kw)


@pytest.fixture
def fake() -> Iterator[FakeHub]:
    hub = FakeHub()
    yield hub
    hub.close()


def test_panel_rows_show_time_left_and_survive_slurm_down(fake: FakeHub, tmp_path: Path) -> None:
    slurm = RunningJobSlurm()
    compute = Compute(Hub(fake.url, TOKEN), slurm, tmp_path / "runs")  # type: ignore[arg-type]
    fake.add_server("work")
    panel = ComputePanel(compute, auto_refresh=False)
    try:
        [row] = [c for c in panel.session_box.children if "sf-session" in c._dom_classes]
        detail = next(c for c in row.children if "sf-session-detail" in c._dom_classes)
        assert isinstance(detail, w.HTML) and "25 minutes left (ends " in detail.value
        slurm.down = True  # Slurm away: the row stays, without a time
        assert [s.ends for s in compute.list_sessions()] == [None]
    finally:
        panel.close()
