"""Sample a benchmark hub's Python stacks with py-spy and say where its time went.

``py-spy record --format raw`` attaches to the running hub (root only, no restart, no change
to the hub) and writes one line per distinct stack, ``frame;frame;...;frame COUNT``, each frame
``function (file:line)``. :func:`top_functions` sums those samples per function, both where
the function itself was running (*self*) and where it was anywhere on the stack
(*inclusive*): the second shows which of our code paths hold the event loop.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmarks.hubprocess import VENV_PYTHON

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
#: Stacks of a hub waiting for work (an idle event loop) say nothing about its cost.
IDLE_FUNCTIONS = (
    "select (selectors.py)", "poll (selectors.py)", "_run_once (asyncio/base_events.py)",
)


def frame_name(frame: str) -> str:
    """``function (short/path.py)`` of a py-spy frame, without the line number.

    The file is shortened to what follows ``site-packages/`` or the repository, so that
    frames of one function at different lines count together.
    """
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", "/lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match.group('func')} ({path})"


def parse_collapsed(lines: Iterable[str]) -> list[tuple[list[str], int]]:
    """``(frames, samples)`` per line of py-spy's raw (collapsed) output; bad lines skipped."""
    stacks = []
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stacks.append(([frame_name(f) for f in stack.split(";") if f], int(count)))
    return stacks


def top_functions(lines: Iterable[str], limit: int = 15) -> dict[str, Any]:
    """Samples per function, self and inclusive, busiest first; idle samples left out."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = idle = 0
    for frames, count in parse_collapsed(lines):
        total += count
        if not frames or frames[-1] in IDLE_FUNCTIONS:
            idle += count
            continue
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    busy = total - idle
    return {
        "samples": total,
        "busy_samples": busy,
        "busy_percent": round(100 * busy / total, 1) if total else None,
        "self": [{"function": f, "samples": n} for f, n in own.most_common(limit)],
        "inclusive": [{"function": f, "samples": n} for f, n in inclusive.most_common(limit)],
    }


#: The frames whose callers :func:`callers_of` reports by default: SQLAlchemy's commit.
COMMIT_FRAME = "Session.commit (sqlalchemy/orm/session.py)"


def callers_of(lines: Iterable[str], target: str = COMMIT_FRAME, limit: int = 10,
               skip: tuple[str, ...] = ("sqlalchemy/", "asyncio/", "tornado/", "<")
               ) -> dict[str, Any]:
    """Who spends the samples of ``target``: per stack holding it, the nearest caller above
    its first occurrence that is not library plumbing (``skip``: file prefixes), summed.

    Tells, for example, which of JupyterHub's or our own functions commit how often.
    """
    callers: Counter[str] = Counter()
    total = 0
    for frames, count in parse_collapsed(lines):
        if target not in frames:
            continue
        total += count
        above = frames[:frames.index(target)]
        caller = next((f for f in reversed(above)
                       if not f.split(" (", 1)[-1].startswith(skip)), "(unknown)")
        callers[caller] += count
    return {"target": target, "samples": total,
            "callers": [{"function": f, "samples": n} for f, n in callers.most_common(limit)]}


def py_spy() -> str | None:
    """py-spy of the benchmark's environment (the ``bench`` extra), else the one on PATH."""
    beside = VENV_PYTHON.parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class HubProfiler:
    """``py-spy record`` of one process, from :meth:`start` to :meth:`stop`."""

    def __init__(self, pid: int, out: Path, rate: int = 100) -> None:
        self.pid = pid
        self.out = out
        self.rate = rate
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return py_spy() is not None

    def start(self) -> None:
        log = open(self.out.with_suffix(".log"), "wb")
        self.process = subprocess.Popen(
            [py_spy() or "py-spy", "record", "--pid", str(self.pid), "--format", "raw", "--rate",
             str(self.rate), "--output", str(self.out)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()

    def stop(self, limit: int = 15) -> dict[str, Any] | None:
        """Stop sampling (py-spy writes its file on SIGINT) and summarize it."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        try:
            lines = self.out.read_text(errors="replace").splitlines()
        except OSError:
            return None
        return {"file": str(self.out), **top_functions(lines, limit),
                "commit_callers": callers_of(lines)}
