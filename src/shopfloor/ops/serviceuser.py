"""The hub's service user: its Unix account, its sudoers rule and its private state.

A hub that runs as ``hub.service_user`` (docs/deploy.md, "Service user") needs, once, as
root: the system account (no login shell, no home), membership of ``shadow`` (PAM checks
users' passwords by reading ``/etc/shadow``; see :data:`PAM_GROUP`), the sudoers rule shipped
as ``units/shopfloor.sudoers`` rendered for this environment and this Slurm, and its state
folders owned by it, 0700. ``shopfloor service-user NAME`` and ``shopfloor demo`` do exactly
that; a site's configuration management can do the same by hand.
"""

from __future__ import annotations

import argparse
import grp
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import sys
from collections.abc import Collection
from pathlib import Path

from shopfloor.ops import unit_dir
from shopfloor.ops.doctor import SUDO_COMMANDS, sudoers_rule
from shopfloor.site import SiteConfig

#: Where the rendered rule goes. sudo ignores files in sudoers.d whose name has a dot.
SUDOERS_PATH = Path("/etc/sudoers.d/shopfloor")
#: JupyterHub's PAMAuthenticator checks other users' passwords: pam_unix does that only for
#: root or members of ``shadow`` (``unix_chkpwd`` checks the caller's own password only).
PAM_GROUP = "shadow"


class ServiceUserError(RuntimeError):
    """A step failed; the message says which and what the system said."""


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise ServiceUserError(f"{what} failed ({' '.join(argv)}): "
                               f"{(proc.stderr or proc.stdout).strip()[-500:]}")


def ensure_service_user(name: str, *, pam: bool = True) -> bool:
    """Create the system account ``name`` if missing (True if made); add it to ``shadow``."""
    made = False
    try:
        pwd.getpwnam(name)
    except KeyError:
        _run(["useradd", "--system", "--user-group", "--home-dir", "/nonexistent",
              "--no-create-home", "--shell", "/usr/sbin/nologin", name], "useradd")
        made = True
    if pam and name not in grp.getgrnam(PAM_GROUP).gr_mem:
        _run(["usermod", "--append", "--groups", PAM_GROUP, name], "usermod")
    return made


def render_sudoers(user: str, *, venv_bin: str | None = None, slurm_bin_dir: str = "",
                   tag: str = "") -> str:
    """The shipped rule (``units/shopfloor.sudoers``) for ``user``, this environment's helpers
    (``venv_bin``, default: this Python's) and this Slurm (``slurm.bin_dir``, else PATH)."""
    comments = [line for line in (unit_dir() / "shopfloor.sudoers").read_text().splitlines()
                if line.startswith("#")]
    tools = [os.path.join(slurm_bin_dir, t) if slurm_bin_dir
             else shutil.which(t) or f"/usr/bin/{t}" for t in SUDO_COMMANDS]
    rule = sudoers_rule(user, tools, venv_bin or os.path.dirname(sys.executable), tag)
    return "\n".join([*comments, f"Defaults:{user} !requiretty", rule, ""])


def install_sudoers(text: str, path: Path = SUDOERS_PATH) -> None:
    """Check ``text`` with ``visudo`` and put it at ``path`` (0440, root), atomically."""
    tmp = path.with_name(f".{path.name}.new")  # a dot: sudo never reads a half-written file
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o440)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    before = path.read_text() if path.exists() else None
    try:
        _run(["visudo", "-c", "-q", "-f", str(tmp)], "visudo")
        os.chmod(tmp, 0o440)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    try:
        # The whole configuration too: aliases are global, a clash breaks every rule.
        _run(["visudo", "-c", "-q"], "visudo (the whole sudoers configuration)")
    except ServiceUserError:
        if before is None:
            path.unlink()
        else:
            path.write_text(before)
        raise


def hand_over(path: str | os.PathLike[str], user: str, *, keep: Collection[str] = (),
              private: bool = True) -> None:
    """Make ``path`` (a folder, with everything in it) the service user's and, if ``private``,
    folders 0700 and files 0600 (else only the owner changes: the app store, whose snapshots
    stay readable by their owners' groups). Files named in ``keep`` and files owned by a third
    user are left alone (a root-owned secret beside the hub's state stays root's). Symlinks are
    never followed."""
    entry = pwd.getpwnam(user)
    root = Path(path)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    start = os.lstat(root).st_uid
    for folder, dirs, files in os.walk(root):
        for name in [folder, *(os.path.join(folder, f) for f in [*dirs, *files])]:
            info = os.lstat(name)
            if stat.S_ISLNK(info.st_mode) or info.st_uid not in (start, entry.pw_uid) \
                    or os.path.basename(name) in keep:
                continue
            if not private:
                os.chown(name, entry.pw_uid, -1, follow_symlinks=False)
                continue
            os.chown(name, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
            os.chmod(name, 0o700 if stat.S_ISDIR(info.st_mode) else
                     0o600 | (info.st_mode & 0o100))


def state_folders(site: SiteConfig) -> tuple[list[Path], Path]:
    """The hub's private state folders (``hub.state_dir``, the workshops' state) and the apps
    store, which the service user must own."""
    state = Path(site.hub.state_dir)
    private = [state]
    if site.workshops.state_dir:
        private.append(Path(site.workshops.state_dir))
    return private, Path(site.apps.store_dir or state.parent / "apps")


def sudoers_path(site: SiteConfig) -> Path:
    """Where :func:`prepare` puts the site's rule: :data:`SUDOERS_PATH`, or, for a hub whose
    Slurm tools are elsewhere (``slurm.bin_dir``), a file of its own beside it, so that
    several hubs on one machine (a demo and tests) never overwrite each other's rule."""
    tag = _bin_tag(site)
    return SUDOERS_PATH.with_name(f"{SUDOERS_PATH.name}-bin-{tag}") if tag else SUDOERS_PATH


def _bin_tag(site: SiteConfig) -> str:
    if not site.slurm.bin_dir:
        return ""
    return hashlib.sha256(site.slurm.bin_dir.encode()).hexdigest()[:10]


def prepare(site: SiteConfig, *, keep: Collection[str] = ()) -> pwd.struct_passwd:
    """Everything ``hub.service_user`` needs before the hub starts as it (as root): the
    account, the sudoers rule for this environment (:func:`sudoers_path`), and its state.
    Returns the account."""
    user = site.hub.service_user
    if not user:
        raise ServiceUserError("hub.service_user is not set in the site file")
    ensure_service_user(user)
    rule = render_sudoers(user, slurm_bin_dir=site.slurm.bin_dir,
                          tag=f"_BIN_{_bin_tag(site)}" if _bin_tag(site) else "")
    install_sudoers(rule, sudoers_path(site))
    private, store = state_folders(site)
    for folder in private:
        hand_over(folder, user, keep=keep)
    store.mkdir(parents=True, exist_ok=True)
    hand_over(store, user, private=False)
    return pwd.getpwnam(user)


def drop_privileges(account: pwd.struct_passwd) -> None:
    """Become ``account`` for good (groups first: after setuid nothing can be dropped)."""
    os.setgroups(os.getgrouplist(account.pw_name, account.pw_gid))
    os.setgid(account.pw_gid)
    os.setuid(account.pw_uid)


def add_service_user_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``shopfloor service-user NAME``: the account, the sudoers rule (and the state)."""
    cmd = sub.add_parser("service-user", help="set up the unprivileged Unix user the hub runs "
                         "as: system account, shadow group (PAM), sudoers rule")
    cmd.add_argument("name", help="the account, e.g. shopfloor (the site's hub.service_user)")
    cmd.add_argument("--sudoers-only", action="store_true",
                     help="only (re)install /etc/sudoers.d/shopfloor")
    cmd.add_argument("--slurm-bin-dir", default="", help="where sbatch/scancel are "
                     "(slurm.bin_dir; default: PATH)")
    cmd.add_argument("--state", action="append", default=[],
                     help="a folder to give to the user, 0700 (repeatable: hub.state_dir, ...)")
    cmd.add_argument("--sudoers-file", default=str(SUDOERS_PATH),
                     help=f"where the rule goes (default {SUDOERS_PATH})")
    cmd.add_argument("--print", action="store_true", help="print the rule, change nothing")
    cmd.set_defaults(func=_service_user)


def _service_user(args: argparse.Namespace) -> int:
    text = render_sudoers(args.name, slurm_bin_dir=args.slurm_bin_dir)
    if args.print:
        print(text, end="")
        return 0
    if os.geteuid() != 0:
        print("shopfloor service-user: run it as root", file=sys.stderr)
        return 2
    try:
        if not args.sudoers_only:
            ensure_service_user(args.name)
            for folder in args.state:
                hand_over(folder, args.name)
        install_sudoers(text, Path(args.sudoers_file))
    except ServiceUserError as exc:
        print(f"shopfloor service-user: {exc}", file=sys.stderr)
        return 1
    print(f"{args.name}: sudoers rule in {args.sudoers_file}; check with "
          f"`shopfloor doctor --service-user {args.name}`")
    return 0


__all__ = [
    "PAM_GROUP",
    "SUDOERS_PATH",
    "ServiceUserError",
    "add_service_user_parser",
    "drop_privileges",
    "ensure_service_user",
    "hand_over",
    "install_sudoers",
    "prepare",
    "render_sudoers",
    "state_folders",
    "sudoers_path",
]
