"""Site-file sections of the front door: the catalog, the home page and support requests.

They are part of the one site model (:class:`shopfloor.site.SiteConfig` has the fields
``catalog``, ``home`` and ``support``); they live in this module so that the site model stays
readable. Like every site setting, each field says what it means, and a bad entry raises
:class:`shopfloor.site.SiteConfigError` naming the field (``catalog.datasets.reviews.size:
...``).
"""

from __future__ import annotations

import posixpath
import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Same pattern as :data:`shopfloor.site.NAME_PATTERN` (that module imports this one).
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_Name = Annotated[str, Field(pattern=_NAME_PATTERN)]

#: What fine-tuning can do with an entry; the same words as :data:`shopfloor.finetune.
#: catalog.TASKS` (a unit test keeps them equal).
CATALOG_TASKS = ("classification", "causal-lm")
_SIZE = re.compile(r"^\d+(\.\d+)? ?(B|kB|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CatalogEntry(_Strict):
    """A model or dataset the site offers on its shared file system."""

    description: str = Field(
        ..., min_length=1, max_length=300,
        description="One line users read to choose it, e.g. 'Product reviews, positive or "
        "negative (2,000 rows)'.",
    )
    task: str = Field(
        ..., description="What it is for: 'classification' (sort texts into categories) or "
        "'causal-lm' (text generation), as the fine-tuning wizard names them.",
    )
    licence: str = Field(
        ..., min_length=1, max_length=100,
        description="Licence users must respect, e.g. 'CC-BY-4.0' or 'Apache-2.0'.",
    )
    accept_licence: bool = Field(
        False, description="True when users must tick that they accept the licence before "
        "training on it (the wizard asks, and refuses to train without it).",
    )
    size: str = Field(
        ..., description="Size as people read it, e.g. '87 MB' or '1.2 GiB'.",
    )
    location: str = Field(
        ..., description="Absolute path on the shared file system that compute nodes see; "
        "its Unix permissions must match `groups` (the hub never reads it).",
    )
    groups: list[_Name] = Field(
        default_factory=list,
        description="Unix/hub groups whose members may use it; empty means everyone.",
    )

    @field_validator("task")
    @classmethod
    def _task(cls, value: str) -> str:
        if value not in CATALOG_TASKS:
            raise ValueError(f"must be one of {', '.join(CATALOG_TASKS)}; got {value!r}")
        return value

    @field_validator("size")
    @classmethod
    def _size(cls, value: str) -> str:
        if not _SIZE.match(value.strip()):
            raise ValueError(f"must be a number and a unit, e.g. '87 MB' or '1.2 GiB'; "
                             f"got {value!r}")
        return value.strip()

    @field_validator("location")
    @classmethod
    def _location(cls, value: str) -> str:
        if not value.startswith("/") or ".." in value.split("/") or "\n" in value:
            raise ValueError(f"must be an absolute path without '..', e.g. "
                             f"/shared/datasets/reviews.csv; got {value!r}")
        return posixpath.normpath(value)

    def usable_by(self, groups: frozenset[str] | set[str], is_admin: bool = False) -> bool:
        """Whether a user in ``groups`` may use this entry."""
        return is_admin or not self.groups or bool(set(self.groups) & set(groups))


class CatalogSettings(_Strict):
    """Models and datasets the site offers (GET /hub/api/shopfloor/catalog, /hub/catalog)."""

    models: dict[_Name, CatalogEntry] = Field(
        default_factory=dict,
        description="Models, by name (e.g. minilm-l6), usable as the base of a fine-tuning.",
    )
    datasets: dict[_Name, CatalogEntry] = Field(
        default_factory=dict,
        description="Datasets, by name (e.g. reviews): CSV or JSON Lines files the "
        "fine-tuning wizard offers beside an upload and a file path.",
    )

    @model_validator(mode="after")
    def _names_distinct(self) -> CatalogSettings:
        both = sorted(set(self.models) & set(self.datasets))
        if both:
            raise ValueError(f"a model and a dataset share the name(s) {', '.join(both)}; "
                             "give each entry its own name")
        return self


class HomeSettings(_Strict):
    """The home page (/hub/home) every user lands on."""

    announcements: list[Annotated[str, Field(min_length=1, max_length=500)]] = Field(
        default_factory=list,
        description="Lines shown at the top of everyone's home page, e.g. 'Maintenance on "
        "Tuesday 8-10: sessions will be stopped'. Empty: none.",
    )
    refresh_seconds: float = Field(
        5, ge=1, le=300, description="Seconds between the home page's updates of itself.",
    )


class SupportSettings(_Strict):
    """Help requests: a user lets the support group into one session for a while."""

    group: _Name = Field(
        "support", description="Hub group of the support staff: its members see requests "
        "on /hub/support and get access to the one session a request shares.",
    )
    members: list[_Name] = Field(
        default_factory=list,
        description="Users put in that group when the hub starts (others may be added "
        "through the hub's admin page). Empty: only those already in it.",
    )
    max_hours: int = Field(
        24, ge=1, le=24, description="Longest access a user may grant, in hours (1-24).",
    )
    default_hours: int = Field(
        2, ge=1, le=24, description="Access preselected on the help form, in hours.",
    )
    expiry_check_seconds: float = Field(
        30, ge=1, le=600,
        description="Seconds between the hub's checks that revoke expired access.",
    )
    session_auth_cache_seconds: int = Field(
        60, ge=0, le=300,
        description="How long a session's server trusts the hub's answer about who may "
        "enter (jupyterhub-singleuser's HubOAuth.cache_max_age, 300 by default): revoked "
        "access ends at most this many seconds after the hub revokes it.",
    )
    log_lines: int = Field(
        30, ge=0, le=200,
        description="Last lines of the session's job log put into a request (read as the user).",
    )

    @model_validator(mode="after")
    def _default_within_max(self) -> SupportSettings:
        if self.default_hours > self.max_hours:
            raise ValueError(f"default_hours ({self.default_hours}) is more than max_hours "
                             f"({self.max_hours})")
        return self


__all__ = ["CATALOG_TASKS", "CatalogEntry", "CatalogSettings", "HomeSettings",
           "SupportSettings"]
