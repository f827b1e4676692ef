"""Operating Shopfloor at a site: what an admin runs and reads, not what users touch.

Owns ``shopfloor doctor`` (:mod:`.doctor`: checks that this host, Slurm and the site file fit
together, each failure with a fix in one line), the site reference generated from the site
model (:mod:`.sitedoc`, written to ``docs/site-reference.md``), the Prometheus metric
definitions (:mod:`.metrics`; the hub side records them in ``shopfloor.extensions.metrics``),
the hub database as the site file chooses it (:mod:`.database`: SQLite or PostgreSQL, the
password from a private file) and the systemd units, sudoers rule and logrotate file shipped
as package data (``units/``).

May import: the Python standard library, ``prometheus_client``, ``sqlalchemy`` (a JupyterHub
dependency) and ``shopfloor`` core (``site``, ``timeutil``) and ``shopfloor.slurm``; never
JupyterHub, batchspawner, ``shopfloor.extensions`` or ``shopfloor.widgets``.
"""

from importlib import resources
from pathlib import Path


def unit_dir() -> Path:
    """The folder of the shipped systemd units, sudoers rule and logrotate file."""
    return Path(str(resources.files(__name__) / "units"))


__all__ = ["unit_dir"]
