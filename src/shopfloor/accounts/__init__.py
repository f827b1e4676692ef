"""Accounts and budgets: which Slurm accounts and QOS a user may charge, and what is left.

Slurm is the source of truth (associations and ``GrpTRESMins`` in slurmdbd, use from
``sshare``); this package reads them through the seam (:mod:`shopfloor.slurm.accounting`)
into plain objects (:mod:`.model`), caches them for the hub (:mod:`.info`) and prints them for
admins (:mod:`.usage`, ``shopfloor usage``). The resource model
(:mod:`shopfloor.resources`) uses them to refuse what Slurm would refuse. It imports the core
and the seam only.
"""
