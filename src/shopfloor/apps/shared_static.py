"""Voila's static files, once for every app: one index of the installed files, one key.

Every app page loads about a hundred files of Voila's installation (``voila/static``: Voila's
bundle and its chunks; ``voila/labextensions``: the widget manager and the other JupyterLab
extensions; ``voila/templates/<template>/static``: the template's CSS). Voila names them under
each app's own path, so a browser fetched all of them again for every app it had not opened
before, and again after each republish. The apps service serves them instead from one path of
the app origin (``/services/apps/_static/<key>/...``), shared by all apps and versions, with
long-lived cache headers: the path changes with :attr:`StaticIndex.key`, which changes with
the installed files.

The index maps URL paths to files: the same directories, in the same order, that Voila's own
handlers search (the first directory holding a path wins, as in Voila). The service builds it
once at start from its installation and serves only the files in it, so no part of a request
ever becomes a file-system path. The app job builds it from its own installation (as the
owner, with the owner's Jupyter paths and template) and reports the key; the service points a
page at the shared path only when the keys match, so a job whose Voila, extensions or
template differ from the service's keeps its own per-app files.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: What a key looks like (hex digest prefix); the job reports one, URLs carry one.
KEY = re.compile(r"[0-9a-f]{24}")
#: The areas of Voila's URL space that are shared, as Voila names them under an app's base URL
#: (``<base>voila/<area>``).
AREAS = ("static", "labextensions", "templates")
#: Files more than this are not indexed: no page file is near it, and the service reads the
#: files it serves into memory.
MAX_FILE_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class StaticIndex:
    """URL path inside the shared area (``static/voila.js``,
    ``labextensions/@jupyter-widgets/...``, ``templates/lab/static/index.css``) → file."""

    files: dict[str, Path] = field(default_factory=dict)
    key: str = ""

    @classmethod
    def build(cls, roots: dict[str, Sequence[str]], template: str, version: str) -> StaticIndex:
        """Index the directories of each area (``roots``: area → directories in Voila's
        search order). ``templates`` directories hold ``<template>``'s static files. The key
        covers Voila's version, the template and every file's path, size and modification
        time: a reinstalled or rebuilt file gets a new key, so cached copies never go stale."""
        files: dict[str, Path] = {}
        digest = hashlib.sha256(f"voila {version}\ntemplate {template}\n".encode())
        for area in AREAS:
            prefix = f"{area}/{template}/static/" if area == "templates" else f"{area}/"
            for rel, path, size, mtime in _walk(roots.get(area, ())):
                url = prefix + rel
                if url not in files:
                    files[url] = path
                    digest.update(f"{url}\0{size}\0{mtime}\n".encode())
        return cls(files, digest.hexdigest()[:24])

    def find(self, key: str, path: str) -> Path | None:
        """The file of ``path`` in the area of ``key``; None for another key or an unknown
        path (nothing of the request reaches the file system)."""
        if key != self.key:
            return None
        return self.files.get(path)


def _walk(directories: Iterable[str]) -> Iterable[tuple[str, Path, int, int]]:
    """Every regular file under ``directories`` (in order; links followed, as Voila's
    handlers do): its path relative to its directory, its path, size and mtime."""
    for directory in directories:
        top = Path(directory)
        if not top.is_dir():
            continue
        for folder, dirs, names in os.walk(top, followlinks=True):
            dirs.sort()
            for name in sorted(names):
                path = Path(folder, name)
                try:
                    info = path.stat()
                except OSError:
                    continue  # a dangling link: Voila could not serve it either
                if info.st_size <= MAX_FILE_BYTES and os.path.isfile(path):
                    yield path.relative_to(top).as_posix(), path, info.st_size, int(info.st_mtime)


def voila_roots(template: str = "lab",
                extra_labextensions: Sequence[str] = ()) -> dict[str, list[str]]:
    """The directories Voila's handlers search for each area, for ``template`` (what
    ``voila.app.Voila`` computes for its ``voila/static``, ``voila/labextensions`` and
    ``voila/templates`` handlers)."""
    from jupyter_server import DEFAULT_STATIC_FILES_PATH
    from voila.paths import collect_static_paths
    from voila.utils import get_voila_labextensions_path

    template_static = collect_static_paths(["voila", "nbconvert"], template)
    return {
        "static": [*template_static, DEFAULT_STATIC_FILES_PATH],
        "labextensions": get_voila_labextensions_path(list(extra_labextensions) or None),
        "templates": template_static,
    }


def installed_index(template: str = "lab",
                    extra_labextensions: Sequence[str] = ()) -> StaticIndex:
    """The index of this process's Voila installation (as this user sees it)."""
    import voila

    return StaticIndex.build(voila_roots(template, extra_labextensions), template,
                             voila.__version__)


def share_page(page: bytes, app_base: str, shared_base: str) -> bytes:
    """A page Voila rendered under ``app_base`` (``/services/apps/o/a/``), with the URLs of
    the shared areas pointing at ``shared_base`` (``/services/apps/_static/<key>/``) instead.
    Voila writes them as ``<base>voila/static`` (its page config's ``fullStaticUrl``, the
    bundle's script tag), ``<base>voila/labextensions`` (``fullLabextensionsUrl``) and
    ``<base>voila/templates/...`` (the template's CSS and script)."""
    pattern = re.escape(app_base.encode() + b"voila/") + rb"(static|labextensions|templates)" \
        rb"(?=[/\"'])"
    return re.sub(pattern, lambda m: shared_base.encode() + m.group(1), page)


__all__ = ["AREAS", "KEY", "StaticIndex", "installed_index", "share_page", "voila_roots"]
