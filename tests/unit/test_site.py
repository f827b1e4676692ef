"""The site file model: the shipped demo loads, mistakes name their field."""

from __future__ import annotations

from pathlib import Path

import pytest

from shopfloor.site import SiteConfigError, load_site, parse_site

REPO = Path(__file__).resolve().parents[2]


def test_demo_site_loads() -> None:
    site = load_site(REPO / "hub_config" / "demo_site.yaml")
    assert set(site.partitions) == {"cpu", "gpu", "debug"}
    assert site.partitions["gpu"].demo_gpus
    assert site.initial_partition == "cpu"


@pytest.mark.parametrize(
    "data,expected",
    [
        ({"partitions": {"cpu": {"max_cpu": 4}}}, "partitions.cpu.max_cpu: is not a known setting"),
        ({"partitions": {"cpu": {"max_cpus": -1}}}, "partitions.cpu.max_cpus: Input should be"),
        ({"partitions": {"cpu": {"max_walltime": "soon"}}}, "partitions.cpu.max_walltime"),
        ({}, "partitions: is required"),
        ({"partitions": {"cpu": {}}, "default_partition": "gpu"}, "default_partition 'gpu'"),
        ({"partitions": {"bad name": {}}}, "partitions.bad name"),
        ({"partitions": {"cpu": {}}, "hub": {"start_timeout": 1}}, "hub.start_timeout"),
    ],
)
def test_errors_name_the_field(data: dict, expected: str) -> None:
    with pytest.raises(SiteConfigError) as err:
        parse_site(data, "site.yaml")
    assert expected in str(err.value)


def test_unreadable_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(SiteConfigError, match="cannot read site file"):
        load_site(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("partitions: [\n")
    with pytest.raises(SiteConfigError, match="not valid YAML"):
        load_site(broken)
