"""``shopfloor-privileged``'s Slurm accounting verbs against the real slurmdbd, and bad input.

A hub that runs as ``hub.service_user`` is no Slurm administrator, so the workshop service
associates participants through these verbs; they must change only workshop accounts
(``ws-<workshop>`` under ``workshops``) and participants (``ws-<workshop>-<n>``).
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from collections.abc import Iterator

import pytest

from shopfloor.slurm.accounting import AccountingSync
from shopfloor.slurm.seam import SlurmSync

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the helper runs only as root")

VERBS = ("slurm-associate", "slurm-dissociate")


def privileged(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shopfloor.ops.privileged", *args],
                          capture_output=True, text=True, check=False, timeout=60)


def accounting() -> AccountingSync:
    return AccountingSync(SlurmSync())


def _userdel(name: str) -> None:
    subprocess.run(["userdel", "--remove", name], capture_output=True, check=False)


@pytest.fixture
def participant() -> Iterator[str]:
    """A participant account the helper made, with no Slurm association yet."""
    name = "ws-sfacctest-1"
    _userdel(name)
    made = privileged("create-account", name)
    assert made.returncode == 0, made.stderr
    yield name
    acc = accounting()
    acc.remove_user(name)
    acc.remove_account("ws-sfacctest")
    _userdel(name)


@pytest.mark.parametrize("name", [
    "alice", "root", "shopfloor", "ws-abc-0", "ws-abc-1;id", "ws-abc-1,root", "ws-abc-1 ",
    "ws-abc-1\nroot", "account=root", "-i", "ws-ABC-1", "ws-abcdefghijklm-1",
])
@pytest.mark.parametrize("verb", VERBS)
def test_only_workshop_participants_are_accepted(verb: str, name: str) -> None:
    done = privileged(verb, name)
    assert done.returncode == 2, done
    assert "NAME" in done.stderr or "unrecognized arguments" in done.stderr


@pytest.mark.parametrize("account", [
    "root", "workshops", "ws-abc-1", "ws-abc,root", "ws-abc where", "name=root", "ws-",
])
def test_only_workshop_accounts_may_be_removed(account: str) -> None:
    done = privileged("slurm-remove-account", account)
    assert done.returncode == 2, done
    assert "ACCOUNT" in done.stderr
    assert accounting().account_parent("root") is not None


def test_an_account_the_helper_did_not_make_is_refused() -> None:
    name = "ws-sfacctest-7"
    _userdel(name)
    subprocess.run(["useradd", "--no-create-home", name], check=True)
    try:
        for verb in VERBS:
            done = privileged(verb, name)
            assert done.returncode == 2 and "was not made by" in done.stderr, done
    finally:
        _userdel(name)


def test_associate_needs_an_existing_account() -> None:
    done = privileged("slurm-associate", "ws-sfacctest-9")
    assert done.returncode == 2 and "no such account" in done.stderr, done


def test_a_look_alike_account_outside_workshops_is_left_alone(participant: str) -> None:
    acc = accounting()
    acc.add_account("ws-sfacctest", parent="root")  # an admin's account, not a workshop's
    for args in (("slurm-associate", participant), ("slurm-remove-account", "ws-sfacctest")):
        done = privileged(*args)
        assert done.returncode == 2 and "not under 'workshops'" in done.stderr, done
    assert acc.account_parent("ws-sfacctest") == "root"
    assert not [a for a in acc.associations([participant]) if a.user == participant]


def test_associate_dissociate_remove_round_trip(participant: str) -> None:
    acc = accounting()
    for _ in range(2):  # idempotent: a retried join step must not fail
        done = privileged("slurm-associate", participant)
        assert done.returncode == 0, done.stderr
    assert acc.account_parent("ws-sfacctest") == "workshops"
    mine = [a for a in acc.associations([participant]) if a.user == participant]
    assert [a.account for a in mine] == ["ws-sfacctest"]
    assert acc.user_defaults()[participant] == "ws-sfacctest"
    assert privileged("slurm-dissociate", participant).returncode == 0
    assert not [a for a in acc.associations([participant]) if a.user == participant]
    assert privileged("slurm-remove-account", "ws-sfacctest").returncode == 0
    assert acc.account_parent("ws-sfacctest") is None
    # Gone already: nothing to do, not a failure (the end of a workshop may be retried).
    assert privileged("slurm-remove-account", "ws-sfacctest").returncode == 0
    pwd.getpwnam(participant)


@pytest.fixture
def class_of_eight() -> Iterator[list[str]]:
    """Eight participant accounts the helper made (workshop ``sfacclass``), removed after."""
    names = [f"ws-sfacclass-{n}" for n in range(1, 9)]
    for name in names:
        _userdel(name)
        made = privileged("create-account", name)
        assert made.returncode == 0, made.stderr
    yield names
    acc = accounting()
    for name in names:
        acc.remove_user(name)
    acc.remove_account("ws-sfacclass")
    for name in names:
        _userdel(name)


def _kept(names: list[str]) -> list[str]:
    acc = accounting()
    associated = {a.user for a in acc.associations(names) if a.account == "ws-sfacclass"}
    defaults = acc.user_defaults()
    return sorted(n for n in names if n in associated and defaults.get(n) == "ws-sfacclass")


def test_associations_made_at_the_same_moment_are_all_kept(class_of_eight: list[str]) -> None:
    """Slurm 22.05 answers success for concurrent ``sacctmgr add user`` and drops most of
    them (6 of 8 here): the helper checks and adds again, so none is lost."""
    first = privileged("slurm-associate", class_of_eight[0])  # makes the workshop's account
    assert first.returncode == 0, first.stderr
    rest = class_of_eight[1:]
    procs = [subprocess.Popen([sys.executable, "-m", "shopfloor.ops.privileged",
                               "slurm-associate", name], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for name in rest]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert _kept(class_of_eight) == sorted(class_of_eight)


def test_one_call_associates_several_participants(class_of_eight: list[str]) -> None:
    done = privileged("slurm-associate", *class_of_eight[:5])
    assert done.returncode == 0, done.stderr
    assert _kept(class_of_eight) == sorted(class_of_eight[:5])
    for bad in ([class_of_eight[5], "alice"], [class_of_eight[5], class_of_eight[5]]):
        refused = privileged("slurm-associate", *bad)
        assert refused.returncode == 2, refused
    assert _kept(class_of_eight) == sorted(class_of_eight[:5])  # nothing half-done
