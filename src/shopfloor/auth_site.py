"""Site-file section of OpenID Connect login: ``auth.oidc``.

Part of the one site model (:class:`shopfloor.site.AuthSettings` has the fields ``method`` and
``oidc``); it lives in this module so that the site model stays readable. The hub side is
:mod:`shopfloor.extensions.auth`. The client secret never sits in the site file: it is read
from ``client_secret_file`` or the environment variable ``client_secret_env`` when the hub
starts. A bad entry raises :class:`shopfloor.site.SiteConfigError` naming the field
(``auth.oidc.issuer: ...``).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: A claim name as providers spell them (``preferred_username``, ``eduPersonEntitlement``,
#: ``urn:oid:1.3.6.1.4.1.5923.1.1.1.7``); dots are not allowed (they would read as nesting).
CLAIM_PATTERN = r"^[A-Za-z_][A-Za-z0-9_:-]{0,127}$"
_SCOPE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,128}$")  # RFC 6749 scope-token
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")
#: A DNS domain name (labels of letters, digits and inner hyphens), e.g. example.org.
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")

#: The session environment variables that carry the provider's tokens (``pass_tokens``).
#: They are secrets: they reach the job by name only (sbatch ``--export=NAME``), never in its
#: script, a command line or a log.
ACCESS_TOKEN_ENV = "SHOPFLOOR_OIDC_ACCESS_TOKEN"
ID_TOKEN_ENV = "SHOPFLOOR_OIDC_ID_TOKEN"
TOKEN_ENV = (ACCESS_TOKEN_ENV, ID_TOKEN_ENV)


def is_loopback_host(host: str | None) -> bool:
    """True for ``localhost`` and loopback addresses, where plain http is acceptable."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def check_provider_url(value: str, what: str = "URL") -> str:
    """An https URL, or http on this machine's loopback (tests, a provider beside the hub)."""
    url = urlparse(value)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"must be a {what} such as https://login.example.org/realms/hpc")
    if url.scheme == "http" and not is_loopback_host(url.hostname):
        raise ValueError(f"must use https (plain http only on a loopback address); got {value}")
    if url.username or url.password or url.query or url.fragment:
        raise ValueError(f"must be a plain {what}, without user, password, query or fragment")
    return value


class OidcSettings(BaseModel):
    """OpenID Connect login (``auth.method: oidc``): the provider, the client, the claims."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field(
        "", description="The provider's issuer URL, e.g. https://login.example.org/realms/hpc; "
        "its endpoints come from ISSUER/.well-known/openid-configuration when the hub starts "
        "(whose 'issuer' must match), unless authorize_url, token_url and userinfo_url are set.",
    )
    client_id: str = Field(
        "", max_length=256, description="The hub's client id at the provider, e.g. shopfloor.",
    )
    client_secret_file: str = Field(
        "", description="File holding the client secret on its first line, readable by the "
        "hub's user only (mode 0600 or 0400), e.g. /etc/shopfloor/oidc-client-secret. "
        "Set this or client_secret_env, never the secret itself.",
    )
    client_secret_env: str = Field(
        "", description="Name of the environment variable holding the client secret, e.g. "
        "SHOPFLOOR_OIDC_CLIENT_SECRET (set it in the hub's unit, not in a script).",
    )
    callback_url: str = Field(
        "", description="The redirect URI registered at the provider. Empty: "
        "hub.bind_url + /hub/oauth_callback.",
    )
    authorize_url: str = Field(
        "", description="Authorization endpoint; empty: from discovery.",
    )
    token_url: str = Field("", description="Token endpoint; empty: from discovery.")
    userinfo_url: str = Field("", description="Userinfo endpoint; empty: from discovery.")
    end_session_url: str = Field(
        "", description="The provider's end_session_endpoint (RP-initiated logout); empty: "
        "from discovery.",
    )
    scopes: list[str] = Field(
        default_factory=lambda: ["openid", "profile"],
        description="Scopes the hub asks for; must include openid. Add the scope that releases "
        "groups_claim (e.g. 'projects' or 'entitlements') and offline_access for refresh tokens.",
    )
    username_claim: str = Field(
        "preferred_username", pattern=CLAIM_PATTERN,
        description="Userinfo claim whose value is the Unix user name, e.g. preferred_username. "
        "Only identities whose value names an existing Unix account may log in; no account is "
        "ever created.",
    )
    groups_claim: str = Field(
        "", pattern=rf"^$|{CLAIM_PATTERN}",
        description="Userinfo claim listing the user's groups or projects, e.g. projects. Each "
        "valid name becomes a hub group the user is in (updated at each login), so "
        "group_limits, group_accounts and partition groups apply. The provider owns only the "
        "groups it created: names of groups the hub made otherwise (workshops, support) are "
        "ignored. Empty: no groups from the provider.",
    )
    keep_tokens: bool = Field(
        False, description="Keep the provider's access and refresh tokens in the user's "
        "encrypted auth_state and refresh them (every refresh_seconds and before each spawn). "
        "Needs an encryption key: crypt_key_file, $JUPYTERHUB_CRYPT_KEY, or one generated "
        "in hub.state_dir.",
    )
    pass_tokens: Literal["none", "access", "access_and_id"] = Field(
        "none", description="Which of the user's provider tokens each new session gets in its "
        f"environment: none; access (${ACCESS_TOKEN_ENV}); access_and_id (also "
        f"${ID_TOKEN_ENV}). A token about to expire (token_min_seconds) is refreshed first. "
        "They travel by name only: never in the job script, a command line or a log. They "
        "are the values at the session's start (not refreshed inside it). Needs keep_tokens.",
    )
    token_min_seconds: int = Field(
        60, ge=0, le=3600,
        description="Before a spawn, an access token valid for fewer seconds than this is "
        "refreshed (with the refresh token), so that a session starts with a usable token, "
        "e.g. 60.",
    )
    logout_at_provider: bool | None = Field(
        None, description="Logging out of the hub also ends the provider's session "
        "(RP-initiated logout: the browser is sent to the provider's end_session_endpoint "
        "with the ID token as hint, and back to the hub's login page, "
        "BIND_URL/hub/login, which must be registered at the provider as a "
        "post_logout_redirect_uri). Empty: true when the provider's discovery document "
        "advertises an end_session_endpoint.",
    )
    username_domain: str = Field(
        "", description="Domain that username_claim values carry, e.g. example.org: a claim "
        "alice@example.org maps to the Unix account alice; a name without it or with any "
        "other domain is refused. Empty: the claim is the account name itself.",
    )
    crypt_key_file: str = Field(
        "", description="File with the auth_state encryption key (64 hex digits; mode 0600), "
        "e.g. /etc/shopfloor/crypt-key. Empty: $JUPYTERHUB_CRYPT_KEY, else a key generated "
        "once in hub.state_dir (jupyterhub_crypt_key).",
    )
    refresh_seconds: int = Field(
        300, ge=0, le=86400,
        description="Seconds after which the hub checks a user's tokens again (and refreshes "
        "them) on their next request, e.g. 300; 0: never.",
    )
    login_service: str = Field(
        "your institution", max_length=64,
        description="Name on the login button: 'Sign in with <login_service>'.",
    )
    contact: str = Field(
        "the site's support team", max_length=200,
        description="Who an identity without a Unix account should contact, shown on the "
        "refusal page, e.g. 'hpc-support@example.org (subject: account request)'.",
    )
    min_uid: int = Field(
        1000, ge=1,
        description="Lowest Unix uid an identity may map to: system accounts (root, slurm, "
        "daemons) are never reachable through the provider's claims.",
    )

    @field_validator("issuer", "authorize_url", "token_url", "userinfo_url", "callback_url",
                     "end_session_url")
    @classmethod
    def _urls(cls, value: str) -> str:
        # The issuer is kept as written: discovery's "issuer" must match it exactly.
        return check_provider_url(value) if value else value

    @field_validator("client_secret_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if value and not _ENV_NAME.match(value):
            raise ValueError("must be an environment variable name such as "
                             f"SHOPFLOOR_OIDC_CLIENT_SECRET; got {value!r}")
        return value

    @field_validator("username_domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        value = value.strip().lower().removeprefix("@")
        if value and not _DOMAIN.match(value):
            raise ValueError(f"must be a domain name such as example.org; got {value!r}")
        return value

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[str]) -> list[str]:
        bad = [s for s in value if not _SCOPE.match(s)]
        if bad:
            raise ValueError(f"not valid scope names: {bad}")
        if "openid" not in value:
            raise ValueError(f"must include 'openid' (OpenID Connect); got {value}")
        return list(dict.fromkeys(value))

    def problems(self) -> list[str]:
        """What is missing for ``auth.method: oidc``, each naming its field."""
        found = []
        if not self.issuer:
            found.append("issuer is required, e.g. https://login.example.org/realms/hpc")
        if not self.client_id:
            found.append("client_id is required (the hub's client at the provider)")
        if bool(self.client_secret_file) == bool(self.client_secret_env):
            found.append("client_secret_file: set exactly one of client_secret_file and "
                         "client_secret_env (the secret itself never goes in the site file)")
        if self.pass_tokens != "none" and not self.keep_tokens:
            found.append(f"pass_tokens: {self.pass_tokens} needs keep_tokens: true (the "
                         "tokens are kept in the encrypted auth_state and refreshed there)")
        explicit = [bool(self.authorize_url), bool(self.token_url), bool(self.userinfo_url)]
        if any(explicit) and not all(explicit):
            found.append("authorize_url, token_url, userinfo_url: set all three, or none "
                         "(then they come from discovery)")
        return found


__all__ = ["ACCESS_TOKEN_ENV", "CLAIM_PATTERN", "ID_TOKEN_ENV", "TOKEN_ENV", "OidcSettings",
           "check_provider_url", "is_loopback_host"]
