"""Shopfloor: the self-service workbench of an AI Factory.

One subpackage per capability; each package's docstring says what it owns and what it may
import (checked by import-linter, see ``.importlinter``):

- ``shopfloor.site``, ``shopfloor.resources``, ``shopfloor.timeutil``, ``shopfloor.userfiles``:
  the core (site file, the one resource-request model, Slurm's walltime grammar, reading a
  user's files as that user);
- ``shopfloor.slurm``: the one seam to the Slurm tools;
- ``shopfloor.session``: what runs in a user's session (hub client, sessions, batch runs);
- ``shopfloor.ray``, ``shopfloor.finetune``, ``shopfloor.apps``, ``shopfloor.workshops``;
- ``shopfloor.demo``: the embedded cluster and ``shopfloor demo``;
- ``shopfloor.extensions`` (folder ``extensions/``): the hub side, files named by capability;
- ``shopfloor.widgets`` (folder ``widgets/``): the panels, files named by capability.
"""

__version__ = "0.1.0"
