"""The fine-tuning catalog rules through the real hub: offered datasets, licences, groups.

A hub of its own ($SHOPFLOOR_TEST_PORT_BASE + 70..72) whose site file adds a dataset only the
group "doctors" may use to the demo catalog (reviews; support-replies, whose licence must be
accepted). alice asks with a token as narrow as a session's, through the session client.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support import PORT_BASE, RunningHub, write_test_site

from shopfloor.demo.hub import Hub as HubProcess
from shopfloor.finetune.access import SiteCatalog, check_access
from shopfloor.session.hubapi import Hub
from shopfloor.site import load_site

pytestmark = [pytest.mark.hub]

PORTS = {"bind_url": PORT_BASE + 70, "hub_bind_url": PORT_BASE + 71,
         "proxy_api_url": PORT_BASE + 72}
SECRET = "/opt/shopfloor/datasets/medical-notes.csv"


@pytest.fixture(scope="module")
def chub(passwords: dict[str, str]) -> Iterator[RunningHub]:
    directory = Path(tempfile.mkdtemp(prefix="shopfloor-catalog-hub-"))
    directory.chmod(0o711)
    site_file = write_test_site(directory)
    data = yaml.safe_load(site_file.read_text())
    for key, port in PORTS.items():
        data["hub"][key] = f"http://127.0.0.1:{port}"
    data["catalog"]["datasets"]["medical-notes"] = {
        "description": "Clinical notes (restricted)", "task": "classification",
        "licence": "Proprietary", "size": "1 MB", "location": SECRET, "groups": ["doctors"]}
    site_file.write_text(yaml.safe_dump(data, sort_keys=False))
    site = load_site(site_file)
    process = HubProcess(site, site_file)
    process.start(detach=True)
    try:
        yield RunningHub(site.hub.bind_url, site, site_file, process, passwords)
    finally:
        process.stop()


def test_alice_gets_the_catalog_rules_from_the_hub(chub: RunningHub) -> None:
    alice = chub.client("alice")
    # As narrow as a session's own token: no scope beyond reporting activity.
    token = alice.token(scopes=["users:activity!user=alice"])
    catalog = SiteCatalog(Hub(f"{chub.url}/hub/api", token, "alice"))
    assert [d.name for d in catalog.datasets()] == ["reviews", "support-replies"]
    assert [d.name for d in catalog.datasets("causal-lm")] == ["support-replies"]
    replies = "/opt/shopfloor/datasets/support-replies.jsonl"
    refused = check_access(catalog, data=replies, model=None)
    assert "support-replies is under the licence CC0-1.0" in refused["licence"]
    assert check_access(catalog, data=replies, model=None,
                        accepted_licences=["support-replies"]) == {}
    assert check_access(catalog, data="/opt/shopfloor/datasets/reviews.csv",
                        model="/opt/shopfloor/models/minilm-l6") == {}
    refused = check_access(catalog, data=SECRET, model=None)
    assert "site dataset your groups may not use" in refused["data"]
    # The hub checks the request itself, naming the field.
    bad = alice.api("POST", "/shopfloor/catalog/check", token=token, json={"paths": ["x"]})
    assert bad.status_code == 400 and "paths.0" in bad.json()["problems"]
    anonymous = alice.api("POST", "/shopfloor/catalog/check", token="not-a-token",
                          json={"paths": [SECRET]})
    assert anonymous.status_code == 403
