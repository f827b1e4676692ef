"""Job side of a batch run: execute a notebook headless and report progress as it goes.

Run inside the Slurm job as ``python -m shopfloor.session.notebookrun <run folder>``. The folder
holds ``run.json`` (what to run, written at submit) and ``input.ipynb`` (a snapshot of the
notebook). This writes ``progress.json`` (state, cell i of n) after every code cell and the executed
notebook to ``output.ipynb``, also when a cell fails (with the outputs up to the error).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import nbformat

# nbformat and nbclient are imported where they are used: the panels import the constants
# below (through shopfloor.session.batch), and nbformat's import costs 1-4 s (jsonschema's
# rfc3987_syntax compiles its grammars) at every panel's first use.

PROGRESS_FILE = "progress.json"
OUTPUT_FILE = "output.ipynb"
INPUT_FILE = "input.ipynb"
RUN_FILE = "run.json"


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` atomically, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def parameters_cell(parameters: dict[str, Any]) -> nbformat.NotebookNode:
    """The cell that sets ``parameters`` (literal values only), tagged like papermill's."""
    import nbformat

    lines = ["# Parameters injected by Shopfloor"]
    lines += [f"{name} = {value!r}" for name, value in parameters.items()]
    cell = nbformat.v4.new_code_cell("\n".join(lines))
    cell.metadata["tags"] = ["injected-parameters"]
    return cell


class ProgressReporter:
    """Writes ``progress.json``: ``{"state", "cell", "cells", "updated", "error"}``."""

    def __init__(self, path: Path, cells: int) -> None:
        self.path = path
        self.cells = cells
        self.done = 0

    def report(self, state: str, error: str = "") -> None:
        write_json(self.path, {
            "state": state, "cell": self.done, "cells": self.cells,
            "updated": datetime.now().isoformat(timespec="seconds"), "error": error,
        })

    def cell_executed(self, **_: Any) -> None:
        self.done += 1
        self.report("running")


def execute(run_dir: Path) -> int:
    """Execute the run in ``run_dir``; returns the process exit code (0 when it completed)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    spec = json.loads((run_dir / RUN_FILE).read_text())
    nb = nbformat.read(run_dir / INPUT_FILE, as_version=4)
    if spec.get("parameters"):
        nb.cells.insert(0, parameters_cell(spec["parameters"]))
    code_cells = sum(1 for c in nb.cells if c.cell_type == "code")
    reporter = ProgressReporter(run_dir / PROGRESS_FILE, code_cells)
    reporter.report("running")
    kernel = nb.metadata.get("kernelspec", {}).get("name") or "python3"
    client = NotebookClient(
        nb, kernel_name=kernel, timeout=None,
        resources={"metadata": {"path": spec.get("workdir") or str(run_dir)}},
        on_cell_executed=reporter.cell_executed,
    )
    try:
        client.execute()
    except CellExecutionError as exc:
        nbformat.write(nb, run_dir / OUTPUT_FILE)
        reporter.report("failed", f"{exc.ename}: {exc.evalue}")
        print(f"shopfloor: a cell failed: {exc.ename}: {exc.evalue}", file=sys.stderr)
        return 1
    except Exception as exc:  # the kernel died, would not start, ...: say so in progress
        nbformat.write(nb, run_dir / OUTPUT_FILE)
        reporter.report("failed", f"{type(exc).__name__}: {exc}")
        raise
    nbformat.write(nb, run_dir / OUTPUT_FILE)
    reporter.report("completed")
    return 0


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        sys.exit("usage: python -m shopfloor.session.notebookrun RUN_FOLDER")
    sys.exit(execute(Path(args[0])))


if __name__ == "__main__":
    main()
