"""JupyterHub extensions: the Slurm spawner, its safe callback, the spawn form."""
