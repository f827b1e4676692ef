"""Login: PAM (the demo's default) or the site's OpenID Connect provider (``auth`` in the site).

:func:`install_auth` is called by :func:`shopfloor.extensions.install.install`. With
``auth.method: oidc`` the hub uses :class:`ShopfloorOIDCAuthenticator`, a JupyterHub
``GenericOAuthenticator`` (authorization code flow with PKCE) whose endpoints come from the
provider's discovery document at hub start (or the site file). Who may log in:

* the identity's ``username_claim`` must name an **existing** Unix account with a uid of at
  least ``min_uid``; nothing is ever created. Any other identity gets our page
  (``templates/shopfloor_oidc_refused.html``) saying whom to contact, and no hub cookie;
* then ``auth.allowed_users`` / ``auth.allowed_groups`` (Unix groups or groups from the
  provider's ``groups_claim``), or everyone with an account when neither is set.

Groups from ``groups_claim`` become hub groups the user is in (updated at each login), so the
site's ``group_limits``, ``group_accounts`` and partition groups apply; the provider owns only
the groups it created (never a workshop's or the support group). With ``keep_tokens`` the
provider's tokens are kept in the user's encrypted ``auth_state`` and refreshed; the key comes
from ``crypt_key_file``, ``$JUPYTERHUB_CRYPT_KEY`` or one generated once in the hub's state
folder (0600). The client secret is read from a private file or the environment, never from
the site file, and never logged.

With ``username_domain`` the claim must be ``name@domain`` (:func:`account_name`). With
``pass_tokens`` each new session gets the user's tokens (refreshed first when about to expire)
in its environment, by name only (:meth:`ShopfloorOIDCAuthenticator.pre_spawn_start`). Hub
logout also ends the provider's session when it advertises an end-session endpoint
(:class:`ProviderLogoutHandler`).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import stat
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jupyterhub.utils import url_path_join
from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import OAuthCallbackHandler, OAuthLogoutHandler
from tornado import web
from traitlets import Integer, Set, Unicode

from shopfloor.auth_site import (
    ACCESS_TOKEN_ENV,
    ID_TOKEN_ENV,
    TOKEN_ENV,
    OidcSettings,
    check_provider_url,
)
from shopfloor.extensions.compat import sync_owned_groups
from shopfloor.site import NAME_PATTERN, SiteConfig, SiteConfigError
from shopfloor.userfiles import private_file

TEMPLATES = Path(__file__).with_name("templates")
REFUSED_TEMPLATE = "shopfloor_oidc_refused.html"
#: Which auth_state tokens each ``pass_tokens`` choice puts into a session's environment.
PASSED_TOKENS = {
    "none": {},
    "access": {ACCESS_TOKEN_ENV: "access_token"},
    "access_and_id": {ACCESS_TOKEN_ENV: "access_token", ID_TOKEN_ENV: "id_token"},
}
#: Generated auth_state key when the site names none (like the cookie secret beside it).
CRYPT_KEY_FILE = "jupyterhub_crypt_key"
#: A Unix login name as useradd accepts it (Debian's default NAME_REGEX, at most 32).
UNIX_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_GROUP_NAME = re.compile(NAME_PATTERN)
#: The owner mark of hub groups that come from the provider's groups_claim.
GROUP_OWNER = "oidc"


class LoginRefused(Exception):
    """An identity the provider vouched for, but who may not log in here.

    ``identity`` is the claim value as the provider sent it (shown escaped on our page),
    ``reason`` is what the user reads; the admin's log line has both.
    """

    def __init__(self, identity: str, reason: str) -> None:
        super().__init__(f"{identity!r}: {reason}")
        self.identity = identity
        self.reason = reason


# -- mapping claims to Unix users and hub groups (plain functions, unit-tested) -------------


def unix_user_for(name: Any, claim: str, min_uid: int) -> pwd.struct_passwd:
    """The existing Unix account an identity's claim names, or :class:`LoginRefused`."""
    if not isinstance(name, str) or not name:
        raise LoginRefused("(unknown)", f"your identity provider did not send the {claim!r} "
                           "claim that names your account here")
    if not UNIX_NAME.match(name):
        raise LoginRefused(name, "this name is not a valid account name here")
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        raise LoginRefused(name, "there is no account with this name here") from None
    if account.pw_uid < min_uid:
        # root, slurm, daemons: a provider claim must never reach them.
        raise LoginRefused(name, "this account cannot log in through the identity provider")
    return account


def account_name(value: Any, domain: str) -> Any:
    """The account part of a claim that carries ``domain`` (``alice@example.org`` -> alice).

    With a domain, a value without it, or with any other domain, is refused: the provider may
    vouch for users of several domains, and ``alice@other.org`` is not our alice. Without a
    domain the value is returned as it is (checked by :func:`unix_user_for`).
    """
    if not domain or not isinstance(value, str) or not value:
        return value
    name, at, given = value.rpartition("@")
    if not at or not name:
        raise LoginRefused(value, f"this identity is not of {domain} (expected name@{domain})")
    if given.lower() != domain:
        raise LoginRefused(value, f"this hub admits {domain} identities only")
    return name


def groups_from_claims(user_info: dict[str, Any], claim: str) -> tuple[list[str], list[str]]:
    """(valid group names, dropped values) of ``claim`` in the provider's userinfo.

    The claim may be a list of names or one string of names separated by spaces or commas
    (providers differ). Values that are not valid names here are dropped, not mangled.
    """
    raw = user_info.get(claim)
    if raw is None:
        return [], []
    values = re.split(r"[\s,]+", raw) if isinstance(raw, str) else raw
    if not isinstance(values, list):
        return [], [repr(raw)[:80]]
    valid, dropped = [], []
    for value in values:
        if isinstance(value, str) and _GROUP_NAME.match(value):
            valid.append(value)
        elif value != "":
            dropped.append(repr(value)[:80])
    return sorted(set(valid)), dropped


# -- secrets and the provider's endpoints, read once at hub start --------------------------


def read_private_file(path: str, field: str) -> str:
    """The first line of a secret file that only its owner may read (else a SiteConfigError)."""
    try:
        info = os.stat(path)
        with open(path, encoding="utf-8") as fh:
            value = fh.readline().strip()
    except OSError as exc:
        raise SiteConfigError(f"{field}: cannot read {path}: {exc.strerror}") from None
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise SiteConfigError(
            f"{field}: {path} is readable by other users (mode "
            f"{stat.S_IMODE(info.st_mode):04o}); make it private: chmod 600 {path}")
    if not value:
        raise SiteConfigError(f"{field}: {path} is empty")
    return value


def client_secret(oidc: OidcSettings) -> str:
    """The client secret, from ``client_secret_file`` or ``$client_secret_env``."""
    if oidc.client_secret_file:
        return read_private_file(oidc.client_secret_file, "auth.oidc.client_secret_file")
    value = os.environ.get(oidc.client_secret_env, "")
    if not value:
        raise SiteConfigError(f"auth.oidc.client_secret_env: ${oidc.client_secret_env} is not "
                              "set in the hub's environment")
    return value


def crypt_key(oidc: OidcSettings, state_dir: Path) -> bytes | None:
    """The auth_state key: the site's file, else None ($JUPYTERHUB_CRYPT_KEY, read by
    JupyterHub itself), else one generated once in the hub's state folder (0600)."""
    if oidc.crypt_key_file:
        text = read_private_file(oidc.crypt_key_file, "auth.oidc.crypt_key_file")
    elif os.environ.get("JUPYTERHUB_CRYPT_KEY"):
        return None
    else:
        path = state_dir / CRYPT_KEY_FILE
        private_file(path)  # made 0600 (or tightened) before anything is written to it
        text = path.read_text().strip()
        if not text:
            text = secrets.token_hex(32)
            path.write_text(text + "\n")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise SiteConfigError("auth.oidc.crypt_key_file: the key must be 64 hex digits "
                              "(32 bytes), e.g. from `openssl rand -hex 32`")
    return key


@dataclass(frozen=True)
class Endpoints:
    """Where the hub sends users and asks for tokens and claims."""

    authorize_url: str
    token_url: str
    userinfo_url: str
    end_session_url: str = ""


def discover(issuer: str, timeout: float = 10) -> Endpoints:
    """The provider's endpoints from ``ISSUER/.well-known/openid-configuration``.

    The document's ``issuer`` must equal ours (OpenID Connect Discovery 1.0, section 4.3),
    so a document served for another provider is never trusted.
    """
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            doc = json.loads(resp.read(1_000_000))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise SiteConfigError(
            f"auth.oidc.issuer: cannot read the provider's discovery document {url}: {exc}. "
            "Is the provider up? (Or set auth.oidc.authorize_url, token_url and userinfo_url.)"
        ) from None
    if not isinstance(doc, dict) or doc.get("issuer") != issuer:
        raise SiteConfigError(
            f"auth.oidc.issuer: {url} names the issuer "
            f"{doc.get('issuer') if isinstance(doc, dict) else None!r}, not {issuer!r}")
    found = {}
    for key in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint"):
        value = doc.get(key)
        if not isinstance(value, str):
            raise SiteConfigError(f"auth.oidc.issuer: {url} has no {key}")
        try:
            found[key] = check_provider_url(value, key)
        except ValueError as exc:
            raise SiteConfigError(f"auth.oidc.issuer: {url}: {key} {exc}") from None
    end_session = doc.get("end_session_endpoint")
    if not isinstance(end_session, str):
        end_session = ""
    elif end_session:
        try:
            check_provider_url(end_session, "end_session_endpoint")
        except ValueError as exc:
            raise SiteConfigError(f"auth.oidc.issuer: {url}: end_session_endpoint {exc}") from None
    return Endpoints(found["authorization_endpoint"], found["token_endpoint"],
                     found["userinfo_endpoint"], end_session)


# -- the authenticator ------------------------------------------------------------------------


class RefusalAwareCallbackHandler(OAuthCallbackHandler):
    """oauthenticator's callback, with our page for identities that may not log in here,
    and the provider's groups applied to the hub groups it owns once the user is logged in."""

    #: Valid names of ``groups_claim`` for this login (set by the authenticator); None: the
    #: site maps no groups.
    provider_groups: list[str] | None = None

    async def get(self) -> None:
        # State (against the cookie), code and error checks are oauthenticator's: a tampered
        # or replayed state is a 400 before anything else happens.
        self.check_arguments()
        try:
            user = await self.login_user()
        except LoginRefused as exc:
            self.log.warning("OIDC login refused for %r: %s", exc.identity, exc.reason)
            self.set_status(403)
            html = await self.render_template(
                REFUSED_TEMPLATE, identity=exc.identity, reason=exc.reason,
                contact=self.authenticator.contact,
                login_service=self.authenticator.login_service)
            self.finish(html)
            return
        if user is None:
            raise web.HTTPError(403, self.authenticator.custom_403_message)
        if self.provider_groups is not None:
            added, removed, skipped = sync_owned_groups(
                self.db, user.name, self.provider_groups, GROUP_OWNER)
            if added or removed:
                self.log.info("OIDC groups of %s: +%s -%s", user.name, added, removed)
            if skipped:
                # A claim naming a group the hub made for something else (a workshop, the
                # support group) must not let the provider put users into it.
                self.log.warning("OIDC groups of %s: not provider groups, left alone: %s",
                                 user.name, ", ".join(skipped))
        self.redirect(self.get_next_url(user))


class ProviderLogoutHandler(OAuthLogoutHandler):
    """Hub logout that also ends the user's session at the provider (RP-initiated logout).

    The browser is sent (GET) to the provider's ``end_session_endpoint`` with our
    ``client_id`` and ``post_logout_redirect_uri`` (the hub's login page, registered for the
    client), and the provider sends it back there. GET, not a form POST: the provider must see
    its own session cookie, and browsers withhold SameSite=Lax cookies from a POST that comes
    from another site. No ``id_token_hint``: a token does not belong in a URL (browser history,
    the provider's access log); the provider asks the user to confirm instead, as the spec
    has it for a logout without a hint.
    """

    async def render_logout_page(self) -> None:
        authenticator = self.authenticator
        if not authenticator.end_session_url:
            await super().render_logout_page()
            return
        query = {"client_id": authenticator.client_id,
                 "post_logout_redirect_uri": authenticator.post_logout_redirect_url}
        self.set_header("Cache-Control", "no-store")
        self.set_header("Referrer-Policy", "no-referrer")
        self.redirect(f"{authenticator.end_session_url}?{urlencode(query)}")


class ShopfloorOIDCAuthenticator(GenericOAuthenticator):
    """GenericOAuthenticator that maps identities onto existing Unix accounts only."""

    callback_handler = RefusalAwareCallbackHandler
    logout_handler = ProviderLogoutHandler

    username_domain = Unicode(
        "", config=True,
        help="Domain the username claim carries (alice@example.org -> alice); others are "
        "refused. Empty: the claim is the account name.",
    )
    pass_tokens = Unicode(
        "none", config=True,
        help="Which provider tokens a new session gets in its environment: none, access or "
        "access_and_id (by name only; see shopfloor.auth_site.TOKEN_ENV).",
    )
    token_min_seconds = Integer(
        60, config=True,
        help="Before a spawn, an access token valid for fewer seconds is refreshed first.",
    )
    end_session_url = Unicode(
        "", config=True,
        help="The provider's end_session_endpoint; empty: hub logout ends the hub's login only.",
    )
    post_logout_redirect_url = Unicode(
        "", config=True,
        help="Where the provider sends the browser after logout (the hub's login page).",
    )

    contact = Unicode(
        "the site's support team", config=True,
        help="Whom an identity without a Unix account should contact (shown on the refusal "
        "page), e.g. 'hpc-support@example.org'.",
    )
    min_uid = Integer(
        1000, config=True,
        help="Lowest Unix uid an identity may map to (system accounts are never reachable).",
    )
    groups_claim = Unicode(
        "", config=True,
        help="Userinfo claim with the user's groups/projects; empty: hub groups untouched.",
    )
    login_groups = Set(
        Unicode(), config=True,
        help="Unix groups, or groups from groups_claim, whose members may log in "
        "(the site's auth.allowed_groups).",
    )

    def user_info_to_username(self, user_info: dict[str, Any]) -> str:
        """The claim value, checked against the Unix accounts (never logs the claims)."""
        claim = str(self.username_claim)
        identity = user_info.get(claim)
        try:
            return unix_user_for(account_name(identity, self.username_domain), claim,
                                 self.min_uid).pw_name
        except LoginRefused as exc:
            # The page names the identity as the provider sent it (alice@example.org).
            raise LoginRefused(identity if isinstance(identity, str) and identity
                               else exc.identity, exc.reason) from None

    def provider_groups(self, auth_model: dict[str, Any]) -> list[str]:
        """Valid group names of ``groups_claim`` in a login's userinfo."""
        user_info = (auth_model.get("auth_state") or {}).get(self.user_auth_state_key) or {}
        valid, dropped = groups_from_claims(user_info, self.groups_claim)
        if dropped:
            self.log.warning("OIDC: ignored group values that are not valid names: %s",
                             ", ".join(dropped))
        return valid

    async def authenticate(self, handler: Any, data: Any = None, **kwargs: Any) -> Any:
        auth_model = await super().authenticate(handler, data, **kwargs)
        if self.groups_claim and auth_model and isinstance(handler, RefusalAwareCallbackHandler):
            handler.provider_groups = self.provider_groups(auth_model)
        return auth_model

    async def check_allowed(self, username: str, auth_model: dict[str, Any] | None) -> bool:
        if await super().check_allowed(username, auth_model):
            return True
        if not self.login_groups or auth_model is None:
            return False
        import grp

        account = pwd.getpwnam(username)
        groups = {grp.getgrgid(g).gr_name for g in os.getgrouplist(account.pw_name,
                                                                    account.pw_gid)}
        if self.groups_claim:
            groups |= set(self.provider_groups(auth_model))
        return bool(groups & self.login_groups)

    def build_auth_state_dict(self, token_info: dict[str, Any],
                              user_info: dict[str, Any]) -> dict[str, Any]:
        """oauthenticator's auth_state, plus ``expires_at`` (epoch seconds) of the access token,
        so that a token about to expire is refreshed before a spawn passes it on."""
        state = super().build_auth_state_dict(token_info, user_info)
        lifetime = token_info.get("expires_in")
        if isinstance(lifetime, int | float) and not isinstance(lifetime, bool) and lifetime > 0:
            state["expires_at"] = time.time() + lifetime
        return state

    async def fresh_tokens(self, user: Any) -> dict[str, Any]:
        """The user's auth_state, refreshed first (and saved) when its access token expires
        within ``token_min_seconds``. A refused refresh raises a 403 that asks for a new login.
        """
        state = await user.get_auth_state() or {}
        expires_at = state.get("expires_at")
        if not isinstance(expires_at, int | float) or (
                expires_at - time.time() >= self.token_min_seconds):
            return state
        refresh_token = state.get("refresh_token")
        if not refresh_token:
            return state  # the provider gave none: pass on what there is
        try:
            token_info = await self.get_token_info(
                None, self.build_refresh_token_request_params(refresh_token))
        except Exception as exc:
            # Not the exception text: an HTTP error of the token endpoint may echo the request.
            self.log.warning("OIDC: refreshing the tokens of %s before a spawn failed (%s)",
                             user.name, type(exc).__name__)
            raise web.HTTPError(403, f"Your login at {self.login_service} has expired; log out "
                                "and log in again.") from None
        if not token_info.get("refresh_token"):
            token_info["refresh_token"] = refresh_token
        state = self.build_auth_state_dict(token_info, state.get(self.user_auth_state_key) or {})
        await user.save_auth_state(state)
        self.log.info("OIDC: refreshed the tokens of %s before a spawn", user.name)
        return state

    async def pre_spawn_start(self, user: Any, spawner: Any) -> None:
        """Put the tokens the site passes (``pass_tokens``) into the session's environment.

        The spawner sends them to the job by name only (``SECRET_ENV`` of
        :mod:`shopfloor.extensions.spawner`); names of a previous start are removed first.
        """
        environment = {k: v for k, v in spawner.environment.items() if k not in TOKEN_ENV}
        wanted = PASSED_TOKENS.get(self.pass_tokens, {})
        if wanted and self.enable_auth_state:
            state = await self.fresh_tokens(user)
            for name, key in wanted.items():
                value = state.get(key)
                if isinstance(value, str) and value:
                    environment[name] = value
        spawner.environment = environment

    async def refresh_user(self, user: Any, handler: Any = None, **kwargs: Any) -> Any:
        """Log out a user whose Unix account was removed (or became a system account)."""
        try:
            unix_user_for(user.name, str(self.username_claim), self.min_uid)
        except LoginRefused as exc:
            self.log.warning("OIDC: %s must log in again: %s", user.name, exc.reason)
            return False
        return await super().refresh_user(user, handler, **kwargs)


# -- installation -------------------------------------------------------------------------------


def install_auth(c: Any, site: SiteConfig) -> None:
    """Configure the hub's authenticator from ``site.auth`` (PAM or OpenID Connect)."""
    auth = site.auth
    c.Authenticator.admin_users = set(auth.admin_users)
    c.Authenticator.allowed_users = set(auth.allowed_users)
    if auth.method == "pam":
        c.JupyterHub.authenticator_class = "pam"
        c.PAMAuthenticator.open_sessions = False
        if auth.allowed_groups:
            c.PAMAuthenticator.allowed_groups = set(auth.allowed_groups)
        return
    oidc = auth.oidc
    if oidc.authorize_url:
        endpoints = Endpoints(oidc.authorize_url, oidc.token_url, oidc.userinfo_url,
                              oidc.end_session_url)
    else:
        endpoints = discover(oidc.issuer)
    cls = ShopfloorOIDCAuthenticator.__name__
    c.JupyterHub.authenticator_class = ShopfloorOIDCAuthenticator
    settings = c[cls]
    settings.client_id = oidc.client_id
    settings.client_secret = client_secret(oidc)
    settings.oauth_callback_url = oidc.callback_url or url_path_join(
        site.hub.bind_url, "/hub/oauth_callback")
    settings.authorize_url = endpoints.authorize_url
    settings.token_url = endpoints.token_url
    settings.userdata_url = endpoints.userinfo_url
    settings.scope = list(oidc.scopes)
    settings.username_claim = oidc.username_claim
    settings.enable_pkce = True
    settings.login_service = oidc.login_service
    settings.contact = oidc.contact
    settings.min_uid = oidc.min_uid
    settings.login_groups = set(auth.allowed_groups)
    # The Unix account check in user_info_to_username is the gate; the lists narrow it.
    settings.allow_all = not (auth.allowed_users or auth.allowed_groups)
    settings.allow_existing_users = False
    # Not oauthenticator's manage_groups: that hands every hub group to the provider
    # (workshop and support groups too) and forbids load_groups. The provider owns only the
    # groups it created (RefusalAwareCallbackHandler).
    settings.groups_claim = oidc.groups_claim
    settings.username_domain = oidc.username_domain
    settings.pass_tokens = oidc.pass_tokens
    settings.token_min_seconds = oidc.token_min_seconds
    logout_url = oidc.end_session_url or endpoints.end_session_url
    if oidc.logout_at_provider is True and not logout_url:
        raise SiteConfigError("auth.oidc.logout_at_provider: the provider advertises no "
                              "end_session_endpoint; set auth.oidc.end_session_url, or "
                              "logout_at_provider: false")
    if oidc.logout_at_provider is not False and logout_url:
        settings.end_session_url = logout_url
        settings.post_logout_redirect_url = post_logout_url(settings.oauth_callback_url)
    settings.enable_auth_state = oidc.keep_tokens
    settings.auth_refresh_age = oidc.refresh_seconds
    if oidc.keep_tokens:
        key = crypt_key(oidc, Path(site.hub.state_dir))
        if key is not None:
            c.CryptKeeper.keys = [key]
    c.JupyterHub.template_paths = [*_configured_list(c.JupyterHub, "template_paths"),
                                   str(TEMPLATES)]


def post_logout_url(callback_url: str) -> str:
    """The hub's login page beside its OAuth callback (``.../hub/oauth_callback`` ->
    ``.../hub/login``): where the provider sends the browser after logout."""
    return callback_url.rsplit("/", 1)[0] + "/login"


def _configured_list(section: Any, name: str) -> list[str]:
    """A list setting as configured so far (empty when unset)."""
    value = section.get(name) if hasattr(section, "get") else None
    return list(value) if isinstance(value, list | tuple) else []


__all__ = [
    "Endpoints",
    "LoginRefused",
    "ProviderLogoutHandler",
    "ShopfloorOIDCAuthenticator",
    "account_name",
    "client_secret",
    "crypt_key",
    "discover",
    "groups_from_claims",
    "install_auth",
    "post_logout_url",
    "read_private_file",
    "unix_user_for",
]
