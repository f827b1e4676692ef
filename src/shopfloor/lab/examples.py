"""Copy this version's example notebooks into the user's home, never over the user's edits.

Runs in the user's own server (so as the user) when it starts, and again on request. A
manifest (``.shopfloor-examples.json`` in the target folder) remembers what was last written
for each file, which tells three cases apart:

* the file is missing and was never copied: copy it;
* the copy is unchanged since we wrote it and this version differs: replace it (nothing of the
  user's is lost);
* the user changed the copy, or made a file of that name: the new version goes *beside* it as
  ``<name>.v<version><suffix>`` and the user's file stays as it is.

A file the user deleted stays deleted until a version brings a different one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST = ".shopfloor-examples.json"
_SKIP = {"__pycache__", ".ipynb_checkpoints", "__init__.py"}  # __init__: shopfloor.examples


@dataclass
class CopyReport:
    """Relative paths, by what happened to each."""

    copied: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    beside: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    left_deleted: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{len(v)} {k.replace('_', ' ')}" for k, v in vars(self).items() if v]
        return ", ".join(parts) or "no examples"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_files(source: Path) -> list[Path]:
    """Files under ``source`` (relative), without hidden files and caches."""
    found = []
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if path.is_file() and not any(p.startswith(".") or p in _SKIP for p in rel.parts):
            found.append(rel)
    return found


def write_private(path: Path, data: bytes) -> None:
    """Write atomically; new folders 0700 and files 0600 (a home is not a public place)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".shopfloor-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def beside_name(rel: Path, version: str) -> Path:
    """``slider_app.ipynb`` → ``slider_app.v0.2.0.ipynb``."""
    return rel.with_name(f"{rel.stem}.v{version}{rel.suffix}")


def _load_manifest(target: Path) -> dict[str, str]:
    try:
        data = json.loads((target / MANIFEST).read_text())
        files = data.get("files", {})
        return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}
    except (OSError, ValueError):
        return {}


def copy_examples(source: Path, target: Path, version: str) -> CopyReport:
    """Bring ``target`` up to this version's examples from ``source`` (see the module doc)."""
    report = CopyReport()
    if not source.is_dir():
        return report
    written = _load_manifest(target)
    for rel in source_files(source):
        data = (source / rel).read_bytes()
        new = hashlib.sha256(data).hexdigest()
        key, dest = rel.as_posix(), target / rel
        if not dest.exists() and not dest.is_symlink():
            if written.get(key) == new:
                report.left_deleted.append(key)
                continue
            write_private(dest, data)
            written[key] = new
            report.copied.append(key)
            continue
        current = _digest(dest) if dest.is_file() and not dest.is_symlink() else ""
        if current == new:
            written[key] = new
            report.unchanged.append(key)
        elif current and written.get(key) == current:
            write_private(dest, data)
            written[key] = new
            report.updated.append(key)
        else:
            other = beside_name(rel, version)
            other_dest = target / other
            if not (other_dest.is_file() and _digest(other_dest) == new):
                if other_dest.exists() or other_dest.is_symlink():
                    continue  # the user owns that name too: leave both alone
                write_private(other_dest, data)
                report.beside.append(other.as_posix())
            written[other.as_posix()] = new
    write_private(target / MANIFEST, json.dumps(
        {"version": version, "files": written}, indent=1, sort_keys=True).encode())
    return report
