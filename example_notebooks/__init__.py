"""The example notebooks of this Shopfloor version (``shopfloor.examples``).

A package only so that sessions find them with ``importlib.resources`` in any install; each
session copies the notebooks and ``data/`` into ``~/shopfloor-examples/`` on its first start
(:mod:`shopfloor.lab.examples`). This file is not copied.
"""
