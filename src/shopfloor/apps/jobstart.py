"""Entry point of an app's Slurm job: ``python -m shopfloor.apps.jobstart`` (the arguments of
:func:`shopfloor.apps.job.main`).

It exists to run one thing before Voila is imported: Voila's imports reach ``jsonschema``
(through ``jupyter_server`` and ``jupyter_events``), which imports ``rfc3987_syntax`` and
compiles its grammars, for string formats no Jupyter schema uses. That was most of an app's
cold start: importing Voila took 6.3 s with it and 1.8 s without on the loaded 2-core demo
machine (1.3-1.6 s of a quiet one). :func:`~shopfloor.session.singleuser.skip_unused_slow_imports`
explains why leaving it out is safe; JupyterLab sessions do the same. Only this process is
affected: kernels are processes of their own, and the apps service, which imports
:mod:`shopfloor.apps.job` for its constants, never runs this module.
"""

from __future__ import annotations

from shopfloor.session.singleuser import skip_unused_slow_imports

skip_unused_slow_imports()

from shopfloor.apps.job import main  # noqa: E402 - after the line above, on purpose

if __name__ == "__main__":
    main()
