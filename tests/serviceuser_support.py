"""Helpers for the tests of an unprivileged hub (test_service_user.py, test_site_deploy.py)."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from support import PORT_BASE, job_hub_port

#: A hub of these tests listens on PORT_BASE + offset (+1 its API, +2 the proxy API; the apps
#: service +11 and the workshop service +13 above it): clear of the shared test hub's ports.
SERVICE_HUB_OFFSET = 40


def hub_ports(offset: int) -> dict[str, str]:
    base = PORT_BASE + offset
    return {"bind_url": f"http://127.0.0.1:{base}",
            "hub_bind_url": f"http://127.0.0.1:{base + 1}",
            "proxy_api_url": f"http://127.0.0.1:{base + 2}"}


def cancel_jobs_reporting_to(port: int, timeout: float = 30) -> list[str]:
    """Cancel every job whose session reports to hub API ``port``; wait until they are gone."""
    def ours() -> list[str]:
        out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True,
                             check=True).stdout.split()
        return [j for j in out if job_hub_port(j) == port]

    jobs = ours()
    if jobs:
        subprocess.run(["scancel", *jobs], capture_output=True, check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and set(jobs) & set(ours()):
            time.sleep(0.5)
    return jobs


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def process_user(pid: int) -> str:
    uid = next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("Uid:"))
    return pwd.getpwuid(int(uid)).pw_name


def process_args(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
        errors="replace")


#: Run as another user: try to list every folder and read every file given on stdin; print
#: the ones that worked.
_PROBE = """
import json, os, sys
got = []
for path in json.load(sys.stdin):
    try:
        if os.path.isdir(path):
            os.listdir(path)
            got.append(path + "/ (listed)")
        else:
            with open(path, "rb") as fh:
                fh.read(1)
            got.append(path)
    except OSError:
        pass
print(json.dumps(got))
"""


def readable_as(user: str, paths: Iterable[Path]) -> list[str]:
    """Which of ``paths`` ``user`` can list (folders) or read (files)."""
    out = subprocess.run(["runuser", "-u", user, "--", "python3", "-I", "-c", _PROBE],
                         input=json.dumps([str(p) for p in paths]), capture_output=True,
                         text=True, check=True, cwd="/")
    return json.loads(out.stdout)


def everything_under(*roots: Path) -> list[Path]:
    """Every folder and file under ``roots`` (as root sees them), links left out."""
    found: list[Path] = []
    for root in roots:
        for folder, dirs, files in os.walk(root):
            found.append(Path(folder))
            found.extend(Path(folder) / f for f in files
                         if not os.path.islink(os.path.join(folder, f)))
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
    return found
