"""The one seam between Shopfloor and Slurm.

Owns every call of ``sbatch``, ``squeue``, ``scancel``, ``sinfo``, ``scontrol`` and ``sacctmgr``,
every parser of their output, job scripts, the batched job watcher and the cached cluster view.
May import: the Python standard library and ``shopfloor`` core (``site``, ``resources``,
``timeutil``); never JupyterHub, batchspawner, ``shopfloor.extensions`` or ``shopfloor.widgets``.
"""
