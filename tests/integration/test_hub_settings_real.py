"""A real JupyterHub refuses, at start, batchspawner settings Shopfloor would ignore."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support import TEST_PORTS

pytestmark = [pytest.mark.hub, pytest.mark.slow]


def _start_hub(tmp_path: Path, extra_config: str) -> subprocess.CompletedProcess[str]:
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({
        "partitions": {"cpu": {}},
        "hub": {**{key: f"http://127.0.0.1:{port}" for key, port in TEST_PORTS.items()},
                "state_dir": str(tmp_path / "hub")},
    }))
    config = tmp_path / "jupyterhub_config.py"
    # As an admin would write it: the one install() call, then their own lines.
    config.write_text(
        "from shopfloor.extensions.install import install\n"
        "c = get_config()  # noqa: F821\n"
        f"install(c, {str(site)!r})\n"
        f"{extra_config}\n"
    )
    jupyterhub = Path(sys.executable).with_name("jupyterhub")
    return subprocess.run([str(jupyterhub), "-f", str(config)], cwd=tmp_path, text=True,
                          capture_output=True, timeout=120)


def test_hub_start_refuses_a_slurmspawner_setting_set_after_install(tmp_path: Path) -> None:
    result = _start_hub(tmp_path, 'c.SlurmSpawner.req_partition = "gpu"')
    assert result.returncode == 1, result.stderr[-2000:]
    assert "c.SlurmSpawner.req_partition: use `partitions:` and `default_partition:` in the " \
           "site file" in result.stderr
    # Refused before the hub served anything.
    assert "JupyterHub is now running" not in result.stderr
