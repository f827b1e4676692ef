"""What a session's server imports of ours before it answers (issue 17: spawn time).

Every JupyterLab start in a Slurm job imports our launcher and our server extensions before
the server listens. They must stay cheap: the site model (pydantic models of the whole site
file), the resource model and the Ray client cost 0.1-0.3 s per start on our 2-core nodes and
are needed only when a user opens a Ray dashboard. Each check runs in a fresh interpreter,
after the imports Jupyter Server itself makes, so what is counted is ours alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

#: Imported by the job before its server answers: the launcher and every server extension
#: of ours that ``jupyter-config/`` enables.
JOB_SIDE = (
    "shopfloor.session.singleuser",
    "shopfloor.lab",
    "shopfloor.lab.handlers",
    "shopfloor.ray.dashboard",
)
#: What none of them may pull in at import time.
HEAVY = (
    "shopfloor.site",
    "shopfloor.resources",
    "shopfloor.ray.cluster",
    "pydantic",
    "sqlalchemy",
)

_PROBE = """
import json, sys
import jupyter_server.serverapp, jupyter_server_proxy.handlers  # what the server imports
before = set(sys.modules)
for name in {modules!r}:
    __import__(name)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def new_modules(modules: tuple[str, ...], home: Path) -> list[str]:
    """Modules that importing ``modules`` adds in a fresh interpreter (beyond the server's)."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(modules=modules)],
        capture_output=True, text=True, timeout=120, check=True,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", JOB_SIDE)
def test_job_side_module_imports_nothing_heavy(module: str, tmp_path: Path) -> None:
    added = new_modules((module,), tmp_path)
    heavy = [m for m in added if m.split(".")[0] in HEAVY or m in HEAVY]
    assert not heavy, f"{module} imports {heavy} before the server answers"


def test_the_dashboard_still_finds_its_clusters_lazily(tmp_path: Path) -> None:
    """The moved imports still work on the first dashboard request (no cluster: a 404)."""
    probe = (
        "from tornado import web\n"
        "import shopfloor.ray.dashboard as d\n"
        "try:\n"
        "    d._head_of('nope')\n"
        "except web.HTTPError as exc:\n"
        "    print(exc.status_code, exc.log_message)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
        check=True, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.startswith("404 You have no running Ray cluster named 'nope'")
