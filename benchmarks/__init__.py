"""Shopfloor benchmarks: measurements against the real local cluster, run as modules.

Each benchmark is ``python -m benchmarks.<name>`` from the repository root, prints one JSON
document on stdout and a readable table on stderr, and shares its statistics and output
helpers through :mod:`benchmarks.report`. See ``benchmarks/README.md``.
"""
