"""Workshops as data: what a trainer may ask for, join codes, rosters, and the service's store.

The ``workshop`` hub service (:mod:`shopfloor.extensions.workshops_service`) owns one sqlite
file (:class:`WorkshopStore`); the hub reads it too (which workshop a participant is in, its
partition, reservation and material). Every input from trainers and participants is checked
here, on the server side: :class:`WorkshopInputError` maps each bad field to what is allowed.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import secrets
import sqlite3
import unicodedata
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from shopfloor.errors import ShopfloorError
from shopfloor.site import SiteConfig

#: Workshop names become Unix user names (``ws-<name>-<n>``), a hub group and a reservation.
WORKSHOP_NAME = re.compile(r"^[a-z][a-z0-9]{1,11}$")
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
STEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.:-]{0,39}$")
GIT_URL = re.compile(r"^(https://|file://|/)[^\s'\"`$;|&<>]+\.git/?$")
#: Join codes: no 0/O, 1/I/L, so they can be read aloud and typed from a slide.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
MAX_NAME = 40
MAX_MESSAGE = 500
MAX_CSV_BYTES = 64 * 1024
END_STEPS = ("export", "stop_servers", "release_reservation", "remove_accounts", "cleanup_hub")


class WorkshopInputError(ShopfloorError, ValueError):
    """Input that is not allowed. ``problems`` maps field → what is allowed."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        super().__init__(problems=problems)


def group_name(workshop: str) -> str:
    """The hub group of a workshop's participants."""
    return f"ws-{workshop}"


def reservation_name(workshop: str) -> str:
    return f"ws-{workshop}"


def account_name(workshop: str, number: int) -> str:
    return f"ws-{workshop}-{number}"


def role_name(workshop: str) -> str:
    return f"workshop-trainer-{workshop}"


def new_code() -> str:
    """A fresh join code such as ``K7PQ-2MXA``."""
    chars = "".join(secrets.choice(CODE_ALPHABET) for _ in range(8))
    return f"{chars[:4]}-{chars[4:]}"


def normalize_code(value: Any) -> str:
    """The code as stored (upper case, no blanks or dashes); raises for what cannot be one."""
    if not isinstance(value, str) or not value.strip():
        raise WorkshopInputError({"code": "enter the workshop code your trainer gave you"})
    code = re.sub(r"[\s-]", "", value).upper()
    if len(code) != 8 or any(ch not in CODE_ALPHABET for ch in code):
        raise WorkshopInputError({
            "code": "a workshop code is 8 letters and digits, such as K7PQ-2MXA"
        })
    return code


def display_name(value: Any, field_name: str = "name") -> str:
    """A participant's name as they typed it: 1-40 printable characters."""
    if not isinstance(value, str):
        raise WorkshopInputError({field_name: "enter your name (1 to 40 characters)"})
    text = unicodedata.normalize("NFC", value).strip()
    if not text or len(text) > MAX_NAME:
        raise WorkshopInputError({field_name: f"enter your name (1 to {MAX_NAME} characters)"})
    for char in text:
        if unicodedata.category(char)[0] == "C":
            raise WorkshopInputError({field_name: "contains control or invisible characters"})
    return text


def names_from_csv(text: Any, capacity: int) -> list[str]:
    """Participant names from a roster CSV with a ``name`` column (one row per person).

    Refuses (naming the row) empty or duplicate names, a missing ``name`` column, files over
    64 KiB and more rows than the workshop's ``capacity``.
    """
    if not isinstance(text, str) or not text.strip():
        raise WorkshopInputError({"csv": "paste a CSV with a 'name' column and one row each"})
    if len(text.encode()) > MAX_CSV_BYTES:
        raise WorkshopInputError({"csv": f"is larger than {MAX_CSV_BYTES // 1024} KiB"})
    if "\0" in text:
        raise WorkshopInputError({"csv": "is not a text file"})
    try:
        reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        if "name" not in header:
            raise WorkshopInputError({
                "csv": "the first line must be a header with a 'name' column, e.g. name,email"
            })
        column = reader.fieldnames[header.index("name")]  # type: ignore[index]
        names: list[str] = []
        for row_number, row in enumerate(reader, start=2):
            try:
                name = display_name(row.get(column) or "", "csv")
            except WorkshopInputError as exc:
                raise WorkshopInputError({
                    "csv": f"line {row_number}: {exc.problems['csv']}"
                }) from None
            if name.casefold() in {n.casefold() for n in names}:
                raise WorkshopInputError({"csv": f"line {row_number}: {name!r} is listed twice"})
            names.append(name)
    except csv.Error as exc:
        raise WorkshopInputError({"csv": f"is not valid CSV ({exc})"}) from None
    if not names:
        raise WorkshopInputError({"csv": "lists nobody: add one row per participant"})
    if len(names) > capacity:
        raise WorkshopInputError({
            "csv": f"lists {len(names)} people; the workshop has room for {capacity}"
        })
    return names


def logins_csv(rows: list[dict[str, str]]) -> str:
    """The trainer's sheet of generated logins (login, password, name)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["login", "password", "name"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in ("login", "password", "name")})
    return out.getvalue()


# -- what a trainer asks for ----------------------------------------------------------------


@dataclass(frozen=True)
class WorkshopSpec:
    """A validated request for a workshop (see :func:`parse_spec`)."""

    name: str
    title: str
    start: datetime
    end: datetime
    capacity: int
    partition: str
    cores: int = 0
    nodes: int = 0
    material: str = ""
    trainers: tuple[str, ...] = ()

    @property
    def reserves(self) -> bool:
        return bool(self.cores or self.nodes)


def _int(raw: Mapping[str, Any], key: str, problems: dict[str, str], default: int = 0) -> int:
    value = raw.get(key, default)
    if value in (None, ""):
        return default
    if isinstance(value, bool) or not (isinstance(value, int) or (
            isinstance(value, str) and value.strip().isdigit())):
        problems[key] = f"must be a whole number, not {value!r}"[:120]
        return default
    return int(value)


def _when(value: Any, key: str, problems: dict[str, str], now: datetime) -> datetime | None:
    if value in (None, "", "now"):
        return now
    if not isinstance(value, str):
        problems[key] = "must be 'now' or a date and time such as 2025-05-20T09:00"
        return None
    try:
        return datetime.fromisoformat(value.strip()).replace(tzinfo=None, microsecond=0)
    except ValueError:
        problems[key] = f"{value[:40]!r} is not a date and time such as 2025-05-20T09:00"
        return None


def parse_spec(raw: Any, site: SiteConfig, now: datetime | None = None) -> WorkshopSpec:
    """Check a trainer's request against the site's ``workshops`` limits.

    Fields: ``name``, ``title``, ``start`` ('now' or ISO), ``end`` (ISO) or ``hours``,
    ``capacity``, ``partition``, ``cores`` or ``nodes`` (the reservation; 0 for none),
    ``material`` (a folder or git repository), ``trainers`` (co-trainers' user names).
    """
    if not isinstance(raw, Mapping):
        raise WorkshopInputError({"workshop": "send a JSON object of settings"})
    limits = site.workshops
    now = (now or datetime.now()).replace(microsecond=0)
    problems: dict[str, str] = {}
    known = {"name", "title", "start", "end", "hours", "capacity", "partition", "cores",
             "nodes", "material", "trainers"}
    for key in raw:
        if key not in known:
            problems[str(key)[:40]] = "is not a workshop setting; allowed: " + ", ".join(
                sorted(known))
    name = raw.get("name")
    if not isinstance(name, str) or not WORKSHOP_NAME.match(name):
        problems["name"] = ("use 2 to 12 lowercase letters and digits, starting with a letter "
                            "(e.g. intro25)")
    title = raw.get("title") or (name if isinstance(name, str) else "")
    try:
        title = display_name(title, "title")
    except WorkshopInputError:
        problems["title"] = f"1 to {MAX_NAME} printable characters"
    start = _when(raw.get("start"), "start", problems, now)
    end: datetime | None = None
    if raw.get("end") not in (None, ""):
        end = _when(raw.get("end"), "end", problems, now)
    elif start is not None:
        hours = raw.get("hours", 2)
        if isinstance(hours, bool) or not isinstance(hours, int | float | str):
            problems["hours"] = "must be a number of hours such as 3 or 1.5"
        else:
            try:
                end = start + timedelta(hours=float(hours))
            except ValueError:
                problems["hours"] = f"{str(hours)[:20]!r} is not a number of hours"
    if start is not None and start < now - timedelta(minutes=5):
        problems["start"] = "is in the past; use 'now' or a later time"
    if start is not None and end is not None:
        if end <= start:
            problems["end"] = "must be after the start"
        elif end - start > timedelta(hours=limits.max_hours):
            problems["end"] = f"a workshop may last at most {limits.max_hours:g} hours"
    capacity = _int(raw, "capacity", problems, 20)
    if not 1 <= capacity <= limits.max_capacity:
        problems["capacity"] = f"must be between 1 and {limits.max_capacity}"
    allowed = limits.partitions or list(site.partitions)
    partition = raw.get("partition") or site.initial_partition
    if partition not in allowed or partition not in site.partitions:
        problems["partition"] = f"{str(partition)[:40]!r} is not allowed; choose one of " + (
            ", ".join(p for p in allowed if p in site.partitions))
    cores = _int(raw, "cores", problems)
    nodes = _int(raw, "nodes", problems)
    if cores and nodes:
        problems["cores"] = "reserve either cores or nodes, not both"
    if cores > limits.max_cores:
        problems["cores"] = f"a workshop may reserve at most {limits.max_cores} cores"
    if nodes > limits.max_nodes:
        problems["nodes"] = f"a workshop may reserve at most {limits.max_nodes} nodes"
    material = _material(raw.get("material"), problems)
    trainers = raw.get("trainers") or []
    if not isinstance(trainers, list) or not all(
            isinstance(t, str) and USER_NAME.match(t) for t in trainers):
        problems["trainers"] = "must be a list of user names"
        trainers = []
    if problems:
        raise WorkshopInputError(problems)
    return WorkshopSpec(
        name=str(name), title=title, start=start or now, end=end or now, capacity=capacity,
        partition=str(partition), cores=cores, nodes=nodes, material=material,
        trainers=tuple(dict.fromkeys(trainers)),
    )


def _material(value: Any, problems: dict[str, str]) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or len(value) > 300:
        problems["material"] = "must be a folder path or a git repository URL"
        return ""
    if GIT_URL.match(value):
        return value
    path = Path(value)
    if not path.is_absolute() or ".." in path.parts or not path.is_dir():
        problems["material"] = (f"{value[:80]!r} is neither an existing folder (absolute path) "
                                "nor a git repository URL ending in .git")
        return ""
    return str(path)


# -- the store ------------------------------------------------------------------------------


@dataclass
class Workshop:
    """A workshop as stored (``code`` is only shown to its trainers and admins)."""

    name: str
    title: str
    code: str
    start: str
    end: str
    capacity: int
    partition: str
    reservation: str
    material: str
    trainers: list[str]
    created_by: str
    state: str = "active"
    cores: int = 0
    nodes: int = 0

    @property
    def group(self) -> str:
        return group_name(self.name)

    def ends_before(self, now: datetime) -> bool:
        return datetime.fromisoformat(self.end) < now

    def public(self) -> dict[str, Any]:
        """What participants may know (no code)."""
        data = asdict(self)
        data.pop("code")
        return data


@dataclass
class Participant:
    username: str
    workshop: str
    name: str
    number: int
    joined: str
    state: str = "active"


@dataclass
class Checkpoint:
    username: str
    step: str
    ok: bool
    message: str
    at: str
    extra: dict[str, Any] = field(default_factory=dict)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS workshops (
    name TEXT PRIMARY KEY, title TEXT, code TEXT UNIQUE, start TEXT, "end" TEXT,
    capacity INTEGER, partition TEXT, reservation TEXT, material TEXT, trainers TEXT,
    created_by TEXT, state TEXT, cores INTEGER, nodes INTEGER
);
CREATE TABLE IF NOT EXISTS participants (
    username TEXT PRIMARY KEY, workshop TEXT, name TEXT, number INTEGER, joined TEXT,
    state TEXT
);
CREATE TABLE IF NOT EXISTS checkpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT, username TEXT, workshop TEXT, step TEXT,
    ok INTEGER, message TEXT, at TEXT
);
CREATE INDEX IF NOT EXISTS checkpoints_by_workshop ON checkpoints (workshop, username);
CREATE TABLE IF NOT EXISTS journal (
    workshop TEXT, step TEXT, done TEXT, detail TEXT, PRIMARY KEY (workshop, step)
);
"""


def store_path(site: SiteConfig) -> Path:
    """The service's database file for a site."""
    folder = site.workshops.state_dir or str(Path(site.hub.state_dir) / "workshops")
    return Path(folder) / "workshops.sqlite"


class WorkshopStore:
    """The sqlite file of the workshop service (the hub opens it read-only)."""

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        if not readonly:
            # Participants' names, join codes and the end journal: root's alone. mkdir's mode
            # is cut by the umask and ignored for a folder that exists, so set both modes, and
            # make the file 0600 before sqlite writes to it (its journals copy that mode).
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.path.parent.chmod(0o700)
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
            self.path.chmod(0o600)
            with self._connect() as db:
                db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        uri = f"file:{self.path}?mode=ro" if self.readonly else f"file:{self.path}"
        db = sqlite3.connect(uri, uri=True, timeout=10)
        db.row_factory = sqlite3.Row
        try:
            with db:
                yield db
        finally:
            db.close()

    def exists(self) -> bool:
        return self.path.exists()

    # -- workshops -------------------------------------------------------------------------

    @staticmethod
    def _workshop(row: sqlite3.Row) -> Workshop:
        data = dict(row)
        data["trainers"] = json.loads(data["trainers"] or "[]")
        return Workshop(**data)

    def add_workshop(self, workshop: Workshop) -> None:
        data = asdict(workshop)
        data["trainers"] = json.dumps(workshop.trainers)
        columns = ", ".join(f'"{k}"' for k in data)
        marks = ", ".join(f":{k}" for k in data)
        with self._connect() as db:
            db.execute(f"INSERT INTO workshops ({columns}) VALUES ({marks})", data)

    def workshop(self, name: str) -> Workshop | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM workshops WHERE name = ?", (name,)).fetchone()
        return self._workshop(row) if row else None

    def workshops(self, state: str | None = None) -> list[Workshop]:
        query, args = "SELECT * FROM workshops", ()
        if state:
            query, args = query + " WHERE state = ?", (state,)
        with self._connect() as db:
            return [self._workshop(r) for r in db.execute(query + " ORDER BY start", args)]

    def by_code(self, code: str) -> Workshop | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM workshops WHERE code = ? AND state = 'active'",
                             (code,)).fetchone()
        return self._workshop(row) if row else None

    def set_state(self, name: str, state: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE workshops SET state = ? WHERE name = ?", (state, name))

    # -- participants ----------------------------------------------------------------------

    def add_participant(self, participant: Participant) -> None:
        data = asdict(participant)
        with self._connect() as db:
            db.execute(
                "INSERT INTO participants VALUES "
                "(:username, :workshop, :name, :number, :joined, :state)", data)

    def participants(self, workshop: str) -> list[Participant]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM participants WHERE workshop = ? ORDER BY number",
                              (workshop,)).fetchall()
        return [Participant(**dict(r)) for r in rows]

    def participant(self, username: str) -> Participant | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM participants WHERE username = ?",
                             (username,)).fetchone()
        return Participant(**dict(row)) if row else None

    def next_number(self, workshop: str) -> int:
        with self._connect() as db:
            row = db.execute("SELECT MAX(number) FROM participants WHERE workshop = ?",
                             (workshop,)).fetchone()
        return int(row[0] or 0) + 1

    def set_participant_state(self, username: str, state: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE participants SET state = ? WHERE username = ?", (state, username))

    # -- checkpoints -----------------------------------------------------------------------

    def add_checkpoint(self, workshop: str, checkpoint: Checkpoint) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT INTO checkpoints (username, workshop, step, ok, message, at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (checkpoint.username, workshop, checkpoint.step, int(checkpoint.ok),
                 checkpoint.message, checkpoint.at))

    def checkpoints(self, workshop: str) -> list[Checkpoint]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT username, step, ok, message, at FROM checkpoints WHERE workshop = ? "
                "ORDER BY id", (workshop,)).fetchall()
        return [Checkpoint(r["username"], r["step"], bool(r["ok"]), r["message"], r["at"])
                for r in rows]

    # -- the end-of-workshop journal -------------------------------------------------------

    def done_steps(self, workshop: str) -> dict[str, str]:
        with self._connect() as db:
            rows = db.execute("SELECT step, detail FROM journal WHERE workshop = ?",
                              (workshop,)).fetchall()
        return {r["step"]: r["detail"] for r in rows}

    def mark_done(self, workshop: str, step: str, detail: str = "") -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO journal VALUES (?, ?, ?, ?)",
                       (workshop, step, datetime.now().isoformat(timespec="seconds"), detail))


# -- progress -------------------------------------------------------------------------------


@dataclass
class ProgressRow:
    """One participant in the trainer's table."""

    username: str
    name: str
    step: str = ""
    ok: bool | None = None
    message: str = ""
    steps_done: int = 0
    errors: int = 0
    last_checkpoint: str | None = None
    last_activity: str | None = None
    server: str = "stopped"
    stuck: bool = False
    why_stuck: str = ""
    open_url: str = ""


def progress_rows(participants: list[Participant], checkpoints: list[Checkpoint],
                  stuck_minutes: float, now: datetime | None = None) -> list[ProgressRow]:
    """Each participant's latest step, error count and whether they look stuck.

    Stuck: the last check failed, or no checkpoint for ``stuck_minutes`` (counted from
    joining when there is none yet).
    """
    now = now or datetime.now()
    rows: dict[str, ProgressRow] = {
        p.username: ProgressRow(p.username, p.name) for p in participants
        if p.state == "active"}
    done: dict[str, set[str]] = {}
    for cp in checkpoints:
        row = rows.get(cp.username)
        if row is None:
            continue
        row.step, row.ok, row.message, row.last_checkpoint = cp.step, cp.ok, cp.message, cp.at
        if cp.ok:
            done.setdefault(cp.username, set()).add(cp.step)
        else:
            row.errors += 1
    joined = {p.username: p.joined for p in participants}
    limit = timedelta(minutes=stuck_minutes)
    for username, row in rows.items():
        row.steps_done = len(done.get(username, set()))
        since = row.last_checkpoint or joined.get(username)
        if row.ok is False:
            row.stuck, row.why_stuck = True, f"check {row.step!r} failed"
        elif since and now - datetime.fromisoformat(since) > limit:
            idle = (now - datetime.fromisoformat(since)) // timedelta(minutes=1)
            row.stuck, row.why_stuck = True, f"no progress for {idle} min"
    return list(rows.values())


__all__ = [
    "END_STEPS",
    "Checkpoint",
    "Participant",
    "ProgressRow",
    "Workshop",
    "WorkshopInputError",
    "WorkshopSpec",
    "WorkshopStore",
    "account_name",
    "display_name",
    "group_name",
    "logins_csv",
    "names_from_csv",
    "new_code",
    "normalize_code",
    "parse_spec",
    "progress_rows",
    "reservation_name",
    "role_name",
    "store_path",
]
