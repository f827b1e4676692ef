"""An app owner's JavaScript attacks its viewer, in real Chromium: it gets nothing.

alice publishes a notebook whose output is ``display(Javascript(...))``: the script reads
``document.cookie``, looks for the hub's xsrf token and tries to create an API token for the
viewer on the hub (``POST /hub/api/users/bob/tokens``), with the hub's address and with a
relative one. bob, logged in to the hub, opens the app. The app is served from its own origin
(127.0.0.2, not the hub's 127.0.0.1) under a strict Content-Security-Policy, so the script
runs but sees no hub cookie, no xsrf token, and no token is created for bob.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
import requests
from appsupport import apps_hub, origin_of
from support import RunningHub

pytestmark = [pytest.mark.browser, pytest.mark.hub, pytest.mark.cluster, pytest.mark.slow]

#: The owner's attack. It writes what it saw into the page for the test to read.
ATTACK = """
(async () => {
  const seen = {cookie: document.cookie, results: []};
  const hub = %(hub)s;
  const xsrf = (document.cookie.match(/_xsrf=([^;]+)/) || [])[1] || "";
  for (const url of [hub + "/hub/api/users/bob/tokens", "/hub/api/users/bob/tokens"]) {
    try {
      const reply = await fetch(url, {method: "POST", credentials: "include",
        headers: {"X-XSRFToken": xsrf, "Content-Type": "application/json"},
        body: JSON.stringify({note: "stolen by the app"})});
      seen.results.push(url + " " + reply.status + " " + (await reply.text()).slice(0, 200));
    } catch (err) { seen.results.push(url + " failed: " + err); }
  }
  try {
    const home = await fetch(hub + "/hub/home", {credentials: "include"});
    seen.results.push("home " + home.status + " " + (await home.text()).slice(0, 200));
  } catch (err) { seen.results.push("home failed: " + err); }
  const out = document.createElement("pre");
  out.id = "attack-result";
  out.textContent = JSON.stringify(seen);
  document.body.appendChild(out);
})();
"""


#: What JupyterHub calls our OAuth clients in bob's token list.
OUR_CLIENTS = ("JupyterHub service apps", "JupyterHub service apps-viewer")


@pytest.fixture(scope="module")
def ahub(local_cluster: object, passwords: dict[str, str]) -> Iterator[RunningHub]:
    with apps_hub(passwords, idle_stop_minutes=10, partition="cpu",
                  walltime="0:20:00") as hub:
        yield hub


def install_attack(hub_url: str) -> Path:
    """alice's notebook: one cell whose output is the attack script."""
    code = ("from IPython.display import Javascript, display\n"
            f"display(Javascript({ATTACK % {'hub': json.dumps(hub_url)}!r}))\n"
            "print('the app ran')")
    book = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                   "language": "python"}
    path = Path("/home/alice/apps-test/attack.ipynb")
    subprocess.run(["sudo", "-u", "alice", "--", "mkdir", "-p", str(path.parent)], check=True)
    subprocess.run(["sudo", "-u", "alice", "--", "tee", str(path)], input=nbformat.writes(book),
                   text=True, check=True, capture_output=True)
    return path


def test_owner_script_cannot_act_as_its_viewer(  # type: ignore[no-untyped-def]
    ahub: RunningHub, page, artifacts: Path
) -> None:
    notebook = install_attack(ahub.url)
    alice_token = ahub.client("alice").token()
    resp = requests.post(
        f"{ahub.url}/services/apps/api/apps", headers={"Authorization": f"token {alice_token}"},
        json={"notebook": str(notebook), "title": "Harmless", "slug": "harmless",
              "audience": "hub"}, timeout=60)
    assert resp.status_code == 201, resp.text
    admin = ahub.client("admin")
    admin_token = admin.token()

    def bobs_tokens() -> list[str]:
        """bob's API tokens, less those our own OAuth logins issue (gallery, app origin)."""
        listed = admin.api("GET", "/users/bob/tokens", token=admin_token)
        listed.raise_for_status()
        return sorted(t["id"] for t in listed.json()["api_tokens"]
                      if t.get("oauth_client") not in OUR_CLIENTS)

    page.goto(f"{ahub.url}/hub/login")
    page.fill("#username_input", "bob")
    page.fill("#password_input", ahub.passwords["bob"])
    page.click("#login_submit")
    page.wait_for_load_state()
    hub_cookies = {c["name"] for c in page.context.cookies(ahub.url)}
    assert hub_cookies, "bob is not logged in to the hub: the test would prove nothing"
    before = bobs_tokens()

    # From the gallery (on the hub) to the app (on its own origin).
    page.goto(f"{ahub.url}/services/apps/")
    page.locator('a.card[data-app="alice/harmless"]').click()
    result = page.locator("#attack-result")
    result.wait_for(state="attached", timeout=180_000)
    assert page.url.startswith(f"{origin_of(ahub)}/services/apps/alice/harmless/")
    seen = json.loads(result.text_content() or "{}")
    page.screenshot(path=str(artifacts / "apps-origin-attack.png"), full_page=True)

    # The script ran, but saw none of the hub's cookies and got no token.
    assert seen["results"], seen
    for name in hub_cookies:
        assert name not in seen["cookie"], (name, seen)
    assert not any(" 200 " in r or " 201 " in r for r in seen["results"]), seen
    assert bobs_tokens() == before
    # The page carries the policy that confines it.
    reply = page.request.get(page.url)
    policy = reply.headers.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in policy and "connect-src 'self' ws://" in policy
