"""An apps service's runner on the demo site, with no cluster: for the apps unit tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shopfloor.apps.model import AppStore
from shopfloor.extensions.apps_runner import AppRunner, Run
from shopfloor.site import load_site

DEMO_SITE = Path(__file__).resolve().parents[1] / "hub_config" / "demo_site.yaml"
#: The secret of the run ``alice/wave`` that :func:`demo_runner` starts with.
SECRET = "s" * 43


@contextmanager
def demo_runner(prefix: str) -> Iterator[AppRunner]:
    """An :class:`AppRunner` on a store in a fresh folder, with one run ``alice/wave``."""
    site = load_site(DEMO_SITE)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    folder.chmod(0o711)  # the store checks that owners can reach it (tmp_path is root's)
    try:
        runner = AppRunner(site, AppStore(folder / "apps", site.apps),
                           "http://127.0.0.1:1/services/apps")
        runner.runs["alice/wave"] = Run(key="alice/wave", version=1, secret=SECRET)
        yield runner
    finally:
        shutil.rmtree(folder)
