"""``shopfloor doctor``: a site that passes OIDC tokens into sessions needs a sudoers rule that
keeps them (sudo's env_reset drops every other variable, so sessions would start without them).

The sudo listing is what ``sudo -n -l -U shopfloor`` prints (sudo 1.9.13, wrapped as sudo
wraps it); the command runner is the doctor's own seam, replaced here.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import pytest

from shopfloor.auth_site import ACCESS_TOKEN_ENV, ID_TOKEN_ENV, TOKEN_ENV
from shopfloor.ops.doctor import (
    Completed,
    Doctor,
    DoctorOptions,
    Status,
    passed_tokens,
)
from shopfloor.site import SiteConfig, parse_site

_LISTING = """\
Matching Defaults entries for root on vm:
    env_reset, mail_badpass,
    secure_path=/usr/local/sbin\\:/usr/local/bin\\:/usr/sbin\\:/usr/bin\\:/sbin\\:/bin,
    use_pty, !requiretty

Runas and Command-specific defaults for root:
    Defaults!/usr/bin/sbatch, /usr/bin/scancel env_keep+="JUPYTERHUB_API_TOKEN
    JPY_API_TOKEN SHOPFLOOR_APP_SECRET{extra}"

User root may run the following commands on vm:
    (ALL, !root) NOPASSWD: /usr/bin/sbatch, /usr/bin/scancel,
        {venv}/shopfloor-as-user
    (root) NOPASSWD: {venv}/shopfloor-privileged
"""
_OIDC = {"issuer": "https://login.example.org/realms/hpc", "client_id": "shopfloor",
         "client_secret_env": "SHOPFLOOR_TEST_OIDC_SECRET"}


def _site(method: str = "oidc", pass_tokens: str = "none") -> SiteConfig:
    oidc = {**_OIDC, "keep_tokens": pass_tokens != "none", "pass_tokens": pass_tokens}
    return parse_site({
        "hub": {"python": sys.executable, "state_dir": "/nonexistent/state",
                "hub_bind_url": "http://127.0.0.1:8081"},
        "slurm": {"bin_dir": "/usr/bin"},
        "auth": {"method": method, "oidc": oidc},
        "partitions": {"cpu": {"max_walltime": "1:00:00"}},
    })


class _Sudo:
    """The doctor's command runner: ``sudo -l`` answers with ``listing``."""

    def __init__(self, listing: str) -> None:
        self.listing = listing

    def __call__(self, argv: Sequence[str], *, timeout: float,
                 stdin: str | None = None) -> Completed:
        assert list(argv[:3]) == ["sudo", "-n", "-l"], argv
        return Completed(0, self.listing)


def _check(site: SiteConfig, kept: Sequence[str]) -> Any:
    venv = sys.executable.rsplit("/", 1)[0]
    listing = _LISTING.format(extra="".join(f"\n    {name}" for name in kept), venv=venv)
    doctor = Doctor(site, DoctorOptions(service_user="root", site_path="site.yaml"),
                    commands=_Sudo(listing))
    [check] = doctor.check_sudo()
    return check


@pytest.mark.parametrize(("pass_tokens", "needed"), [
    ("access", (ACCESS_TOKEN_ENV,)), ("access_and_id", TOKEN_ENV)])
def test_a_rule_without_the_token_variables_fails_with_a_one_line_fix(
        pass_tokens: str, needed: tuple[str, ...]) -> None:
    check = _check(_site(pass_tokens=pass_tokens), kept=())
    assert check.status is Status.FAIL
    assert f"does not keep {', '.join(needed)} (auth.oidc.pass_tokens) for sbatch" \
        in check.summary
    assert "\n" not in check.fix and "shopfloor service-user root --sudoers-only" in check.fix


def test_a_rule_missing_only_the_id_token_is_named_precisely() -> None:
    check = _check(_site(pass_tokens="access_and_id"), kept=(ACCESS_TOKEN_ENV,))
    assert check.status is Status.FAIL
    assert f"does not keep {ID_TOKEN_ENV} (auth.oidc.pass_tokens)" in check.summary
    assert f"does not keep {ACCESS_TOKEN_ENV}" not in check.summary


@pytest.mark.parametrize("pass_tokens", ["access", "access_and_id"])
def test_the_shipped_rule_keeps_the_tokens_and_passes(pass_tokens: str) -> None:
    assert _check(_site(pass_tokens=pass_tokens), kept=TOKEN_ENV).status is Status.OK


@pytest.mark.parametrize(("method", "pass_tokens"), [("oidc", "none"), ("pam", "access")])
def test_sites_that_pass_no_tokens_need_no_token_variables(method: str, pass_tokens: str) -> None:
    site = _site(method=method, pass_tokens=pass_tokens)
    assert passed_tokens(site) == ()
    assert _check(site, kept=()).status is Status.OK


def test_kept_token_variables_are_not_extra_variables_either() -> None:
    # A rule that keeps the tokens is fine for a site that passes none (the shipped rule).
    assert _check(_site(pass_tokens="none"), kept=TOKEN_ENV).status is Status.OK
    check = _check(_site(pass_tokens="none"), kept=(*TOKEN_ENV, "LD_PRELOAD"))
    assert check.status is Status.FAIL and "LD_PRELOAD" in check.summary
