"""Published notebook apps: the model and its store, the job-side Voila, the client and CLI.

May import: ``shopfloor`` core, ``shopfloor.slurm.seam`` and ``shopfloor.session``; never JupyterHub
or batchspawner (the hub side lives in ``shopfloor.extensions.apps_*``).
"""
