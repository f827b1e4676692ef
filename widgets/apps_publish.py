"""``PublishPanel``: publish the current notebook as an app, from the notebook itself.

A thin ipywidgets view over :class:`~shopfloor.apps.client.AppsClient` (any object with its
``publish``/``list``/``rollback``/``unpublish`` methods). Every check happens in the apps
service; the panel shows its refusals field by field and never a traceback. The account
the app's jobs charge, the partition they run on and the QoS are offered from the hub's answer
that every panel reads (``/hub/api/shopfloor/partitions``: exactly your partitions and
accounts, the defaults preselected, and the QoS of the chosen pair)::

    from shopfloor.widgets import PublishPanel
    PublishPanel("slider_app.ipynb")
    PublishPanel()  # asks which of your notebooks to publish
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from shopfloor.apps.client import AppsClient, AppsError
from shopfloor.session.compute import qos_table
from shopfloor.session.hubapi import HubError
from shopfloor.widgets.common import plain_message, status_html
from shopfloor.widgets.compute import QosDropdown

AUDIENCES = [
    ("Only me", "private"), ("Named users", "users"), ("Groups", "groups"),
    ("Every hub user", "hub"), ("Public (no login, if the site allows)", "public"),
]


#: Folders of the home whose notebooks are not offered for publishing: the launcher's panel
#: notebooks (written by shopfloor.lab for each card).
SKIPPED_FOLDERS = ("shopfloor-panels",)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


def notebooks_under(root: Path, limit: int = 500) -> list[str]:
    """The notebooks under ``root`` (paths relative to it, sorted), at most ``limit``.

    Hidden folders (``.ipynb_checkpoints``, ``.local``...) and the launcher's panel notebooks
    are left out: nobody publishes those.
    """
    found: list[str] = []
    for path in sorted(root.rglob("*.ipynb")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or rel.parts[0] in SKIPPED_FOLDERS:
            continue
        found.append(rel.as_posix())
        if len(found) >= limit:
            break
    return found


class PublishPanel(widgets.VBox):
    """Title, description, audience, compute, files and what changed; Publish / Roll back /
    Unpublish, and the app's versions with their notes.

    ``notebook`` is the path of the notebook to publish; without it the panel lists the
    notebooks of ``home`` (default: your home folder) and publishes the one chosen. ``hub``
    (the session's :class:`~shopfloor.session.hubapi.Hub` by default) lists the accounts the
    app may charge; outside a session there is none to ask and the choice stays hidden.
    """

    def __init__(self, notebook: str | None = None, client: Any | None = None,
                 home: Path | None = None, *, hub: Any | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        home = Path.home() if home is None else home
        self._client = client
        self._hub = hub
        self.choose = widgets.Dropdown(
            description="Notebook",
            options=notebooks_under(home) if notebook is None else [],
            value=None,
        )
        self.notebook = notebook or ""
        self.choose.observe(
            lambda change: setattr(self, "notebook", str(home / change["new"]) if change["new"]
                                   else ""),
            names="value",
        )
        self.last: dict[str, Any] | None = None
        self.title = widgets.Text(description="Title", placeholder="Wave explorer")
        self.description = widgets.Textarea(description="Description")
        self.slug = widgets.Text(description="URL name", placeholder="(from the title)")
        self.audience = widgets.Dropdown(options=AUDIENCES, value="private",
                                         description="Who sees it")
        self.names = widgets.Text(description="Names",
                                  placeholder="users or groups, comma-separated")
        #: Where the app's jobs run: one of the owner's partitions (the hub's answer), the
        #: site default preselected; without a hub to ask, only "(site default)".
        self.partition = widgets.Dropdown(description="Partition",
                                          options=[("(site default)", "")], value="")
        self.partition.add_class("sf-publish-partition")
        self.cpus = widgets.BoundedIntText(value=1, min=1, max=256, description="CPUs")
        #: The account the app's jobs charge: exactly the owner's; hidden when there is none.
        self.account = widgets.Dropdown(description="Account", options=[],
                                        layout=widgets.Layout(display="none"))
        self.account.add_class("sf-publish-account")
        #: The QoS of the chosen partition and account; hidden when the hub offers none.
        self.qos = QosDropdown(self.partition, self.account)
        self.qos.add_class("sf-publish-qos")
        self.files = widgets.Textarea(description="Files",
                                      placeholder="files next to the notebook, one per line")
        self.note = widgets.Text(description="What changed",
                                 placeholder="one line for the version list, e.g. Faster plot")
        self.note.add_class("sf-publish-note")
        #: The app's versions with their notes (after a publish or rollback from here).
        self.versions = widgets.HTML()
        self.versions.add_class("sf-app-versions")
        self.publish_button = widgets.Button(description="Publish", button_style="primary")
        self.rollback_button = widgets.Button(description="Roll back")
        self.unpublish_button = widgets.Button(description="Unpublish", button_style="danger")
        self.status = widgets.HTML()
        self.publish_button.on_click(lambda _: self.publish())
        self.rollback_button.on_click(lambda _: self.rollback())
        self.unpublish_button.on_click(lambda _: self.unpublish())
        self._load_accounts()
        if notebook is None:
            heading = "<b>Publish a notebook as an app</b>"
            if not self.choose.options:
                self._show(f"There is no notebook under {home} to publish yet.", "error")
        else:
            heading = f"<b>Publish {html.escape(notebook)} as an app</b>"
        self.children = [
            widgets.HTML(heading), *([self.choose] if notebook is None else []),
            self.title, self.description, self.slug, self.audience, self.names,
            self.partition, self.cpus, self.account, self.qos, self.files, self.note,
            widgets.HBox([self.publish_button, self.rollback_button, self.unpublish_button]),
            self.status, self.versions,
        ]

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = AppsClient.from_env()
        return self._client

    def _load_accounts(self) -> None:
        """Offer the partitions, accounts and QoS the hub lists for this user, the defaults
        preselected."""
        hub = self._hub
        if hub is None:
            from shopfloor.session.hubapi import Hub

            try:
                hub = self._hub = Hub()
            except HubError:
                return  # not in a session: no hub to ask; the service uses the default
        try:
            answer = hub.partitions()
        except HubError as exc:
            self._show(f"Your partitions and accounts could not be listed "
                       f"({plain_message(exc)}); the app will use the site's default "
                       "partition and charge your default account.", "error")
            return
        partitions = [str(p["name"]) for p in answer.get("partitions") or []]
        if partitions:
            self.partition.options = partitions
            default_partition = answer.get("default_partition")
            self.partition.value = (default_partition if default_partition in partitions
                                    else partitions[0])
        accounts = [str(a) for a in answer.get("accounts") or []]
        default = answer.get("default_account")
        self.account.options = [(f"{a} (default)" if a == default else a, a) for a in accounts]
        if accounts:
            self.account.value = default if default in accounts else accounts[0]
        self.account.layout.display = "" if accounts else "none"
        self.qos.set_table(qos_table(answer))

    def request(self) -> dict[str, Any]:
        """What the form says, as :meth:`AppsClient.publish` arguments."""
        compute: dict[str, Any] = {"cpus": self.cpus.value}
        if self.partition.value:
            compute["partition"] = self.partition.value
        if self.account.value:
            compute["account"] = self.account.value
        if self.qos.value:
            compute["qos"] = self.qos.value
        return {
            "title": self.title.value, "description": self.description.value,
            "slug": self.slug.value.strip() or None, "audience": self.audience.value,
            "names": _split(self.names.value), "compute": compute,
            "files": _split(self.files.value), "note": self.note.value,
        }

    def _show(self, text: str, kind: str = "info") -> None:
        self.status.value = status_html(text, kind)

    def _fail(self, exc: AppsError) -> None:
        self._show(plain_message(exc), "error")

    def publish(self) -> dict[str, Any] | None:
        if not self.notebook:
            self._show("Choose the notebook to publish.", "error")
            return None
        try:
            self.last = self.client.publish(self.notebook, **self.request())
        except AppsError as exc:
            self._fail(exc)
            return None
        app = self.last
        self._show(f"Published v{app['version']} at {app['url']} ({app['audience_text']}).", "ok")
        self.note.value = ""  # the next version says what changed since this one
        self._show_versions()
        return app

    def _show_versions(self) -> None:
        history = (self.last or {}).get("history") or []
        if not history:
            self.versions.value = ""
            return
        current = self.last["version"] if self.last else None
        rows = []
        for item in sorted(history, key=lambda v: -v["version"]):
            serving = item["version"] == current
            note = html.escape(item.get("note") or "(no note)")
            rows.append(f'<li class="{"sf-current" if serving else ""}"><b>v{item["version"]}'
                        f'</b>{" (serving)" if serving else ""}: {note}</li>')
        self.versions.value = '<b>Versions</b><ul>' + ''.join(rows) + '</ul>'

    def rollback(self) -> None:
        if not self.last:
            self._show("Publish first (or use `shopfloor apps rollback OWNER/APP`).", "error")
            return
        try:
            self.last = {**self.last, **self.client.rollback(self.last["owner"],
                                                            self.last["slug"])}
        except AppsError as exc:
            self._fail(exc)
            return
        note = self.last.get("note")
        self._show(f"Now serving v{self.last['version']}" + (f": {note}" if note else "") + ".",
                   "ok")
        self._show_versions()

    def unpublish(self) -> None:
        if not self.last:
            self._show("Nothing published from this panel yet.", "error")
            return
        try:
            self.client.unpublish(self.last["owner"], self.last["slug"])
        except AppsError as exc:
            self._fail(exc)
            return
        self._show(f"Unpublished {self.last['owner']}/{self.last['slug']}.", "ok")
        self.last = None
        self._show_versions()
