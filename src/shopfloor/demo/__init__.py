"""The embedded default: a real multi-node Slurm cluster on this machine and ``shopfloor demo``.

May import: ``shopfloor`` core and ``shopfloor.slurm.seam``; it starts the hub as a process and
never imports ``shopfloor.extensions`` or ``shopfloor.widgets``.
"""
