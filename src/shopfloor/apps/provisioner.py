"""The kernel provisioner of app jobs: jupyter_client's local one, except that the pool's
first kernel may be the one :mod:`shopfloor.apps.prelaunch` started while Voila imported.

Registered as the ``shopfloor-prelaunched`` entry point of ``jupyter_client.kernel_provisioners``
and chosen by the app job's Voila only (``KernelProvisionerFactory.default_provisioner_name``,
:func:`shopfloor.apps.job.serve`). When :func:`~shopfloor.apps.prelaunch.claim` finds no
matching kernel, it launches exactly as :class:`~jupyter_client.provisioning.LocalProvisioner`.
"""

from __future__ import annotations

import os
from typing import Any

from jupyter_client.connect import LocalPortCache
from jupyter_client.provisioning import LocalProvisioner

from shopfloor.apps import prelaunch


class PrelaunchedProvisioner(LocalProvisioner):  # type: ignore[misc]
    """Takes over the prelaunched kernel where it is the one asked for."""

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> dict[str, Any]:
        manager = self.parent
        kernel = prelaunch.claim(cmd, kwargs.get("env"), kwargs.get("cwd"),
                                 manager.connection_file)
        if kernel is None:
            return await super().launch_kernel(cmd, **kwargs)
        if self.ports_cached:
            # pre_launch set ports aside for a kernel we do not start: give them back.
            cache = LocalPortCache.instance()
            for name in prelaunch.PORT_NAMES:
                cache.return_port(self.connection_info[name])
            self.ports_cached = False
        # The manager's own connection file (written by pre_launch) describes no kernel; it
        # uses the prelaunched kernel's from now on (and removes that one at shutdown).
        try:
            os.remove(manager.connection_file)
        except FileNotFoundError:
            pass
        manager.connection_file = kernel.connection_file
        for name in prelaunch.PORT_NAMES:
            setattr(manager, name, 0)  # load_connection_info keeps ports already set
        manager.load_connection_info(kernel.info)
        self.process = kernel.process
        self.pid = kernel.process.pid
        try:
            self.pgid = os.getpgid(self.pid)
        except OSError:
            self.pgid = None
        self.cwd = kernel.cwd
        self.connection_info = dict(kernel.info)
        return self.connection_info


__all__ = ["PrelaunchedProvisioner"]
