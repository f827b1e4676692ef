"""``shopfloor doctor``: each check's failure message and fix, with the two seams replaced.

The Slurm seam (``run_sync``) and the command runner are fakes here; the real cluster is
checked in tests/integration/test_ops_doctor.py.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from shopfloor.ops import unit_dir
from shopfloor.ops.doctor import (
    SUDO_ENV,
    Completed,
    Doctor,
    DoctorOptions,
    Status,
    format_text,
    parse_sudo_list,
    sudo_problems,
    sudoers_rule,
)
from shopfloor.site import parse_site
from shopfloor.slurm.seam import SlurmError

PARTITIONS = (
    "PartitionName=cpu MaxNodes=UNLIMITED MaxTime=08:00:00 MaxCPUsPerNode=UNLIMITED "
    "Nodes=node[1-2] State=UP TotalCPUs=8 TotalNodes=2 MaxMemPerNode=UNLIMITED\n"
    "PartitionName=gpu MaxNodes=UNLIMITED MaxTime=04:00:00 MaxCPUsPerNode=UNLIMITED "
    "Nodes=gpu1 State=UP TotalCPUs=4 TotalNodes=1 MaxMemPerNode=UNLIMITED\n"
)
NODES = (
    "NodeName=node1 CPUTot=4 Gres=(null) NodeAddr=127.0.2.1 RealMemory=4000 Partitions=cpu\n"
    "NodeName=node2 CPUTot=4 Gres=(null) NodeAddr=127.0.2.2 RealMemory=4000 Partitions=cpu\n"
    "NodeName=gpu1 CPUTot=4 Gres=gpu:2 NodeAddr=127.0.3.1 RealMemory=4000 Partitions=gpu\n"
)
#: What sudo 1.9.13 printed here for the shipped rule (wrapped as sudo wraps it).
SUDO_GOOD = """\
Matching Defaults entries for shopfloor on vm:
    env_reset, mail_badpass,
    secure_path=/usr/local/sbin\\:/usr/local/bin\\:/usr/sbin\\:/usr/bin\\:/sbin\\:/bin,
    use_pty, !requiretty

Runas and Command-specific defaults for shopfloor:
    Defaults!/usr/bin/sbatch, /usr/bin/scancel env_keep+="JUPYTERHUB_API_TOKEN
    JPY_API_TOKEN SHOPFLOOR_APP_SECRET"

User shopfloor may run the following commands on vm:
    (ALL, !root) NOPASSWD: /usr/bin/sbatch, /usr/bin/scancel,
        /opt/shopfloor/venv/bin/shopfloor-as-user
    (root) NOPASSWD: /opt/shopfloor/venv/bin/shopfloor-privileged
"""
AS_USER = "/opt/shopfloor/venv/bin/shopfloor-as-user"
PRIVILEGED = {"/opt/shopfloor/venv/bin/shopfloor-privileged"}
NEEDED = {"/usr/bin/sbatch", "/usr/bin/scancel", AS_USER}


class FakeSlurm:
    """The Slurm seam, answering from canned text keyed by the command's first words."""

    def __init__(self, answers: dict[tuple[str, ...], str | SlurmError]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def run_sync(self, args: list[str], *, user: str | None = None) -> str:
        self.calls.append(args)
        for size in (4, 3, 2, 1):
            answer = self.answers.get(tuple(args[:size]))
            if answer is not None:
                if isinstance(answer, SlurmError):
                    raise answer
                return answer
        raise SlurmError(args, 1, "", f"{args[0]}: error: not faked")


class FakeCommands:
    """The command runner, answering by the command's first word."""

    def __init__(self, answers: dict[str, Completed]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], *, timeout: float,
                 stdin: str | None = None) -> Completed:
        self.calls.append(list(argv))
        key = "sudo -l" if argv[:3] == ["sudo", "-n", "-l"] else argv[0]
        return self.answers.get(key, Completed(0, "ok\n"))


def site(**changes: object) -> object:
    data: dict[str, object] = {
        "hub": {"python": sys.executable, "state_dir": "/nonexistent/state",
                "hub_bind_url": "http://127.0.0.1:8081"},
        "partitions": {
            "cpu": {"max_cpus": 4, "max_memory_gb": 3.5, "max_walltime": "8:00:00"},
            "gpu": {"max_gpus": 2, "max_walltime": "4:00:00"},
        },
    }
    data.update(changes)
    return parse_site(data)


def doctor(site_obj: object = None, slurm: FakeSlurm | None = None,
           commands: FakeCommands | None = None, **options: object) -> Doctor:
    slurm = slurm or FakeSlurm({
        ("sinfo", "--version"): "slurm-wlm 22.05.8\n",
        ("scontrol", "ping"): "Slurmctld(primary) at vm is UP\n",
        ("scontrol", "-o", "show", "partition"): PARTITIONS,
        ("scontrol", "-o", "show", "node"): NODES,
    })
    return Doctor(site_obj or site(), DoctorOptions(site_path="site.yaml", **options),
                  slurm=slurm, commands=commands or FakeCommands({}))  # type: ignore[arg-type]


def by_name(checks: list) -> dict:
    return {c.name: c for c in checks}


# -- slurm and munge -------------------------------------------------------------------------


def test_slurm_client_missing_says_install_it() -> None:
    slurm = FakeSlurm({("sinfo", "--version"): SlurmError(["sinfo"], 127, "",
                                                           "sinfo not found")})
    [check] = doctor(slurm=slurm).check_slurm()
    assert check.status is Status.FAIL
    assert "Slurm client does not run" in check.summary
    assert "apt-get install slurm-client" in check.fix
    assert "sinfo not found" in check.detail


def test_slurmctld_not_answering_names_scontrol_ping() -> None:
    slurm = FakeSlurm({
        ("sinfo", "--version"): "slurm-wlm 22.05.8\n",
        ("scontrol", "ping"): SlurmError(["scontrol", "ping"], 1, "",
                                         "Unable to contact slurm controller"),
    })
    [check] = doctor(slurm=slurm).check_slurm()
    assert check.status is Status.FAIL
    assert "slurmctld does not answer" in check.summary
    assert "SlurmctldHost" in check.fix


def test_munge_failure_names_the_key() -> None:
    commands = FakeCommands({"munge": Completed(1, "", "munge: Error: Failed to access "
                                                "\"/run/munge/munge.socket.2\"")})
    [check] = doctor(commands=commands).check_munge()
    assert check.status is Status.FAIL
    assert "munge.key" in check.fix and "systemctl start munge" in check.fix
    assert "munge.socket" in check.detail


# -- partitions ------------------------------------------------------------------------------


def test_partitions_that_fit_are_ok() -> None:
    checks = by_name(doctor().check_partitions())
    assert checks["partition:cpu"].status is Status.OK
    assert checks["partition:gpu"].status is Status.OK


def test_missing_partition_lists_what_slurm_has() -> None:
    s = site(partitions={"bigmem": {"max_walltime": "1:00:00"}})
    [check] = doctor(s).check_partitions()
    assert check.status is Status.FAIL
    assert check.summary == ("partition 'bigmem' is in the site file but not in Slurm "
                             "(Slurm has: cpu, gpu)")
    assert "remove partitions.bigmem from site.yaml" in check.fix


def test_walltime_beyond_slurms_maxtime_is_named_with_the_value_to_write() -> None:
    s = site(partitions={"cpu": {"max_walltime": "12:00:00"}})
    [check] = doctor(s).check_partitions()
    assert check.status is Status.FAIL
    assert "partitions.cpu.max_walltime is 12:00:00 but Slurm's MaxTime for cpu is 08:00:00" \
        in check.summary
    assert check.fix.startswith("set partitions.cpu.max_walltime: '08:00:00' in site.yaml")


def test_cpus_memory_gpus_nodes_beyond_the_nodes_are_each_named() -> None:
    s = site(partitions={"gpu": {"max_cpus": 8, "max_memory_gb": 16, "max_gpus": 4,
                                 "max_nodes": 3, "max_walltime": "1:00:00"}})
    [check] = doctor(s).check_partitions()
    assert check.status is Status.FAIL
    for words in ("max_cpus is 8 but its largest node has 4 CPUs",
                  "max_memory_gb is 16 but its largest node has 4000 MiB",
                  "max_gpus is 4 but its nodes have 2 GPUs",
                  "max_nodes is 3 but Slurm allows 1"):
        assert words in check.summary


def test_a_tighter_site_limit_is_fine() -> None:
    s = site(partitions={"cpu": {"max_walltime": "1:00:00", "max_cpus": 1}})
    [check] = doctor(s).check_partitions()
    assert check.status is Status.OK


def test_down_partition_is_a_warning_with_the_command() -> None:
    slurm = FakeSlurm({("scontrol", "-o", "show", "partition"):
                       PARTITIONS.replace("State=UP", "State=DOWN"),
                       ("scontrol", "-o", "show", "node"): NODES})
    checks = by_name(doctor(slurm=slurm).check_partitions())
    assert checks["partition:cpu"].status is Status.WARN
    assert "scontrol update PartitionName=cpu State=UP" in checks["partition:cpu"].fix


# -- python ----------------------------------------------------------------------------------


def test_missing_python_names_the_setting() -> None:
    s = site(hub={"python": "/nonexistent/bin/python"})
    [check] = doctor(s).check_python()
    assert check.status is Status.FAIL
    assert "hub.python /nonexistent/bin/python does not exist" in check.summary


def test_python_that_the_probe_user_cannot_run_fails() -> None:
    open_dir = Path(tempfile.mkdtemp(prefix="shopfloor-doctor-"))  # in /tmp, o+x above it
    try:
        open_dir.chmod(0o755)
        private = open_dir / "private"
        (private / "bin").mkdir(parents=True)
        python = private / "bin" / "python"
        python.symlink_to(sys.executable)
        private.chmod(0o700)
        commands = FakeCommands({"sudo": Completed(126, "", "sudo: unable to execute "
                                                   f"{python}: Permission denied")})
        [check] = doctor(site(hub={"python": str(python)}), commands=commands).check_python()
    finally:
        shutil.rmtree(open_dir)
    assert check.status is Status.FAIL
    assert "nobody cannot run" in check.summary
    assert check.fix.startswith(f"chmod o+rx {private}")
    assert commands.calls[0][:5] == ["sudo", "-n", "-u", "nobody", "--"]


def test_python_probe_ok_reports_the_prefix() -> None:
    commands = FakeCommands({"sudo": Completed(0, "/opt/shopfloor/venv\n")})
    [check] = doctor(commands=commands).check_python()
    assert check.status is Status.OK
    assert "sys.prefix /opt/shopfloor/venv" in check.summary


# -- connect ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connect_failure_from_the_node_names_the_url() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    failed = "srun: error: node1: task 0: Exited with exit code 3"
    slurm = FakeSlurm({("srun",): SlurmError(["srun"], 3, "connect-failed\n", failed)})
    [check] = doctor(site(hub={"hub_bind_url": url, "python": sys.executable}),
                     slurm=slurm).check_connect()
    assert check.status is Status.FAIL
    assert check.summary == f"a job on 'cpu' cannot reach hub.hub_bind_url {url}"
    assert f"open TCP {port}" in check.fix
    srun = slurm.calls[0]
    assert "--partition=cpu" in srun and "--time=1" in srun and "--immediate=60" in srun


def test_connect_ok_while_the_doctor_stands_in_for_the_hub() -> None:
    port = free_port()
    slurm = FakeSlurm({("srun",): "connected from node2\n"})
    [check] = doctor(site(hub={"hub_bind_url": f"http://127.0.0.1:{port}",
                               "python": sys.executable}), slurm=slurm).check_connect()
    assert check.status is Status.OK
    assert "a job on node2 (cpu) reached" in check.summary
    assert "stand-in listener" in check.summary


def test_no_free_node_is_a_warning_not_a_failure() -> None:
    slurm = FakeSlurm({("srun",): SlurmError(["srun"], 1, "", "srun: error: Unable to allocate "
                                             "resources: Requested nodes are busy")})
    [check] = doctor(site(hub={"hub_bind_url": f"http://127.0.0.1:{free_port()}",
                               "python": sys.executable}), slurm=slurm).check_connect()
    assert check.status is Status.WARN
    assert "--probe-timeout" in check.fix


# -- sudo ------------------------------------------------------------------------------------


def test_shipped_rule_passes_the_sudo_check() -> None:
    rules = parse_sudo_list(SUDO_GOOD)
    assert rules.entries[0].commands == ("/usr/bin/sbatch", "/usr/bin/scancel", AS_USER)
    assert rules.entries[1].runas == "root"
    assert sudo_problems(rules, NEEDED, PRIVILEGED) == []


def test_shipped_sudoers_file_is_the_rule_the_doctor_checks_for() -> None:
    shipped = (unit_dir() / "shopfloor.sudoers").read_text()
    assert sudoers_rule("shopfloor", ["/usr/bin/sbatch", "/usr/bin/scancel"]) in shipped


@pytest.mark.parametrize(("listing", "problem"), [
    (SUDO_GOOD.replace("/usr/bin/sbatch, /usr/bin/scancel,\n", "ALL,\n"),
     "allows a shell or any command (ALL)"),
    (SUDO_GOOD.replace("(ALL, !root)", "(ALL : ALL)"), "may run them as root"),
    (SUDO_GOOD.replace(", /usr/bin/scancel,\n", ", /usr/bin/scancel, /bin/bash,\n"),
     "allows a shell or any command (/bin/bash)"),
    (SUDO_GOOD.replace(", /usr/bin/scancel,\n", ",\n"), "missing /usr/bin/scancel"),
    (SUDO_GOOD.replace("    (root) NOPASSWD: /opt/shopfloor/venv/bin/shopfloor-privileged\n", ""),
     "missing /opt/shopfloor/venv/bin/shopfloor-privileged"),
    # The privileged helper as any user, or with fixed arguments nobody checked, or the
    # as-user helper as root: each is named.
    (SUDO_GOOD.replace("(root) NOPASSWD", "(ALL) NOPASSWD"), "as any user"),
    (SUDO_GOOD.replace("venv/bin/shopfloor-privileged\n", "venv/bin/shopfloor-privileged "
                       "create-account\n"), "allows more than needed"),
    (SUDO_GOOD.replace("(root) NOPASSWD: /opt/shopfloor/venv/bin/shopfloor-privileged",
                       "(root) NOPASSWD: /opt/shopfloor/venv/bin/shopfloor-privileged, "
                       "/opt/shopfloor/venv/bin/shopfloor-as-user"), "may run them as root"),
    (SUDO_GOOD.replace("venv/bin/shopfloor-as-user\n", "venv/bin/python\n"),
     "allows a shell or any command (/opt/shopfloor/venv/bin/python)"),
    (SUDO_GOOD.replace("NOPASSWD:", "NOPASSWD: SETENV:"), "SETENV lets the hub pass"),
    (SUDO_GOOD.replace("JPY_API_TOKEN SHOPFLOOR", "JPY_API_TOKEN LD_PRELOAD SHOPFLOOR"),
     "keeps variables beyond the named secrets (LD_PRELOAD)"),
    (SUDO_GOOD.replace("use_pty,", "use_pty, !env_reset,"), "!env_reset passes"),
])
def test_too_broad_sudo_rules_are_named(listing: str, problem: str) -> None:
    problems = sudo_problems(parse_sudo_list(listing), NEEDED, PRIVILEGED)
    assert any(problem in p for p in problems), problems


def test_sudo_check_fails_for_a_user_without_rules_and_says_which_file() -> None:
    commands = FakeCommands({"sudo -l": Completed(0, "User root is not allowed to run sudo "
                                                  "on vm.\n")})
    [check] = doctor(commands=commands, service_user="root").check_sudo()
    assert check.status is Status.FAIL
    assert "missing" in check.summary and "sbatch" in check.summary
    assert "/etc/sudoers.d/shopfloor" in check.fix


def test_sudo_check_names_a_missing_service_user() -> None:
    [check] = doctor(service_user="no-such-user-xyz").check_sudo()
    assert check.status is Status.FAIL
    assert "useradd --system" in check.fix


def test_sudo_env_covers_every_secret_the_hub_passes() -> None:
    from shopfloor.apps.jobstart import SECRET_ENV as APP_SECRET
    from shopfloor.extensions.spawner import SECRET_ENV

    assert {*SECRET_ENV, APP_SECRET} == set(SUDO_ENV)


# -- database --------------------------------------------------------------------------------


def test_world_readable_sqlite_fails_with_chmod(tmp_path: Path) -> None:
    db = tmp_path / "jupyterhub.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("create table t(x)")
    db.chmod(0o644)
    [check] = doctor(db_url=f"sqlite:///{db}").check_database()
    assert check.status is Status.FAIL
    assert "mode 0644: other users can read" in check.summary
    assert check.fix == f"chmod 600 {db}; chmod 700 {tmp_path}"
    db.chmod(0o600)
    [check] = doctor(db_url=f"sqlite:///{db}").check_database()
    assert check.status is Status.OK


def test_postgresql_without_a_driver_says_what_to_install() -> None:
    pytest.importorskip("sqlalchemy")
    # psycopg (the postgresql extra) is installed with the test tier; pg8000 never is.
    assert importlib.util.find_spec("pg8000") is None
    [check] = doctor(
        db_url="postgresql+pg8000://shopfloor:pw@db.example/jupyterhub").check_database()
    assert check.status is Status.FAIL
    assert "no database driver for postgresql+pg8000" in check.summary
    assert "shopfloor[postgresql]" in check.fix
    assert "pw" not in check.summary + check.fix


# -- ports and the report ---------------------------------------------------------------------


def test_port_taken_by_another_program_names_it_and_the_setting() -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        s = site(hub={"bind_url": f"http://127.0.0.1:{port}", "python": sys.executable,
                      "hub_bind_url": f"http://127.0.0.1:{free_port()}"})
        checks = by_name(doctor(s).check_ports())
    check = checks["port:hub.bind_url"]
    assert check.status is Status.FAIL
    assert f"127.0.0.1:{port} (hub.bind_url) is taken by pid" in check.summary
    assert "choose another port for hub.bind_url in site.yaml" in check.fix


def test_report_and_exit_status() -> None:
    d = doctor(commands=FakeCommands({"munge": Completed(1, "", "no socket")}),
               skip=frozenset({"python", "connect", "ports", "database", "sudo"}))
    checks = d.run()
    text = format_text(checks)
    assert "fail  munge" in text and "fix: start munged" in text
    assert text.splitlines()[-1].startswith("1 failed")


def test_doctor_needs_no_browser_and_no_jupyterhub() -> None:
    code = ("import sys, shopfloor.ops.doctor; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('playwright', 'jupyterhub', 'batchspawner', 'selenium')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
