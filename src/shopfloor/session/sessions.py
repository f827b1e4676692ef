"""A user's JupyterLab sessions (named hub servers, each a Slurm job), as plain objects.

::

    from shopfloor.session.sessions import Sessions
    sessions = Sessions()                      # inside a session: uses its hub token
    sessions.start("gpu-work", partition="gpu", gpus=1, walltime="1:00:00")
    for s in sessions.list():
        print(s.name, s.state, s.message, s.eta)
    sessions.stop("gpu-work")

Starting goes through the hub's REST API, so the hub validates the request with the site's
one resource model, exactly as for the spawn page.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from shopfloor.errors import ShopfloorError
from shopfloor.session.hubapi import Hub, HubError
from shopfloor.slurm.jobscript import session_job_name
from shopfloor.slurm.seam import JobInfo
from shopfloor.timeutil import format_minutes

#: Server names we accept: they become part of Slurm job names and URLs.
SESSION_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_QUEUED = re.compile(r"^Queued on [^:]+: (?P<reason>[^;.]+)")
_ETA = re.compile(r"expected to start (?P<eta>around \d{1,2}:\d{2}|within a minute)")


class SessionError(ShopfloorError, ValueError):
    """A session request that cannot be sent as it is; the message says what is allowed."""


def check_name(name: str) -> str:
    """A valid session name, or :class:`SessionError` saying what names look like."""
    name = name.strip()
    if not SESSION_NAME.match(name):
        raise SessionError(
            f"{name!r} is not a session name you can use: use 1 to 32 lowercase letters, "
            "digits, '-' and '_', starting with a letter or digit (for example gpu-work)"
        )
    return name


@dataclass(frozen=True)
class Session:
    """One of the user's sessions as the hub reports it.

    ``state`` is one of ``starting`` (queued or booting), ``running``, ``stopping``,
    ``stopped`` or ``failed`` (its start failed; ``message`` says why). While starting,
    ``message`` is the spawner's latest word (Slurm's reason and expected start), ``reason``
    and ``eta`` the parts of it a table shows.
    """

    name: str
    state: str
    url: str
    partition: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    started: str | None = None
    message: str = ""
    #: When the session's Slurm job ends (its end time, local time); None if not known.
    ends: datetime | None = None

    @property
    def label(self) -> str:
        return self.name or "(default)"

    @property
    def reason(self) -> str:
        match = _QUEUED.match(self.message)
        return match.group("reason").strip() if match else ""

    @property
    def eta(self) -> str:
        match = _ETA.search(self.message)
        return match.group("eta") if match else ""

    def minutes_left(self, now: datetime | None = None) -> int | None:
        """Whole minutes until the job ends (0 once past), None when the end is unknown."""
        if self.ends is None:
            return None
        return max(0, int((self.ends - (now or datetime.now())).total_seconds() // 60))

    def time_left_text(self, now: datetime | None = None) -> str:
        """``"1 hour 5 minutes left (ends 14:32)"``; ``""`` when the end is unknown."""
        left = self.minutes_left(now)
        if left is None or self.ends is None:
            return ""
        words = "less than a minute" if left < 1 else format_minutes(left)
        return f"{words} left (ends {self.ends:%H:%M})"

    def with_job_end(self, user: str, jobs: Iterable[JobInfo]) -> Session:
        """This session with the end time of its running Slurm job among ``jobs``.

        The job is the running one named :func:`session_job_name`; should several run (two
        hubs on one cluster), the one that started nearest to this server's start.
        """
        name = session_job_name(user, self.name)
        mine = [j for j in jobs if j.is_running and j.name == name and j.user == user]
        if self.state != "running" or not mine:
            return self
        started = _local_time(self.started)

        def distance(job: JobInfo) -> float:
            if started is None or job.start is None:
                return 0.0
            return abs((job.start - started).total_seconds())

        return replace(self, ends=min(mine, key=distance).end)

    @classmethod
    def from_model(cls, model: dict[str, Any], message: str = "") -> Session:
        """Build from a JupyterHub server model (``GET /users/<name>``)."""
        if model.get("pending") == "stop":
            state = "stopping"
        elif model.get("ready"):
            state = "running"
        elif model.get("pending") == "spawn":
            state = "starting"
        else:
            state = "stopped"
        options = dict(model.get("user_options") or {})
        partition = options.get("partition")
        return cls(
            name=str(model.get("name", "")), state=state, url=str(model.get("url", "")),
            partition=str(partition) if partition else None, options=options,
            started=model.get("started"), message=message,
        )


def _local_time(iso: str | None) -> datetime | None:
    """JupyterHub's UTC timestamp as local time without zone, as Slurm prints times."""
    if not iso:
        return None
    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone().replace(tzinfo=None) if moment.tzinfo else moment


class Sessions:
    """List, start and stop the user's sessions through the hub's REST API."""

    def __init__(self, hub: Hub | None = None) -> None:
        self.hub = hub or Hub()
        #: Sessions seen starting: if one vanishes, its start failed and we ask the hub why.
        self._starting: set[str] = set()
        self._failed: dict[str, Session] = {}

    def list(self, *, progress: bool = True) -> list[Session]:
        """Every active session, default first, then those whose start failed since we last
        looked (state ``failed``). ``progress`` reads the messages of starting sessions."""
        sessions = []
        models = self.hub.servers()
        for name, model in sorted(models.items()):
            message = ""
            if progress and model.get("pending") == "spawn":
                event = self.hub.progress(name)
                message = str(event.get("message", "")) if event else ""
            session = Session.from_model(model, message)
            sessions.append(session)
            self._failed.pop(name, None)
            if session.state == "starting":
                self._starting.add(name)
            else:
                self._starting.discard(name)
        for name in sorted(self._starting - set(models)):
            self._starting.discard(name)
            event = self.hub.progress(name) or {}
            if event.get("failed"):
                self._failed[name] = Session(
                    name=name, state="failed", url="", message=str(event.get("message", ""))
                )
        return sessions + [s for n, s in sorted(self._failed.items()) if n not in models]

    def forget_failed(self, name: str) -> None:
        """Drop a failed session from :meth:`list` (the user has read why)."""
        self._failed.pop(name, None)

    def get(self, name: str) -> Session | None:
        return next((s for s in self.list() if s.name == name), None)

    def start(self, name: str, **options: Any) -> Session:
        """Start session ``name`` with resource ``options`` (partition, cpus, walltime, ...).

        The hub checks the options against the site's limits first: a bad value raises
        :class:`~shopfloor.resources.RequestError` naming the field, and nothing is started.
        """
        name = check_name(name)
        current = self.hub.servers().get(name)
        if current and (current.get("ready") or current.get("pending")):
            raise SessionError(f"A session named {name!r} already exists; choose another name.")
        request = self.hub.validate(options)
        self.hub.start_server(name, request.as_options())
        return self.get(name) or Session(name=name, state="starting", url="")

    def stop(self, name: str) -> None:
        """Stop session ``name``: the hub cancels its Slurm job."""
        self.hub.stop_server(name)

    def wait(self, name: str, state: str = "running", timeout: float = 300,
             interval: float = 1.0) -> Session:
        """Block until session ``name`` reaches ``state``; :class:`HubError` on timeout."""
        deadline = time.monotonic() + timeout
        last: Session | None = None
        while time.monotonic() < deadline:
            last = self.get(name)
            current = last.state if last else "stopped"
            if current == state:
                return last or Session(name=name, state="stopped", url="")
            time.sleep(interval)
        seen = f"{last.state}: {last.message}" if last else "not found"
        raise HubError(f"Session {name!r} did not become {state} in {timeout:.0f} s ({seen}).")


__all__ = ["Session", "SessionError", "Sessions", "check_name"]
