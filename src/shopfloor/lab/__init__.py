"""Shopfloor inside JupyterLab: the session's server extension and the prebuilt lab extension.

Runs in the user's own Jupyter server (inside the session's Slurm job, as the user). It serves,
under ``{base_url}shopfloor/lab/``:

* ``status``: partition, node, the job's end time and memory use against the job's limit
  (what the status bar shows and warns from);
* ``help``: the same plus the end of the job's log, as text a user can copy to support;
* ``panels/<card>``: writes the small notebook behind a launcher card (see :mod:`.panels`);
* ``examples``: copies this version's example notebooks into ``~/shopfloor-examples/``
  (also done once when the server starts), never over a user's edits (see :mod:`.examples`).

The JupyterLab side (launcher section "Shopfloor", status bar item, "Publish as app..." on
notebooks, the Help view) is the TypeScript package in ``extensions/jupyterlab``, built
into ``shopfloor/lab/labextension`` and installed as
``share/jupyter/labextensions/@shopfloor/jupyterlab``.
Settings are :class:`~shopfloor.lab.config.ShopfloorLab` traits.
"""

from __future__ import annotations

from typing import Any

#: The npm name of the lab extension (``extensions/jupyterlab/package.json``).
LABEXTENSION_NAME = "@shopfloor/jupyterlab"


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": LABEXTENSION_NAME}]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "shopfloor.lab"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from shopfloor.lab.handlers import install

    install(serverapp)
