"""Small pieces every Shopfloor panel shares: plain-word errors, auto-refresh, links, HTML.

Panels are thin ipywidgets views over plain objects. They catch what those objects raise and
show :func:`plain_message` in a status line (never a traceback): the ``user_message`` of a
:class:`~shopfloor.errors.ShopfloorError`, never a guess from the class of the error. They
refresh themselves with a :class:`Ticker`, and link to files with :func:`lab_link`.
"""

from __future__ import annotations

import html
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from shopfloor.errors import ShopfloorError
from shopfloor.slurm.seam import SlurmError


def plain_message(exc: BaseException) -> str:
    """What went wrong, in words a user can act on (no traceback, no class names).

    Shopfloor's own errors are written for users (:attr:`ShopfloorError.user_message` names
    each field to change); Slurm's refusals are shown in Slurm's words; anything else is
    unexpected, so the user is told to try again or tell their admin.
    """
    if isinstance(exc, ShopfloorError):
        return exc.user_message
    if isinstance(exc, SlurmError):
        return f"Slurm said: {exc.slurm_message}"
    return f"Something went wrong: {str(exc) or repr(exc)}. Try again; if it keeps " \
           "happening, tell your admin."


def status_html(text: str, kind: str = "info") -> str:
    """A one-line status: ``kind`` is info, ok or error (colours and a CSS class)."""
    colour = {"error": "#b00020", "ok": "#1b5e20"}.get(kind, "#444")
    return (f'<div class="sf-{kind}" style="color:{colour};white-space:pre-wrap">'
            f"{html.escape(text)}</div>") if text else ""


def lab_link(path: Path, label: str) -> str:
    """An HTML link that opens ``path`` in this session's JupyterLab, or the path as text
    when it is outside the home folder or not in a session."""
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "")
    try:
        relative = path.resolve().relative_to(Path.home().resolve())
    except ValueError:
        relative = None
    if not prefix or relative is None:
        return html.escape(str(path))
    href = f"{prefix.rstrip('/')}/lab/tree/{quote(relative.as_posix())}"
    return f'<a href="{html.escape(href)}" target="_blank">{html.escape(label)}</a>'


class PanelActions:
    """Mixin for panels: buttons run user actions, failures show in plain words.

    The panel provides ``_lock`` (a ``threading.RLock``) and ``message``/``message_kind``
    traits, or overrides :meth:`show`; :meth:`describe_error` may word known errors better.
    """

    _lock: threading.RLock
    message: str
    message_kind: str

    def describe_error(self, exc: BaseException) -> str:
        return plain_message(exc)

    def show(self, text: str, kind: str = "info") -> None:
        self.message_kind = kind
        self.message = text

    def _button(self, label: str, css: str, action: Callable[[], Any], style: str = "") -> Any:
        import ipywidgets as w

        button = w.Button(description=label, button_style=style, layout=w.Layout(width="auto"))
        button.add_class(css)
        button.on_click(lambda _: self.attempt(action))
        return button

    def attempt(self, action: Callable[[], Any]) -> bool:
        """Run a user action; show what went wrong in plain words instead of raising."""
        try:
            with self._lock:
                action()
            return True
        except Exception as exc:  # every failure is shown to the user, none is swallowed
            self.show(self.describe_error(exc), "error")
            return False


class Ticker:
    """Calls ``callback`` every ``interval()`` seconds in a daemon thread until :meth:`stop`.

    ``interval`` is asked again before each wait, so a panel can poll faster while something
    is starting. The callback must handle its own errors (a panel shows them).
    """

    def __init__(self, callback: Callable[[], None], interval: Callable[[], float]) -> None:
        self.callback = callback
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="shopfloor-ticker", daemon=True)

    def start(self) -> Ticker:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval()):
            self.callback()

    def stop(self) -> None:
        self._stop.set()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()


__all__ = ["Ticker", "lab_link", "plain_message", "status_html"]
