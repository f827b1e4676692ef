"""Workshops: the model and store, the privileged operations, the client and CLI.

May import: ``shopfloor`` core, ``shopfloor.slurm.seam`` and ``shopfloor.session``; never JupyterHub
or batchspawner (the hub side lives in ``shopfloor.extensions.workshops_*``).
"""
