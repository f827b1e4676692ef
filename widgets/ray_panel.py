"""``RayClusterPanel``: create, watch, scale, use and stop a Ray cluster from a notebook.

::

    from shopfloor.widgets import RayClusterPanel
    RayClusterPanel()

A thin view over :class:`shopfloor.ray.cluster.RayCluster`. The create form offers the
partitions and sizes the hub reports for this user, and exactly the Slurm accounts (the default
preselected) and QoS the user may charge there, from the same hub answer ComputePanel uses
(the site's one resource model checks them again); the status line follows the cluster from
*pending* (Slurm's reason and expected start) through *starting* to *ready* (nodes, CPUs, GPUs,
object store), and says when a worker was lost. Buttons scale it, open the dashboard through
this Jupyter server (the token is added there, never shown), run a Ray job with its log
streamed live, and stop it. Works in JupyterLab and Voila.
"""

from __future__ import annotations

import html
import threading
from pathlib import Path
from typing import Any

import ipywidgets as w
from traitlets import Unicode, observe

from shopfloor.ray.cluster import ClusterStatus, RayCluster, list_clusters

from .common import PanelActions, Ticker, plain_message, status_html
from .compute import ResourceChooser, qos_table

_PHASE_COLOURS = {"ready": "#1b5e20", "degraded": "#b00020", "stopped": "#666"}


def _size(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} TiB"  # unreachable; keeps type checkers calm


def status_summary_html(name: str, status: ClusterStatus, account: str | None = None) -> str:
    """The status block: phase and message (and the account it charges), then nodes, CPUs,
    GPUs and object store."""
    colour = _PHASE_COLOURS.get(status.phase, "#444")
    charges = (f' <span class="sf-ray-account">(charges {html.escape(account)})</span>'
               if account else "")
    lines = [f'<b>{html.escape(name)}</b>{charges}: <span class="sf-ray-phase '
             f'sf-ray-{status.phase}" style="color:{colour}">{html.escape(status.phase)}</span> — '
             f'<span class="sf-ray-message">{html.escape(status.message)}</span>']
    if status.phase in {"starting", "ready", "degraded"}:
        lines.append(
            f"nodes {status.nodes_alive} / {status.nodes_expected} · CPUs {status.cpus:g} · "
            f"GPUs {status.gpus:g} · object store {_size(status.object_store_bytes)}"
        )
    jobs = ", ".join(f"{j.job_id} ({j.state.lower()} on {j.nodes or j.partition})"
                     for j in status.jobs if not j.is_finished)
    if jobs:
        lines.append(f"Slurm jobs: {html.escape(jobs)}")
    return '<div class="sf-ray-status">' + "<br>".join(lines) + "</div>"


class RayClusterPanel(PanelActions, w.VBox):
    """Form → cluster view of one of the user's Ray clusters, refreshing every few seconds.

    ``cluster`` shows an existing cluster (else the newest running one, else the form);
    ``hub`` is the session's :class:`shopfloor.session.hubapi.Hub` by default; ``root`` the folder
    of the user's clusters (the site's ``ray.state_dir`` by default).
    """

    message = Unicode()
    message_kind = Unicode("info")

    def __init__(self, cluster: RayCluster | None = None, *, hub: Any | None = None,
                 refresh_seconds: float = 3.0, auto_refresh: bool = True,
                 root: Path | None = None) -> None:
        self.hub = hub
        self.root = root
        self.cluster = cluster
        self.refresh_seconds = refresh_seconds
        self.last_status: ClusterStatus | None = None
        self._lock = threading.RLock()
        self.status = w.HTML()
        self.status.add_class("sf-status")
        # -- the create form
        self.name = w.Text("my-ray", description="Name")
        self.name.add_class("sf-ray-name")
        self.nodes = w.BoundedIntText(1, min=1, max=64, description="Nodes",
                                      layout=w.Layout(width="170px"))
        self.nodes.add_class("sf-ray-nodes")
        self.idle = w.BoundedIntText(30, min=1, max=10080, description="Idle stop (min)",
                                     style={"description_width": "initial"},
                                     layout=w.Layout(width="200px"))
        self.with_session = w.Checkbox(False, description="Stop when this session ends")
        self.chooser = ResourceChooser()
        #: The chooser's QoS dropdown: the QoS of the chosen partition and account ("" = the
        #: association's default); hidden where none is offered.
        self.qos = self.chooser.qos
        self.qos.add_class("sf-ray-qos")
        self.create_button = self._button("Create cluster", "sf-ray-create", self.create,
                                          "primary")
        self.form = w.VBox([
            w.HBox([self.name, self.nodes, self.idle]), self.chooser,
            w.HBox([self.with_session, self.create_button]),
        ])
        self.form.add_class("sf-ray-form")
        # -- the cluster view
        self.summary = w.HTML()
        self.summary.add_class("sf-ray-summary")
        self.dashboard = w.HTML()
        self.dashboard.add_class("sf-ray-dashboard")
        self.entrypoint = w.Text(
            "python -c \"import ray; ray.init(); print(ray.cluster_resources())\"",
            description="Command", layout=w.Layout(width="70%"))
        self.entrypoint.add_class("sf-ray-entrypoint")
        self.logs = w.Textarea("", disabled=True, layout=w.Layout(width="95%", height="160px"))
        self.logs.add_class("sf-ray-logs")
        self.cluster_view = w.VBox([
            self.summary,
            w.HBox([self._button("- node", "sf-ray-scale-down", lambda: self.scale_by(-1)),
                    self._button("+ node", "sf-ray-scale-up", lambda: self.scale_by(1)),
                    self.dashboard,
                    self._button("Stop cluster", "sf-ray-stop", self.stop, "danger")]),
            w.HBox([self.entrypoint, self._button("Run", "sf-ray-submit", self.submit)]),
            self.logs,
        ])
        self.cluster_view.add_class("sf-ray-cluster")
        super().__init__([self.status])
        self.add_class("sf-ray-panel")
        self.ticker: Ticker | None = None
        self.attempt(self._load_form)
        if self.cluster is None:
            self.attempt(self._attach_running)
        self.refresh()
        if auto_refresh:
            self.ticker = Ticker(self.refresh, lambda: self.refresh_seconds).start()

    # -- plumbing -------------------------------------------------------------------------

    @observe("message", "message_kind")
    def _render_message(self, _: Any = None) -> None:
        self.status.value = status_html(self.message, self.message_kind)

    def close(self) -> None:
        if self.ticker is not None:
            self.ticker.stop()
        super().close()

    def _hub(self) -> Any:
        if self.hub is None:
            from shopfloor.session.hubapi import Hub

            self.hub = Hub()
        return self.hub

    def _load_form(self) -> None:
        from shopfloor.session.compute import partition_rows

        answer = self._hub().partitions()
        self.chooser.set_rows(partition_rows(answer, None, None), answer.get("default_partition"))
        self.chooser.set_accounts([str(a) for a in answer.get("accounts") or []],
                                  answer.get("default_account"))
        self.chooser.set_qos(qos_table(answer))
        row = self.chooser.rows.get(self.chooser.partition.value)
        if row is not None:
            self.nodes.max = max(1, int(row.limits.get("max_nodes", 1)))

    def _attach_running(self) -> None:
        for candidate in list_clusters(root=self.root):
            if candidate.status().phase != "stopped":
                self.cluster = candidate
                return

    # -- actions --------------------------------------------------------------------------

    def options(self) -> dict[str, Any]:
        """The form as raw resource options (the hub validates them): partition, sizes,
        nodes, and the account and QoS where the hub offered a choice."""
        return {**self.chooser.options(), "nodes": self.nodes.value}

    def create(self) -> None:
        self.show("Submitting your Ray cluster...")
        self.cluster = RayCluster.create(
            self.name.value.strip(), self.options(), hub=self._hub(),
            idle_timeout_minutes=self.idle.value, stop_with_session=self.with_session.value,
            root=self.root,
        )
        self.show(f"Submitted {self.cluster.name}.", "ok")
        self.refresh()

    def scale_by(self, delta: int) -> None:
        if self.cluster is None or self.last_status is None:
            return
        target = max(self.last_status.nodes_expected, 1) + delta
        self.cluster.scale(target, hub=self._hub())
        self.show(f"Scaling {self.cluster.name} to {target} node(s).", "ok")
        self.refresh()

    def submit(self) -> None:
        if self.cluster is None:
            return
        cluster = self.cluster
        job = cluster.submit(self.entrypoint.value)
        self.logs.value = ""
        self.show(f"Ray job {job} submitted; its log follows below.", "ok")
        threading.Thread(target=self._follow, args=(cluster, job), daemon=True).start()

    def _follow(self, cluster: RayCluster, job: str) -> None:
        try:
            for chunk in cluster.follow_logs(job):
                self.logs.value = self.logs.value + chunk
            self.show(f"Ray job {job}: {cluster.job_status(job).lower()}.", "ok")
        except Exception as exc:  # shown to the user; the log thread must not die silently
            self.show(plain_message(exc), "error")

    def stop(self) -> None:
        if self.cluster is None:
            return
        self.show(f"Stopping {self.cluster.name}...")
        self.cluster.stop()
        self.show(f"{self.cluster.name} stopped; nothing is left on the nodes.", "ok")
        self.refresh()

    # -- state → view ---------------------------------------------------------------------

    def refresh(self) -> None:
        """Ask the cluster where it stands and redraw (the ticker calls this)."""
        self.attempt(self._refresh)

    def _refresh(self) -> None:
        status = self.cluster.status() if self.cluster is not None else None
        self.last_status = status
        if self.cluster is None or status is None or status.phase == "stopped":
            if status is not None and self.cluster is not None:
                self.summary.value = status_summary_html(
                    self.cluster.name, status, self.cluster.account)
                children = [self.status, self.summary, self.form]
            else:
                children = [self.status, self.form]
        else:
            self.summary.value = status_summary_html(self.cluster.name, status,
                                                     self.cluster.account)
            url = self.cluster.dashboard_url
            self.dashboard.value = (
                f'<a href="{html.escape(url)}" target="_blank">Open Ray dashboard</a>'
                if url and status.phase in {"ready", "degraded"} else ""
            )
            children = [self.status, self.cluster_view]
        if list(self.children) != children:
            self.children = children


__all__ = ["RayClusterPanel", "status_summary_html"]
