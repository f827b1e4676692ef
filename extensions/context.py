"""The objects one hub process shares: site, policy, the Slurm seam and its caches."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from shopfloor.accounts.info import AccountsInfo
from shopfloor.resources import RequestPolicy
from shopfloor.site import SiteConfig
from shopfloor.slurm.clusterinfo import ClusterInfo
from shopfloor.slurm.jobwatch import JobWatcher
from shopfloor.slurm.queueview import QueueView
from shopfloor.slurm.seam import Slurm


@dataclass
class ShopfloorContext:
    """Built once by :func:`shopfloor.extensions.install.install` and handed to spawners."""

    site: SiteConfig
    slurm: Slurm
    policy: RequestPolicy
    cluster_info: ClusterInfo
    job_watcher: JobWatcher
    #: Every job and node for sessions' panels (``/hub/api/shopfloor/jobs``), shared.
    queue_view: QueueView
    _addresses: dict[str, tuple[float, str]] = field(default_factory=dict)

    def __deepcopy__(self, memo: dict[int, object]) -> ShopfloorContext:
        """The context itself, never a copy: it is shared by design.

        traitlets deep-copies every config value into each configurable, so without this
        each spawner would get its own job watcher and run its own ``squeue`` (measured by
        ``benchmarks/scale.py``: one call per server per poll instead of one for all).
        """
        return self

    @classmethod
    def from_site(cls, site: SiteConfig, slurm: Slurm | None = None) -> ShopfloorContext:
        slurm = slurm or Slurm(bin_dir=site.slurm.bin_dir, env=site.slurm.environment())
        return cls(
            site=site,
            slurm=slurm,
            policy=RequestPolicy(site),
            cluster_info=ClusterInfo(
                slurm, site.slurm.info_cache_seconds,
                accounts=AccountsInfo(slurm, site.accounting.cache_seconds)
                if site.accounting.enabled else None),
            job_watcher=JobWatcher(slurm),
            queue_view=QueueView(slurm, max_age=site.slurm.poll_interval),
        )

    async def node_address(self, node: str) -> str:
        """Where to connect to ``node`` (Slurm's ``NodeAddr``), cached for ten minutes."""
        cached = self._addresses.get(node)
        if cached and time.monotonic() - cached[0] < 600:
            return cached[1]
        address = await self.slurm.node_address(node)
        self._addresses[node] = (time.monotonic(), address)
        return address
