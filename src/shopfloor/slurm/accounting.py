"""Slurm accounting through the seam: associations, budgets, usage and job history.

Every ``sacctmgr``, ``sshare`` and ``sacct`` command line Shopfloor uses is spelled here, once,
as a :class:`~shopfloor.slurm.seam.SlurmCall`, with the parser of its answer. Two thin
wrappers run them on the seam's runners with typed methods:

* :class:`Accounting` over :class:`~shopfloor.slurm.seam.Slurm` (async, the hub);
* :class:`AccountingSync` over :class:`~shopfloor.slurm.seam.SlurmSync` (blocking: the
  embedded cluster's setup, ``shopfloor usage``, the workshop service's account steps).

Budgets are Slurm's own: an account's ``GrpTRESMins`` (``cpu`` and ``gres/gpu`` minutes) is
the allocation, ``sshare``'s ``GrpTRESRaw`` what finished and running jobs used so far and
``TRESRunMins`` what running jobs still hold. Slurm refuses to start a job that would not fit
(``AccountingStorageEnforce=...,safe``); :mod:`shopfloor.resources` refuses it before that.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from shopfloor.slurm.seam import Slurm, SlurmCall, SlurmError, SlurmSync

#: The TRES a budget counts, and how users read them.
BUDGET_TRES = ("cpu", "gres/gpu")
TRES_LABELS = {"cpu": "CPU-minutes", "gres/gpu": "GPU-minutes"}
#: ``sacctmgr show assoc`` fields we read, in order.
_ASSOC_FIELDS = ("Account", "User", "Partition", "ParentName", "QOS", "DefaultQOS",
                 "GrpTRESMins")
#: ``sshare`` fields we read, in order.
_SHARE_FIELDS = ("Account", "User", "GrpTRESMins", "GrpTRESRaw", "TRESRunMins")
#: ``sacct`` fields we read, in order.
_SACCT_FIELDS = ("JobID", "JobName", "User", "Account", "Partition", "QOS", "State",
                 "ExitCode", "Elapsed", "AllocTRES")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Association:
    """One Slurm association: ``user`` may charge ``account`` (on ``partition``; "" = all).

    An account's own association has ``user == ""``; its ``grp_tres_mins`` is the budget.
    """

    account: str
    user: str = ""
    partition: str = ""
    parent: str = ""
    qos: frozenset[str] = frozenset()
    default_qos: str = ""
    grp_tres_mins: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ShareRow:
    """One line of ``sshare``: an account's (``user == ""``) or one user's use of it."""

    account: str
    user: str
    granted: Mapping[str, int]
    used: Mapping[str, int]
    running: Mapping[str, int]


@dataclass(frozen=True)
class JobRecord:
    """One job (not its steps) as ``sacct`` remembers it."""

    job_id: str
    name: str
    user: str
    account: str
    partition: str
    qos: str
    state: str
    exit_code: str
    elapsed: str
    alloc_tres: Mapping[str, int]


def check_name(value: str, what: str) -> str:
    """``value`` if it is a plain Slurm name (letters, digits, ``._-``), else ValueError.

    Names reach ``sacctmgr`` as ``key=value`` words: a comma or ``=`` would add settings.
    """
    if not _SAFE_NAME.match(value):
        raise ValueError(f"{what} {value!r} is not a plain name (letters, digits, '.', '_', '-')")
    return value


def parse_tres(text: str) -> dict[str, int]:
    """``cpu=60,mem=1G,gres/gpu=2`` -> {"cpu": 60, "gres/gpu": 2}; non-numbers are skipped.

    Only whole numbers are kept: counts and minutes are what budgets need (``mem`` with a
    unit is not). Blank and ``(null)`` are empty.
    """
    out: dict[str, int] = {}
    for item in text.strip().split(","):
        key, sep, value = item.partition("=")
        if sep and value.strip().isdigit():
            out[key.strip()] = int(value)
    return out


def format_tres(values: Mapping[str, int]) -> str:
    """{"cpu": 60, "gres/gpu": -1} -> ``cpu=60,gres/gpu=-1`` (-1 clears a limit in sacctmgr)."""
    return ",".join(f"{key}={int(value)}" for key, value in values.items())


def _rows(text: str, width: int) -> Iterable[list[str]]:
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) >= width:
            yield [p.strip() for p in parts[:width]]


def parse_associations(text: str) -> list[Association]:
    """Parse ``sacctmgr -nP show assoc format=<_ASSOC_FIELDS>``."""
    out = []
    for account, user, partition, parent, qos, default_qos, grp in _rows(text, len(_ASSOC_FIELDS)):
        if not account:
            continue
        out.append(Association(
            account=account, user=user, partition=partition, parent=parent,
            qos=frozenset(q for q in qos.split(",") if q), default_qos=default_qos,
            grp_tres_mins=parse_tres(grp),
        ))
    return out


def parse_user_defaults(text: str) -> dict[str, str]:
    """Parse ``sacctmgr -nP show user format=User,DefaultAccount``: user -> default account."""
    return {user: account for user, account in _rows(text, 2) if user}


def parse_shares(text: str) -> list[ShareRow]:
    """Parse ``sshare -nP -a -o <_SHARE_FIELDS>`` (account names may be indented)."""
    out = []
    for account, user, granted, used, running in _rows(text, len(_SHARE_FIELDS)):
        if not account:
            continue
        out.append(ShareRow(account=account, user=user, granted=parse_tres(granted),
                            used=parse_tres(used), running=parse_tres(running)))
    return out


def parse_sacct(text: str) -> list[JobRecord]:
    """Parse ``sacct -nPX -o <_SACCT_FIELDS>`` (one line per job, no steps)."""
    out = []
    for row in _rows(text, len(_SACCT_FIELDS)):
        job_id, name, user, account, partition, qos, state, exit_code, elapsed, tres = row
        out.append(JobRecord(
            job_id=job_id, name=name, user=user, account=account, partition=partition,
            qos=qos, state=state.split()[0] if state else "", exit_code=exit_code,
            elapsed=elapsed, alloc_tres=parse_tres(tres),
        ))
    return out


def _ignore(_: str) -> None:
    return None


def _already_there(exc: SlurmError) -> None:
    """``sacctmgr add`` of something that exists is not a failure for idempotent set-up."""
    words = f"{exc.stdout} {exc.stderr}".lower()
    if "nothing new added" not in words and "already exists" not in words:
        raise exc


def _nothing_to_change(exc: SlurmError) -> None:
    words = f"{exc.stdout} {exc.stderr}".lower()
    if "nothing modified" not in words and "nothing deleted" not in words \
            and "no associations" not in words and "doesn't exist" not in words:
        raise exc


# -- the dialect ----------------------------------------------------------------------------


def associations_call(users: Sequence[str] = ()) -> SlurmCall[list[Association]]:
    """Every association (only ``users``' if given), with QOS and budgets."""
    args = ["sacctmgr", "-nP", "show", "assoc", f"format={','.join(_ASSOC_FIELDS)}"]
    if users:
        args.append(f"users={','.join(check_name(u, 'user') for u in users)}")
    return SlurmCall(tuple(args), parse_associations)


def user_defaults_call() -> SlurmCall[dict[str, str]]:
    """Each user's default account."""
    return SlurmCall(("sacctmgr", "-nP", "show", "user", "format=User,DefaultAccount"),
                     parse_user_defaults)


def shares_call(accounts: Sequence[str] = ()) -> SlurmCall[list[ShareRow]]:
    """Budgets and use per account and per user (``sshare -a``), live from slurmctld."""
    args = ["sshare", "-nP", "-a", "-o", ",".join(_SHARE_FIELDS)]
    if accounts:
        args += ["-A", ",".join(check_name(a, "account") for a in accounts)]
    return SlurmCall(tuple(args), parse_shares)


def sacct_call(job_ids: Sequence[str] = (), *, user: str | None = None,
               start: str = "now-1days") -> SlurmCall[list[JobRecord]]:
    """Finished and running jobs (not steps) since ``start``; only ``job_ids`` if given.

    ``user`` runs ``sacct`` as that user, who then sees only their own jobs.
    """
    args = ["sacct", "-nPX", "-o", ",".join(_SACCT_FIELDS), f"--starttime={start}"]
    if job_ids:
        args += ["-j", ",".join(job_ids)]
    elif user is None:
        args.append("--allusers")
    return SlurmCall(tuple(args), parse_sacct, user=user)


#: ``sacctmgr show qos`` columns for the settings Shopfloor writes (setting -> column).
QOS_COLUMNS = {"MaxWall": "MaxWall", "MaxTRESPerUser": "MaxTRESPU",
               "MaxJobsPerUser": "MaxJobsPU"}


def parse_qos(text: str) -> dict[str, dict[str, str]]:
    """Parse ``sacctmgr -nP show qos format=Name,<QOS_COLUMNS>``: name -> setting -> value."""
    keys = list(QOS_COLUMNS)
    return {row[0]: dict(zip(keys, row[1:], strict=True))
            for row in _rows(text, 1 + len(keys)) if row[0]}


def qos_call() -> SlurmCall[dict[str, dict[str, str]]]:
    """Every QOS with the limits Shopfloor sets (see :data:`QOS_COLUMNS`)."""
    return SlurmCall(("sacctmgr", "-nP", "show", "qos",
                      "format=Name," + ",".join(QOS_COLUMNS.values())), parse_qos)


def add_cluster_call(name: str) -> SlurmCall[None]:
    return SlurmCall(("sacctmgr", "-i", "add", "cluster", check_name(name, "cluster")),
                     _ignore, recover=_already_there)


def add_qos_call(name: str, settings: Sequence[str] = ()) -> SlurmCall[None]:
    """Create QOS ``name`` (nothing happens when it exists: see :func:`modify_qos_call`)."""
    return SlurmCall(("sacctmgr", "-i", "add", "qos", check_name(name, "QOS"), *settings),
                     _ignore, recover=_already_there)


def modify_qos_call(name: str, settings: Sequence[str]) -> SlurmCall[None]:
    return SlurmCall(("sacctmgr", "-i", "modify", "qos", "where", f"name={check_name(name, 'QOS')}",
                      "set", *settings), _ignore, recover=_nothing_to_change)


def add_account_call(name: str, *, parent: str = "root", description: str = "") -> SlurmCall[None]:
    args = ["sacctmgr", "-i", "add", "account", check_name(name, "account"),
            f"parent={check_name(parent, 'parent account')}"]
    if description:
        args.append(f"description={_plain_text(description)}")
    return SlurmCall(tuple(args), _ignore, recover=_already_there)


def set_account_call(name: str, settings: Sequence[str]) -> SlurmCall[None]:
    """``sacctmgr modify account <name> set ...`` (the account's own association)."""
    return SlurmCall(("sacctmgr", "-i", "modify", "account", "where",
                      f"name={check_name(name, 'account')}", "set", *settings),
                     _ignore, recover=_nothing_to_change)


def add_user_call(user: str | Sequence[str], account: str, *, qos: Sequence[str] = (),
                  default_qos: str = "", default_account: bool = False) -> SlurmCall[None]:
    """Associate ``user`` (or several users, in one call) with ``account`` (their default
    account if ``default_account``)."""
    users = [user] if isinstance(user, str) else list(user)
    if not users:
        raise ValueError("add_user_call needs at least one user")
    args = ["sacctmgr", "-i", "add", "user", ",".join(check_name(u, "user") for u in users),
            f"account={check_name(account, 'account')}"]
    if default_account:
        args.append(f"defaultaccount={account}")
    if qos:
        args.append(f"qos={','.join(check_name(q, 'QOS') for q in qos)}")
    if default_qos:
        args.append(f"defaultqos={check_name(default_qos, 'QOS')}")
    return SlurmCall(tuple(args), _ignore, recover=_already_there)


def remove_user_call(user: str, account: str | None = None) -> SlurmCall[None]:
    """Remove ``user``'s association with ``account`` (all of them without one)."""
    args = ["sacctmgr", "-i", "delete", "user", "where", f"name={check_name(user, 'user')}"]
    if account:
        args.append(f"account={check_name(account, 'account')}")
    return SlurmCall(tuple(args), _ignore, recover=_nothing_to_change)


def remove_account_call(name: str) -> SlurmCall[None]:
    return SlurmCall(("sacctmgr", "-i", "delete", "account", "where",
                      f"name={check_name(name, 'account')}"), _ignore,
                     recover=_nothing_to_change)


def account_parent_call(name: str) -> SlurmCall[str | None]:
    """The parent of account ``name`` (None: no such account; "" for ``root``)."""
    def parse(text: str) -> str | None:
        for account, user, parent in _rows(text, 3):
            if account == name and not user:
                return parent
        return None

    return SlurmCall(("sacctmgr", "-nP", "show", "assoc", "where",
                      f"accounts={check_name(name, 'account')}",
                      "format=Account,User,ParentName"), parse)


def _plain_text(text: str) -> str:
    """A description for sacctmgr: one word-safe line (no quotes, commas or ``=``)."""
    cleaned = re.sub(r"[^A-Za-z0-9 ._()/-]", "", text)[:100].strip()
    return cleaned or "-"


# -- typed wrappers -------------------------------------------------------------------------


class Accounting:
    """Slurm accounting for the hub (async): associations, budgets, job history."""

    def __init__(self, slurm: Slurm) -> None:
        self.slurm = slurm

    async def associations(self, users: Sequence[str] = ()) -> list[Association]:
        return await self.slurm.call(associations_call(users))

    async def user_defaults(self) -> dict[str, str]:
        return await self.slurm.call(user_defaults_call())

    async def shares(self, accounts: Sequence[str] = ()) -> list[ShareRow]:
        return await self.slurm.call(shares_call(accounts))

    async def jobs(self, job_ids: Sequence[str] = (), *, user: str | None = None,
                   start: str = "now-1days") -> list[JobRecord]:
        return await self.slurm.call(sacct_call(job_ids, user=user, start=start))

    async def add_user(self, user: str, account: str, *, qos: Sequence[str] = (),
                       default_account: bool = False) -> None:
        await self.slurm.call(add_user_call(user, account, qos=qos,
                                            default_account=default_account))

    async def add_account(self, name: str, *, parent: str = "root",
                          description: str = "") -> None:
        await self.slurm.call(add_account_call(name, parent=parent, description=description))

    async def remove_user(self, user: str, account: str | None = None) -> None:
        await self.slurm.call(remove_user_call(user, account))

    async def remove_account(self, name: str) -> None:
        await self.slurm.call(remove_account_call(name))


class AccountingSync:
    """The same as :class:`Accounting`, blocking, plus what set-up needs (QOS, budgets)."""

    def __init__(self, slurm: SlurmSync) -> None:
        self.slurm = slurm

    def associations(self, users: Sequence[str] = ()) -> list[Association]:
        return self.slurm.call(associations_call(users))

    def user_defaults(self) -> dict[str, str]:
        return self.slurm.call(user_defaults_call())

    def shares(self, accounts: Sequence[str] = ()) -> list[ShareRow]:
        return self.slurm.call(shares_call(accounts))

    def jobs(self, job_ids: Sequence[str] = (), *, user: str | None = None,
             start: str = "now-1days") -> list[JobRecord]:
        return self.slurm.call(sacct_call(job_ids, user=user, start=start))

    def add_cluster(self, name: str) -> None:
        self.slurm.call(add_cluster_call(name))

    def qos(self) -> dict[str, dict[str, str]]:
        return self.slurm.call(qos_call())

    def ensure_qos(self, name: str, settings: Sequence[str] = (),
                   current: Mapping[str, Mapping[str, str]] | None = None) -> None:
        """Create QOS ``name`` or bring its ``Key=value`` settings to ``settings``.

        ``current`` (from :meth:`qos`) saves the calls when nothing differs.
        """
        if current is not None and name in current:
            have = current[name]
            if all(have.get(k) == v for k, _, v in (s.partition("=") for s in settings)):
                return
        else:
            self.slurm.call(add_qos_call(name, settings))
        if settings:
            self.slurm.call(modify_qos_call(name, settings))

    def add_account(self, name: str, *, parent: str = "root", description: str = "") -> None:
        self.slurm.call(add_account_call(name, parent=parent, description=description))

    def set_budget(self, account: str, minutes: Mapping[str, int]) -> None:
        """Set ``account``'s ``GrpTRESMins`` (e.g. {"cpu": 6000, "gres/gpu": 600}; -1 clears)."""
        self.slurm.call(set_account_call(account, [f"GrpTRESMins={format_tres(minutes)}"]))

    def set_account_qos(self, account: str, qos: Sequence[str]) -> None:
        """The QOS every user of ``account`` may use."""
        names = ",".join(check_name(q, "QOS") for q in qos)
        self.slurm.call(set_account_call(account, [f"qos={names}"]))

    def add_user(self, user: str | Sequence[str], account: str, *, qos: Sequence[str] = (),
                 default_account: bool = False) -> None:
        self.slurm.call(add_user_call(user, account, qos=qos, default_account=default_account))

    def remove_user(self, user: str, account: str | None = None) -> None:
        self.slurm.call(remove_user_call(user, account))

    def remove_account(self, name: str) -> None:
        self.slurm.call(remove_account_call(name))

    def account_parent(self, name: str) -> str | None:
        """The parent of account ``name``; None when there is no such account."""
        return self.slurm.call(account_parent_call(name))

    def learn_uids(self) -> None:
        """``scontrol reconfigure``: slurmctld looks up the uids of associated users again.

        It resolves a user's uid when the association arrives; one whose Unix account was
        made later is refused ("Invalid account") until this runs. Jobs are not affected.
        """
        self.slurm.call(SlurmCall(("scontrol", "reconfigure"), _ignore))


__all__ = [
    "BUDGET_TRES",
    "TRES_LABELS",
    "Accounting",
    "AccountingSync",
    "Association",
    "JobRecord",
    "ShareRow",
    "check_name",
    "format_tres",
    "parse_associations",
    "parse_qos",
    "parse_sacct",
    "parse_shares",
    "parse_tres",
    "parse_user_defaults",
]
