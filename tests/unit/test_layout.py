"""The layout shows the architecture: one package per capability, each saying what it may import."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import pytest

CAPABILITIES = ["slurm", "session", "ray", "finetune", "apps", "workshops", "demo", "ops"]


@pytest.mark.parametrize("name", ["shopfloor.benchmarks", "shopfloor.tests", "shopfloor.scripts"])
def test_the_package_reaches_nothing_outside_itself(name: str) -> None:
    # No __path__ tricks: a checkout's other folders are not part of the installed package.
    assert importlib.util.find_spec(name) is None, f"{name} should not be importable"


@pytest.mark.parametrize("name", CAPABILITIES)
def test_each_capability_package_says_what_it_owns_and_may_import(name: str) -> None:
    package = importlib.import_module(f"shopfloor.{name}")
    doc = package.__doc__ or ""
    assert doc.strip(), f"shopfloor.{name} has no docstring"
    assert "may import" in doc.lower(), f"shopfloor.{name}'s docstring does not say what it imports"


def test_test_modules_have_unique_basenames() -> None:
    # pytest's default import mode imports test files by basename: two tiers may not share one.
    tests = Path(__file__).resolve().parents[1]
    seen: dict[str, Path] = {}
    for path in sorted(tests.rglob("test_*.py")):
        if "node_modules" in path.parts:
            continue
        assert path.name not in seen, f"{path} and {seen[path.name]} share a basename"
        seen[path.name] = path
