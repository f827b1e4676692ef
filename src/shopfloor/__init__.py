"""Shopfloor: the self-service workbench of an AI Factory."""

import os as _os

__version__ = "0.1.0"

# In a source checkout the client's top-level folders (extensions/, widgets/, hub_config/)
# sit beside this package; installed, pyproject.toml maps them into it. Let the checkout work
# too (e.g. `python -m benchmarks.spawn` from the repository root, where the checkout's
# shopfloor/ comes first on sys.path).
_checkout = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
_markers = ("hub_config/jupyterhub_config.py", "extensions/__init__.py")
if all(_os.path.isfile(_os.path.join(_checkout, m)) for m in _markers):
    __path__.append(_checkout)
