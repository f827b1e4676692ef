"""Plain objects for accounts and budgets, built from what Slurm says (no I/O here).

* :class:`UserAccounts`: the accounts one user may charge (their associations), the default
  one and the QOS allowed on each;
* :class:`Budget`: one account's allocation (``GrpTRESMins``), what its jobs used and what
  running jobs still hold, per TRES (``cpu``, ``gres/gpu``), in minutes. Slurm also enforces
  the ``GrpTRESMins`` of every ancestor account (a faculty above its projects, ``workshops``
  above ``ws-*``), counting all jobs below it: per TRES, the budget is the tightest of the
  account's own and its ancestors', and says which one binds and who shares it;
* :class:`AccountsSnapshot`: both for every user and account, as the hub caches them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from shopfloor.slurm.accounting import BUDGET_TRES, TRES_LABELS, Association, ShareRow


@dataclass(frozen=True)
class UserAccounts:
    """What one user may charge: ``accounts`` (sorted), ``default`` and QOS per account."""

    user: str
    accounts: tuple[str, ...]
    default: str | None
    qos: Mapping[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class TresBudget:
    """One TRES of a budget, in minutes; ``granted`` None means no limit.

    ``account`` is whose ``GrpTRESMins`` this is: the budget's own account, or an ancestor
    whose limit binds first; ``shared_by`` then lists the accounts below that ancestor (whose
    jobs all count against it).
    """

    tres: str
    granted: int | None
    used: int
    running: int = 0
    account: str = ""
    shared_by: tuple[str, ...] = ()

    @property
    def remaining(self) -> int | None:
        """What is left for new jobs (running jobs' remaining time is already promised)."""
        if self.granted is None:
            return None
        return max(0, self.granted - self.used - self.running)

    @property
    def label(self) -> str:
        return TRES_LABELS.get(self.tres, f"{self.tres}-minutes")

    def source(self, account: str) -> str:
        """Whose budget this is, seen from ``account``: "" for its own, else e.g.
        "the workshops budget, shared by ws-a, ws-b and 3 more"."""
        if not self.account or self.account == account:
            return ""
        others = list(self.shared_by)
        shown = ", ".join(others[:_SHOWN_SHARERS])
        if len(others) > _SHOWN_SHARERS:
            shown += f" and {len(others) - _SHOWN_SHARERS} more"
        return f"the {self.account} budget" + (f", shared by {shown}" if shown else "")


@dataclass(frozen=True)
class Budget:
    """An account's budget per TRES (only the TRES of :data:`BUDGET_TRES`)."""

    account: str
    items: Mapping[str, TresBudget]

    @property
    def limited(self) -> bool:
        return any(item.granted is not None for item in self.items.values())

    def shortfall(self, needs: Mapping[str, int]) -> str | None:
        """Why a job needing ``needs`` minutes cannot fit, in the user's words; None if it fits."""
        for tres, minutes in needs.items():
            item = self.items.get(tres)
            if item is None or item.remaining is None or minutes <= 0:
                continue
            if minutes > item.remaining:
                whose = (f"{item.source(self.account)}," if item.source(self.account)
                         else f"the {self.account} budget")
                return (
                    f"{whose} has {item.remaining:,} {item.label} left "
                    f"(of {item.granted:,}); this request needs {minutes:,}. Ask for fewer "
                    "CPUs/GPUs or a shorter walltime, or choose another account"
                )
        return None

    def warnings(self, warn_percent: float) -> list[str]:
        """One line per TRES with less than ``warn_percent`` % of its grant left."""
        out = []
        for item in self.items.values():
            if item.granted and item.remaining is not None \
                    and item.remaining < item.granted * warn_percent / 100:
                source = item.source(self.account)
                out.append(f"{self.account}: only {item.remaining:,} of {item.granted:,} "
                           f"{item.label} left" + (f" in {source}" if source else ""))
        return out

    def as_json(self, warn_percent: float) -> dict[str, Any]:
        """The budget for pages and panels: ``used / granted`` per TRES and warnings."""
        return {
            "account": self.account,
            "items": [{
                "tres": item.tres, "label": item.label, "granted": item.granted,
                "used": item.used, "running": item.running, "remaining": item.remaining,
                # Whose limit binds (the account or an ancestor); for an ancestor, in words.
                "limited_by": item.account or self.account, "source": item.source(self.account),
                "percent_used": (min(100.0, round(100 * (item.used + item.running)
                                                  / item.granted, 1))
                                 if item.granted else (100.0 if item.granted == 0 else None)),
            } for item in self.items.values() if item.granted is not None],
            "warnings": self.warnings(warn_percent),
        }


def request_minutes(nodes: int, cpus: int, gpus: int, walltime_minutes: int) -> dict[str, int]:
    """TRES-minutes a job may use at most: what Slurm holds against the budget (``safe``)."""
    return {"cpu": nodes * cpus * walltime_minutes, "gres/gpu": nodes * gpus * walltime_minutes}


@dataclass(frozen=True)
class AccountsSnapshot:
    """Every user's accounts and every account's budget, as read at one moment."""

    users: Mapping[str, UserAccounts] = field(default_factory=dict)
    budgets: Mapping[str, Budget] = field(default_factory=dict)
    usage: tuple[ShareRow, ...] = ()

    def for_user(self, name: str) -> UserAccounts | None:
        return self.users.get(name)

    def budgets_of(self, name: str) -> list[Budget]:
        """The budgets of the accounts ``name`` may charge (with a limit), default first."""
        ua = self.users.get(name)
        if ua is None:
            return []
        order = sorted(ua.accounts, key=lambda a: (a != ua.default, a))
        return [self.budgets[a] for a in order if a in self.budgets and self.budgets[a].limited]


def build_snapshot(associations: Iterable[Association], defaults: Mapping[str, str],
                   shares: Iterable[ShareRow]) -> AccountsSnapshot:
    """Combine ``sacctmgr show assoc``, users' default accounts and ``sshare``."""
    accounts: dict[str, set[str]] = {}
    qos: dict[str, dict[str, frozenset[str]]] = {}
    for assoc in associations:
        if not assoc.user:
            continue
        accounts.setdefault(assoc.user, set()).add(assoc.account)
        mine = qos.setdefault(assoc.user, {})
        mine[assoc.account] = mine.get(assoc.account, frozenset()) | assoc.qos
    users = {
        user: UserAccounts(user=user, accounts=tuple(sorted(names)),
                           default=defaults.get(user) if defaults.get(user) in names else None,
                           qos=qos.get(user, {}))
        for user, names in accounts.items()
    }
    rows = tuple(shares)
    own: dict[str, dict[str, TresBudget]] = {}
    for row in rows:
        if row.user:
            continue
        own[row.account] = {
            tres: TresBudget(tres, row.granted.get(tres), row.used.get(tres, 0),
                             row.running.get(tres, 0), account=row.account)
            for tres in BUDGET_TRES
        }
    parents = {a.account: a.parent for a in associations if not a.user and a.parent}
    chains = {account: ancestors(account, parents) for account in own}
    below: dict[str, list[str]] = {}
    for account, chain in sorted(chains.items()):
        for ancestor in chain:
            below.setdefault(ancestor, []).append(account)
    budgets = {account: Budget(account, {
        tres: _tightest(account, tres, own, chains[account], below) for tres in BUDGET_TRES})
        for account in own}
    return AccountsSnapshot(users=users, budgets=budgets, usage=rows)


#: At most this many sharing accounts are named in a budget's source.
_SHOWN_SHARERS = 3


def ancestors(account: str, parents: Mapping[str, str]) -> list[str]:
    """``account``'s parent, grandparent ... up to ``root`` (a loop in the data stops it)."""
    chain: list[str] = []
    current = parents.get(account, "")
    while current and current not in chain and current != account:
        chain.append(current)
        current = parents.get(current, "")
    return chain


def _tightest(account: str, tres: str, own: Mapping[str, Mapping[str, TresBudget]],
              chain: list[str], below: Mapping[str, list[str]]) -> TresBudget:
    """The account's own item, or an ancestor's with less left (Slurm enforces every one).

    Slurm adds a child's use and running jobs into each ancestor's (sshare shows the sums),
    so an ancestor's own row is what is left for everyone below it. On a tie the nearest wins.
    """
    best = own[account][tres]
    for ancestor in chain:
        item = own.get(ancestor, {}).get(tres)
        if item is None or item.remaining is None:
            continue
        if best.remaining is None or item.remaining < best.remaining:
            best = replace(item, shared_by=tuple(below.get(ancestor, ())))
    return best
