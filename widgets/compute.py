"""``ComputePanel``: choose a partition, manage sessions and batch runs from a notebook.

::

    from shopfloor.widgets import ComputePanel
    ComputePanel()

A thin view over :class:`shopfloor.session.compute.Compute`: the live partition table, a resource
chooser whose bounds and defaults come from the hub (the site's one resource model), the
user's sessions (state, Slurm's reason and expected start, open, stop) and batch runs of
notebooks (state, cell i of n, the executed notebook, cancel). It refreshes itself; errors
from the hub or Slurm appear in its status line in plain words. Everything it does is also a
method of ``panel.compute`` for use from code.
"""

from __future__ import annotations

import html
import os
import threading
from typing import Any

import ipywidgets as w
from traitlets import List, Unicode, observe

from shopfloor.session.batch import BatchRun, RunStatus, parse_parameters
from shopfloor.session.compute import Compute, PartitionRow, qos_table
from shopfloor.session.hubapi import HubError
from shopfloor.session.sessions import Session

from .common import PanelActions, Ticker, lab_link, plain_message, status_html

_TABLE_STYLE = (
    "<style>.sf-table{border-collapse:collapse;font-size:13px}"
    ".sf-table th,.sf-table td{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}"
    ".sf-table th{background:#f3f3f3}</style>"
)
_HEADERS = ("Partition", "Idle / total nodes", "Idle CPUs", "Idle GPUs", "Memory / node",
            "Max walltime", "Pending jobs", "Expected wait")


def partition_table_html(rows: list[PartitionRow], selected: str | None = None) -> str:
    """The live availability table (one ``tr[data-partition]`` per partition)."""
    head = "".join(f"<th>{h}</th>" for h in _HEADERS)
    body = []
    for r in rows:
        gpus = "?" if r.gpus_idle is None else f"{r.gpus_idle} / {r.gpus_total}"
        if r.gpus_total and r.demo_gpus:
            gpus += " (demo GPUs, not real)"
        name = html.escape(r.name) + ("" if r.up else " (down)")
        style = ' style="font-weight:bold"' if r.name == selected else ""
        cells = (name, f"{r.nodes_idle} / {r.nodes_total}", f"{r.cpus_idle} / {r.cpus_total}",
                 gpus, f"{r.memory_gb_per_node:g} GiB", html.escape(r.max_walltime_text),
                 str(r.pending_jobs), html.escape(r.estimated_wait))
        row = "".join(f"<td>{c}</td>" for c in cells)
        body.append(f'<tr data-partition="{html.escape(r.name)}"{style} '
                    f'title="{html.escape(r.description)}">{row}</tr>')
    return (f'{_TABLE_STYLE}<table class="sf-table sf-partitions"><thead><tr>{head}</tr>'
            f'</thead><tbody>{"".join(body)}</tbody></table>')


def _cell(text: str, width: str, css: str = "") -> w.HTML:
    cell = w.HTML(text, layout=w.Layout(width=width))
    if css:
        cell.add_class(css)
    return cell


def budget_html(budgets: dict[str, Any] | None) -> str:
    """``used / granted`` with a bar per account and TRES, and the site's warnings."""
    if not budgets or not budgets.get("budgets"):
        return ""
    parts = []
    for budget in budgets["budgets"]:
        for item in budget["items"]:
            percent = item["percent_used"] if item["percent_used"] is not None else 0
            used = item["used"] + item["running"]
            parts.append(
                f'<div class="sf-budget" data-account="{html.escape(budget["account"])}">'
                f'<b>{html.escape(budget["account"])}</b> {html.escape(item["label"])}: '
                f'{used:,} used / {item["granted"]:,} granted ({item["remaining"]:,} left)'
                # An ancestor's limit binds first: say whose, and who shares it.
                + (f' <span class="sf-budget-source">in {html.escape(item["source"])}</span>'
                   if item.get("source") else "") +
                f'<div style="background:#eee;width:240px;height:8px">'
                f'<div class="sf-budget-bar" style="background:'
                f'{"#d9822b" if budget["warnings"] else "#2b7bd9"};width:{percent}%;'
                f'height:8px"></div></div></div>')
    parts += [status_html(f"Budget running out: {w}", "error") for w in budgets["warnings"]]
    return "".join(parts)


class QosDropdown(w.Dropdown):
    """The QoS to ask for: exactly those the hub allows on the value of ``partition`` charging
    the value of ``account`` (:func:`qos_table`), offered again whenever either changes.

    "(default)" (``""``) sends none: Slurm then uses the association's default QoS. A choice
    the new partition or account does not allow is dropped, never sent. Hidden while the hub
    offers none.
    """

    def __init__(self, partition: w.ValueWidget, account: w.ValueWidget) -> None:
        super().__init__(description="QoS", options=[("(default)", "")], value="",
                         layout=w.Layout(display="none"))
        self.add_class("sf-qos")
        self.table: dict[str, dict[str, list[str]]] = {}
        self._partition_box, self._account_box = partition, account
        partition.observe(lambda _: self.offer(), names="value")
        account.observe(lambda _: self.offer(), names="value")

    def set_table(self, table: dict[str, dict[str, list[str]]]) -> None:
        """New QoS per account and partition; the offer follows."""
        self.table = table
        self.offer()

    def offered(self) -> list[str]:
        """The QoS allowed for the chosen partition and account (none chosen: the default's)."""
        account = self._account_box.value or ""
        per_partition = self.table.get(account, self.table.get("", {}))
        return per_partition.get(self._partition_box.value or "", [])

    def offer(self) -> None:
        """Offer :meth:`offered`, keeping the current choice if it is still allowed."""
        offered = self.offered()
        current = self.value
        options = [("(default)", ""), *((q, q) for q in offered)]
        if list(self.options) != options:
            self.options = options
        self.value = current if current in offered else ""
        self.layout.display = "" if offered else "none"


class ResourceChooser(w.VBox):
    """Partition and resources, bounded by the limits the hub reports for that partition;
    the account and QoS to charge, where the hub offers a choice.

    The QoS dropdown offers exactly the QoS of the chosen partition *and* account (the hub's
    ``qos_by_account``), and changes when either does; "(default)" sends none (Slurm then
    uses the association's default QoS).
    """

    def __init__(self) -> None:
        self.rows: dict[str, PartitionRow] = {}
        self.partition = w.Dropdown(description="Partition", options=[])
        self.partition.add_class("sf-partition")
        style = {"description_width": "initial"}
        small = w.Layout(width="170px")
        self.cpus = w.BoundedIntText(1, min=1, max=1, description="CPUs", layout=small)
        self.memory_gb = w.BoundedFloatText(1, min=0.1, max=1, step=0.5,
                                            description="Memory GiB", layout=small, style=style)
        self.gpus = w.BoundedIntText(0, min=0, max=0, description="GPUs", layout=small)
        self.walltime = w.BoundedIntText(30, min=1, max=30, description="Minutes",
                                         layout=small, style=style)
        self.limits = w.HTML()
        self.limits.add_class("sf-limits")
        #: The account to charge: exactly the user's (the hub's answer); hidden when none.
        self.account = w.Dropdown(description="Account", options=[],
                                  layout=w.Layout(display="none"))
        self.account.add_class("sf-account")
        #: The QoS to ask for: exactly those of the chosen partition and account.
        self.qos = QosDropdown(self.partition, self.account)
        self.partition.observe(self._partition_changed, names="value")
        super().__init__([
            w.HBox([self.partition, self.limits]),
            w.HBox([self.cpus, self.memory_gb, self.gpus, self.walltime, self.account,
                    self.qos]),
        ])

    def set_qos(self, table: dict[str, dict[str, list[str]]]) -> None:
        """New QoS per account and partition (:func:`qos_table`); the offer follows."""
        self.qos.set_table(table)

    def set_accounts(self, accounts: list[str], default: str | None) -> None:
        """Offer ``accounts``, keeping the user's choice if it is still one of them."""
        current = self.account.value
        if list(self.account.options) != accounts:
            self.account.options = accounts
        if current in accounts:
            self.account.value = current
        elif accounts:
            self.account.value = default if default in accounts else accounts[0]
        self.account.layout.display = "" if accounts else "none"

    def set_rows(self, rows: list[PartitionRow], default: str | None) -> None:
        """New live rows: keep the user's choice if it is still offered."""
        self.rows = {r.name: r for r in rows}
        names = list(self.rows)
        current = self.partition.value
        if list(self.partition.options) != names:
            self.partition.options = names
        if current in self.rows:
            self.partition.value = current
        elif names:
            self.partition.value = default if default in self.rows else names[0]

    def _partition_changed(self, change: dict[str, Any]) -> None:
        row = self.rows.get(change["new"])
        if row is None:
            return
        lim, defaults = row.limits, row.defaults
        for box, key, default_key in (
            (self.cpus, "max_cpus", "cpus"), (self.memory_gb, "max_memory_gb", "memory_gb"),
            (self.gpus, "max_gpus", "gpus"),
            (self.walltime, "max_walltime_minutes", "walltime_minutes"),
        ):
            box.max = lim.get(key, box.max)
            box.value = min(defaults.get(default_key, box.value), box.max)
        self.limits.value = html.escape(
            f"up to {lim.get('max_cpus')} CPUs, {lim.get('max_memory_gb'):g} GiB, "
            f"{lim.get('max_gpus')} GPUs, {row.max_walltime_text}"
        ) if lim else ""

    def options(self) -> dict[str, Any]:
        """The chosen resources as raw options (the hub validates them)."""
        options = {"partition": self.partition.value, "cpus": self.cpus.value,
                   "memory_gb": self.memory_gb.value, "gpus": self.gpus.value,
                   "walltime": str(self.walltime.value)}
        if self.account.value:
            options["account"] = self.account.value
        if self.qos.value:
            options["qos"] = self.qos.value
        return options


class ComputePanel(PanelActions, w.VBox):
    """Partitions, sessions and batch runs of the user, refreshing every ``refresh_seconds``
    (every 3 s while something is starting). ``compute`` defaults to this session's."""

    partitions = List()
    sessions = List()
    runs = List()
    message = Unicode()
    message_kind = Unicode("info")

    def __init__(self, compute: Compute | None = None, *, refresh_seconds: float = 10.0,
                 auto_refresh: bool = True) -> None:
        super().__init__()
        self.add_class("sf-compute-panel")
        self.refresh_seconds = refresh_seconds
        self._refresh_failed = False
        #: The session this panel's kernel runs in (None outside a session): not stoppable here.
        self.own_session: str | None = os.environ.get("JUPYTERHUB_SERVER_NAME")
        self._lock = threading.RLock()
        self.status = w.HTML()
        self.status.add_class("sf-status")
        self.table = w.HTML()
        self.table.add_class("sf-partition-table")
        self.chooser = ResourceChooser()
        self.budgets = w.HTML()
        self.budgets.add_class("sf-budgets")
        self.chooser.partition.observe(lambda _: self._render_table(), names="value")
        self.session_name = w.Text(placeholder="session name, e.g. gpu-work",
                                   description="Name")
        self.session_name.add_class("sf-session-name")
        self.start_button = self._button("Start session", "sf-start", self.start_session,
                                         "success")
        self.notebook = w.Text(placeholder="notebook.ipynb", description="Notebook")
        self.notebook.add_class("sf-notebook")
        self.parameters = w.Textarea(placeholder="parameters, one per line: epochs = 3",
                                     layout=w.Layout(width="320px", height="48px"))
        self.parameters.add_class("sf-parameters")
        self.run_button = self._button("Run notebook as batch job", "sf-run", self.run_notebook)
        self.refresh_button = self._button("Refresh", "sf-refresh", self.refresh)
        self.session_box = w.VBox()
        self.session_box.add_class("sf-sessions")
        self.run_box = w.VBox()
        self.run_box.add_class("sf-runs")
        self.children = [
            w.HBox([w.HTML("<b>Compute</b>"), self.refresh_button]),
            self.status, self.table, self.chooser, self.budgets,
            w.HBox([self.session_name, self.start_button]),
            w.HBox([self.notebook, self.parameters, self.run_button]),
            w.HTML("<b>Your sessions</b>"), self.session_box,
            w.HTML("<b>Your batch runs</b>"), self.run_box,
        ]
        self.compute: Compute | None = compute
        if compute is None:
            try:
                self.compute = Compute()
            except Exception as exc:  # no hub here (not in a session): say so in the panel
                self.show(plain_message(exc), "error")
        self.ticker: Ticker | None = None
        if self.compute is not None:
            self.refresh()
            if auto_refresh:
                self.ticker = Ticker(self.refresh, self._interval).start()

    # -- plumbing -------------------------------------------------------------------------

    def _interval(self) -> float:
        busy = any(s.state in {"starting", "stopping"} for s in self.sessions) or any(
            not status.finished for _, status in self.runs)
        return min(3.0, self.refresh_seconds) if busy else self.refresh_seconds

    def close(self) -> None:
        if self.ticker is not None:
            self.ticker.stop()
        super().close()

    # -- state → view ---------------------------------------------------------------------

    @observe("message", "message_kind")
    def _render_status(self, _: Any = None) -> None:
        self.status.value = status_html(self.message, self.message_kind)

    @observe("partitions")
    def _render_partitions(self, _: Any = None) -> None:
        default = self.compute.default_partition if self.compute else None
        self.chooser.set_rows(self.partitions, default)
        self._render_table()

    def _render_table(self) -> None:
        self.table.value = partition_table_html(self.partitions, self.chooser.partition.value)

    @observe("sessions")
    def _render_sessions(self, _: Any = None) -> None:
        if not self.sessions:
            self.session_box.children = [w.HTML("<i>No sessions.</i>")]
            return
        self.session_box.children = [self._session_row(s) for s in self.sessions]

    def _session_row(self, session: Session) -> w.HBox:
        detail = session.reason or session.message
        if session.eta:
            detail = f"{detail}; starts {session.eta}" if session.reason else detail
        if session.state == "running":
            detail = session.time_left_text() or detail  # from its Slurm job's end time
        actions: list[w.Widget] = []
        if session.state == "running":
            actions.append(w.HTML(f'<a href="{html.escape(session.url)}" target="_blank">'
                                  "Open</a>", layout=w.Layout(width="50px")))
        # Stopping the session this panel runs in would end the panel too.
        if session.name == self.own_session:
            actions.append(w.HTML("<i>this session</i>"))
        elif session.state in {"running", "starting"}:
            actions.append(self._button("Stop", "sf-stop",
                                        lambda name=session.name: self.stop_session(name)))
        row = w.HBox([
            _cell(html.escape(session.label), "140px", "sf-session-label"),
            _cell(f"<b>{session.state}</b>", "80px", "sf-session-state"),
            _cell(html.escape(session.partition or ""), "70px"),
            _cell(html.escape(detail), "420px", "sf-session-detail"),
            *actions,
        ])
        row.add_class("sf-session")
        row.add_class(f"sf-session-{session.state}")
        return row

    @observe("runs")
    def _render_runs(self, _: Any = None) -> None:
        if not self.runs:
            self.run_box.children = [w.HTML("<i>No batch runs.</i>")]
            return
        self.run_box.children = [self._run_row(run, status) for run, status in self.runs]

    def _run_row(self, run: BatchRun, status: RunStatus) -> w.HBox:
        name = run.notebook.rsplit("/", 1)[-1]
        detail = " ".join(x for x in (status.progress_text, status.message) if x)
        actions: list[w.Widget] = []
        if run.output_path.exists():
            actions.append(w.HTML(lab_link(run.output_path, "executed notebook")))
        if not status.finished:
            actions.append(self._button("Cancel", "sf-cancel",
                                        lambda run=run: self.cancel_run(run)))
        row = w.HBox([
            _cell(html.escape(f"{name} ({run.id})"), "260px", "sf-run-label"),
            _cell(html.escape(run.request.partition), "70px"),
            _cell(f"<b>{status.state}</b>", "90px", "sf-run-state"),
            _cell(html.escape(detail), "300px", "sf-run-detail"),
            *actions,
        ])
        row.add_class("sf-run")
        return row

    # -- actions (also callable from code) ------------------------------------------------

    def refresh(self) -> None:
        """Ask the hub and Slurm again; problems show in the status line."""
        if self.compute is None:
            return
        compute = self.compute

        def load() -> None:
            self.partitions = compute.partitions()
            self.chooser.set_accounts(compute.accounts, compute.default_account)
            self.chooser.set_qos(compute.qos_by_account)
            self.budgets.value = budget_html(compute.budgets())
            self.sessions = compute.list_sessions()
            self.runs = compute.runs()
            if compute.slurm_problem:
                self.show(compute.slurm_problem, "error")
            elif self._refresh_failed:
                self.show("")  # the problem the last refresh showed is over
            self._refresh_failed = False

        if not self.attempt(load):
            self._refresh_failed = True

    def start_session(self) -> None:
        """Start a session named in the name box on the chosen resources."""
        compute = self._require()
        options = self.chooser.options()
        session = compute.sessions.start(self.session_name.value, **options)
        self.show(f"Starting session {session.label} on {options['partition']}.", "ok")
        self.sessions = compute.list_sessions()

    def stop_session(self, name: str) -> None:
        """Stop session ``name`` (its Slurm job is cancelled)."""
        compute = self._require()
        compute.sessions.stop(name)
        self.show(f"Stopping session {name or '(default)'}.", "ok")
        self.sessions = compute.list_sessions()

    def run_notebook(self) -> None:
        """Submit the notebook in the notebook box as a batch job on the chosen resources."""
        compute = self._require()
        if not self.notebook.value.strip():
            self.show("Type the path of the notebook to run, e.g. analysis.ipynb.", "error")
            return
        run = compute.run_notebook(self.notebook.value.strip(),
                                   parameters=parse_parameters(self.parameters.value),
                                   **self.chooser.options())
        self.show(f"Submitted {run.notebook} as job {run.job_id}; results go to "
                  f"{run.directory}.", "ok")
        self.runs = compute.runs()

    def cancel_run(self, run: BatchRun) -> None:
        """Cancel a batch run (queued or running)."""
        run.cancel()
        self.show(f"Cancelled run {run.id}.", "ok")
        self.runs = self._require().runs()

    def _require(self) -> Compute:
        if self.compute is None:
            raise HubError("This panel is not connected to a hub; open it inside a session.")
        return self.compute


__all__ = ["ComputePanel", "QosDropdown", "ResourceChooser", "partition_table_html", "qos_table"]
