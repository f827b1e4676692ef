"""Settings of Shopfloor in JupyterLab: traits of ``ShopfloorLab`` in the Jupyter server's config.

Sessions cannot read the site file, so the hub passes the site's choices in the job's
environment (``SHOPFLOOR_HELP_URL``, ``SHOPFLOOR_WARN_MINUTES``, ``SHOPFLOOR_EXAMPLES_SOURCE``);
each trait's default reads its variable, and a ``jupyter_server_config`` file may override it
(``c.ShopfloorLab.warn_minutes = [30, 10]``).
"""

from __future__ import annotations

import os
from pathlib import Path

from traitlets import Int, List, Unicode, default, validate
from traitlets.config import Configurable

WARN_ENV = "SHOPFLOOR_WARN_MINUTES"
HELP_URL_ENV = "SHOPFLOOR_HELP_URL"
EXAMPLES_SOURCE_ENV = "SHOPFLOOR_EXAMPLES_SOURCE"
IDLE_MINUTES_ENV = "SHOPFLOOR_IDLE_MINUTES"
IDLE_WARN_ENV = "SHOPFLOOR_IDLE_WARN_MINUTES"


def _env_minutes(name: str, fallback: int) -> int:
    text = os.environ.get(name, "").strip()
    return int(text) if text.isdigit() else fallback


def parse_minutes(text: str) -> list[int]:
    """``"15,5"`` → ``[15, 5]`` (largest first); blanks and non-numbers are refused."""
    values = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        if not part.isdigit() or int(part) <= 0:
            raise ValueError(
                f"{WARN_ENV} must be whole minutes separated by commas, e.g. 15,5; got {text!r}"
            )
        values.append(int(part))
    return sorted(set(values), reverse=True)


def packaged_examples() -> str:
    """The example notebooks of this version, shipped as the ``shopfloor.examples`` package."""
    try:
        from importlib.resources import files

        return str(files("shopfloor.examples"))
    except (ModuleNotFoundError, TypeError):
        return ""


class ShopfloorLab(Configurable):
    """What the Shopfloor JupyterLab extension shows and does in this session."""

    warn_minutes = List(
        Int(),
        help="Minutes before the session's Slurm job ends at which JupyterLab shows a warning "
        "with a 'Save all' button, largest first; e.g. [15, 5]. Empty: no warnings. Default "
        f"from ${WARN_ENV} (the site file's choice, e.g. '15,5'), else [15, 5].",
    ).tag(config=True)

    @default("warn_minutes")
    def _default_warn_minutes(self) -> list[int]:
        # Unset: the default; set but empty: the site turned warnings off.
        text = os.environ.get(WARN_ENV)
        return [15, 5] if text is None else parse_minutes(text)

    @validate("warn_minutes")
    def _sorted_minutes(self, proposal: dict) -> list[int]:
        return parse_minutes(",".join(str(v) for v in proposal["value"]))

    idle_minutes = Int(
        0, min=0,
        help="Minutes without activity after which the hub's idle culler stops this session "
        f"(the site file's idle limit for its partition, from ${IDLE_MINUTES_ENV}); 0: the "
        "session is never stopped for being idle, no warning.",
    ).tag(config=True)

    @default("idle_minutes")
    def _default_idle_minutes(self) -> int:
        return _env_minutes(IDLE_MINUTES_ENV, 0)

    idle_warn_minutes = Int(
        10, min=0,
        help="Minutes before the idle limit at which JupyterLab warns that the session will be "
        f"stopped, e.g. 10 (from ${IDLE_WARN_ENV}); 0: no warning.",
    ).tag(config=True)

    @default("idle_warn_minutes")
    def _default_idle_warn_minutes(self) -> int:
        return _env_minutes(IDLE_WARN_ENV, 10)

    help_url = Unicode(
        help="The site's help page, opened by the Help card (e.g. https://hpc.example.org/help). "
        f"Empty: the Help card shows the session facts only. Default from ${HELP_URL_ENV}.",
    ).tag(config=True)

    @default("help_url")
    def _default_help_url(self) -> str:
        return os.environ.get(HELP_URL_ENV, "")

    examples_source = Unicode(
        help="Folder with this version's example notebooks, copied into examples_dir when the "
        f"server starts. Default from ${EXAMPLES_SOURCE_ENV}, else the notebooks shipped in "
        "the package (shopfloor.examples). Empty: nothing is copied.",
    ).tag(config=True)

    @default("examples_source")
    def _default_examples_source(self) -> str:
        return os.environ.get(EXAMPLES_SOURCE_ENV) or packaged_examples()

    examples_dir = Unicode(
        "shopfloor-examples",
        help="Where the examples go, relative to the server's root folder (the user's home).",
    ).tag(config=True)

    panels_dir = Unicode(
        "shopfloor-panels",
        help="Where the launcher cards write the small notebooks that show a panel, relative "
        "to the server's root folder. The card rewrites its notebook each time (never a file "
        "the user made).",
    ).tag(config=True)

    job_refresh_seconds = Int(
        300, min=10,
        help="Seconds between reads of the job's record from Slurm (end time, partition, "
        "node); the end time only changes when an admin extends the job. One `scontrol` per "
        "session per interval.",
    ).tag(config=True)

    log_lines = Int(
        20, min=0, help="Lines of the job's log shown by the Help card (tokens are hidden).",
    ).tag(config=True)

    def resolve(self, root_dir: str | os.PathLike[str], relative: str) -> Path:
        """An absolute path for a setting relative to the server's root folder."""
        return (Path(root_dir).expanduser() / relative).resolve()
