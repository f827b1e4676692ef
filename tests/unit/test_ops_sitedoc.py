"""The site reference is generated from the site model and the checked-in copy is current."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from shopfloor.ops.sitedoc import demo_site_data, render, settings
from shopfloor.site import SiteConfig

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "site-reference.md"


def test_checked_in_reference_is_current() -> None:
    assert REFERENCE.read_text() == render(), (
        "docs/site-reference.md is not what the site model gives: run "
        "`shopfloor site-reference` (python -m shopfloor.ops.sitedoc) and commit the result")


def _leaf_count(model: type[BaseModel]) -> int:
    count = 0
    for info in model.model_fields.values():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            count += _leaf_count(annotation)
            continue
        args = getattr(annotation, "__args__", ())
        value = args[-1] if getattr(annotation, "__origin__", None) is dict else None
        count += 1
        if isinstance(value, type) and issubclass(value, BaseModel):
            count += _leaf_count(value)
    return count


def test_every_setting_has_a_row_with_type_default_and_description() -> None:
    rows = list(settings(SiteConfig, "", demo_site_data()))
    assert len(rows) == _leaf_count(SiteConfig)
    assert len({r.name for r in rows}) == len(rows)
    for row in rows:
        assert row.type and row.default and row.description, row
    by_name = {r.name: r for r in rows}
    walltime = by_name["partitions.<partition>.max_walltime"]
    assert walltime.type == "text or empty"
    assert walltime.example == '"8:00:00"'  # from the demo site file
    poll = by_name["slurm.poll_interval"]
    assert (poll.type, poll.default) == ("number", "5")
    assert "(> 0, ≤ 300)" in poll.description
    assert by_name["partitions"].default == "(required)"
    assert by_name["workshops.participant_group"].type == "name"
    assert by_name["auth.admin_users"].type == "list of names"


def test_a_new_field_shows_up_in_the_reference() -> None:
    class Extra(BaseModel):
        timeout: int = Field(30, ge=1, description="Seconds to wait | at most.")

    class Site(BaseModel):
        extra: Extra = Field(default_factory=Extra)

    text = render(Site, {"extra": {"timeout": 45}})
    assert "| `extra.timeout` | integer | 30 | Seconds to wait \\| at most. (≥ 1) | 45 |" in text
