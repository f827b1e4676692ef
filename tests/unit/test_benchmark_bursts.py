"""The alternated burst mode of benchmarks.scale and the commit-caller view of hubprofile:
pure tests, plus the generated stock config run through JupyterHub's own config loader."""

from __future__ import annotations

import sys
from pathlib import Path

# ``benchmarks`` is a top-level folder run as ``python -m benchmarks.<name>`` from the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pytest
import yaml
from jupyterhub.app import JupyterHub
from traitlets.config import Config

from benchmarks import scale
from benchmarks.hubprocess import HubPorts
from benchmarks.hubprofile import callers_of

SP = "/opt/shopfloor/venv/lib/python3.11/site-packages"


def burst(seconds: float, failed: int = 0, last: float | None = None) -> dict[str, object]:
    return {"seconds": seconds, "last_ready_s": last if last is not None else seconds,
            "ready": 10 - failed, "failed": failed, "hub_cpu_s": seconds / 2}


def test_medians_ratio_and_paired_rounds_leave_out_incomplete_bursts() -> None:
    summary = scale.summarize_bursts({
        "ours": [burst(30), burst(40), burst(90, failed=1, last=35)],
        "stock": [burst(60), burst(20), burst(50)],
    })
    assert summary["ours"]["complete"] == 2 and summary["ours"]["median_s"] == 35.0
    assert summary["ours"]["last_ready_median_s"] == 35.0
    assert summary["stock"]["median_s"] == 50.0
    assert summary["ratio_ours_over_stock"] == 0.7
    # Round 3 is left out of the pairs: ours did not get every server ready.
    assert summary["paired_ours_over_stock"]["values"] == [0.5, 2.0]
    assert summary["paired_ours_over_stock"]["median"] == 1.25


def test_no_complete_burst_gives_no_ratio() -> None:
    summary = scale.summarize_bursts({"ours": [burst(30, failed=2)], "stock": [burst(10)]})
    assert summary["ours"]["median_s"] is None
    assert summary["ratio_ours_over_stock"] is None
    assert summary["paired_ours_over_stock"]["values"] == []


def test_tracker_remembers_when_the_last_server_got_ready() -> None:
    tracker = scale.SpawnTracker(["a", "b"], concurrency=2, timeout=60)
    for name in tracker.next_batch():
        tracker.posted(name, 0.0)
    tracker.update({"a": {"ready": True}, "b": {"pending": "spawn"}}, 3.0)
    assert tracker.last_ready_at == 3.0
    tracker.update({"a": {"ready": True}, "b": {"ready": True}}, 7.5)
    assert tracker.last_ready_at == 7.5 and tracker.done


def test_bursts_and_wal_options() -> None:
    args = scale.parse_args(["--bursts", "3", "--servers", "100", "--sqlite-wal", "off"])
    assert args.bursts == 3 and args.sqlite_wal == "off"
    assert scale.parse_args([]).bursts == 0 and scale.parse_args([]).sqlite_wal == "on"
    with pytest.raises(SystemExit):
        scale.parse_args(["--bursts", "-1"])


def _scene(tmp_path: Path) -> scale.Scene:
    scene = scale.Scene(tmp_path)
    scene.public.mkdir()
    return scene


def _apply(text: str) -> JupyterHub:
    config = Config()
    exec(compile(text, "jupyterhub_config.py", "exec"), {"get_config": lambda: config})
    return JupyterHub(config=config)


@pytest.mark.parametrize("wal", [True, False])
def test_both_arms_get_the_same_database_settings(tmp_path: Path, wal: bool) -> None:
    scene = _scene(tmp_path)
    for arm in ("stock", "ours"):
        (tmp_path / arm).mkdir()
    stock = _apply(scale.stock_config(scene, tmp_path / "stock", HubPorts(8450), 10, 2, "t",
                                      "", sqlite_wal=wal))
    assert ("creator" in stock.db_kwargs) is wal
    scale.ours_config(scene, tmp_path / "ours", HubPorts(8350), 10, 2, "t", sqlite_wal=wal)
    site = yaml.safe_load((tmp_path / "ours" / "site.yaml").read_text())
    assert site["hub"]["sqlite_wal"] is wal


def test_callers_of_commit_name_the_nearest_code_above_the_library() -> None:
    raw = [
        f"<module> (jupyterhub:8);spawn ({SP}/jupyterhub/user.py:900);"
        f"commit ({SP}/sqlalchemy/orm/session.py:1);"
        f"Session.commit ({SP}/sqlalchemy/orm/session.py:2);"
        f"do_commit ({SP}/sqlalchemy/engine/default.py:3) 30",
        f"<module> (jupyterhub:8);_submit (/work/main/extensions/spawner.py:1);"
        f"save_spawner_state (/work/main/extensions/compat.py:79);"
        f"Session.commit ({SP}/sqlalchemy/orm/session.py:2) 5",
        f"<module> (jupyterhub:8);get ({SP}/jupyterhub/apihandlers/users.py:1) 50",
    ]
    result = callers_of(raw)
    assert result["samples"] == 35
    assert result["callers"] == [
        {"function": "spawn (jupyterhub/user.py)", "samples": 30},
        {"function": "save_spawner_state (extensions/compat.py)", "samples": 5},
    ]
