"""The one session client against the real hub: the service list, its scopes, the services.

A session's own token is checked in ``test_compute.py`` (it needs a running session); here a
user's tokens, which hold the same service scopes through the "user" role.
"""

from __future__ import annotations

import pytest
from support import RunningHub

from shopfloor.apps.client import AppsClient
from shopfloor.extensions.install import SERVICE_DISCOVERY_SCOPES
from shopfloor.session.hubapi import Hub, HubError
from shopfloor.workshops.client import WorkshopClient

pytestmark = [pytest.mark.hub]


def api_url(hub: RunningHub) -> str:
    """The hub's internal API, as sessions see it ($JUPYTERHUB_API_URL)."""
    return f"{hub.site.hub.hub_bind_url}/hub/api"


def test_a_users_token_finds_and_reaches_the_services(hub: RunningHub) -> None:
    alice = Hub(api_url(hub), hub.client("alice").token())
    services = alice.services()
    assert set(services) == {"apps", "workshop"}  # ours only: not the viewer's OAuth client
    for name, model in services.items():
        assert alice.service_url(name).endswith(f"/services/{name}")
        assert "environment" not in model  # the list never shows a service's secrets
    assert WorkshopClient(hub=alice).list() == []
    assert isinstance(AppsClient(hub=alice).list("mine"), list)


def test_the_service_scopes_are_the_users_own(hub: RunningHub) -> None:
    """A token may ask for exactly the discovery scopes (the hub grants a token only what its
    owner holds), and a token without them is told what it lacks."""
    client = hub.client("bob")
    narrow = Hub(api_url(hub), client.token(scopes=list(SERVICE_DISCOVERY_SCOPES)))
    assert set(narrow.services()) == {"apps", "workshop"}
    without = Hub(api_url(hub), client.token(scopes=["read:users:name!user"]))
    with pytest.raises(HubError, match="service list") as refused:
        without.services()
    assert refused.value.status == 403
