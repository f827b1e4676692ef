"""The spawn page form: live availability per partition and inputs bounded by policy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from shopfloor.slurm.seam import SlurmError
from shopfloor.timeutil import format_minutes

if TYPE_CHECKING:
    from shopfloor.extensions.spawner import ShopfloorSpawner

_env = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
)


async def partition_rows(spawner: ShopfloorSpawner) -> tuple[list[dict[str, Any]], str | None]:
    """One row per partition the user may use: live numbers, limits and defaults."""
    ctx = spawner.ctx
    user = spawner.user_context()
    error = None
    try:
        live = await ctx.cluster_info.snapshot(user=user.name)
    except SlurmError as exc:
        live, error = None, f"Live availability is unavailable: {exc.slurm_message}"
    rows = []
    for name in ctx.policy.partitions_for(user):
        policy = ctx.site.partitions[name]
        info = live.partitions.get(name) if live else None
        limits = ctx.policy.limits(user, name, live)
        rows.append({
            "name": name,
            "description": policy.description,
            "demo_gpus": policy.demo_gpus,
            "info": info,
            "pending": len(live.pending.get(name, [])) if live else None,
            "limits": limits,
            "max_walltime": format_minutes(limits.max_walltime_minutes),
            "defaults": ctx.policy.defaults(user, name, live),
        })
    return rows, error


def _previous_choice(spawner: ShopfloorSpawner) -> dict[str, Any]:
    """The user's last request (this server's, else their default server's)."""
    if spawner.user_options:
        return dict(spawner.user_options)
    for other in getattr(spawner.user, "spawners", {}).values():
        if other is not spawner and getattr(other, "user_options", None):
            return dict(other.user_options)
    return {}


async def account_choices(spawner: ShopfloorSpawner) -> dict[str, Any]:
    """Accounts the user may charge, the preselected one, and their budgets (accounting)."""
    ctx = spawner.ctx
    user = spawner.user_context()
    try:
        live = await ctx.cluster_info.snapshot(user=user.name)
    except SlurmError:
        live = None
    mine = ctx.policy.associations(user, live)
    if mine is None or live is None or live.accounts is None:
        return {"accounts": ctx.policy.accounts_for(user), "default_account": None,
                "budgets": [], "warnings": []}
    from shopfloor.extensions.accounts_api import budgets_for

    return budgets_for(ctx, user.name, live.accounts)


async def qos_choices(spawner: ShopfloorSpawner) -> dict[str, dict[str, list[str]]]:
    """The QoS the user may name per account ("" = none named) and partition: exactly what
    the resource model accepts, so the form offers the QoS of the chosen pair only."""
    ctx = spawner.ctx
    user = spawner.user_context()
    try:
        live = await ctx.cluster_info.snapshot(user=user.name)
    except SlurmError:
        live = None
    return ctx.policy.qos_by_account(user, live)


async def render_options_form(spawner: ShopfloorSpawner) -> str:
    """The spawn page's form: partitions, sizes, account and QoS, each bounded by policy."""
    rows, error = await partition_rows(spawner)
    accounts = await account_choices(spawner)
    qos = await qos_choices(spawner)
    previous = _previous_choice(spawner)
    names = [r["name"] for r in rows]
    selected = previous.get("partition")
    if selected not in names:
        selected = spawner.ctx.policy.default_partition(spawner.user_context())
    return _env.get_template("spawn_form.html").render(
        rows=rows, selected=selected, previous=previous, error=error, accounts=accounts,
        qos=qos, any_qos=any(names for table in qos.values() for names in table.values()),
    )
