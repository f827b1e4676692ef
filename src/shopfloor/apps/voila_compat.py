"""The one private Voila detail the app job relies on (the job must not import the hub side).

Voila has no public way to wait for its preheated kernels. Its pooling kernel manager
(``voila.voila_kernel_manager.voila_kernel_manager_factory`` with ``preheat_kernel``) keeps
them in ``_pools``: notebook path → list of tasks that each start a kernel and render the
notebook. ``tests/unit/test_compat.py`` checks this against the installed Voila.
"""

from __future__ import annotations

import asyncio
from typing import Any


def preheated_kernel_tasks(kernel_manager: Any) -> list[asyncio.Future[Any]]:
    """The tasks warming Voila's preheated kernels; empty when Voila does not preheat."""
    pools = getattr(kernel_manager, "_pools", {})
    return [task for tasks in pools.values() for task in tasks]


__all__ = ["preheated_kernel_tasks"]
