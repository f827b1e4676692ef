"""``slurm.conf_file``: a site whose slurm.conf is not where Slurm's tools look by default.

The setting is validated (an absolute path, one line), becomes ``SLURM_CONF`` for every Slurm
command of the hub (the seam's environment), and the sudoers rule keeps it through sudo for
sbatch/scancel only, never for the root helper. The real cluster behind such a file is tested in
tests/integration/test_site_deploy.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shopfloor.ops.doctor import (
    SUDO_ENV,
    Doctor,
    DoctorOptions,
    Status,
    parse_sudo_list,
    sudo_problems,
)
from shopfloor.ops.serviceuser import render_sudoers
from shopfloor.site import SiteConfig, SiteConfigError, load_site


def _site(tmp_path: Path, conf: str) -> SiteConfig:
    path = tmp_path / "site.yaml"
    path.write_text(f"slurm:\n  conf_file: {json.dumps(conf)}\n"
                    "partitions:\n  batch:\n    max_walltime: '1:00:00'\n")
    return load_site(path)


def test_conf_file_becomes_slurm_conf_for_the_hubs_slurm_commands(tmp_path: Path) -> None:
    site = _site(tmp_path, "/etc/slurm-prod/slurm.conf")
    assert site.slurm.environment() == {"SLURM_CONF": "/etc/slurm-prod/slurm.conf"}
    assert _site(tmp_path, "").slurm.environment() == {}


@pytest.mark.parametrize("bad", ["slurm.conf", "etc/slurm.conf", "/etc/slurm.conf\nX=1"])
def test_conf_file_must_be_one_absolute_path(tmp_path: Path, bad: str) -> None:
    with pytest.raises(SiteConfigError, match=r"slurm\.conf_file.*absolute path"):
        _site(tmp_path, bad)


def test_sudoers_keeps_slurm_conf_for_sbatch_and_scancel_only() -> None:
    rule = render_sudoers("sfsite", venv_bin="/opt/sf/venv/bin")
    keeps = re.findall(r"^Defaults!(\S+) env_keep \+= \"([^\"]*)\"$", rule, re.M)
    # One env_keep, on the Slurm alias; the privileged (root) alias keeps nothing.
    assert [(alias.split("_")[1], set(kept.split())) for alias, kept in keeps] == [
        ("SLURM", {*SUDO_ENV, "SLURM_CONF"})]
    slurm_alias = keeps[0][0]
    assert re.search(rf"^Cmnd_Alias {slurm_alias} = \S*sbatch, \S*scancel$", rule, re.M)


_LISTING = """\
Matching Defaults entries for sfsite on vm:
    env_reset, secure_path=/usr/sbin\\:/usr/bin, !requiretty, env_keep+="{keep}"

User sfsite may run the following commands on vm:
    (ALL, !root) NOPASSWD: /usr/bin/sbatch, /usr/bin/scancel,
        /opt/shopfloor/venv/bin/shopfloor-as-user
    (root) NOPASSWD: /opt/shopfloor/venv/bin/shopfloor-privileged
"""
_NEEDED = {"/usr/bin/sbatch", "/usr/bin/scancel", "/opt/shopfloor/venv/bin/shopfloor-as-user"}
_ROOT = {"/opt/shopfloor/venv/bin/shopfloor-privileged"}


def test_doctor_accepts_slurm_conf_but_no_other_variable_in_the_rule() -> None:
    kept = " ".join((*SUDO_ENV, "SLURM_CONF"))
    assert sudo_problems(parse_sudo_list(_LISTING.format(keep=kept)), _NEEDED, _ROOT) == []
    problems = sudo_problems(parse_sudo_list(_LISTING.format(keep=kept + " SLURM_CONF_X")),
                             _NEEDED, _ROOT)
    assert any("SLURM_CONF_X" in p for p in problems), problems


def test_doctor_names_a_conf_file_that_is_missing(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "slurm.conf"
    doctor = Doctor(_site(tmp_path, str(missing)), DoctorOptions(site_path="site.yaml"))
    [check] = doctor.check_slurm()
    assert check.status is Status.FAIL
    assert str(missing) in check.summary and "slurm.conf_file" in check.fix


def test_doctor_runs_slurm_with_the_sites_conf_file(tmp_path: Path) -> None:
    doctor = Doctor(_site(tmp_path, "/etc/slurm-prod/slurm.conf"))
    assert doctor.slurm.env == {"SLURM_CONF": "/etc/slurm-prod/slurm.conf"}


def test_doctor_fails_a_rule_that_drops_slurm_conf_when_the_site_sets_conf_file() -> None:
    # An older rule: sbatch as the user would silently reach the default cluster instead.
    old = parse_sudo_list(_LISTING.format(keep=" ".join(SUDO_ENV)))
    assert sudo_problems(old, _NEEDED, _ROOT) == []
    problems = sudo_problems(old, _NEEDED, _ROOT, keep=("SLURM_CONF",))
    assert problems == ["does not keep SLURM_CONF (slurm.conf_file) for sbatch"]


def test_doctor_names_a_conf_file_users_cannot_read(tmp_path: Path) -> None:
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=x\n")
    conf.chmod(0o600)
    [check] = Doctor(_site(tmp_path, str(conf))).check_slurm()
    assert check.status is Status.FAIL and "not readable" in check.summary
    assert check.fix == f"chmod 644 {conf}"


def test_doctor_warns_when_the_root_helper_would_refuse_the_conf_file(tmp_path: Path) -> None:
    # Readable and answering, but in a folder others may write (pytest's tmp under /tmp):
    # sessions work, workshop reservations (shopfloor-privileged --slurm-conf) are refused.
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=x\n")
    conf.chmod(0o644)
    doctor = Doctor(_site(tmp_path, str(conf)))
    doctor._slurm = lambda args, user=None: (  # type: ignore[method-assign]
        "slurm 22.05.8" if "--version" in args else "Slurmctld(primary) at h is UP")
    [check] = doctor.check_slurm()
    assert check.status is Status.WARN and "workshops cannot use" in check.summary
    assert check.fix.startswith(f"chown root:root {conf}")
    assert check.detail.startswith(f"--slurm-conf {str(conf)!r}: ")


def test_doctor_is_content_with_a_root_owned_conf_file(tmp_path: Path) -> None:
    doctor = Doctor(_site(tmp_path, "/etc/hostname"))  # root-owned, 0644, in /etc
    doctor._slurm = lambda args, user=None: (  # type: ignore[method-assign]
        "slurm 22.05.8" if "--version" in args else "Slurmctld(primary) at h is UP")
    [check] = doctor.check_slurm()
    assert check.status is Status.OK, check
