"""The tests' OpenID provider: panva's ``oidc-provider`` (OpenID Certified) from npm.

``scripts/bootstrap.sh --test`` installs it into ``tests/oidc/node_modules`` (``npm ci``);
:func:`start_provider` writes its configuration (issuer, one client, the static identities
with passwords generated for this run; mode 0600) and runs ``tests/oidc/provider.mjs`` on a
loopback port until :meth:`OidcProvider.stop`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OIDC_DIR = Path(__file__).resolve().parent / "oidc"
CLIENT_ID = "shopfloor-tests"

#: The domain of the provider's user names (the hub's ``auth.oidc.username_domain``).
DOMAIN = "example.org"

#: The static identities: login at the provider -> the claims it releases. alice and bob map
#: onto their Unix accounts; carol has none here; mallory's provider record claims root;
#: eve's name carries markup (it must reach our refusal page escaped); trudy is "alice" of
#: another domain and oscar a bare "alice" without one (neither may become our alice).
IDENTITIES: dict[str, dict[str, Any]] = {
    "alice": {"preferred_username": f"alice@{DOMAIN}", "name": "Alice Example",
              "projects": ["physics", "proj-shared"]},
    "bob": {"preferred_username": f"bob@{DOMAIN}", "name": "Bob Example",
            "projects": ["proj-shared"]},
    "carol": {"preferred_username": f"carol@{DOMAIN}", "name": "Carol Noaccount",
              "projects": []},
    "mallory": {"preferred_username": f"root@{DOMAIN}", "name": "Mallory",
                "projects": ["physics"]},
    "eve": {"preferred_username": f"eve<img src=x onerror=alert(1)>@{DOMAIN}", "name": "Eve"},
    "trudy": {"preferred_username": "alice@evil.example", "name": "Trudy",
              "projects": ["physics"]},
    "oscar": {"preferred_username": "alice", "name": "Oscar"},
}


@dataclass
class OidcProvider:
    """A running provider: its issuer URL, our client's credentials, the identities' passwords."""

    issuer: str
    client_secret: str
    passwords: dict[str, str]
    directory: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log_file(self) -> Path:
        return self.directory / "provider.log"

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def start_provider(directory: Path, port: int, redirect_uri: str,
                   access_token_ttl: int = 3600, timeout: float = 30,
                   post_logout_redirect_uri: str = "") -> OidcProvider:
    """Start the provider on 127.0.0.1:``port``; returns once its discovery document answers.

    ``post_logout_redirect_uri`` is registered for the client (RP-initiated logout)."""
    if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        raise RuntimeError(f"{OIDC_DIR}/node_modules is missing: run scripts/bootstrap.sh "
                           "--test (npm ci in tests/oidc)")
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is missing: scripts/bootstrap.sh installs nodejs")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    issuer = f"http://127.0.0.1:{port}"
    provider = OidcProvider(issuer, secrets.token_urlsafe(24),
                            {login: secrets.token_urlsafe(12) for login in IDENTITIES},
                            directory)
    config = {
        "issuer": issuer,
        "client": {"id": CLIENT_ID, "secret": provider.client_secret,
                   "redirect_uri": redirect_uri,
                   "post_logout_redirect_uri": post_logout_redirect_uri},
        "access_token_ttl": access_token_ttl,
        "identities": [
            {"login": login, "sub": f"sub-{login}", "password": provider.passwords[login],
             "claims": claims}
            for login, claims in IDENTITIES.items()
        ],
    }
    config_file = directory / "provider.json"
    fd = os.open(config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(config, fh)
    with open(provider.log_file, "ab") as log:
        provider.process = subprocess.Popen(
            [node, str(OIDC_DIR / "provider.mjs"), str(config_file)], cwd=OIDC_DIR,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if provider.process.poll() is not None:
            raise RuntimeError(f"the OpenID provider exited: {provider.log_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{issuer}/.well-known/openid-configuration",
                                        timeout=2) as resp:
                if resp.status == 200:
                    return provider
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    provider.stop()
    raise RuntimeError(f"the OpenID provider did not answer in {timeout:.0f} s: "
                       f"{provider.log_text()[-2000:]}")
