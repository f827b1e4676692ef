"""Apps charge the account their owner chose: panel, library, CLI, and the service's checks.

The panel offers exactly the accounts of the hub's answer (default preselected); the library
and the CLI put the choice into ``compute``; the service validates it with the one resource
model at publish and again at every start of the app's job (an association removed since the
publish fails the start, saying which field, and submits nothing). Real hub and Slurm:
tests/integration/test_accounts_choice.py.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_accounts import ASSOC, DEFAULTS, LIVE, SHARES, SITE
from test_apps import NOTEBOOK, check

from shopfloor.accounts.model import build_snapshot
from shopfloor.apps.cli import _compute, add_apps_parser
from shopfloor.apps.client import AppsClient
from shopfloor.apps.model import AppStore
from shopfloor.extensions.apps_runner import AppRunner, Run, compute_options
from shopfloor.resources import RequestError, RequestPolicy, UserContext
from shopfloor.session.hubapi import HubError
from shopfloor.site import AppsSettings
from shopfloor.slurm.accounting import parse_associations, parse_shares, parse_user_defaults
from shopfloor.widgets import PublishPanel

ANSWER = {"accounts": ["proj-chem", "proj-ml"], "default_account": "proj-ml",
          "partitions": [], "default_partition": "cpu"}


class FakeHub:
    def __init__(self, answer: dict[str, Any] | None = None, error: str = "") -> None:
        self.answer, self.error = answer or ANSWER, error

    def partitions(self) -> dict[str, Any]:
        if self.error:
            raise HubError(self.error, 503)
        return self.answer


class FakeApps:
    def __init__(self) -> None:
        self.sent: dict[str, Any] = {}

    def publish(self, notebook: str, **kw: Any) -> dict[str, Any]:
        self.sent = kw
        return {"owner": "alice", "slug": "wave", "version": 1, "history": [],
                "url": "/services/apps/alice/wave/", "audience_text": "only you"}


def test_panel_offers_exactly_the_owners_accounts_and_sends_the_choice() -> None:
    client = FakeApps()
    panel = PublishPanel("slider_app.ipynb", client=client, hub=FakeHub())
    assert panel.account.options == (("proj-chem", "proj-chem"),
                                     ("proj-ml (default)", "proj-ml"))
    assert panel.account.value == "proj-ml" and panel.account.layout.display == ""
    panel.title.value = "Wave"
    panel.publish()
    assert client.sent["compute"]["account"] == "proj-ml"
    panel.account.value = "proj-chem"
    panel.publish()
    assert client.sent["compute"] == {"cpus": 1, "account": "proj-chem"}
    bob = PublishPanel("x.ipynb", client=client, hub=FakeHub({**ANSWER, "accounts": ["proj-ml"]}))
    assert [value for _, value in bob.account.options] == ["proj-ml"]


def test_panel_without_accounts_hides_the_choice_and_says_when_the_hub_failed() -> None:
    plain = PublishPanel("x.ipynb", client=FakeApps(), hub=FakeHub({"partitions": []}))
    assert plain.account.layout.display == "none" and "account" not in plain.request()["compute"]
    down = PublishPanel("x.ipynb", client=FakeApps(), hub=FakeHub(error="The hub is down"))
    assert down.account.layout.display == "none"
    assert "could not be listed (The hub is down)" in down.status.value
    assert "sf-error" in down.status.value


def test_library_and_cli_put_the_account_into_compute() -> None:
    client = AppsClient("http://apps.invalid/services/apps", token="t")
    calls: list[tuple[str, str, Any]] = []

    def call(method: str, path: str, body: Any = None) -> dict[str, Any]:
        calls.append((method, path, body))
        return {"app": {"slug": "wave"}, "url": "u"}

    client._call = call  # type: ignore[method-assign]
    client.publish(str(NOTEBOOK), title="Wave", compute={"partition": "cpu"},
                   account="proj-chem", qos="cpu")
    assert calls[-1][2]["compute"] == {"partition": "cpu", "account": "proj-chem", "qos": "cpu"}
    client.publish(str(NOTEBOOK), title="Wave")
    assert calls[-1][2]["compute"] == {}  # the service fills in the default account
    parser = argparse.ArgumentParser()
    add_apps_parser(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["apps", "publish", "x.ipynb", "--title", "T", "--account",
                              "proj-chem", "--qos", "cpu", "--partition", "cpu"])
    assert _compute(args) == {"partition": "cpu", "account": "proj-chem", "qos": "cpu"}


def test_publish_checks_the_account_with_the_one_resource_model() -> None:
    policy = RequestPolicy(SITE)
    settings = AppsSettings()
    chosen = policy.validate(compute_options({"account": "proj-chem"}, settings),
                             UserContext("alice"), LIVE)
    assert chosen.account == "proj-chem"
    default = policy.validate(compute_options({}, settings), UserContext("alice"), LIVE)
    assert default.account == "proj-ml"  # stored with the version: the job charges it
    for user, account in (("bob", "proj-chem"), ("alice", "training"), ("alice", "no-such")):
        with pytest.raises(RequestError) as err:
            policy.validate(compute_options({"account": account}, settings),
                            UserContext(user), LIVE)
        assert set(err.value.problems) == {"account"}
        assert f"{account!r} is not an account you may charge" in err.value.problems["account"]


class RecordingSlurm:
    def __init__(self) -> None:
        self.scripts: list[str] = []

    async def sbatch(self, script: str, **_: Any) -> str:
        self.scripts.append(script)
        return "77"


class FixedCluster:
    def __init__(self, live: Any) -> None:
        self.live = live

    async def snapshot(self, **_: Any) -> Any:
        return self.live


@pytest.fixture
def runner() -> Iterator[AppRunner]:
    folder = Path(tempfile.mkdtemp(prefix="shopfloor-apps-acct-", dir="/tmp"))
    folder.chmod(0o711)
    store = AppStore(folder / "apps", AppsSettings(max_file_mb=1))
    runner = AppRunner(SITE, store, "http://127.0.0.1:1/services/apps",
                       slurm=RecordingSlurm())  # type: ignore[arg-type]
    yield runner
    shutil.rmtree(folder)


def _publish(runner: AppRunner, account: str) -> Any:
    spec = check({"notebook": "w/app.ipynb", "title": "Wave"})
    request = {"partition": "cpu", "nodes": 1, "cpus": 1, "memory_gb": 1.0, "gpus": 0,
               "walltime_minutes": 20, "account": account, "qos": None, "reservation": None}
    return runner.store.publish("alice", spec, request,
                                lambda path, limit: NOTEBOOK.read_bytes(), owner_gid=None)


def test_the_app_job_charges_the_chosen_account(runner: AppRunner) -> None:
    # With accounting on, the service's snapshots carry associations: without them the one
    # resource model has nothing to check an account against (bob once published on
    # proj-chem that way).
    assert runner.cluster.accounts is not None
    app = _publish(runner, "proj-chem")
    runner.cluster = FixedCluster(LIVE)  # type: ignore[assignment]
    request = asyncio.run(runner.validated_request(app, UserContext("alice")))
    assert request.account == "proj-chem"
    assert "#SBATCH --account=proj-chem" in runner.job_script(app, request)
    assert app.summary()["account"] == "proj-chem"


def test_a_start_after_the_association_was_removed_fails_naming_the_account(
        runner: AppRunner) -> None:
    app = _publish(runner, "proj-chem")
    without = "".join(line + "\n" for line in ASSOC.splitlines()
                      if line != "proj-chem|alice|||cpu,debug,normal||")
    snapshot = build_snapshot(parse_associations(without), parse_user_defaults(DEFAULTS),
                              parse_shares(SHARES))
    runner.cluster = FixedCluster(replace(LIVE, accounts=snapshot))  # type: ignore[assignment]
    run = Run(key=app.key, version=app.current, secret="s")
    asyncio.run(runner._start(app, UserContext("alice"), run))
    assert run.state == "failed" and runner.slurm.scripts == []  # type: ignore[attr-defined]
    assert "no longer allowed" in run.message
    assert "account: 'proj-chem' is not an account you may charge" in run.message
