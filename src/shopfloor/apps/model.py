"""Published notebook apps: the model, the input checks and the service's own store.

A user publishes a notebook (plus declared files) as an *app*. Each publish makes an immutable
*version*: a snapshot copied into the store of the ``apps`` service (owned by the service,
readable by the owner's group, writable by nobody else). Republishing makes the next version;
the owner can roll back to any earlier one or unpublish. Who may open an app is its
*audience*: only the owner, named users, members of named groups, every hub user, or anyone
(without login) where the site allows public apps.

Everything a user sends goes through :func:`validate_publish`, which raises
:class:`AppInputError` whose ``problems`` map each bad field to what is allowed.
"""

from __future__ import annotations

import base64
import json
import os
import posixpath
import re
import secrets
import shutil
import struct
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from shopfloor.errors import ShopfloorError
from shopfloor.resources import UserContext
from shopfloor.site import AppsSettings

AudienceKind = Literal["private", "users", "groups", "hub", "public"]
AUDIENCE_KINDS: tuple[str, ...] = ("private", "users", "groups", "hub", "public")
#: The fields a publish request may carry.
PUBLISH_FIELDS = (
    "notebook", "title", "description", "slug", "audience", "names", "compute", "files",
    "thumbnail", "note",
)
TITLE_MAX = 80
DESCRIPTION_MAX = 500
#: A version note ("What changed"): one line, shown beside the version in every version list.
NOTE_MAX = 200
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_TITLE_RE = re.compile(r"^[\w ,.:;!?'()&+/-]+$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: Thumbnails we accept, by their first bytes, with the file name they are stored under.
_IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": "thumbnail.png", b"\xff\xd8\xff": "thumbnail.jpg"}
THUMBNAIL_MAX = 2 * 1024 * 1024


class AppInputError(ShopfloorError, ValueError):
    """One or more fields of a publish request are not allowed (field → message)."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        super().__init__(problems=problems)


class AppNotFound(ShopfloorError, LookupError):
    """No such app (or, to a viewer who may not see it, the same answer)."""

    http_status = 404


@dataclass(frozen=True)
class Audience:
    """Who may open an app."""

    kind: AudienceKind = "private"
    names: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.kind == "private":
            return "only the owner"
        if self.kind == "users":
            return "users " + ", ".join(self.names)
        if self.kind == "groups":
            return "groups " + ", ".join(self.names)
        if self.kind == "hub":
            return "every hub user"
        return "anyone, without login"


@dataclass(frozen=True)
class PublishSpec:
    """A checked publish request (paths absolute, inside the owner's home)."""

    notebook: str
    title: str
    description: str
    slug: str
    audience: Audience
    compute: dict[str, Any]
    files: tuple[str, ...] = ()
    thumbnail: bytes | None = None
    note: str = ""  #: what changed in this version, one line


@dataclass(frozen=True)
class AppVersion:
    """One immutable snapshot."""

    number: int
    created: float
    notebook: str  #: file name of the notebook inside the snapshot folder
    files: tuple[str, ...]  #: relative paths of declared files inside the snapshot
    request: dict[str, Any]  #: the validated ResourceRequest, as a dict
    thumbnail: str | None = None  #: file name of the thumbnail inside the snapshot
    title: str = ""
    description: str = ""
    note: str = ""  #: what changed in this version ("" for none, and for older stores)

    def describe(self) -> dict[str, Any]:
        """The version as version lists show it: number, when, title and note."""
        return {"version": self.number, "created": self.created, "title": self.title,
                "note": self.note}


@dataclass
class AppUsage:
    """How much an app is used: distinct viewers, page views (sessions), job starts."""

    sessions: int = 0
    viewers: list[str] = field(default_factory=list)
    anonymous_sessions: int = 0
    starts: int = 0
    last_visit: float = 0.0


@dataclass
class App:
    """A published app: its identity, audience, versions and usage."""

    owner: str
    slug: str
    title: str
    description: str
    audience: Audience
    current: int
    versions: list[AppVersion]
    created: float
    updated: float
    usage: AppUsage = field(default_factory=AppUsage)

    @property
    def key(self) -> str:
        return f"{self.owner}/{self.slug}"

    def version(self, number: int | None = None) -> AppVersion:
        wanted = self.current if number is None else number
        for version in self.versions:
            if version.number == wanted:
                return version
        raise AppNotFound(f"{self.key} has no version {wanted}")

    def summary(self) -> dict[str, Any]:
        """What the gallery and ``list`` show (no paths, no secrets)."""
        version = self.version()
        return {
            "owner": self.owner, "slug": self.slug, "title": self.title,
            "description": self.description, "audience": self.audience.kind,
            "audience_names": list(self.audience.names),
            "audience_text": self.audience.describe(), "version": self.current,
            "versions": [v.number for v in self.versions], "updated": self.updated,
            "note": version.note, "history": [v.describe() for v in self.versions],
            "partition": version.request.get("partition"),
            # The Slurm account the app's jobs charge (the owner's choice or default).
            "account": version.request.get("account"),
            "has_thumbnail": version.thumbnail is not None,
            "viewers": len(self.usage.viewers), "sessions": self.usage.sessions,
        }


# -- input checks --------------------------------------------------------------------------


def _clean_text(value: Any, what: str, limit: int, multiline: bool = False) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be text ({what})")
    text = value.strip()
    if len(text) > limit:
        raise ValueError(f"is too long ({len(text)} characters; at most {limit})")
    for char in text:
        if char == "\n" and multiline:
            continue
        if unicodedata.category(char)[0] == "C":
            raise ValueError("contains control or invisible characters")
    return text


def check_title(value: Any) -> str:
    text = _clean_text(value, "a short title", TITLE_MAX)
    if not text:
        raise ValueError("is required (a short name for the gallery)")
    if not _TITLE_RE.match(text):
        raise ValueError(
            "may use letters, digits, spaces and , . : ; ! ? ' ( ) & + / - only"
        )
    return text


def check_note(value: Any) -> str:
    """A version note: optional, one line of at most :data:`NOTE_MAX` characters."""
    if value is None:
        return ""
    return _clean_text(value, "one line saying what changed", NOTE_MAX)


def slug_from_title(title: str) -> str:
    """A URL name from a title: ``"Wave explorer!"`` → ``"wave-explorer"``."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")[:40].strip("-")
    return slug or "app"


def check_slug(value: Any) -> str:
    if not isinstance(value, str) or not SLUG_RE.match(value):
        raise ValueError(
            "must be 1-40 lowercase letters, digits and '-', starting with a letter or digit "
            "(it becomes the app's URL)"
        )
    return value


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def check_path(value: Any, home: str, base: str | None = None) -> str:
    """An absolute, normalised path inside ``home`` (relative paths start at ``base``)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a file path")
    text = value.strip()
    if any(unicodedata.category(c)[0] == "C" for c in text) or len(text) > 1024:
        raise ValueError("contains control characters or is too long")
    if text.startswith("~/"):
        text = posixpath.join(home, text[2:])
    joined = posixpath.normpath(posixpath.join(base or home, text))
    if not _inside(joined, posixpath.normpath(home)) or joined == posixpath.normpath(home):
        raise ValueError(f"{value!r} is not a file inside your home folder ({home})")
    return joined


def check_audience(
    kind: Any,
    names: Any,
    *,
    allow_public: bool,
    user_exists: Callable[[str], bool],
    group_exists: Callable[[str], bool],
) -> tuple[Audience, dict[str, str]]:
    """The audience, plus problems keyed ``audience`` or ``names``."""
    problems: dict[str, str] = {}
    kind = kind or "private"
    if kind not in AUDIENCE_KINDS:
        return Audience(), {"audience": f"must be one of {', '.join(AUDIENCE_KINDS)}"}
    if kind == "public" and not allow_public:
        problems["audience"] = (
            "this site does not allow public apps (open without login); choose 'hub' for "
            "every logged-in user"
        )
    if isinstance(names, str):
        names = [n for n in re.split(r"[,\s]+", names) if n]
    if names is None:
        names = []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return Audience(), {"names": "must be a list of user or group names"}
    if kind in ("users", "groups"):
        exists = user_exists if kind == "users" else group_exists
        noun = "user" if kind == "users" else "group"
        bad = [n for n in names if not _NAME_RE.match(n)]
        missing = [n for n in names if _NAME_RE.match(n) and not exists(n)]
        if not names:
            problems["names"] = f"name at least one {noun} to share with"
        elif len(names) > 100:
            problems["names"] = "at most 100 names"
        elif bad:
            problems["names"] = f"not valid {noun} names: {', '.join(map(repr, bad[:5]))}"
        elif missing:
            problems["names"] = f"no such {noun}: {', '.join(missing[:5])}"
    elif names:
        problems["names"] = f"names are only used with audience 'users' or 'groups', not {kind!r}"
    return Audience(kind, tuple(sorted(set(names))) if kind in ("users", "groups") else ()), (
        problems
    )


def decode_thumbnail(value: Any) -> bytes:
    """A base64 PNG or JPEG (optionally a ``data:`` URL) of at most 2 MiB."""
    if not isinstance(value, str):
        raise ValueError("must be a base64-encoded PNG or JPEG image")
    if value.startswith("data:"):
        value = value.split(",", 1)[-1]
    try:
        data = base64.b64decode(value, validate=True)
    except ValueError:
        raise ValueError("is not valid base64") from None
    if len(data) > THUMBNAIL_MAX:
        raise ValueError(f"is too large ({len(data) // 1024} KiB; at most 2048 KiB)")
    if not any(data.startswith(magic) for magic in _IMAGE_MAGIC):
        raise ValueError("must be a PNG or JPEG image")
    return data


def validate_publish(
    raw: Mapping[str, Any],
    *,
    home: str,
    settings: AppsSettings,
    user_exists: Callable[[str], bool],
    group_exists: Callable[[str], bool],
) -> PublishSpec:
    """Check a publish request from a user; raise :class:`AppInputError` naming each field."""
    if not isinstance(raw, Mapping):
        raise AppInputError({"(body)": "must be a JSON object"})
    unknown = [k for k in raw if k not in PUBLISH_FIELDS]
    if unknown:
        raise AppInputError({
            str(k)[:40]: "is not a publish setting; allowed: " + ", ".join(PUBLISH_FIELDS)
            for k in unknown
        })
    problems: dict[str, str] = {}
    values: dict[str, Any] = {}

    def take(name: str, check: Callable[[], Any]) -> None:
        try:
            values[name] = check()
        except ValueError as exc:
            problems[name] = str(exc)

    take("title", lambda: check_title(raw.get("title")))
    take("description", lambda: _clean_text(
        raw.get("description") or "", "a description", DESCRIPTION_MAX, multiline=True))
    take("note", lambda: check_note(raw.get("note")))
    take("notebook", lambda: _notebook_path(raw.get("notebook"), home))
    slug = raw.get("slug") or (slug_from_title(values["title"]) if "title" in values else None)
    if slug is not None:
        take("slug", lambda: check_slug(slug))
    audience, audience_problems = check_audience(
        raw.get("audience"), raw.get("names"), allow_public=settings.allow_public,
        user_exists=user_exists, group_exists=group_exists,
    )
    problems.update(audience_problems)
    compute = raw.get("compute") or {}
    if not isinstance(compute, Mapping):
        problems["compute"] = "must be an object such as {\"partition\": \"cpu\", \"cpus\": 1}"
    if "notebook" in values:
        take("files", lambda: _declared_files(raw.get("files"), home, values["notebook"],
                                              settings))
    if raw.get("thumbnail") is not None:
        take("thumbnail", lambda: decode_thumbnail(raw.get("thumbnail")))
    if problems:
        raise AppInputError(problems)
    return PublishSpec(
        notebook=values["notebook"], title=values["title"], description=values["description"],
        slug=values["slug"], audience=audience, compute=dict(compute),
        files=values["files"], thumbnail=values.get("thumbnail"), note=values["note"],
    )


def _notebook_path(value: Any, home: str) -> str:
    path = check_path(value, home)
    if not path.endswith(".ipynb"):
        raise ValueError("must be a notebook (a .ipynb file)")
    return path


def _declared_files(
    value: Any, home: str, notebook: str, settings: AppsSettings
) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [v for v in re.split(r"[,\n]+", value) if v.strip()]
    if not isinstance(value, list):
        raise ValueError("must be a list of file paths")
    if len(value) > settings.max_files:
        raise ValueError(f"at most {settings.max_files} files; you listed {len(value)}")
    folder = posixpath.dirname(notebook)
    out = []
    for item in value:
        path = check_path(item, home, base=folder)
        if not _inside(path, folder) or path == folder:
            raise ValueError(
                f"{item!r} is not inside the notebook's folder {folder}: the app sees files "
                "next to its notebook only"
            )
        if path != notebook and path not in out:
            out.append(path)
    return tuple(out)


# -- thumbnails ----------------------------------------------------------------------------


def first_figure(notebook: Mapping[str, Any]) -> tuple[str, bytes] | None:
    """The notebook's first figure output as ``(file name, bytes)``: PNG, JPEG or SVG."""
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            data = output.get("data", {})
            for mime, name in (("image/png", "thumbnail.png"), ("image/jpeg", "thumbnail.jpg")):
                if mime in data:
                    raw = data[mime]
                    text = "".join(raw) if isinstance(raw, list) else str(raw)
                    try:
                        return name, base64.b64decode(text)
                    except ValueError:
                        continue
            if "image/svg+xml" in data:
                raw = data["image/svg+xml"]
                text = "".join(raw) if isinstance(raw, list) else str(raw)
                return "thumbnail.svg", text.encode()
    return None


# -- who may see what ----------------------------------------------------------------------


def can_view(app: App, viewer: UserContext | None, *, allow_public: bool) -> bool:
    """Whether ``viewer`` (``None``: not logged in) may open ``app``."""
    kind = app.audience.kind
    if kind == "public" and allow_public:
        return True
    if viewer is None:
        return False
    if viewer.name == app.owner or viewer.is_admin:
        return True
    if kind in ("hub", "public"):
        return True
    if kind == "users":
        return viewer.name in app.audience.names
    if kind == "groups":
        return bool(viewer.groups & set(app.audience.names))
    return False


GalleryFilter = Literal["all", "mine", "shared"]


def gallery(
    apps: Iterable[App],
    viewer: UserContext,
    *,
    allow_public: bool,
    which: str = "all",
    search: str = "",
) -> list[App]:
    """The apps ``viewer`` sees: ``mine``, ``shared`` (with me, not mine) or ``all``."""
    words = [w for w in search.lower().split() if w]
    out = []
    for app in apps:
        if not can_view(app, viewer, allow_public=allow_public):
            continue
        mine = app.owner == viewer.name
        if (which == "mine" and not mine) or (which == "shared" and mine):
            continue
        text = f"{app.title} {app.description} {app.owner} {app.slug}".lower()
        if all(w in text for w in words):
            out.append(app)
    return sorted(out, key=lambda a: -a.updated)


# -- the store -----------------------------------------------------------------------------

FileReader = Callable[[str, int], bytes]


class AppStore:
    """The service's own store: ``<root>/<owner>/<slug>/app.json`` and ``v<N>/`` snapshots.

    Snapshots belong to the service's user (root); folders are ``0750`` with the owner's
    primary group, so the owner's app job can read them and nobody can change them.
    """

    def __init__(self, root: str | os.PathLike[str], settings: AppsSettings) -> None:
        self.root = Path(root)
        self.settings = settings
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o711)
        for folder in self.root.resolve().parents:
            if not folder.stat().st_mode & 0o001:
                raise PermissionError(
                    f"app owners cannot reach the app store {self.root}: {folder} is not "
                    f"traversable (chmod o+x {folder}, or set apps.store_dir elsewhere)"
                )

    def app_dir(self, owner: str, slug: str) -> Path:
        return self.root / owner / slug

    def snapshot_dir(self, app: App, number: int | None = None) -> Path:
        return self.app_dir(app.owner, app.slug) / f"v{app.version(number).number}"

    # -- reading -------------------------------------------------------------------------

    def get(self, owner: str, slug: str) -> App:
        path = self.app_dir(owner, slug) / "app.json"
        try:
            return _app_from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            raise AppNotFound(f"no app {owner}/{slug}") from None

    def all(self) -> list[App]:
        apps = []
        for path in sorted(self.root.glob("*/*/app.json")):
            try:
                apps.append(_app_from_json(json.loads(path.read_text())))
            except (ValueError, KeyError, TypeError):
                continue
        return apps

    def save(self, app: App) -> None:
        folder = self.app_dir(app.owner, app.slug)
        tmp = folder / f".app.json.{secrets.token_hex(4)}"
        tmp.write_text(json.dumps(_app_to_json(app), indent=1))
        os.chmod(tmp, 0o600)
        os.replace(tmp, folder / "app.json")

    # -- publishing ----------------------------------------------------------------------

    def publish(
        self,
        owner: str,
        spec: PublishSpec,
        request: Mapping[str, Any],
        read: FileReader,
        owner_gid: int | None = None,
    ) -> App:
        """Snapshot the notebook and files (read with ``read(path, limit)``) as a new version.

        ``read`` must read *as the owner* (the service runs as root): see :func:`read_as_user`.
        """
        limit = int(self.settings.max_file_mb * 1024 * 1024)
        total_limit = int(self.settings.max_total_mb * 1024 * 1024)
        contents: dict[str, bytes] = {}
        folder = posixpath.dirname(spec.notebook)
        total = 0
        for field_name, path in [("notebook", spec.notebook)] + [("files", f) for f in spec.files]:
            try:
                data = read(path, limit)
            except OSError as exc:
                raise AppInputError({field_name: f"cannot read {path}: {exc}"}) from None
            if len(data) > limit:
                raise AppInputError({field_name: f"{path} is larger than "
                                     f"{self.settings.max_file_mb:g} MiB"})
            total += len(data)
            if total > total_limit:
                raise AppInputError({"files": f"the app is larger than "
                                     f"{self.settings.max_total_mb:g} MiB in all"})
            contents[posixpath.relpath(path, folder)] = data
        notebook_name = posixpath.basename(spec.notebook)
        try:
            notebook = json.loads(contents[notebook_name])
        except ValueError:
            raise AppInputError({"notebook": f"{spec.notebook} is not a notebook (bad JSON)"}) \
                from None
        if not isinstance(notebook, dict) or "cells" not in notebook:
            raise AppInputError({"notebook": f"{spec.notebook} is not a Jupyter notebook"})
        thumb = _thumbnail(spec.thumbnail, notebook)

        app_dir = self.app_dir(owner, spec.slug)
        try:
            existing: App | None = self.get(owner, spec.slug)
        except AppNotFound:
            existing = None
        number = max((v.number for v in existing.versions), default=0) + 1 if existing else 1
        owner_dir = self.root / owner
        for directory in (owner_dir, app_dir):
            directory.mkdir(exist_ok=True)
            _protect(directory, owner_gid, 0o750)
        staging = app_dir / f".staging-{secrets.token_hex(4)}"
        staging.mkdir()
        try:
            for rel, data in contents.items():
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            if thumb:
                (staging / ".thumbnail").mkdir()
                (staging / ".thumbnail" / thumb[0]).write_bytes(thumb[1])
            for path in [staging, *staging.rglob("*")]:
                _protect(path, owner_gid, 0o750 if path.is_dir() else 0o640)
            final = app_dir / f"v{number}"
            os.rename(staging, final)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
        now = time.time()
        version = AppVersion(
            number=number, created=now, notebook=notebook_name,
            files=tuple(rel for rel in contents if rel != notebook_name), request=dict(request),
            thumbnail=f".thumbnail/{thumb[0]}" if thumb else None, title=spec.title,
            description=spec.description, note=spec.note,
        )
        if existing:
            app = replace(
                existing, title=spec.title, description=spec.description,
                audience=spec.audience, current=number,
                versions=[*existing.versions, version], updated=now,
            )
        else:
            app = App(owner=owner, slug=spec.slug, title=spec.title,
                      description=spec.description, audience=spec.audience, current=number,
                      versions=[version], created=now, updated=now)
        self.save(app)
        return app

    def rollback(self, owner: str, slug: str, number: int | None = None) -> App:
        """Make an earlier version current (the previous one if ``number`` is ``None``)."""
        app = self.get(owner, slug)
        if number is None:
            earlier = [v.number for v in app.versions if v.number < app.current]
            if not earlier:
                raise AppInputError({"version": f"{app.key} has no version before "
                                     f"v{app.current}"})
            number = max(earlier)
        try:
            version = app.version(number)
        except AppNotFound:
            raise AppInputError({"version": f"{app.key} has versions "
                                 + ", ".join(str(v.number) for v in app.versions)}) from None
        app = replace(app, current=number, title=version.title or app.title,
                      description=version.description, updated=time.time())
        self.save(app)
        return app

    def unpublish(self, owner: str, slug: str) -> None:
        app_dir = self.app_dir(owner, slug)
        if not (app_dir / "app.json").exists():
            raise AppNotFound(f"no app {owner}/{slug}")
        shutil.rmtree(app_dir)

    def set_audience(self, owner: str, slug: str, audience: Audience) -> App:
        app = replace(self.get(owner, slug), audience=audience, updated=time.time())
        self.save(app)
        return app

    def record_visit(self, app: App, viewer: str | None, *, started: bool = False) -> None:
        """Count one page view (a viewer session) and, when ``started``, one job start."""
        fresh = self.get(app.owner, app.slug)
        usage = fresh.usage
        usage.sessions += 1
        if viewer is None:
            usage.anonymous_sessions += 1
        elif viewer not in usage.viewers:
            usage.viewers.append(viewer)
        if started:
            usage.starts += 1
        usage.last_visit = time.time()
        self.save(fresh)


def _thumbnail(uploaded: bytes | None, notebook: Mapping[str, Any]) -> tuple[str, bytes] | None:
    if uploaded is not None:
        name = next(n for magic, n in _IMAGE_MAGIC.items() if uploaded.startswith(magic))
        return name, uploaded
    return first_figure(notebook)


def _protect(path: Path, gid: int | None, mode: int) -> None:
    """Make a snapshot file or folder readable by the owner's group ``gid`` and nobody else.

    As root: owner root, group ``gid``. An unprivileged service (``hub.service_user``) may not
    give a file to another group, so it keeps the file and grants ``gid`` read (and, for
    folders, traverse) by a POSIX ACL entry: the owner's app job still reads its snapshot
    and still cannot change it.
    """
    if gid is not None and os.geteuid() == 0:
        os.chown(path, 0, gid, follow_symlinks=False)
    os.chmod(path, mode)
    if gid is not None and os.geteuid() != 0:
        os.setxattr(path, "system.posix_acl_access", _group_acl(gid, (mode >> 3) & 0o7),
                    follow_symlinks=False)


def _group_acl(gid: int, perm: int) -> bytes:
    """A POSIX access ACL (Linux's xattr form): owner rw(x), ``gid`` ``perm``, no one else."""
    anyone = 0xFFFFFFFF  # ACL_UNDEFINED_ID: the entry is not about one uid or gid
    entries = [(0x01, 0o7 if perm & 0o1 else 0o6, anyone),  # ACL_USER_OBJ
               (0x04, 0, anyone),  # ACL_GROUP_OBJ: the service's own group gets nothing
               (0x08, perm, gid),  # ACL_GROUP: the app owner's group
               (0x10, perm, anyone),  # ACL_MASK
               (0x20, 0, anyone)]  # ACL_OTHER
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def read_as_user(user: str, path: str, limit: int) -> bytes:
    """Read ``path`` with ``user``'s own permissions (``shopfloor-as-user read``), at most
    limit+1 bytes.

    Reading as the owner means a symlink in the owner's home can never make the service
    copy a file the owner could not read, and a FIFO or device is refused.
    """
    import subprocess

    from shopfloor.userfiles import helper_argv, sudo_argv

    proc = subprocess.Popen(
        sudo_argv(user, helper_argv("read", path, str(limit))),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    stdout, stderr = proc.stdout, proc.stderr
    if stdout is None or stderr is None:  # Popen with PIPE always sets both
        raise OSError("could not start sudo")
    data = stdout.read(limit + 1)
    if len(data) > limit:
        proc.kill()
    err = stderr.read().decode(errors="replace")
    proc.wait()
    if proc.returncode and len(data) <= limit:
        message = err.strip().split(":")[-1].strip() or f"exit code {proc.returncode}"
        raise OSError(message)
    return data


# -- JSON form -----------------------------------------------------------------------------


def _app_to_json(app: App) -> dict[str, Any]:
    data = asdict(app)
    data["audience"] = {"kind": app.audience.kind, "names": list(app.audience.names)}
    return data


def _app_from_json(data: Mapping[str, Any]) -> App:
    audience = Audience(data["audience"]["kind"], tuple(data["audience"]["names"]))
    versions = [
        AppVersion(**{**v, "files": tuple(v["files"])}) for v in data["versions"]
    ]
    return App(
        owner=data["owner"], slug=data["slug"], title=data["title"],
        description=data["description"], audience=audience, current=int(data["current"]),
        versions=versions, created=data["created"], updated=data["updated"],
        usage=AppUsage(**data.get("usage", {})),
    )


def default_service_port(hub_api_port: int, settings: AppsSettings | None = None) -> int:
    """The apps service's port: the site's ``apps.service_port``, else hub API port + 10."""
    if settings is not None and settings.service_port:
        return settings.service_port
    return hub_api_port + 10


#: The demo's app origin: a second loopback address is a different host for browsers.
DEMO_ORIGIN_HOST = "127.0.0.2"


@dataclass(frozen=True)
class AppOrigin:
    """The apps' own origin: the URL viewers open and where the apps service listens for it."""

    url: str  #: e.g. ``https://apps.example.org``, no trailing slash
    bind_host: str
    bind_port: int

    @property
    def websocket(self) -> str:
        """The origin's websocket form (``ws://host:port``), for the CSP's ``connect-src``."""
        return "ws" + self.url[len("http"):]

    def content_security_policy(self) -> str:
        """The policy of every app page: its own origin only, no framing, no plugins.

        Scripts must stay inline-capable (Voila's pages and widget outputs are inline
        scripts); what keeps owners' code in check is the origin itself (no hub cookies, no
        hub xsrf token) and ``connect-src``, which allows no other host.
        """
        return "; ".join([
            "default-src 'self'",
            "script-src 'self' 'unsafe-inline' 'unsafe-eval'",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data: blob:",
            "font-src 'self' data:",
            f"connect-src 'self' {self.websocket}",
            "worker-src 'self' blob:",
            "frame-ancestors 'none'",
            "form-action 'self'",
            "base-uri 'none'",
            "object-src 'none'",
        ])


def app_origin(hub_bind_url: str, settings: AppsSettings) -> AppOrigin:
    """The app origin of a site, refusing one that shares the hub's host (and so its cookies).

    Raises :class:`ValueError` naming ``apps.origin_url``.
    """
    hub = urlparse(hub_bind_url)
    url = settings.origin_url or f"{hub.scheme}://{DEMO_ORIGIN_HOST}:{hub.port or 80}"
    public = urlparse(url)
    if (public.hostname or "").lower() == (hub.hostname or "").lower():
        raise ValueError(
            f"apps.origin_url {url!r} is on the hub's host {hub.hostname!r}: browsers would send "
            "it the hub's cookies; use another host name, e.g. apps.example.org")
    bind = urlparse(settings.origin_bind_url or url)
    default_port = 443 if bind.scheme == "https" else 80
    return AppOrigin(url.rstrip("/"), bind.hostname or "127.0.0.1", bind.port or default_port)


__all__ = [
    "App",
    "AppInputError",
    "AppNotFound",
    "AppOrigin",
    "AppStore",
    "AppVersion",
    "Audience",
    "PublishSpec",
    "app_origin",
    "can_view",
    "first_figure",
    "gallery",
    "read_as_user",
    "slug_from_title",
    "validate_publish",
]
