"""The wheel carries every subpackage (a package missing from pyproject's list imports fine
from the editable checkout and fails only where a site installs the wheel)."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_subpackage_is_listed_in_pyproject() -> None:
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    found = set()
    for name, folder in tool["package-dir"].items():
        for init in (REPO / folder).rglob("__init__.py"):
            if "node_modules" in init.parts:
                continue
            rel = init.parent.relative_to(REPO / folder).parts
            # A folder mapped on its own (extensions/, widgets/) is listed under its own name.
            if rel and ".".join((name, *rel)) in tool["package-dir"]:
                continue
            found.add(".".join((name, *rel)))
    assert found - listed == set(), f"add to [tool.setuptools] packages: {found - listed}"
