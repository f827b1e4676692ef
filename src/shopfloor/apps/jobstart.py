"""Entry point of an app's Slurm job: ``python -m shopfloor.apps.jobstart --notebook ...``.

It does what must happen before Voila is imported, then hands over to
:func:`shopfloor.apps.job.serve`:

* leaves out an unused slow import: Voila's imports reach ``jsonschema`` (through
  ``jupyter_server`` and ``jupyter_events``), which imports ``rfc3987_syntax`` and compiles its
  grammars, for string formats no Jupyter schema uses. That was most of an app's cold start:
  importing Voila took 6.3 s with it and 1.8 s without on the loaded 2-core demo machine
  (1.3-1.6 s of a quiet one). :func:`~shopfloor.session.singleuser.skip_unused_slow_imports`
  explains why leaving it out is safe; JupyterLab sessions do the same. Only this process is
  affected: kernels are processes of their own;
* takes the per-run secret out of the environment (no kernel may inherit it);
* starts the pool's first kernel (:mod:`shopfloor.apps.prelaunch`), which then boots while
  Voila imports instead of after.

The apps service imports this module for :data:`SECRET_ENV`; importing it does nothing else.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys

#: The per-run secret's variable (sbatch ``--export`` names it; its value never reaches a
#: script or a command line).
SECRET_ENV = "SHOPFLOOR_APP_SECRET"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The job's arguments: the notebook, Voila's base URL, the service's callback, the pool."""
    parser = argparse.ArgumentParser(prog="python -m shopfloor.apps.jobstart")
    parser.add_argument("--notebook", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--callback", required=True)
    parser.add_argument("--pool-size", type=int, default=1)
    return parser.parse_args(argv)


def private_output() -> None:
    """Make the job's log (our stdout and stderr, created by Slurm) readable by its owner only."""
    for fd in (1, 2):
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.fchmod(fd, 0o600)
        except OSError:
            pass  # not ours to change (a terminal, a pipe): nothing to protect


def kernel_env(base_url: str, port: int) -> dict[str, str]:
    """The environment Voila's pool gives its kernels (``voila_kernel_manager.fill_if_needed``):
    ours, with Voila's own variables; ``server_url`` defaults to ``base_url`` there."""
    return {**os.environ, "VOILA_BASE_URL": base_url, "VOILA_SERVER_URL": base_url,
            "VOILA_APP_PORT": str(port), "VOILA_PREHEAT": "True"}


def main(argv: list[str] | None = None) -> None:
    from shopfloor.session.singleuser import free_port, node_address, skip_unused_slow_imports

    skip_unused_slow_imports()
    args = parse_args(argv)
    private_output()
    secret = os.environ.pop(SECRET_ENV, "")
    if len(secret) < 32:
        sys.exit(f"shopfloor: ${SECRET_ENV} is missing: start apps through the apps service")
    # A port free on every address is free on the node's: the kernel needs its number now,
    # the address (a Slurm call) can wait until the kernel is on its way.
    port = free_port("0.0.0.0")
    prelaunched = None
    if args.pool_size > 0:
        from shopfloor.apps import prelaunch

        prelaunched = prelaunch.start(args.notebook, kernel_env(args.base_url, port))
    address = node_address()
    from shopfloor.apps.job import serve

    serve(args, secret, address, port, prelaunched=prelaunched is not None)


if __name__ == "__main__":
    main()
