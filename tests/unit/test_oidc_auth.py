"""OpenID Connect login: the site model's ``auth.oidc``, claim mapping, secrets, wiring.

The login itself runs against a real provider in tests/browser/test_oidc_login.py.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from traitlets.config import Config

from shopfloor.extensions.auth import (
    LoginRefused,
    ShopfloorOIDCAuthenticator,
    client_secret,
    crypt_key,
    discover,
    groups_from_claims,
    install_auth,
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
