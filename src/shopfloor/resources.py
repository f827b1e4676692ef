"""The one resource-request model: what a user may ask Slurm for, checked in one place.

Every path that asks for compute (the spawn form, ``/hub/spawn?opt-...`` URLs, REST
``user_options``, widgets, Ray clusters, apps) turns the user's raw input into a
:class:`ResourceRequest` with :meth:`RequestPolicy.validate`. Limits come from the site file
(per partition and per group) and from the live cluster (what a node actually has); the
tightest wins. Bad input raises :class:`RequestError`, whose message names each bad field and
what is allowed.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from shopfloor.accounts.model import AccountsSnapshot, UserAccounts, request_minutes
from shopfloor.errors import ShopfloorError
from shopfloor.site import SiteConfig
from shopfloor.slurm.reservations import Reservation
from shopfloor.slurm.seam import PartitionInfo
from shopfloor.timeutil import format_minutes, parse_walltime

#: The only keys a user may send. Everything else (``cmd``, ``prologue``, ``output``, ...) is
#: refused, so nobody can reach the job script except through typed fields.
FIELDS = (
    "partition", "nodes", "cpus", "memory_gb", "gpus", "walltime", "account", "qos",
    "reservation",
)
#: Least memory (GiB) one job may ask for: 10 MiB, enough for a tiny service; partitions set
#: the upper bound. (benchmarks/scale.py runs 300 stand-in sessions of 11 MB each.)
MIN_MEMORY_GB = 0.01
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_MAX_TEXT = 64


class RequestError(ShopfloorError, ValueError):
    """One or more fields of a request are not allowed. ``problems`` maps field → message."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        super().__init__(problems=problems)


@dataclass(frozen=True)
class UserContext:
    """Who is asking: their name and groups decide which partitions and limits apply."""

    name: str
    groups: frozenset[str] = frozenset()
    is_admin: bool = False


@dataclass(frozen=True)
class LiveCluster:
    """A snapshot of what the cluster has right now (all fields optional for unit tests)."""

    partitions: Mapping[str, PartitionInfo] = field(default_factory=dict)
    reservations: Mapping[str, Reservation] = field(default_factory=dict)
    pending: Mapping[str, Sequence[str]] = field(default_factory=dict)  #: queue order
    #: Associations and budgets (sites with ``accounting.enabled``); None: not known.
    accounts: AccountsSnapshot | None = None


@dataclass(frozen=True)
class EffectiveLimits:
    """The tightest of site, group and live-cluster limits for one user on one partition."""

    partition: str
    max_nodes: int
    max_cpus: int
    max_memory_gb: float
    max_gpus: int
    max_walltime_minutes: int


class ResourceRequest(BaseModel):
    """A validated request. Only :meth:`RequestPolicy.validate` should make these."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    partition: str
    nodes: int = 1
    cpus: int = 1
    memory_gb: float = 2.0
    gpus: int = 0
    walltime_minutes: int = 60
    account: str | None = None
    qos: str | None = None
    reservation: str | None = None

    @property
    def memory_mb(self) -> int:
        return math.ceil(self.memory_gb * 1024)

    def as_options(self) -> dict[str, Any]:
        """The request as ``user_options`` (what the form and REST API send)."""
        out: dict[str, Any] = {
            "partition": self.partition, "nodes": self.nodes, "cpus": self.cpus,
            "memory_gb": self.memory_gb, "gpus": self.gpus,
            "walltime": str(self.walltime_minutes),
        }
        for key in ("account", "qos", "reservation"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out


# -- raw value parsing (types only; limits come later) --------------------------------------


def _text(value: Any) -> str:
    """A single short string without control or invisible characters."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bytes):
        raise ValueError("must be text, not a file")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("must be a single value")
    text = str(value)
    if len(text) > _MAX_TEXT:
        raise ValueError(f"is too long ({len(text)} characters; at most {_MAX_TEXT})")
    for char in text:
        if unicodedata.category(char)[0] in {"C", "Z"} and char != " ":
            raise ValueError("contains control or invisible characters")
    return text.strip()


def _name(value: Any) -> str | None:
    text = _text(value)
    if not text:
        return None
    if not _NAME_RE.match(text):
        raise ValueError(
            f"{text!r} is not a valid name (letters, digits, '.', '_' and '-'; at most 64)"
        )
    return text


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be a whole number")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    text = _text(value)
    if not re.fullmatch(r"\d{1,6}", text):
        raise ValueError(f"must be a whole number, not {text!r}")
    return int(text)


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a number")
    text = _text(value)
    if not re.fullmatch(r"\d{1,6}(\.\d{1,3})?", text):
        raise ValueError(f"must be a number of GiB such as 4 or 0.5, not {text!r}")
    return float(text)


def _walltime(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return parse_walltime(_text(value))


_PARSERS = {
    "partition": _name, "nodes": _integer, "cpus": _integer, "memory_gb": _number,
    "gpus": _integer, "walltime": _walltime, "account": _name, "qos": _name,
    "reservation": _name,
}


def _fmt(x: float) -> str:
    return f"{x:g}"


class RequestPolicy:
    """The site's rules for resource requests, applied to raw user input.

    ``validate`` is the only way into a :class:`ResourceRequest`; ``limits`` and ``defaults``
    feed the spawn page and widgets so that what they offer matches what is enforced.
    """

    def __init__(self, site: SiteConfig) -> None:
        self.site = site

    # -- what the user may see ---------------------------------------------------------

    def partitions_for(self, user: UserContext) -> list[str]:
        """Partitions this user may use, in site order."""
        return [
            name for name, policy in self.site.partitions.items()
            if user.is_admin or not policy.groups or user.groups & set(policy.groups)
        ]

    def default_partition(self, user: UserContext) -> str | None:
        allowed = self.partitions_for(user)
        if self.site.initial_partition in allowed:
            return self.site.initial_partition
        return allowed[0] if allowed else None

    def limits(
        self, user: UserContext, partition: str, live: LiveCluster | None = None
    ) -> EffectiveLimits:
        """The tightest limits for ``user`` on ``partition`` (site, group and live)."""
        policy = self.site.partitions[partition]
        sources = [policy, *(self.site.group_limits[g] for g in sorted(user.groups)
                             if g in self.site.group_limits)]
        info = (live.partitions.get(partition) if live else None)

        def tightest(attr: str, live_value: float | None, fallback: float) -> float:
            values = [getattr(s, attr) for s in sources if getattr(s, attr) is not None]
            if live_value is not None:
                values.append(live_value)
            return min(values) if values else fallback

        walltimes = [s.max_walltime_minutes for s in sources if s.max_walltime_minutes]
        if info and info.max_time_minutes:
            walltimes.append(info.max_time_minutes)
        cpus_per_node = (info.cpus_total // info.nodes_total) if info and info.nodes_total else None
        return EffectiveLimits(
            partition=partition,
            max_nodes=int(tightest("max_nodes", info.nodes_total if info else None, 1)),
            max_cpus=int(tightest("max_cpus", cpus_per_node, 1)),
            max_memory_gb=tightest(
                "max_memory_gb",
                info.memory_per_node_mb / 1024 if info and info.memory_per_node_mb else None,
                2,
            ),
            max_gpus=int(tightest("max_gpus", info.gpus_per_node if info else None, 0)),
            max_walltime_minutes=min(walltimes) if walltimes else 24 * 60,
        )

    def defaults(
        self, user: UserContext, partition: str, live: LiveCluster | None = None
    ) -> dict[str, Any]:
        """Preselected values for a partition, clipped to the user's limits."""
        policy = self.site.partitions[partition]
        lim = self.limits(user, partition, live)
        return {
            "partition": partition,
            "nodes": 1,
            "cpus": min(policy.default_cpus, lim.max_cpus),
            "memory_gb": min(policy.default_memory_gb, lim.max_memory_gb),
            "gpus": min(policy.default_gpus, lim.max_gpus),
            "walltime_minutes": min(parse_walltime(policy.default_walltime),
                                    lim.max_walltime_minutes),
        }

    # -- the check ---------------------------------------------------------------------

    def validate(
        self,
        raw: Mapping[str, Any] | None,
        user: UserContext,
        live: LiveCluster | None = None,
    ) -> ResourceRequest:
        """Check raw user input; return a typed request or raise :class:`RequestError`."""
        raw = dict(raw or {})
        problems: dict[str, str] = {}
        for key in raw:
            if key not in FIELDS:
                if isinstance(key, str) and key.isprintable() and 0 < len(key) <= 40:
                    shown = key
                else:
                    shown = repr(key)[:40] if key else "(empty name)"
                problems[shown] = (
                    "is not a setting you can choose; allowed: " + ", ".join(FIELDS)
                )
        if problems:
            raise RequestError(problems)

        values: dict[str, Any] = {}
        for key, value in raw.items():
            if value is None or value == "" or value == []:
                continue
            try:
                values[key] = _PARSERS[key](value)
            except ValueError as exc:
                problems[key] = str(exc)
        if problems:
            raise RequestError(problems)

        allowed = self.partitions_for(user)
        partition = values.get("partition") or self.default_partition(user)
        if partition is None:
            raise RequestError({"partition": "you may not use any partition; ask your admin"})
        if partition not in allowed:
            raise RequestError({
                "partition": f"{partition!r} is not a partition you may use; choose one of "
                + ", ".join(allowed)
            })
        info = live.partitions.get(partition) if live else None
        if live and live.partitions and info is None:
            raise RequestError({"partition": f"{partition!r} does not exist on this cluster now"})

        lim = self.limits(user, partition, live)
        defaults = self.defaults(user, partition, live)
        nodes = values.get("nodes", 1)
        cpus = values.get("cpus", defaults["cpus"])
        memory = values.get("memory_gb", defaults["memory_gb"])
        gpus = values.get("gpus", defaults["gpus"])
        walltime = values.get("walltime", defaults["walltime_minutes"])

        def check(name: str, value: float, low: float, high: float, unit: str = "") -> None:
            if value < low or value > high:
                problems[name] = (
                    f"the {partition} partition allows {_fmt(low)} to {_fmt(high)}{unit}; "
                    f"you asked for {_fmt(value)}{unit}"
                )

        check("nodes", nodes, 1, lim.max_nodes)
        check("cpus", cpus, 1, lim.max_cpus)
        check("memory_gb", memory, MIN_MEMORY_GB, lim.max_memory_gb, " GiB")
        check("gpus", gpus, 0, lim.max_gpus)
        if walltime < 1 or walltime > lim.max_walltime_minutes:
            problems["walltime"] = (
                f"the {partition} partition allows at most "
                f"{format_minutes(lim.max_walltime_minutes)}; you asked for "
                f"{format_minutes(walltime)}"
            )

        account = values.get("account")
        mine = self.associations(user, live)
        if mine is not None:
            account = account or mine.default
            message = self._association_problem(account, mine, live, request_minutes(
                nodes, cpus, gpus, walltime) if "walltime" not in problems else {})
            if message:
                problems["account"] = message
        elif account is not None and not self.site.accounting.enabled:
            message = self._account_problem(account, user)
            if message:
                problems["account"] = message
        qos = values.get("qos")
        if qos is not None:
            allowed_qos = self.qos_for(user, partition, account, live)
            if qos not in allowed_qos:
                problems["qos"] = (
                    f"{qos!r} is not a QoS you may use on {partition}"
                    + (f"; choose one of {', '.join(allowed_qos)}" if allowed_qos else "")
                )
        reservation = values.get("reservation")
        if reservation is not None:
            message = self._reservation_problem(reservation, partition, user, account, live)
            if message:
                problems["reservation"] = message
        if problems:
            raise RequestError(problems)
        return ResourceRequest(
            partition=partition, nodes=nodes, cpus=cpus, memory_gb=memory, gpus=gpus,
            walltime_minutes=walltime, account=account, qos=qos,
            reservation=reservation,
        )

    def associations(self, user: UserContext, live: LiveCluster | None) -> UserAccounts | None:
        """The user's Slurm associations when the site uses accounting and they are known.

        A user Slurm knows nothing about gets an empty set (every account is refused).
        """
        if not self.site.accounting.enabled or live is None or live.accounts is None:
            return None
        return live.accounts.for_user(user.name) or UserAccounts(user.name, (), None)

    def qos_for(self, user: UserContext, partition: str, account: str | None,
                live: LiveCluster | None = None) -> list[str]:
        """QOS the user may name on ``partition`` charging ``account``: the association's
        (with accounting), narrowed to the partition's list in the site file if it has one."""
        listed = list(self.site.partitions[partition].qos)
        mine = self.associations(user, live)
        if mine is None:
            return listed
        allowed = sorted(mine.qos.get(account or "", frozenset()))
        return [q for q in allowed if not listed or q in listed]

    def qos_by_account(self, user: UserContext,
                       live: LiveCluster | None = None) -> dict[str, dict[str, list[str]]]:
        """What :meth:`validate` accepts as ``qos``, per account the user may charge and per
        partition; the key "" is for requests that name no account (the default account's)."""
        mine = self.associations(user, live)
        default = mine.default if mine else None
        return {account: {partition: self.qos_for(user, partition, account or default, live)
                          for partition in self.partitions_for(user)}
                for account in ["", *self.accounts_for(user, live)]}

    def _association_problem(self, account: str | None, mine: UserAccounts,
                             live: LiveCluster | None, needs: Mapping[str, int]) -> str | None:
        if not mine.accounts:
            return "you have no Slurm account to charge here; ask your admin for one"
        if account is None or account not in mine.accounts:
            named = f"{account!r} is not an account you may charge" if account else \
                "you have no default account"
            return f"{named}; choose one of {', '.join(mine.accounts)}"
        budget = live.accounts.budgets.get(account) if live and live.accounts else None
        return budget.shortfall(needs) if budget is not None else None

    def accounts_for(self, user: UserContext, live: LiveCluster | None = None) -> list[str]:
        """Slurm accounts this user may charge, sorted: their associations (accounting on),
        else the site file's ``group_accounts``."""
        mine = self.associations(user, live)
        if mine is not None:
            return list(mine.accounts)
        return sorted({
            account for group, accounts in self.site.group_accounts.items()
            if group in user.groups for account in accounts
        })

    def _account_problem(self, account: str, user: UserContext) -> str | None:
        if user.is_admin:
            return None
        allowed = self.accounts_for(user)
        if account in allowed:
            return None
        if not allowed:
            return f"{account!r} is not an account you may charge; leave it empty"
        return f"{account!r} is not an account you may charge; choose one of {', '.join(allowed)}"

    @staticmethod
    def _reservation_problem(
        name: str,
        partition: str,
        user: UserContext,
        account: str | None,
        live: LiveCluster | None,
    ) -> str | None:
        reservations = live.reservations if live else {}
        res = reservations.get(name)
        if res is None:
            return f"there is no reservation {name!r} now"
        if not user.is_admin and not _admits(res, user, account):
            return f"reservation {name!r} is not open to you"
        info = live.partitions.get(partition) if live else None
        if res.nodes and info is not None and info.node_names:
            if not res.nodes & info.node_names:
                return f"reservation {name!r} holds no nodes of the {partition} partition"
        elif res.partition and res.partition != partition:
            return f"reservation {name!r} is for the {res.partition} partition, not {partition}"
        return None


def _admits(res: Reservation, user: UserContext, account: str | None) -> bool:
    """Whether Slurm would let ``user`` (charging ``account``) into ``res``.

    As Slurm decides: anyone named in an exclusion (``-name``) is out; otherwise the user
    must be listed, be in a listed group or charge a listed account (when lists exist).
    """
    mine = {"users": {user.name}, "groups": set(user.groups), "accounts": {account} - {None}}
    listed = False
    admitted = False
    for kind in ("users", "groups", "accounts"):
        names: frozenset[str] = getattr(res, kind)
        excluded = {n[1:] for n in names if n.startswith("-")}
        included = {n for n in names if not n.startswith("-")}
        if excluded & mine[kind]:
            return False
        if excluded and not included:
            admitted = True  # "everyone but ...", and we are not among them
        listed = listed or bool(included)
        admitted = admitted or bool(included & mine[kind])
    return admitted or not listed


def user_context(name: str, groups: Iterable[str] = (), is_admin: bool = False) -> UserContext:
    return UserContext(name=name, groups=frozenset(groups), is_admin=is_admin)
