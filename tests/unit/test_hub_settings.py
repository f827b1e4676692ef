"""Hub settings come from the site file; batchspawner settings we would ignore are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from batchspawner import SlurmSpawner
from jupyterhub.spawner import Spawner
from traitlets.config import Config

from shopfloor.extensions.compat import IGNORED_SLURMSPAWNER_SETTINGS, IgnoredSettingError
from shopfloor.extensions.install import install, refuse_ignored_spawner_settings
from shopfloor.extensions.spawner import ShopfloorSpawner
from shopfloor.site import parse_site


def installed(tmp_path: Path, **hub: Any) -> Config:
    """The JupyterHub config ``install()`` writes for a site with these ``hub:`` settings."""
    site = parse_site({
        "partitions": {"cpu": {}},
        "hub": {"state_dir": str(tmp_path / "hub"), **hub},
    })
    c = Config()
    install(c, site)
    return c


# -- hub settings from the site file ----------------------------------------------------------


def test_site_file_hub_settings_reach_the_hub_config(tmp_path: Path) -> None:
    c = installed(tmp_path, http_timeout=45, named_server_limit_per_user=2,
                  server_poll_interval=30, default_url="/tree", start_timeout=900,
                  login_message="Log in with your HPC account.")
    assert c.JupyterHub.named_server_limit_per_user == 2
    assert c.ShopfloorSpawner.http_timeout == 45
    assert c.ShopfloorSpawner.poll_interval == 30
    assert c.ShopfloorSpawner.default_url == "/tree"
    assert c.ShopfloorSpawner.start_timeout == 900
    assert c.JupyterHub.template_vars["announcement_login"] == "Log in with your HPC account."


def test_defaults_are_the_values_hard_coded_before(tmp_path: Path) -> None:
    c = installed(tmp_path)
    assert c.JupyterHub.named_server_limit_per_user == 5
    assert c.ShopfloorSpawner.http_timeout == 120
    assert c.ShopfloorSpawner.poll_interval == 10  # twice slurm.poll_interval (5), at least 10
    assert c.ShopfloorSpawner.default_url == "/lab"
    assert c.ShopfloorSpawner.start_timeout == 600
    assert c.JupyterHub.template_vars["announcement_login"] == (
        "Shopfloor: log in with your cluster account.")


def test_server_poll_interval_follows_slurm_poll_interval_when_unset(tmp_path: Path) -> None:
    site = parse_site({"partitions": {"cpu": {}}, "slurm": {"poll_interval": 20},
                       "hub": {"state_dir": str(tmp_path / "hub")}})
    c = Config()
    install(c, site)
    assert c.ShopfloorSpawner.poll_interval == 40


def test_spawner_waits_for_its_server_for_http_timeout() -> None:
    assert ShopfloorSpawner(http_timeout=45).http_timeout == 45


# -- batchspawner settings ShopfloorSpawner does not use --------------------------------------


def test_every_slurmspawner_setting_is_honoured_or_refused() -> None:
    added = set(SlurmSpawner.class_trait_names(config=True)) - set(
        Spawner.class_trait_names(config=True))
    unlisted = sorted(added - set(IGNORED_SLURMSPAWNER_SETTINGS))
    assert not unlisted, (
        f"batchspawner now has settings {unlisted} that ShopfloorSpawner neither honours nor "
        "refuses: add each to IGNORED_SLURMSPAWNER_SETTINGS in extensions/compat.py (with "
        "what to use instead) or honour it in extensions/spawner.py")
    stale = sorted(set(IGNORED_SLURMSPAWNER_SETTINGS) - added)
    assert not stale, f"batchspawner no longer has {stale}: drop them from extensions/compat.py"


@pytest.mark.parametrize(
    "section,setting,replacement",
    [
        ("ShopfloorSpawner", "req_partition", "`partitions:` and `default_partition:`"),
        ("SlurmSpawner", "req_partition", "`partitions:` and `default_partition:`"),
        ("SlurmSpawner", "batch_script", "the site file's `partitions:`"),
        ("Spawner", "req_runtime", "`partitions.<name>.default_walltime` and `max_walltime`"),
        ("BatchSpawnerBase", "req_memory", "`max_memory_gb`"),
        ("SlurmSpawner", "startup_poll_interval", "`slurm.pending_poll_interval`"),
    ],
)
def test_spawner_refuses_ignored_setting(section: str, setting: str, replacement: str) -> None:
    config = Config({section: {setting: "x"}})
    with pytest.raises(IgnoredSettingError) as err:
        ShopfloorSpawner(config=config)
    message = str(err.value)
    assert f"c.{section}.{setting}: use " in message
    assert replacement in message
    assert "remove them from the JupyterHub config" in message


def test_spawner_refuses_ignored_keyword_argument() -> None:
    with pytest.raises(IgnoredSettingError, match=r"req_qos=\.\.\. .*`partitions.<name>.qos`"):
        ShopfloorSpawner(req_qos="high")


def test_spawner_names_every_ignored_setting_at_once() -> None:
    config = Config({"SlurmSpawner": {"req_partition": "gpu", "req_account": "phys"}})
    with pytest.raises(IgnoredSettingError) as err:
        ShopfloorSpawner(config=config)
    assert "c.SlurmSpawner.req_partition" in str(err.value)
    assert "c.SlurmSpawner.req_account: use `group_accounts`" in str(err.value)


def test_spawner_takes_its_own_and_jupyterhub_settings() -> None:
    config = Config({"ShopfloorSpawner": {"http_timeout": 60, "job_log_dir": "/x/{user}"},
                     "Spawner": {"start_timeout": 300}})
    spawner = ShopfloorSpawner(config=config)
    assert (spawner.http_timeout, spawner.start_timeout) == (60, 300)


def test_install_refuses_settings_written_before_it(tmp_path: Path) -> None:
    site = parse_site({"partitions": {"cpu": {}}, "hub": {"state_dir": str(tmp_path / "hub")}})
    c = Config()
    c.SlurmSpawner.batch_script = "#!/bin/bash\n..."
    with pytest.raises(IgnoredSettingError, match=r"c\.SlurmSpawner\.batch_script"):
        install(c, site)


def test_hub_start_check_uses_the_configured_spawner_class() -> None:
    config = Config({"SlurmSpawner": {"req_partition": "gpu"}})
    with pytest.raises(IgnoredSettingError):
        refuse_ignored_spawner_settings(config, ShopfloorSpawner)
    # An admin who chose another spawner is not ours to check.
    refuse_ignored_spawner_settings(config, SlurmSpawner)
