"""What runs inside a user's session or job, as that user.

Owns the hub client (``hubapi``), the services' client pieces, named sessions, batch notebook
runs and the compute view's data, and the job-side launcher of the server (``singleuser``).
May import: ``shopfloor`` core and ``shopfloor.slurm.seam``; never JupyterHub or batchspawner.
"""
