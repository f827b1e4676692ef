"""The idle culler's settings (per partition, narrow scopes, the session's warning) and the
hub database settings (PostgreSQL URL, password only from a private file)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from traitlets.config import Config

from shopfloor.extensions.idle_culler import (
    CULLER_SCOPES,
    IDLE_MINUTES_ENV,
    SERVICE_NAME,
    PartitionArbiter,
    culler_command,
    idle_minutes_env,
    install_idle_culler,
    parse_partition_minutes,
)
from shopfloor.ops import database
from shopfloor.site import SiteConfig, SiteConfigError, parse_site

DEMO = Path(__file__).resolve().parents[2] / "hub_config" / "demo_site.yaml"


def site_with(**sections: Any) -> SiteConfig:
    data = yaml.safe_load(DEMO.read_text())
    for key, value in sections.items():
        if key == "hub":
            data["hub"].update(value)
        else:
            data[key] = value
    return parse_site(data)


# -- idle culler --------------------------------------------------------------------------


def test_arbiter_uses_each_servers_partition() -> None:
    arbiter = PartitionArbiter({"gpu": 30}, 120, "cpu")
    gpu = {"user_options": {"partition": "gpu"}}
    cpu = {"user_options": {"partition": "cpu"}}
    default = {"user_options": {}}
    forty = timedelta(minutes=40)
    assert arbiter(inactive=forty, inactive_limit=1800, server=gpu) is True
    assert arbiter(inactive=forty, inactive_limit=1800, server=cpu) is False
    assert arbiter(inactive=forty, inactive_limit=1800, server=default) is False
    assert arbiter(inactive=timedelta(minutes=121), inactive_limit=1800, server=default)
    # Odd user_options (not a dict, a non-string partition) fall back to the default.
    assert arbiter.limit_seconds({"user_options": ["gpu"]}) == 120 * 60
    assert arbiter.limit_seconds({"user_options": {"partition": ["gpu"]}}) == 120 * 60
    assert arbiter.limit_seconds({}) == 120 * 60


def test_one_culler_for_all_partitions_looks_as_often_as_the_shortest_needs() -> None:
    site = site_with(idle={"idle_minutes": 90, "partition_minutes": {"gpu": 20, "debug": 45},
                           "check_seconds": 30})
    command = culler_command(site)
    assert command[1:3] == ["-m", "shopfloor.extensions.idle_culler"]
    assert "--idle-minutes=90" in command
    assert "--partition-minutes=gpu=20" in command and "--partition-minutes=debug=45" in command
    assert "--default-partition=cpu" in command
    assert "--timeout=1200" in command and "--cull-every=30" in command


def test_culler_service_gets_only_the_scopes_it_needs() -> None:
    c = Config()
    c.ShopfloorSpawner.environment = {}
    c.JupyterHub.services = [{"name": "apps"}]
    c.JupyterHub.load_roles = [{"name": "user", "scopes": ["self"]}]
    install_idle_culler(c, site_with(idle={"partition_minutes": {"gpu": 30}}))
    assert [s["name"] for s in c.JupyterHub.services] == ["apps", SERVICE_NAME]
    role = next(r for r in c.JupyterHub.load_roles if r["name"] == SERVICE_NAME)
    assert role["services"] == [SERVICE_NAME]
    assert sorted(role["scopes"]) == sorted(CULLER_SCOPES)
    # It can stop servers, never start them, read tokens, or change users.
    assert not any(s.startswith(("admin", "servers", "tokens", "users", "read:tokens"))
                   for s in role["scopes"])
    assert "api_token" not in c.JupyterHub.services[-1]
    assert c.ShopfloorSpawner.environment[IDLE_MINUTES_ENV] is idle_minutes_env


def test_culler_off_adds_nothing() -> None:
    c = Config()
    c.ShopfloorSpawner.environment = {}
    install_idle_culler(c, site_with(idle={"enabled": False}))
    assert "services" not in c.JupyterHub and c.ShopfloorSpawner.environment == {}


def test_session_learns_its_partitions_idle_limit() -> None:
    site = site_with(idle={"idle_minutes": 120, "partition_minutes": {"gpu": 30}})

    class Request:
        partition = "gpu"

    class Spawner:
        ctx = type("Ctx", (), {"site": site})()
        request: Any = Request()

    assert idle_minutes_env(Spawner()) == "30"
    Spawner.request = None
    assert idle_minutes_env(Spawner()) == "120"


def test_idle_settings_name_the_bad_field() -> None:
    with pytest.raises(SiteConfigError, match=r"idle\.partition_minutes names nosuch"):
        site_with(idle={"partition_minutes": {"nosuch": 5}})
    with pytest.raises(SiteConfigError, match=r"idle\.partition_minutes"):
        site_with(idle={"partition_minutes": {"gpu": 0}})
    with pytest.raises(SiteConfigError, match=r"idle\.idle_minutes"):
        site_with(idle={"idle_minutes": 0})
    with pytest.raises(ValueError, match="PARTITION=MINUTES"):
        parse_partition_minutes(["gpu"])


def test_lab_reads_the_idle_limit_and_its_status_poll_is_not_activity(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from shopfloor.lab.config import ShopfloorLab
    from shopfloor.lab.handlers import KeepHandler, StatusHandler

    monkeypatch.setenv("SHOPFLOOR_IDLE_MINUTES", "30")
    monkeypatch.setenv("SHOPFLOOR_IDLE_WARN_MINUTES", "5")
    lab = ShopfloorLab()
    assert (lab.idle_minutes, lab.idle_warn_minutes) == (30, 5)
    monkeypatch.setenv("SHOPFLOOR_IDLE_MINUTES", "soon")
    assert ShopfloorLab().idle_minutes == 0  # garbage: no culling announced, no warning
    # The status bar polls every 30 s: that must not keep a forgotten session alive; the
    # "Keep session" button must.
    assert StatusHandler._track_activity is False
    assert KeepHandler._track_activity is True


# -- database ------------------------------------------------------------------------------


def test_sqlite_in_the_state_folder_by_default() -> None:
    site = site_with()
    assert site.hub.database_url == f"sqlite:///{site.hub.state_dir}/jupyterhub.sqlite"
    assert database.connect_url(site) == site.hub.database_url


def test_postgresql_url_never_holds_a_password() -> None:
    site = site_with(hub={"db_url": "postgresql://shopfloor@db:5432/jupyterhub"})
    assert site.hub.database_url == "postgresql://shopfloor@db:5432/jupyterhub"
    with pytest.raises(SiteConfigError, match=r"hub\.db_url: .*must not hold a password") as exc:
        site_with(hub={"db_url": "postgresql://shopfloor:hunter2@db/jupyterhub"})
    assert "hunter2" not in str(exc.value)
    with pytest.raises(SiteConfigError, match=r"hub\.db_url"):
        site_with(hub={"db_url": "mysql://db/jupyterhub"})


def test_password_file_must_be_private(tmp_path: Path) -> None:
    secret = tmp_path / "db-password"
    secret.write_text("hunter2\n")
    secret.chmod(0o644)
    site = site_with(hub={"db_url": "postgresql://shopfloor@db/jupyterhub",
                          "db_password_file": str(secret)})
    with pytest.raises(SiteConfigError, match=r"hub\.db_password_file: .* mode 0644") as exc:
        database.connect_url(site)
    assert "hunter2" not in str(exc.value)
    secret.chmod(0o600)
    assert database.connect_url(site) == "postgresql://shopfloor:hunter2@db/jupyterhub"
    # Characters that mean something in a URL are quoted.
    secret.write_text("p@ss:w/rd\n")
    assert database.connect_url(site) == "postgresql://shopfloor:p%40ss%3Aw%2Frd@db/jupyterhub"
    with pytest.raises(SiteConfigError, match=r"hub\.db_password_file: cannot read"):
        database.read_password_file(tmp_path / "missing")
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "empty").chmod(0o600)
    with pytest.raises(SiteConfigError, match="is empty"):
        database.read_password_file(tmp_path / "empty")


def test_shown_url_hides_a_password() -> None:
    assert database.shown_url("postgresql://u:pw@h:5/d") == "postgresql://u:***@h:5/d"
    assert database.shown_url("postgresql://u@h/d") == "postgresql://u@h/d"
