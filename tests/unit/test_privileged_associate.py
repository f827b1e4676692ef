"""``slurm-associate``: every association is checked after it is made and made again if Slurm
lost it (concurrent ``sacctmgr add user`` answers success and can keep nothing)."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import pytest

from shopfloor.ops import privileged


class Accounting:
    """sacctmgr as far as slurm_associate uses it; ``lose`` adds are answered but dropped."""

    def __init__(self, lose: int = 0, fail: int = 0) -> None:
        self.parents = {"workshops": "root"}
        self.kept: dict[str, str] = {}
        self.adds: list[list[str]] = []
        self.lose, self.fail = lose, fail

    def account_parent(self, account: str) -> str | None:
        return self.parents.get(account)

    def add_account(self, name: str, *, parent: str = "root", description: str = "") -> None:
        self.parents[name] = parent

    def add_user(self, user: str | Sequence[str], account: str, *,
                 default_account: bool = False) -> None:
        users = [user] if isinstance(user, str) else list(user)
        self.adds.append(users)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("sacctmgr exited with 1: No associations or wckeys created.")
        for name in users:
            if self.lose:
                self.lose -= 1
                continue
            self.kept[name] = account

    def associations(self, users: Sequence[str] = ()) -> list[SimpleNamespace]:
        return [SimpleNamespace(user=u, account=a) for u, a in self.kept.items()
                if not users or u in users]

    def user_defaults(self) -> dict[str, str]:
        return dict(self.kept)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Accounting:  # type: ignore[no-untyped-def]
    acc = Accounting()
    monkeypatch.setattr(privileged, "_account", lambda name, ours: name)
    monkeypatch.setattr(privileged, "_accounting", lambda conf: acc)
    monkeypatch.setattr(privileged, "ACCOUNTING_LOCK", str(tmp_path / "lock"))
    return acc


NAMES = ["ws-intro-1", "ws-intro-2", "ws-intro-3", "ws-intro-4"]


def test_one_call_for_the_group_when_slurm_keeps_it(fake: Accounting) -> None:
    privileged.slurm_associate(NAMES)
    assert fake.adds == [NAMES]
    assert fake.kept == dict.fromkeys(NAMES, "ws-intro")
    assert fake.parents["ws-intro"] == "workshops"


def test_lost_associations_are_made_again_one_by_one(fake: Accounting) -> None:
    fake.lose = 3
    privileged.slurm_associate(NAMES)
    assert fake.adds == [NAMES, ["ws-intro-1"], ["ws-intro-2"], ["ws-intro-3"]]
    assert sorted(fake.kept) == NAMES


def test_a_failed_add_is_checked_not_trusted(fake: Accounting) -> None:
    fake.fail = 1
    privileged.slurm_associate(NAMES)
    assert sorted(fake.kept) == NAMES and fake.adds == [NAMES, NAMES]


def test_gives_up_naming_who_is_missing(fake: Accounting) -> None:
    fake.lose = 100
    with pytest.raises(RuntimeError, match=r"ws-intro-1, ws-intro-2 .* after 3 tries"):
        privileged.slurm_associate(NAMES[:2])


def test_the_lock_file_is_never_opened_through_a_link(tmp_path) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "elsewhere"
    link = tmp_path / "lock"
    link.symlink_to(target)
    with pytest.raises(OSError), privileged._accounting_lock(str(link)):
        pass
    assert not target.exists()


@pytest.mark.parametrize("args", [[], ["ws-intro-1", "ws-intro-1"],
                                  [f"ws-intro-{n}" for n in range(1, 102)]])
def test_the_number_of_names_is_checked(args: list[str], monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(privileged.os, "geteuid", lambda: 0)
    monkeypatch.setattr(privileged.os, "umask", lambda mask: 0o022)  # main() sets 077
    assert privileged.main(["slurm-associate", *args]) == privileged.BAD_ARGUMENT
    assert "slurm-associate" in capsys.readouterr().err
