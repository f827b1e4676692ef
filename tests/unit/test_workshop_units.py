"""Workshop inputs refused in plain words, the store and its journal, progress, the panels."""

from __future__ import annotations

import stat
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tornado import web

from shopfloor.extensions.workshops_hub import trainer_scopes
from shopfloor.extensions.workshops_service import EXPORT_FILE, Workshops, progress_csv
from shopfloor.site import parse_site
from shopfloor.widgets.workshops_checkpoints import check, checkpoint
from shopfloor.widgets.workshops_trainer import TrainerPanel, progress_table
from shopfloor.workshops.client import WorkshopError
from shopfloor.workshops.model import (
    Checkpoint,
    Participant,
    ProgressRow,
    Workshop,
    WorkshopInputError,
    WorkshopStore,
    display_name,
    names_from_csv,
    new_code,
    normalize_code,
    parse_spec,
    progress_rows,
)

SITE = parse_site({
    "partitions": {"cpu": {}, "gpu": {}},
    "workshops": {"partitions": ["cpu"], "max_cores": 4, "max_nodes": 1, "max_hours": 4,
                  "max_capacity": 30, "join_failures_per_minute": 3},
})
NOW = datetime(2030, 5, 20, 9, 0)


def problems(call: Any) -> dict[str, str]:
    with pytest.raises(WorkshopInputError) as exc:
        call()
    return exc.value.problems


# -- what a trainer asks for ----------------------------------------------------------------


def test_spec_accepts_a_good_request() -> None:
    spec = parse_spec({"name": "intro25", "hours": 3, "capacity": "20", "cores": 4,
                       "material": "/tmp"}, SITE, NOW)
    assert (spec.start, spec.end, spec.capacity, spec.partition) == (
        NOW, NOW + timedelta(hours=3), 20, "cpu")
    assert spec.reserves and spec.title == "intro25"


def test_spec_names_every_bad_field() -> None:
    found = problems(lambda: parse_spec({
        "name": "Intro 25", "start": "yesterday", "capacity": 31, "partition": "gpu",
        "cores": 9, "nodes": "two", "material": "relative/path", "trainers": "bob",
        "colour": "red"}, SITE, NOW))
    assert set(found) == {"name", "start", "capacity", "partition", "cores", "nodes",
                          "material", "trainers", "colour"}
    assert "lowercase letters and digits" in found["name"]
    assert "between 1 and 30" in found["capacity"]
    assert "choose one of cpu" in found["partition"]
    assert "at most 4 cores" in found["cores"]


def test_spec_limits_the_window() -> None:
    assert "at most 4 hours" in problems(
        lambda: parse_spec({"name": "ab", "hours": 5}, SITE, NOW))["end"]
    assert "after the start" in problems(lambda: parse_spec(
        {"name": "ab", "start": "2030-05-20T10:00", "end": "2030-05-20T09:00"}, SITE,
        NOW))["end"]
    assert "in the past" in problems(lambda: parse_spec(
        {"name": "ab", "start": "2030-05-19T09:00"}, SITE, NOW))["start"]
    assert "either cores or nodes" in problems(
        lambda: parse_spec({"name": "ab", "cores": 1, "nodes": 1}, SITE, NOW))["cores"]
    assert "JSON object" in problems(lambda: parse_spec(["ab"], SITE, NOW))["workshop"]


@pytest.mark.parametrize("url", ["https://example.org/m.git", "file:///srv/m.git"])
def test_spec_accepts_git_material(url: str) -> None:
    assert parse_spec({"name": "ab", "material": url}, SITE, NOW).material == url


@pytest.mark.parametrize("url", ["https://x.org/m.git;rm -rf /", "ssh://x/m.git", "-u.git"])
def test_spec_refuses_odd_material(url: str) -> None:
    assert "material" in problems(lambda: parse_spec({"name": "ab", "material": url}, SITE,
                                                     NOW))


# -- participants' input --------------------------------------------------------------------


def test_codes_are_typed_forgivingly_and_checked() -> None:
    code = new_code()
    assert normalize_code(code.lower()) == code.replace("-", "")
    assert normalize_code(f" {code[:4]} {code[5:]} ") == code.replace("-", "")
    for bad in ("", "   ", None, 12345678, "ABCD-EFG", "ABCD-EFGI", "ABCD-EFG0", "x" * 500):
        assert "code" in problems(lambda bad=bad: normalize_code(bad))


@pytest.mark.parametrize("name", ["", "  ", "x" * 41, "Eve\u200b", "Eve\x07", None, 3])
def test_bad_names(name: Any) -> None:
    assert "name" in problems(lambda: display_name(name))


def test_good_names_keep_their_letters() -> None:
    assert display_name("  Zoë O'Brien ") == "Zoë O'Brien"
    assert display_name("<b>Eve</b>") == "<b>Eve</b>"  # stored as text, escaped when shown


@pytest.mark.parametrize(("text", "words"), [
    ("", "paste a CSV"),
    ("email\nx@y.z\n", "'name' column"),
    ("name\n", "lists nobody"),
    ('name\nAda\n""\n', "line 3"),
    ("name\nAda\nada\n", "line 3: 'ada' is listed twice"),
    ("name\nAda\nBob\nCy\n", "room for 2"),
    ("name\nA\x00da\n", "not a text file"),
    ("name\n" + "x" * 70_000, "larger than 64 KiB"),
    ("name,email\n" + "y" * 41 + ",a@b\n", "line 2"),
    ('name\n"Ada\tLovelace"\n', "line 2: contains control"),
])
def test_bad_roster_csv(text: str, words: str) -> None:
    assert words in problems(lambda: names_from_csv(text, 2))["csv"]


def test_roster_csv_with_bom_and_extra_columns() -> None:
    assert names_from_csv("\ufeffName,Email\nAda,a@x\n Bob ,b@x\n", 5) == ["Ada", "Bob"]


def test_wrong_codes_are_rate_limited(tmp_path: Path) -> None:
    workshops = Workshops(SITE, WorkshopStore(tmp_path / "w.sqlite"), None, None)  # type: ignore[arg-type]

    async def attempt() -> None:
        await workshops.join("10.0.0.1", "AAAA-AAAA", "Eve")

    import asyncio

    for _ in range(3):
        with pytest.raises(WorkshopInputError):
            asyncio.run(attempt())
    with pytest.raises(web.HTTPError) as blocked:
        asyncio.run(attempt())
    assert blocked.value.status_code == 429
    with pytest.raises(WorkshopInputError):  # another address is not blocked
        asyncio.run(workshops.join("10.0.0.2", "AAAA-AAAA", "Ann"))


# -- store, journal, progress ---------------------------------------------------------------


def workshop(name: str = "intro") -> Workshop:
    return Workshop(name=name, title="Intro", code="ABCDEFGH", start=NOW.isoformat(),
                    end=(NOW + timedelta(hours=2)).isoformat(), capacity=3, partition="cpu",
                    reservation="ws-intro", material="", trainers=["trainer"],
                    created_by="trainer")


def test_store_roundtrip_and_journal(tmp_path: Path) -> None:
    store = WorkshopStore(tmp_path / "w.sqlite")
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"
    store.add_workshop(workshop())
    assert store.by_code("ABCDEFGH").trainers == ["trainer"]  # type: ignore[union-attr]
    store.add_participant(Participant("ws-intro-1", "intro", "Ada", 1, NOW.isoformat()))
    assert store.next_number("intro") == 2
    store.mark_done("intro", "export", "/home/trainer/x")
    assert store.done_steps("intro") == {"export": "/home/trainer/x"}
    reader = WorkshopStore(store.path, readonly=True)
    assert reader.participant("ws-intro-1").name == "Ada"  # type: ignore[union-attr]
    store.set_state("intro", "ended")
    assert store.by_code("ABCDEFGH") is None


def test_store_makes_an_existing_folder_and_file_private(tmp_path: Path) -> None:
    # Made world-readable by an older version or by a demo that created the folder first.
    folder = tmp_path / "workshops"
    folder.mkdir()
    folder.chmod(0o755)
    (folder / "workshops.sqlite").write_bytes(b"")
    (folder / "workshops.sqlite").chmod(0o644)
    store = WorkshopStore(folder / "workshops.sqlite")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    fresh = WorkshopStore(tmp_path / "new" / "w.sqlite")
    assert stat.S_IMODE(fresh.path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(fresh.path.stat().st_mode) == 0o600


def test_export_file_names_stay_in_the_folder() -> None:
    assert EXPORT_FILE.fullmatch("ws-intro-3.tar.gz") and EXPORT_FILE.fullmatch("progress.csv")
    for odd in ("../x.tar.gz", ".bashrc", "a/b.tar.gz", "ws-intro-3.tar.gz.part", ""):
        assert not EXPORT_FILE.fullmatch(odd), odd


def test_progress_marks_who_is_stuck() -> None:
    people = [Participant(f"ws-intro-{i}", f"P{i}", "intro", i, NOW.isoformat())
              for i in (1, 2, 3)]
    people = [Participant(p.username, "intro", p.workshop, p.number, p.joined) for p in people]
    at = (NOW + timedelta(minutes=20)).isoformat()
    events = [
        Checkpoint("ws-intro-1", "step-1", True, "", at),
        Checkpoint("ws-intro-1", "step-2", True, "", at),
        Checkpoint("ws-intro-2", "step-1", False, "NameError", at),
    ]
    rows = {r.username: r for r in progress_rows(people, events, 10,
                                                  NOW + timedelta(minutes=25))}
    assert (rows["ws-intro-1"].steps_done, rows["ws-intro-1"].stuck) == (2, False)
    assert rows["ws-intro-2"].stuck and "failed" in rows["ws-intro-2"].why_stuck
    assert rows["ws-intro-3"].stuck and "25 min" in rows["ws-intro-3"].why_stuck
    csv_text = progress_csv([vars(r) for r in rows.values()])
    assert csv_text.splitlines()[0].startswith("username,name,step,ok")


def test_trainer_scopes_stay_in_the_group() -> None:
    scopes = trainer_scopes("intro")
    assert all(s == "admin-ui" or s.endswith("!group=ws-intro") for s in scopes)
    assert not {s.split("!")[0] for s in scopes} & {"admin:users", "groups", "admin:groups",
                                                     "users", "tokens", "admin:servers"}


# -- panels ---------------------------------------------------------------------------------


class FakeClient:
    def __init__(self, rows: list[ProgressRow], fail: bool = False) -> None:
        self.rows, self.fail, self.calls = rows, fail, []  # type: ignore[var-annotated]

    def status(self, name: str) -> dict[str, Any]:
        if self.fail:
            raise WorkshopError("Only the trainers of 'intro' may do this.", status=403)
        return {"name": name, "title": "Intro <ML>", "code": "ABCD-EFGH", "capacity": 3,
                "state": "active", "end": "2030-05-20T11:00:00", "join_url": "/j"}

    def progress(self, name: str) -> list[ProgressRow]:
        return self.rows

    def start_server(self, name: str, user: str) -> None:
        self.calls.append(("start", user))

    def stop_server(self, name: str, user: str) -> None:
        self.calls.append(("stop", user))

    def checkpoint(self, step: str, ok: bool, message: str) -> dict[str, Any]:
        self.calls.append((step, ok, message))
        return {"recorded": True}


def rows() -> list[ProgressRow]:
    return [
        ProgressRow("ws-intro-1", "Ada", "step-2", True, steps_done=2, server="running",
                    open_url="/user/ws-intro-1/lab/tree/intro"),
        ProgressRow("ws-intro-2", "<script>", "step-1", False, errors=1, stuck=True,
                    why_stuck="check 'step-1' failed"),
    ]


def test_progress_table_puts_stuck_first_and_escapes() -> None:
    table = progress_table(rows())
    assert table.index("ws-intro-2") < table.index("ws-intro-1")
    assert 'class="sf-stuck"' in table and "<script>" not in table
    assert 'href="/user/ws-intro-1/lab/tree/intro"' in table
    assert "Nobody has joined" in progress_table([])


def test_trainer_panel_acts_on_the_chosen_participant() -> None:
    client = FakeClient(rows())
    panel = TrainerPanel("intro", client, auto_refresh=False)
    assert "ABCD-EFGH" in panel.header.value and "<b>1</b> stuck" in panel.header.value
    assert "Intro &lt;ML&gt;" in panel.header.value
    panel.participant.value = "ws-intro-2"
    panel.start_selected()
    panel.stop_selected()
    assert client.calls == [("start", "ws-intro-2"), ("stop", "ws-intro-2")]
    assert "Stopping ws-intro-2" in panel.status.value


def test_trainer_panel_shows_refusals_in_words() -> None:
    panel = TrainerPanel("intro", FakeClient([], fail=True), auto_refresh=False)
    assert "Only the trainers" in panel.status.value and "sf-error" in panel.status.value


def test_check_records_failures_with_the_error() -> None:
    client = FakeClient([])
    assert check("step-1", lambda: 1 / 1, client=client)  # type: ignore[arg-type]
    assert not check("step-2", lambda: 1 / 0, hint="divide by x",  # type: ignore[arg-type]
                     client=client)
    assert not check("step-3", False, client=client)  # type: ignore[arg-type]
    assert client.calls[0] == ("step-1", True, "")
    assert client.calls[1][:2] == ("step-2", False)
    assert "divide by x (ZeroDivisionError" in client.calls[1][2]
    assert client.calls[2] == ("step-3", False, "not yet")


def test_checkpoint_outside_a_session_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)
    answer = checkpoint("step-1", show=False)
    assert answer["recorded"] is False and "no API token" in answer["why"]
