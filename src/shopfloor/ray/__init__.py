"""Ray clusters on Slurm: the library a user calls, the job-side launcher, the dashboard proxy.

May import: ``shopfloor`` core, ``shopfloor.slurm.seam`` and ``shopfloor.session``; never JupyterHub
or batchspawner.
"""
