"""Checkpoints for guided notebooks: each step tells the trainer how the participant is doing.

::

    from shopfloor.widgets import checkpoint, check
    checkpoint("step-1")                                  # reached step 1
    check("step-2", lambda: df.shape == (100, 3), hint="load data.csv into df first")

Events go to the hub's ``workshop`` service with the session's own token
(``$JUPYTERHUB_API_TOKEN``); the trainer panel shows them. Outside a workshop (or outside a
session) nothing is recorded and the notebook goes on: the line under the cell says so.
"""

from __future__ import annotations

import html
import traceback
from collections.abc import Callable
from typing import Any

from shopfloor.workshops.client import WorkshopClient, WorkshopError


def _show(text: str, ok: bool) -> None:
    try:
        from IPython.display import HTML, display
    except ImportError:
        print(text)
        return
    colour = "#1b5e20" if ok else "#b00020"
    display(HTML(f'<div class="sf-checkpoint" style="color:{colour}">{html.escape(text)}</div>'))


def checkpoint(step: str, ok: bool = True, message: str = "", *,
               client: WorkshopClient | None = None, show: bool = True) -> dict[str, Any]:
    """Record that ``step`` was reached (``ok=True``) or failed (``ok=False``, ``message``).

    Returns the service's answer (``recorded`` says whether it counted for a workshop). A
    refused step name raises :class:`~shopfloor.workshops.client.WorkshopError` (the notebook's
    author must fix it); an unreachable service only shows a line.
    """
    try:
        answer = (client or WorkshopClient(timeout=15)).checkpoint(step, ok, message)
    except WorkshopError as exc:
        if exc.problems:
            raise
        answer = {"recorded": False, "why": str(exc)}
    if show:
        mark = "✓" if ok else "✗"
        text = f"{mark} {step}" + (f": {message}" if message else "")
        if not answer.get("recorded"):
            text += f" (not recorded: {answer.get('why', 'no workshop')})"
        _show(text, ok)
    return answer


def check(step: str, condition: bool | Callable[[], Any], hint: str = "", *,
          client: WorkshopClient | None = None) -> bool:
    """Run ``condition`` (a bool, or a function returning a truthy value) and record the step.

    A false result or an exception counts as failed, with ``hint`` (or the error) as message.
    Returns whether the check passed.
    """
    try:
        passed = bool(condition() if callable(condition) else condition)
        message = "" if passed else (hint or "not yet")
    except Exception as exc:  # a participant's error is the answer of the check
        # The participant's own Python error, as Python words it ("NameError: ...").
        passed, message = False, traceback.format_exception_only(exc)[-1].strip()[:400]
        if hint:
            message = f"{hint} ({message})"[:500]
    checkpoint(step, passed, message, client=client)
    return passed


__all__ = ["check", "checkpoint"]
