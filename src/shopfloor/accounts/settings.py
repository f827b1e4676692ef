"""The site file's ``accounting:`` section (part of :class:`shopfloor.site.SiteConfig`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AccountingSettings(BaseModel):
    """Slurm accounting: accounts, QOS and budgets come from slurmdbd's associations."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        False,
        description="The cluster runs slurmdbd with AccountingStorageEnforce (the demo does): "
        "the accounts and QOS a user may name are their Slurm associations, their default "
        "account is Slurm's, and requests that cannot fit the account's remaining budget "
        "(GrpTRESMins) are refused. Off: no account checks beyond group_accounts.",
    )
    cache_seconds: float = Field(
        30, ge=1, description="Seconds associations and budgets are cached by the hub, e.g. "
        "30. A user with no association in the cache is looked up again at once (new "
        "workshop participants).",
    )
    warn_remaining_percent: float = Field(
        10, ge=0, le=100, description="Warn users (spawn page, ComputePanel, home page) when "
        "less than this share of a budget is left, e.g. 10 (percent).",
    )
