"""``TrainerPanel``: a workshop at a glance — who is where, who is stuck, one click to help.

A thin ipywidgets view over :class:`~shopfloor.workshops.client.WorkshopClient` (any object with its
``status``/``progress``/``start_server``/``stop_server`` methods). Works in JupyterLab and as
a Voila app::

    from shopfloor.widgets import TrainerPanel
    TrainerPanel("intro")
    TrainerPanel()  # choose among the workshops you train

The table shows each participant's latest step, failed checks, last activity and session
state; stuck participants (last check failed, or no progress for the site's
``workshops.stuck_minutes``) are highlighted and listed first. "open" opens the participant's
workshop folder in their JupyterLab (the trainer role grants ``access:servers`` to the
workshop's group only).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import ipywidgets as widgets

from shopfloor.widgets.common import Ticker, plain_message, status_html
from shopfloor.workshops.client import WorkshopClient, WorkshopError
from shopfloor.workshops.model import ProgressRow

_STYLE = """<style>
.sf-trainer table { border-collapse: collapse; width: 100%; }
.sf-trainer th, .sf-trainer td { padding: 4px 8px; border-bottom: 1px solid #ddd;
  text-align: left; }
.sf-trainer tr.sf-stuck { background: #ffebee; }
</style>"""




def _when(stamp: str | None) -> str:
    if not stamp:
        return "-"
    return stamp.replace("T", " ")[:16]


def progress_table(rows: Sequence[ProgressRow]) -> str:
    """The participants as an HTML table, stuck ones first and highlighted."""
    if not rows:
        return "<p>Nobody has joined yet.</p>"
    ordered = sorted(rows, key=lambda r: (not r.stuck, r.username))
    head = ("participant", "name", "step", "steps done", "failed checks", "last check",
            "last activity", "session", "")
    lines = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for row in ordered:
        state = "✗ " if row.ok is False else ("✓ " if row.ok else "")
        step = f"{state}{row.step or '-'}"
        if row.stuck:
            step += f" — stuck: {row.why_stuck}"
        link = (f'<a href="{html.escape(row.open_url)}" target="_blank">open</a>'
                if row.open_url and row.server == "running" else "")
        cells = (row.username, row.name, step, str(row.steps_done), str(row.errors),
                 _when(row.last_checkpoint), _when(row.last_activity), row.server)
        css = ' class="sf-stuck"' if row.stuck else ""
        lines.append(f"<tr{css}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
                     + f"<td>{link}</td></tr>")
    return "".join(lines) + "</table>"


class TrainerPanel(widgets.VBox):
    """Workshop header, progress table, start/stop a participant's session, auto-refresh.

    Without ``workshop`` the panel lists the workshops you train (newest first) and follows
    the one chosen.
    """

    def __init__(self, workshop: str | None = None, client: Any | None = None, *,
                 refresh_seconds: float = 15, auto_refresh: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.workshop = workshop or ""
        self.client = client or WorkshopClient(timeout=60)
        self.rows: list[ProgressRow] = []
        self.info: dict[str, Any] = {}
        self.header = widgets.HTML()
        self.table = widgets.HTML()
        self.status = widgets.HTML()
        self.participant = widgets.Dropdown(description="Participant", options=[])
        self.start_button = widgets.Button(description="Start session")
        self.stop_button = widgets.Button(description="Stop session", button_style="warning")
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.start_button.on_click(lambda _: self.start_selected())
        self.stop_button.on_click(lambda _: self.stop_selected())
        self.refresh_button.on_click(lambda _: self.refresh())
        self.add_class("sf-trainer")
        self.choose = widgets.Dropdown(description="Workshop", options=[], value=None)
        if workshop is None:
            self._list_workshops()
            if self.choose.options:  # the newest, until the trainer chooses another
                self.choose.value = self.workshop = self.choose.options[0][1]
            self.choose.observe(lambda change: self._follow(change["new"]), names="value")
        self.children = [
            widgets.HTML(_STYLE), *([self.choose] if workshop is None else []), self.header,
            widgets.HBox([self.refresh_button, self.participant, self.start_button,
                          self.stop_button]),
            self.status, self.table,
        ]
        self.refresh()
        self.ticker = Ticker(self.refresh, lambda: refresh_seconds)
        if auto_refresh:
            self.ticker.start()

    def _list_workshops(self) -> None:
        try:
            found = sorted(self.client.list(), key=lambda w: str(w.get("start", "")),
                           reverse=True)
        except (WorkshopError, OSError) as exc:
            self.status.value = status_html(plain_message(exc), "error")
            return
        self.choose.options = [(f"{w.get('title') or w['name']} ({w['name']})", w["name"])
                               for w in found]
        if not found:
            self.status.value = status_html(
                "You train no workshops yet: create one with `shopfloor workshop create` or "
                "ask your admin.", "info")

    def _follow(self, name: str | None) -> None:
        self.workshop = name or ""
        self.status.value = ""
        self.refresh()

    def refresh(self) -> None:
        """Fetch the workshop and its progress again and redraw."""
        if not self.workshop:
            self.header.value = self.table.value = ""
            self.participant.options = []
            return
        try:
            self.info = self.client.status(self.workshop)
            self.rows = list(self.client.progress(self.workshop))
        except (WorkshopError, OSError) as exc:
            self.status.value = status_html(plain_message(exc), "error")
            return
        info = self.info
        stuck = sum(r.stuck for r in self.rows)
        self.header.value = (
            f"<h3>{html.escape(str(info.get('title', self.workshop)))}</h3>"
            f"<p>Code <b>{html.escape(str(info.get('code', '')))}</b> · join at "
            f"{html.escape(str(info.get('join_url', '')))} · "
            f"{len(self.rows)}/{info.get('capacity', '?')} joined · "
            f"<b>{stuck}</b> stuck · {html.escape(str(info.get('state', '')))} · "
            f"until {html.escape(_when(info.get('end')))}</p>")
        self.table.value = progress_table(self.rows)
        self.participant.options = [r.username for r in self.rows]
        if not self.status.value or "sf-error" in self.status.value:
            self.status.value = ""

    def _act(self, action: str) -> None:
        user = self.participant.value
        if not user:
            self.status.value = status_html("Choose a participant first.", "error")
            return
        try:
            getattr(self.client, f"{action}_server")(self.workshop, user)
        except (WorkshopError, OSError) as exc:
            self.status.value = status_html(plain_message(exc), "error")
            return
        verb = "Starting" if action == "start" else "Stopping"
        self.status.value = status_html(f"{verb} {user}'s session.", "ok")
        self.refresh()

    def start_selected(self) -> None:
        self._act("start")

    def stop_selected(self) -> None:
        self._act("stop")

    def close(self) -> None:
        self.ticker.stop()
        super().close()


__all__ = ["TrainerPanel", "progress_table"]
