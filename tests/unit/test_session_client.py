"""The one client of session code: the hub and its services (apps, workshop), no browser.

Runs against :class:`fakes.FakeHub` over real HTTP; the real hub's service list and scopes are
checked in ``tests/integration/test_session_client.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fakes import TOKEN, FakeHub

from shopfloor.apps.client import AppsClient, AppsError
from shopfloor.errors import ShopfloorError
from shopfloor.session.hubapi import RETRIES, Hub, HubError
from shopfloor.session.services import ServiceClient, ServiceError
from shopfloor.workshops.client import WorkshopClient, WorkshopError


@pytest.fixture
def fake() -> Iterator[FakeHub]:
    hub = FakeHub()
    yield hub
    hub.close()


@pytest.fixture
def elsewhere() -> Iterator[FakeHub]:
    """A second server: a service on a port that has nothing to do with the hub's."""
    other = FakeHub()
    yield other
    other.close()


@pytest.fixture
def hub(fake: FakeHub) -> Hub:
    return Hub(fake.url, TOKEN)


#: The default policy, backing off faster so that the tests stay quick.
QUICK = RETRIES.new(backoff_factor=0.1)


def calls(fake: FakeHub, path: str) -> int:
    return sum(1 for _, p, _ in fake.requests if p == path)


# -- the hub's service list ----------------------------------------------------------------


def test_service_urls_come_from_the_hubs_service_list(
        fake: FakeHub, elsewhere: FakeHub, hub: Hub) -> None:
    url = fake.add_service("apps", at=elsewhere)
    assert hub.service_url("apps") == url == f"{elsewhere.base}/services/apps"
    assert hub.service_url("apps") == url
    assert calls(fake, "/services") == 1  # asked once per client
    elsewhere.answers[("GET", "/services/apps/api/apps?filter=all&q=")] = (200, {"apps": []})
    assert AppsClient(hub=hub).list() == []
    assert elsewhere.auth[-1] == f"token {TOKEN}"  # the user's token, in the header
    assert not [p for _, p, _ in fake.requests if p.startswith("/services/")]


def test_a_missing_or_unreadable_service_is_said_in_words(fake: FakeHub, hub: Hub) -> None:
    with pytest.raises(HubError, match="no 'workshop' service"):
        hub.service_url("workshop")
    fake.services["apps"] = {"kind": "service", "name": "apps", "admin": False}
    with pytest.raises(HubError, match="read:services"):
        Hub(fake.url, TOKEN).service_url("apps")
    fake.fail["/services"] = (403, "Action is not authorized with current scopes")
    with pytest.raises(HubError, match="service list") as refused:
        Hub(fake.url, TOKEN).service_url("apps")
    assert refused.value.status == 403 and isinstance(refused.value, ShopfloorError)


def test_finding_a_service_fails_as_the_services_own_error(fake: FakeHub, hub: Hub) -> None:
    """Panels catch AppsError/WorkshopError: a hub that lists no service raises those."""
    with pytest.raises(AppsError, match="Cannot find the apps service"):
        AppsClient(hub=hub).list()
    with pytest.raises(WorkshopError, match="Cannot find the workshop service"):
        WorkshopClient(hub=hub).list()


def test_from_env_asks_the_sessions_hub(
        monkeypatch: pytest.MonkeyPatch, fake: FakeHub, elsewhere: FakeHub) -> None:
    url = fake.add_service("apps", at=elsewhere)
    env = {"JUPYTERHUB_API_URL": fake.url, "JUPYTERHUB_API_TOKEN": TOKEN}
    assert AppsClient.from_env(env).url == url
    assert AppsClient.from_env({**env, "SHOPFLOOR_APPS_URL": "http://x:1/s/apps/"}).url == \
        "http://x:1/s/apps"
    with pytest.raises(AppsError, match="JUPYTERHUB_API_URL"):
        AppsClient.from_env({"JUPYTERHUB_API_TOKEN": TOKEN})
    monkeypatch.delenv("SHOPFLOOR_WORKSHOP_URL", raising=False)
    monkeypatch.setenv("JUPYTERHUB_API_URL", fake.url)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", TOKEN)
    workshop = fake.add_service("workshop", at=elsewhere)
    assert WorkshopClient().url == workshop


# -- calls, errors, tokens -------------------------------------------------------------------


def test_refusals_carry_the_services_message_problems_and_status(
        fake: FakeHub, hub: Hub) -> None:
    fake.add_service("apps")
    fake.answers[("POST", "/services/apps/api/apps")] = (
        400, {"status": 400, "message": "title: may use letters", "problems": {
            "title": "may use letters"}})
    with pytest.raises(AppsError) as refused:
        AppsClient(hub=hub).publish("x.ipynb", title="!")
    error = refused.value
    assert (error.status, error.problems) == (400, {"title": "may use letters"})
    assert isinstance(error, ServiceError) and isinstance(error, ShopfloorError)
    assert error.user_message == "Please change: title: may use letters"
    fake.answers[("DELETE", "/services/apps/api/apps/alice/wave")] = (204, None)
    assert AppsClient(hub=hub).unpublish("alice", "wave") is None


def test_joining_sends_no_token_and_a_tokenless_client_asks_for_one(
        monkeypatch: pytest.MonkeyPatch, fake: FakeHub) -> None:
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", TOKEN)
    url = fake.add_service("workshop")
    fake.answers[("POST", "/services/workshop/api/join")] = (200, {"username": "ws-a-1"})
    assert WorkshopClient(url).join("CODE", "Ann")["username"] == "ws-a-1"
    assert fake.auth[-1] is None  # the session's own token stays home
    seen = len(fake.requests)
    with pytest.raises(WorkshopError, match="no API token"):
        WorkshopClient(url, "").checkpoint("step-1")
    assert len(fake.requests) == seen  # refused before any call
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN")
    with pytest.raises(WorkshopError, match="no API token"):
        WorkshopClient(timeout=1).checkpoint("step-1")  # outside a session: no hub asked


def test_exports_come_back_as_bytes(fake: FakeHub, hub: Hub) -> None:
    fake.add_service("workshop")
    fake.answers[("GET", "/services/workshop/api/workshops/w/exports/progress.csv")] = (
        200, "a,b")
    assert WorkshopClient(hub=hub).export("w", "progress.csv") == b'"a,b"'
    with pytest.raises(WorkshopError, match="Not Found") as missing:
        WorkshopClient(hub=hub).export("w", "nope.csv")
    assert missing.value.status == 404


def test_tokens_never_show(fake: FakeHub, hub: Hub) -> None:
    url = fake.add_service("apps")
    for client in (AppsClient(url, TOKEN), WorkshopClient(url, TOKEN), AppsClient(hub=hub),
                   ServiceClient("apps", url=url, token=TOKEN)):
        assert TOKEN not in repr(client)


# -- the HTTP library's retries and timeouts -------------------------------------------------


def test_idempotent_calls_are_retried_by_the_http_library(fake: FakeHub) -> None:
    hub = Hub(fake.url, TOKEN, retries=QUICK)
    fake.flaky["/shopfloor/partitions"] = 2
    assert hub.partitions()["default_partition"] == "cpu"
    assert calls(fake, "/shopfloor/partitions") == 3
    fake.flaky["/shopfloor/partitions"] = 10
    with pytest.raises(HubError, match="Try again"):
        hub.partitions()
    assert calls(fake, "/shopfloor/partitions") == 3 + 4  # one try and three retries


def test_a_post_the_server_may_have_acted_on_is_not_sent_again(fake: FakeHub) -> None:
    url = fake.add_service("apps")
    fake.flaky["/services/apps/api/apps"] = 1
    with pytest.raises(AppsError) as refused:
        AppsClient(url, TOKEN).publish("x.ipynb", title="Wave")
    assert refused.value.status == 503 and calls(fake, "/services/apps/api/apps") == 1


def test_connections_that_fail_are_retried_then_said_in_words(fake: FakeHub) -> None:
    started = time.monotonic()
    with pytest.raises(AppsError, match="apps service: Cannot reach the hub"):
        AppsClient(hub=Hub("http://127.0.0.1:9/hub/api", TOKEN, retries=QUICK)).list()
    with pytest.raises(WorkshopError, match="Cannot reach the workshop service"):
        ServiceClient("workshop", url="http://127.0.0.1:9/services/workshop", token=TOKEN,
                      error=WorkshopError, retries=QUICK).call("GET", "/workshops")
    assert time.monotonic() - started > 2 * 0.6  # urllib3 backed off 0, 0.2, 0.4 s each time


def test_a_slow_answer_is_waited_for_once(fake: FakeHub, hub: Hub) -> None:
    url = fake.add_service("workshop")
    fake.slow["/services/workshop/api/workshops"] = 1.5
    started = time.monotonic()
    with pytest.raises(WorkshopError, match="did not answer within 0 s"):
        WorkshopClient(url, TOKEN, timeout=0.3).list()
    assert time.monotonic() - started < 1.2
    assert calls(fake, "/services/workshop/api/workshops") == 1


# -- the hub grants what the client needs -----------------------------------------------------


def test_session_tokens_ask_for_the_service_list_of_our_services_only() -> None:
    """The server token asks for what the client needs, for our services only (the real hub
    grants it: tests/integration/test_session_client.py)."""
    from shopfloor.apps.client import SERVICE_NAME as APPS
    from shopfloor.extensions.apps_service import SERVICE_NAME as HUB_APPS
    from shopfloor.extensions.install import SERVER_TOKEN_SCOPES
    from shopfloor.extensions.workshops_hub import SERVICE_NAME as HUB_WORKSHOP
    from shopfloor.workshops.client import SERVICE_NAME as WORKSHOP

    assert (APPS, WORKSHOP) == (HUB_APPS, HUB_WORKSHOP)
    for name in (APPS, WORKSHOP):
        for scope in ("list:services", "read:services"):
            assert f"{scope}!service={name}" in SERVER_TOKEN_SCOPES
    assert not [s for s in SERVER_TOKEN_SCOPES if s.split("!")[0].endswith("services")
                and "!service=" not in s]
