"""The one seam between Shopfloor and Slurm.

Owns every call of ``sbatch``, ``squeue``, ``scancel``, ``sinfo``, ``scontrol`` and ``sacctmgr``
(the typed methods of ``seam.Slurm``, async, and ``seam.SlurmSync``, blocking: one dialect, two
runners), every parser of their output, job scripts, the batched job watcher and the cached
cluster view. Nothing outside this package starts a Slurm tool (``tests/unit/test_slurm_boundary``).
May import: the Python standard library and ``shopfloor`` core (``site``, ``resources``,
``timeutil``, ``userfiles``: the one way to run as a user); never JupyterHub, batchspawner,
``shopfloor.extensions`` or ``shopfloor.widgets``.
"""
