"""Fixtures for tests against the real local Slurm cluster (``-m cluster``)."""

from __future__ import annotations

import pytest

from shopfloor.localcluster import LocalCluster


@pytest.fixture(scope="session")
def local_cluster() -> LocalCluster:
    """The machine's local cluster (state dir from ``$SHOPFLOOR_STATE_DIR`` or the default),
    brought up once per test session and left running: other tests and users share it."""
    cluster = LocalCluster()
    cluster.up(timeout=120)
    return cluster
