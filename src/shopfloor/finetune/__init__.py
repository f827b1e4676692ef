"""Fine-tuning: recipes, datasets, the model catalog, the training loop and its metrics.

May import: ``shopfloor`` core, ``shopfloor.session`` and ``shopfloor.ray``; never JupyterHub
or batchspawner.
"""
