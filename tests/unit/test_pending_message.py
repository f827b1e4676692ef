"""Pending sessions say why and until when, in users' words."""

from __future__ import annotations

from datetime import datetime

from shopfloor.slurm.pending import describe_pending
from shopfloor.slurm.seam import JobInfo


def job(reason: str, start: datetime | None) -> JobInfo:
    return JobInfo("42", "PENDING", reason, "n/a", "", start, "alice", "gpu", "x")


def test_resources_with_eta_and_position() -> None:
    text = describe_pending(job("Resources", datetime(2026, 1, 1, 10, 30)), 3,
                            now=datetime(2026, 1, 1, 9, 0))
    assert text == (
        "Queued on gpu: waiting for free resources on the gpu partition; position 3 in the "
        "queue; expected to start around 10:30 (in 1 hour 30 minutes)."
    )


def test_unavailable_nodes_and_unknown_reasons() -> None:
    assert "nodes it needs are unavailable" in describe_pending(job("ReqNodeNotAvail", None), None)
    assert describe_pending(job("SomethingNew", None), None) == "Queued on gpu: SomethingNew."


def test_start_imminent() -> None:
    now = datetime(2026, 1, 1, 9, 0)
    text = describe_pending(job("Priority", datetime(2026, 1, 1, 9, 0, 30)), 1, now=now)
    assert text.endswith("expected to start within a minute.")
    assert "other jobs are ahead of yours" in text
