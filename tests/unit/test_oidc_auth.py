"""OpenID Connect login: the site model's ``auth.oidc``, claim mapping, secrets, wiring.

The login itself runs against a real provider in tests/browser/test_oidc_login.py.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from tornado import web
from traitlets.config import Config

from shopfloor.auth_site import ACCESS_TOKEN_ENV, ID_TOKEN_ENV, TOKEN_ENV
from shopfloor.extensions.auth import (
    LoginRefused,
    ShopfloorOIDCAuthenticator,
    account_name,
    client_secret,
    crypt_key,
    discover,
    groups_from_claims,
    install_auth,
    post_logout_url,
    read_private_file,
    unix_user_for,
)
from shopfloor.extensions.compat import sync_owned_groups
from shopfloor.site import SiteConfig, SiteConfigError, parse_site

REPO = Path(__file__).resolve().parents[2]
GOOD_OIDC = {"issuer": "https://login.example.org/realms/hpc", "client_id": "shopfloor",
             "client_secret_env": "SHOPFLOOR_TEST_OIDC_SECRET"}


def site_with(auth: dict[str, Any], state_dir: Path | None = None) -> SiteConfig:
    data = yaml.safe_load((REPO / "hub_config" / "demo_site.yaml").read_text())
    data["auth"].update(auth)
    if state_dir is not None:
        data["hub"]["state_dir"] = str(state_dir)
    return parse_site(data)


def site_error(auth: dict[str, Any]) -> str:
    with pytest.raises(SiteConfigError) as err:
        site_with(auth)
    return str(err.value)


# -- the site model ------------------------------------------------------------------------


def test_the_demo_logs_in_with_pam() -> None:
    site = site_with({})
    assert site.auth.method == "pam"
    c = Config()
    install_auth(c, site)
    assert c.JupyterHub.authenticator_class == "pam"
    assert c.Authenticator.allowed_users == set(site.auth.allowed_users) > {"alice", "bob"}
    assert c.PAMAuthenticator.open_sessions is False


def test_oidc_needs_issuer_client_and_exactly_one_secret_source() -> None:
    message = site_error({"method": "oidc"})
    assert "auth.oidc.issuer is required" in message
    assert "auth.oidc.client_id is required" in message
    assert "auth.oidc.client_secret_file: set exactly one" in message
    both = {**GOOD_OIDC, "client_secret_file": "/etc/secret"}
    assert "exactly one of client_secret_file and client_secret_env" in site_error(
        {"method": "oidc", "oidc": both})
    partial = {**GOOD_OIDC, "token_url": "https://login.example.org/token"}
    assert "authorize_url, token_url, userinfo_url: set all three" in site_error(
        {"method": "oidc", "oidc": partial})
    assert site_with({"method": "oidc", "oidc": GOOD_OIDC}).auth.oidc.client_id == "shopfloor"


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("issuer", "http://login.example.org", "auth.oidc.issuer: Value error, must use https"),
    ("issuer", "login.example.org", "auth.oidc.issuer: Value error, must be a URL"),
    ("issuer", "https://user:pw@login.example.org", "without user, password"),
    ("token_url", "ftp://login.example.org/token", "auth.oidc.token_url"),
    ("scopes", ["profile", "email"], "auth.oidc.scopes: Value error, must include 'openid'"),
    ("scopes", ["openid", "bad scope"], "auth.oidc.scopes: Value error, not valid scope"),
    ("username_claim", "a.b", "auth.oidc.username_claim: String should match pattern"),
    ("groups_claim", "groups; rm", "auth.oidc.groups_claim"),
    ("client_secret_env", "secret value", "auth.oidc.client_secret_env: Value error"),
    ("client_secret", "s3cr3t", "auth.oidc.client_secret: is not a known setting"),
    ("min_uid", 0, "auth.oidc.min_uid"),
    ("pass_tokens", "refresh", "auth.oidc.pass_tokens: Input should be 'none', 'access'"),
    ("pass_tokens", "access", "auth.oidc.pass_tokens: access needs keep_tokens: true"),
    ("token_min_seconds", -1, "auth.oidc.token_min_seconds"),
    ("username_domain", "example", "auth.oidc.username_domain: Value error, must be a domain"),
    ("username_domain", "exa mple.org", "auth.oidc.username_domain: Value error"),
    ("username_domain", "*.example.org", "auth.oidc.username_domain: Value error"),
    ("end_session_url", "http://login.example.org/logout", "auth.oidc.end_session_url: Value "
     "error, must use https"),
])
def test_bad_oidc_fields_are_named(field: str, value: Any, expected: str) -> None:
    assert expected in site_error({"method": "oidc", "oidc": {**GOOD_OIDC, field: value}})


def test_plain_http_is_accepted_on_loopback_only() -> None:
    for issuer in ("http://127.0.0.1:8603", "http://localhost:9000/realms/x", "http://[::1]:1"):
        site = site_with({"method": "oidc", "oidc": {**GOOD_OIDC, "issuer": issuer}})
        assert site.auth.oidc.issuer == issuer  # kept as written: discovery must match it
    assert "must use https" in site_error(
        {"method": "oidc", "oidc": {**GOOD_OIDC, "issuer": "http://10.0.0.5"}})


# -- mapping claims ----------------------------------------------------------------------


def test_claims_map_to_existing_unix_accounts_only() -> None:
    account = unix_user_for("alice", "preferred_username", 1000)
    assert account.pw_name == "alice" and account.pw_uid >= 1000
    with pytest.raises(LoginRefused, match="no account with this name"):
        unix_user_for("carol", "preferred_username", 1000)
    with pytest.raises(LoginRefused, match="cannot log in through the identity provider"):
        unix_user_for("root", "preferred_username", 1000)
    for bad in ("Alice", "alice/../root", "-alice", "a" * 33, "eve<img>"):
        with pytest.raises(LoginRefused, match="not a valid account name"):
            unix_user_for(bad, "preferred_username", 1000)
    with pytest.raises(LoginRefused, match="did not send the 'uid' claim") as err:
        unix_user_for(None, "uid", 1000)
    assert err.value.identity == "(unknown)"
    with pytest.raises(LoginRefused):
        unix_user_for(["alice"], "preferred_username", 1000)


def test_authenticator_maps_the_configured_claim() -> None:
    auth = ShopfloorOIDCAuthenticator(username_claim="uid", min_uid=1000)
    assert auth.user_info_to_username({"uid": "bob", "preferred_username": "alice"}) == "bob"
    with pytest.raises(LoginRefused):
        auth.user_info_to_username({"preferred_username": "alice"})


def test_username_domain_is_normalised() -> None:
    oidc = site_with({"method": "oidc", "oidc": {**GOOD_OIDC,
                                                 "username_domain": "@Example.ORG"}}).auth.oidc
    assert oidc.username_domain == "example.org"


@pytest.mark.parametrize(("claim", "expected"), [
    ("alice@example.org", "alice"),
    ("alice@EXAMPLE.org", "alice"),  # domains are case-insensitive
    ("a@b@example.org", "a@b"),  # the last @ splits; unix_user_for then refuses "a@b"
])
def test_claims_with_the_site_domain_name_the_account(claim: str, expected: str) -> None:
    assert account_name(claim, "example.org") == expected


@pytest.mark.parametrize(("claim", "reason"), [
    ("alice@evil.example", "admits example.org identities only"),
    ("alice@example.org.evil.example", "admits example.org identities only"),
    ("alice@sub.example.org", "admits example.org identities only"),
    ("alice", "expected name@example.org"),  # a bare name: not vouched for by the domain
    ("@example.org", "expected name@example.org"),
])
def test_other_domains_are_refused(claim: str, reason: str) -> None:
    with pytest.raises(LoginRefused, match=reason) as err:
        account_name(claim, "example.org")
    assert err.value.identity == claim


def test_without_a_domain_the_claim_is_the_account_name() -> None:
    assert account_name("alice@example.org", "") == "alice@example.org"
    auth = ShopfloorOIDCAuthenticator(username_claim="preferred_username", min_uid=1000)
    with pytest.raises(LoginRefused, match="not a valid account name"):
        auth.user_info_to_username({"preferred_username": "alice@example.org"})


def test_authenticator_maps_domain_claims_and_names_the_identity_when_refusing() -> None:
    auth = ShopfloorOIDCAuthenticator(username_claim="email", min_uid=1000,
                                      username_domain="example.org")
    assert auth.user_info_to_username({"email": "bob@example.org"}) == "bob"
    with pytest.raises(LoginRefused, match=r"admits example\.org") as err:
        auth.user_info_to_username({"email": "bob@evil.example", "preferred_username": "bob"})
    assert err.value.identity == "bob@evil.example"
    # Refusals of the account part name the identity as the provider sent it.
    with pytest.raises(LoginRefused, match="no account with this name") as err:
        auth.user_info_to_username({"email": "carol@example.org"})
    assert err.value.identity == "carol@example.org"
    with pytest.raises(LoginRefused, match="cannot log in through the identity provider"):
        auth.user_info_to_username({"email": "root@example.org"})
    with pytest.raises(LoginRefused, match="did not send the 'email' claim"):
        auth.user_info_to_username({})


@pytest.mark.parametrize(("claim", "valid", "dropped"), [
    (["physics", "proj-shared", "physics"], ["physics", "proj-shared"], []),
    ("physics proj-shared,chem", ["chem", "physics", "proj-shared"], []),
    (["ok", "no spaces", "../up", 7, ""], ["ok"], ["'no spaces'", "'../up'", "7"]),
    ({"physics": True}, [], ["{'physics': True}"]),
    (None, [], []),
])
def test_groups_from_the_claim(claim: Any, valid: list[str], dropped: list[str]) -> None:
    user_info = {"projects": claim} if claim is not None else {}
    assert groups_from_claims(user_info, "projects") == (valid, dropped)


def test_provider_groups_never_take_over_the_hubs_own_groups() -> None:
    from jupyterhub import orm

    db = orm.new_session_factory("sqlite://")()
    alice = orm.User(name="alice")
    workshop = orm.Group(name="workshop")  # made by the workshop service, not the provider
    alice.groups.append(workshop)
    db.add_all([alice, workshop, orm.User(name="bob"), orm.Group(name="support")])
    db.commit()
    added, removed, skipped = sync_owned_groups(db, "alice", ["physics", "support"], "oidc")
    assert (added, removed, skipped) == (["physics"], [], ["support"])
    assert sorted(g.name for g in alice.groups) == ["physics", "workshop"]
    assert orm.Group.find(db, "physics").properties == {"shopfloor_owner": "oidc"}
    # The claim no longer lists physics: alice leaves it, and keeps her workshop group.
    assert sync_owned_groups(db, "alice", ["workshop"], "oidc") == ([], ["physics"],
                                                                   ["workshop"])
    assert [g.name for g in alice.groups] == ["workshop"]
    with pytest.raises(KeyError):
        sync_owned_groups(db, "nobody", [], "oidc")


# -- secrets ---------------------------------------------------------------------------


def test_secret_files_must_be_private(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t\nignored\n")
    secret.chmod(0o644)
    with pytest.raises(SiteConfigError, match=r"auth.oidc.client_secret_file: .* readable by "
                       r"other users \(mode 0644\); make it private: chmod 600"):
        read_private_file(str(secret), "auth.oidc.client_secret_file")
    secret.chmod(0o600)
    assert read_private_file(str(secret), "auth.oidc.client_secret_file") == "s3cr3t"
    with pytest.raises(SiteConfigError, match=r"auth\.oidc\.crypt_key_file: cannot read"):
        read_private_file(str(tmp_path / "missing"), "auth.oidc.crypt_key_file")
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "empty").chmod(0o600)
    with pytest.raises(SiteConfigError, match="is empty"):
        read_private_file(str(tmp_path / "empty"), "x")


def test_client_secret_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    oidc = site_with({"method": "oidc", "oidc": GOOD_OIDC}).auth.oidc
    monkeypatch.delenv("SHOPFLOOR_TEST_OIDC_SECRET", raising=False)
    with pytest.raises(SiteConfigError, match=r"auth.oidc.client_secret_env: "
                       r"\$SHOPFLOOR_TEST_OIDC_SECRET is not set"):
        client_secret(oidc)
    monkeypatch.setenv("SHOPFLOOR_TEST_OIDC_SECRET", "from-env")
    assert client_secret(oidc) == "from-env"


def test_crypt_key_generated_once_and_private(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JUPYTERHUB_CRYPT_KEY", raising=False)
    oidc = site_with({"method": "oidc", "oidc": GOOD_OIDC}).auth.oidc
    key = crypt_key(oidc, tmp_path)
    assert key is not None and len(key) == 32
    assert (tmp_path / "jupyterhub_crypt_key").stat().st_mode & 0o777 == 0o600
    assert crypt_key(oidc, tmp_path) == key  # kept: auth_state stays readable after restarts
    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", "ab" * 32)
    assert crypt_key(oidc, tmp_path) is None  # JupyterHub reads its own variable
    bad = tmp_path / "bad-key"
    bad.write_text("not-hex\n")
    bad.chmod(0o600)
    with_file = site_with({"method": "oidc", "oidc": {**GOOD_OIDC, "crypt_key_file": str(bad)}})
    with pytest.raises(SiteConfigError,
                       match=r"auth\.oidc\.crypt_key_file: the key must be 64 hex"):
        crypt_key(with_file.auth.oidc, tmp_path)


# -- discovery and wiring ------------------------------------------------------------------


@pytest.fixture
def discovery() -> Iterator[tuple[str, dict[str, Any]]]:
    """A loopback server whose discovery document the test fills in."""
    document: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == "/realm/.well-known/openid-configuration"
            body = json.dumps(document).encode()
            self.send_response(200 if ok else 404)
            self.end_headers()
            self.wfile.write(body if ok else b"")

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    issuer = f"http://127.0.0.1:{server.server_address[1]}/realm"
    try:
        yield issuer, document
    finally:
        server.shutdown()
        server.server_close()


def test_discovery_reads_endpoints_of_the_named_issuer_only(
        discovery: tuple[str, dict[str, Any]]) -> None:
    issuer, document = discovery
    document.update(issuer=issuer, authorization_endpoint=f"{issuer}/auth",
                    token_endpoint=f"{issuer}/token", userinfo_endpoint=f"{issuer}/me",
                    end_session_endpoint=f"{issuer}/logout")
    endpoints = discover(issuer)
    assert (endpoints.authorize_url, endpoints.token_url, endpoints.userinfo_url) == (
        f"{issuer}/auth", f"{issuer}/token", f"{issuer}/me")
    # A document that names another issuer (a mix-up) is not trusted.
    document["issuer"] = "https://other.example.org"
    with pytest.raises(SiteConfigError, match=r"auth\.oidc\.issuer: .* names the issuer "
                       r"'https://other\.example\.org'"):
        discover(issuer)
    document["issuer"] = issuer
    document["token_endpoint"] = "http://login.example.org/token"  # no TLS off this machine
    with pytest.raises(SiteConfigError, match="token_endpoint must use https"):
        discover(issuer)
    with pytest.raises(SiteConfigError, match=r"auth\.oidc\.issuer: cannot read the provider's "
                       r"discovery document"):
        discover(issuer + "/nothing-here", timeout=2)


def test_install_wires_the_authenticator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         discovery: tuple[str, dict[str, Any]]) -> None:
    issuer, document = discovery
    document.update(issuer=issuer, authorization_endpoint=f"{issuer}/auth",
                    token_endpoint=f"{issuer}/token", userinfo_endpoint=f"{issuer}/me")
    monkeypatch.setenv("SHOPFLOOR_TEST_OIDC_SECRET", "from-env")
    monkeypatch.delenv("JUPYTERHUB_CRYPT_KEY", raising=False)
    site = site_with({"method": "oidc", "allowed_users": [], "oidc": {
        **GOOD_OIDC, "issuer": issuer, "groups_claim": "projects", "keep_tokens": True,
        "scopes": ["openid", "profile", "projects", "offline_access"]}}, tmp_path)
    c = Config()
    install_auth(c, site)
    settings = c.ShopfloorOIDCAuthenticator
    assert c.JupyterHub.authenticator_class is ShopfloorOIDCAuthenticator
    assert settings.token_url == f"{issuer}/token" and settings.client_secret == "from-env"
    assert settings.oauth_callback_url == "http://127.0.0.1:8000/hub/oauth_callback"
    assert settings.enable_pkce and settings.enable_auth_state
    # No allowed lists: the Unix account is the gate, every identity with one may log in.
    assert settings.allow_all and settings.groups_claim == "projects"
    assert "manage_groups" not in settings  # the provider never owns the hub's other groups
    assert c.CryptKeeper["keys"] == [bytes.fromhex(
        (tmp_path / "jupyterhub_crypt_key").read_text().strip())]
    # Our templates as installed (the package's own folder, editable or not).
    import shopfloor.extensions

    templates = Path(shopfloor.extensions.__file__).resolve().parent / "templates"
    assert str(templates) in c.JupyterHub.template_paths
    # The authenticator takes the settings as configured.
    auth = ShopfloorOIDCAuthenticator(config=c)
    assert auth.client_id == "shopfloor" and auth.scope[-1] == "offline_access"
    # Explicit endpoints: no discovery (the server is not asked).
    document.clear()
    explicit = site_with({"method": "oidc", "oidc": {
        **GOOD_OIDC, "authorize_url": "https://login.example.org/a",
        "token_url": "https://login.example.org/t", "userinfo_url": "https://login.example.org/u",
        "callback_url": "https://hub.example.org/hub/oauth_callback"}}, tmp_path)
    c = Config()
    install_auth(c, explicit)
    assert c.ShopfloorOIDCAuthenticator.userdata_url == "https://login.example.org/u"
    assert not c.ShopfloorOIDCAuthenticator.allow_all  # allowed_users of the demo narrow it
    assert c.ShopfloorOIDCAuthenticator.oauth_callback_url == (
        "https://hub.example.org/hub/oauth_callback")
    assert os.environ["SHOPFLOOR_TEST_OIDC_SECRET"] not in json.dumps(
        explicit.model_dump())  # the secret is never part of the site


def test_logout_at_the_provider_follows_discovery_and_the_site(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        discovery: tuple[str, dict[str, Any]]) -> None:
    issuer, document = discovery
    document.update(issuer=issuer, authorization_endpoint=f"{issuer}/auth",
                    token_endpoint=f"{issuer}/token", userinfo_endpoint=f"{issuer}/me",
                    end_session_endpoint=f"{issuer}/session/end")
    monkeypatch.setenv("SHOPFLOOR_TEST_OIDC_SECRET", "from-env")

    def settings(**oidc: Any) -> Any:
        c = Config()
        install_auth(c, site_with({"method": "oidc", "oidc": {
            **GOOD_OIDC, "issuer": issuer, **oidc}}, tmp_path))
        return c.ShopfloorOIDCAuthenticator

    # Advertised: on by default, back to the hub's login page.
    advertised = settings()
    assert advertised.end_session_url == f"{issuer}/session/end"
    assert advertised.post_logout_redirect_url == "http://127.0.0.1:8000/hub/login"
    assert "end_session_url" not in settings(logout_at_provider=False)
    behind_proxy = settings(callback_url="https://hub.example.org/jh/hub/oauth_callback")
    assert behind_proxy.post_logout_redirect_url == "https://hub.example.org/jh/hub/login"
    # Not advertised: off by default; asked for: the site must say where.
    del document["end_session_endpoint"]
    assert "end_session_url" not in settings()
    with pytest.raises(SiteConfigError, match=r"auth\.oidc\.logout_at_provider: the provider "
                       "advertises no end_session_endpoint"):
        settings(logout_at_provider=True)
    assert settings(logout_at_provider=True, end_session_url="https://login.example.org/bye"
                    ).end_session_url == "https://login.example.org/bye"
    # An advertised endpoint off this machine without TLS is not trusted.
    document["end_session_endpoint"] = "http://login.example.org/logout"
    with pytest.raises(SiteConfigError, match="end_session_endpoint must use https"):
        settings()
    # The other new settings reach the authenticator.
    document["end_session_endpoint"] = f"{issuer}/session/end"
    wired = settings(keep_tokens=True, pass_tokens="access_and_id", token_min_seconds=30,
                     username_domain="example.org")
    assert (wired.pass_tokens, wired.token_min_seconds, wired.username_domain) == (
        "access_and_id", 30, "example.org")
    assert post_logout_url("https://h.example.org/hub/oauth_callback") == (
        "https://h.example.org/hub/login")


# -- tokens passed into sessions -----------------------------------------------------------


class FakeUser:
    """The two auth_state calls of a JupyterHub ``User`` the authenticator makes."""

    name = "alice"

    def __init__(self, state: dict[str, Any] | None) -> None:
        self.state = state
        self.saved: list[dict[str, Any]] = []

    async def get_auth_state(self) -> dict[str, Any] | None:
        return self.state

    async def save_auth_state(self, state: dict[str, Any]) -> None:
        self.state = state
        self.saved.append(state)


class FakeSpawner:
    def __init__(self, environment: dict[str, str]) -> None:
        self.environment = environment


@pytest.fixture
def token_endpoint() -> Iterator[tuple[str, list[dict[str, list[str]]], dict[str, Any]]]:
    """A loopback token endpoint: (URL, the forms it received, the answer it gives)."""
    from urllib.parse import parse_qs

    received: list[dict[str, list[str]]] = []
    answer: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            received.append(parse_qs(self.rfile.read(length).decode()))
            body = json.dumps(answer).encode()
            self.send_response(int(answer.get("_status", 200)))
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/token", received, answer
    finally:
        server.shutdown()
        server.server_close()


def token_authenticator(pass_tokens: str, token_url: str = "http://127.0.0.1:9/token",
                        ) -> ShopfloorOIDCAuthenticator:
    return ShopfloorOIDCAuthenticator(
        enable_auth_state=True, pass_tokens=pass_tokens, token_min_seconds=60,
        token_url=token_url, client_id="shopfloor", client_secret="client-secret")


def fresh_state(**extra: Any) -> dict[str, Any]:
    return {"access_token": "at-1", "id_token": "id-1", "refresh_token": "rt-1",
            "expires_at": time.time() + 3600, "oauth_user": {"sub": "s"}, **extra}


async def test_sessions_get_the_tokens_the_site_passes_by_name() -> None:
    user = FakeUser(fresh_state())
    spawner = FakeSpawner({"SHOPFLOOR_SITE": "x", ID_TOKEN_ENV: "stale-from-last-start"})
    await token_authenticator("access").pre_spawn_start(user, spawner)
    assert spawner.environment == {"SHOPFLOOR_SITE": "x", ACCESS_TOKEN_ENV: "at-1"}
    await token_authenticator("access_and_id").pre_spawn_start(user, spawner)
    assert spawner.environment == {"SHOPFLOOR_SITE": "x", ACCESS_TOKEN_ENV: "at-1",
                                   ID_TOKEN_ENV: "id-1"}
    # The site stops passing tokens: the next start has none left over.
    await token_authenticator("none").pre_spawn_start(user, spawner)
    assert spawner.environment == {"SHOPFLOOR_SITE": "x"}
    assert not user.saved  # valid for an hour: nothing refreshed
    # No auth_state (a login from before keep_tokens): nothing passed, no error.
    await token_authenticator("access").pre_spawn_start(FakeUser(None), spawner)
    assert spawner.environment == {"SHOPFLOOR_SITE": "x"}


def test_the_tokens_travel_by_name_only() -> None:
    from shopfloor.extensions.spawner import SECRET_ENV
    from shopfloor.ops.doctor import SUDO_ENV
    from shopfloor.slurm.seam import sbatch_call

    # The spawner moves them out of the job script; sudo keeps them for sbatch by name.
    assert set(TOKEN_ENV) <= set(SECRET_ENV) and set(TOKEN_ENV) <= set(SUDO_ENV)
    call = sbatch_call("#!/bin/bash\n", user="alice",
                       secret_env={ACCESS_TOKEN_ENV: "at-secret", ID_TOKEN_ENV: "id-secret"})
    assert f"--export={ACCESS_TOKEN_ENV},{ID_TOKEN_ENV}" in call.args
    assert "secret" not in " ".join(call.args) + (call.stdin or "")


async def test_a_token_about_to_expire_is_refreshed_before_the_spawn(
        token_endpoint: tuple[str, list[dict[str, list[str]]], dict[str, Any]]) -> None:
    url, received, answer = token_endpoint
    answer.update(access_token="at-2", id_token="id-2", expires_in=300, token_type="Bearer")
    user = FakeUser(fresh_state(expires_at=time.time() + 30))  # under token_min_seconds
    spawner = FakeSpawner({})
    await token_authenticator("access_and_id", url).pre_spawn_start(user, spawner)
    assert received == [{"grant_type": ["refresh_token"], "refresh_token": ["rt-1"],
                         "client_id": ["shopfloor"], "client_secret": ["client-secret"]}]
    assert spawner.environment == {ACCESS_TOKEN_ENV: "at-2", ID_TOKEN_ENV: "id-2"}
    (saved,) = user.saved
    # Saved (encrypted by JupyterHub), the refresh token kept when none came back, the claims
    # of the login kept, and the new expiry known.
    assert saved["refresh_token"] == "rt-1" and saved["oauth_user"] == {"sub": "s"}
    assert 290 < saved["expires_at"] - time.time() <= 300
    # Expired and the provider refuses the refresh: the user is asked to log in again.
    answer.clear()
    answer.update(_status=400, error="invalid_grant", error_description="grant expired")
    user = FakeUser(fresh_state(expires_at=time.time() - 5))
    with pytest.raises(web.HTTPError) as err:
        await token_authenticator("access", url).pre_spawn_start(user, FakeSpawner({}))
    assert err.value.status_code == 403 and "log in again" in str(err.value.log_message)
    assert not user.saved


def test_auth_state_records_when_the_access_token_expires() -> None:
    auth = token_authenticator("access")
    state = auth.build_auth_state_dict({"access_token": "a", "expires_in": 60}, {"sub": "s"})
    assert 55 < state["expires_at"] - time.time() <= 60
    for odd in ("60", None, -1, True):
        assert "expires_at" not in auth.build_auth_state_dict(
            {"access_token": "a", "expires_in": odd}, {})
