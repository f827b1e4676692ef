"""Helpers for the workshop tests: names, a workshop that always cleans up, leftovers.

The tests share the cluster with whatever else runs (a demo hub and its sessions, other test
runs on other ports), so they assume no idle partition and no clean slate:

* workshop names carry the test hub's port base (``q8500t12345``): leftovers of a crashed
  earlier run on these ports are recognised and removed once, before the first workshop test,
  and a demo's own workshops are never touched;
* :func:`running_workshop` ends the workshop through the service and then removes, whatever
  failed, the participants' hub users, servers, Slurm jobs, Unix accounts, the reservation,
  the hub group and the exports;
* :func:`partition_with_idle_cores` picks a partition with room, waiting a bounded time and
  saying what occupies the cluster when there is none.
"""

from __future__ import annotations

import itertools
import json
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import nbformat
import requests
from hubclient import HubClient
from support import PORT_BASE, RunningHub

from shopfloor.extensions.workshops_service import PREFIX
from shopfloor.workshops.client import WorkshopClient, WorkshopError

#: Every workshop a test makes is named ``q<port base><kind letter><digits>``.
NAME_PREFIX = f"q{PORT_BASE}"
_OURS = re.compile(rf"{NAME_PREFIX}[a-z]\d+")
_counter = itertools.count()
_stale_removed = False
EXPORTS = Path("/home/trainer/workshop-exports")


def workshop_name(kind: str) -> str:
    """A fresh name for a test workshop (2-12 characters): ``kind`` is one letter."""
    digits = 12 - len(NAME_PREFIX) - 1
    number = (int(time.time() * 10) + next(_counter)) % 10**digits
    return f"{NAME_PREFIX}{kind}{number}"


def service_url(hub: RunningHub) -> str:
    return f"{hub.url}{PREFIX}"


def wait_for_service(hub: RunningHub, timeout: float = 60) -> None:
    """Wait until the service answers; the first call also removes stale test workshops."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{service_url(hub)}/join", timeout=5).status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.5)
    else:
        raise AssertionError(f"the workshop service did not answer in {timeout} s")
    global _stale_removed
    if not _stale_removed:
        _stale_removed = True
        remove_stale_workshops()


def material_folder() -> Path:
    """A world-readable folder with one guided notebook (participants copy it as themselves)."""
    folder = Path(tempfile.mkdtemp(prefix="shopfloor-ws-material-"))
    folder.chmod(0o755)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Step 1"),
                nbformat.v4.new_code_cell("print('hello')")]
    (folder / "lesson.ipynb").write_text(nbformat.writes(nb))
    (folder / "lesson.ipynb").chmod(0o644)
    (folder / "data").mkdir(mode=0o755)
    (folder / "data" / "points.csv").write_text("x,y\n1,2\n")
    (folder / "data" / "points.csv").chmod(0o644)
    return folder


def trainer_client(hub: RunningHub) -> WorkshopClient:
    return WorkshopClient(service_url(hub), hub.client("trainer").token())


def unix_users(prefix: str) -> list[str]:
    return [p.pw_name for p in pwd.getpwall() if p.pw_name.startswith(prefix)]


def reservations() -> str:
    return subprocess.run(["scontrol", "-o", "show", "reservation"], capture_output=True,
                          text=True, check=False).stdout


# -- room on the cluster --------------------------------------------------------------------


def idle_cores(partition: str) -> int:
    """Cores of ``partition`` that no job holds now (``sinfo %C``: allocated/idle/other/total)."""
    out = subprocess.run(["sinfo", "-h", "-p", partition, "-o", "%C"], capture_output=True,
                         text=True, check=False).stdout.split()
    return sum(int(field.split("/")[1]) for field in out if field.count("/") == 3)


def partition_with_idle_cores(cores: int, candidates: Sequence[str] = ("cpu", "debug"),
                              timeout: float = 180) -> str:
    """The first of ``candidates`` with ``cores`` idle cores, waiting at most ``timeout`` s.

    Other people's sessions may hold the cluster (a demo beside the tests): then the test
    fails at once with what holds it, instead of timing out later in a reservation that
    cannot start.
    """
    deadline = time.monotonic() + timeout
    while True:
        for partition in candidates:
            if idle_cores(partition) >= cores:
                return partition
        if time.monotonic() > deadline:
            queue = subprocess.run(["squeue", "-o", "%i %P %u %T %C %N %j"],
                                   capture_output=True, text=True, check=False).stdout
            raise AssertionError(
                f"none of the partitions {', '.join(candidates)} had {cores} idle cores for "
                f"{timeout:.0f} s; stop some of these jobs and run the test again:\n{queue}")
        time.sleep(2)


def wait_some_ready(clients: Sequence[HubClient], count: int, reservation: str,
                    timeout: float = 120) -> list[int]:
    """Indexes of the first ``count`` participants whose server is ready (any of them: Slurm
    decides who gets the reserved cores first); a bounded wait that says why on failure."""
    deadline = time.monotonic() + timeout
    while True:
        ready = [i for i, c in enumerate(clients) if (c.server_model() or {}).get("ready")]
        if len(ready) >= count:
            return ready[:count]
        if time.monotonic() > deadline:
            queue = subprocess.run(["squeue", "-o", "%i %P %u %T %r %N %v"],
                                   capture_output=True, text=True, check=False).stdout
            shown = [line for line in reservations().splitlines() if reservation in line]
            raise AssertionError(
                f"only {len(ready)} of {count} participants' sessions were ready after "
                f"{timeout:.0f} s. Reservation: {shown}\nQueue:\n{queue}")
        time.sleep(0.5)


# -- cleanup --------------------------------------------------------------------------------


@contextmanager
def running_workshop(hub: RunningHub, trainer: WorkshopClient, kind: str,
                     **settings: Any) -> Iterator[dict[str, Any]]:
    """Create a workshop named for this run; whatever happens, leave nothing of it behind."""
    name = workshop_name(kind)
    try:
        yield trainer.create(name, **settings)
    finally:
        cleanup(name, hub)


def cleanup(workshop: str, hub: RunningHub | None = None) -> None:
    """Remove all of a test workshop, whether it ended, failed half-way or never started.

    First the service's own end (export, stop, release, remove; re-runnable), then each
    piece again directly, in an order that works when the service could not: hub servers
    before hub users (the hub refuses to delete a user whose server is starting), jobs before
    the reservation (Slurm refuses to delete one in use) and before the accounts.
    """
    if hub is not None:
        with suppress(WorkshopError, requests.RequestException, AssertionError):
            trainer_client(hub).end(workshop)
        _remove_hub_side(hub, workshop)
    prefix = f"ws-{workshop}-"
    users = unix_users(prefix)
    for user in users:
        subprocess.run(["scancel", "-u", user], capture_output=True, check=False)
    _wait_no_jobs(users)
    for user in users:
        subprocess.run(["userdel", "--remove", "--force", user], capture_output=True,
                       check=False)
    for _ in range(20):
        gone = subprocess.run(["scontrol", "delete", f"ReservationName=ws-{workshop}"],
                              capture_output=True, text=True, check=False)
        if gone.returncode == 0 or f"ws-{workshop} " not in reservations() + " ":
            break
        time.sleep(0.5)
    shutil.rmtree(EXPORTS / workshop, ignore_errors=True)


def _remove_hub_side(hub: RunningHub, workshop: str) -> None:
    admin = hub.client("admin")
    names = [u["name"] for u in admin.api("GET", "/users").json()
             if u["name"].startswith(f"ws-{workshop}-")]
    for name in names:
        admin.api("DELETE", f"/users/{name}/server")
    deadline = time.monotonic() + 60
    for name in names:
        while time.monotonic() < deadline:
            if admin.api("DELETE", f"/users/{name}").status_code in (204, 404):
                break
            time.sleep(0.5)
    admin.api("DELETE", f"/groups/ws-{workshop}")


def _wait_no_jobs(users: Sequence[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while users and time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-o", "%u"], capture_output=True, text=True,
                             check=False).stdout.split()
        if not set(out) & set(users):
            return
        time.sleep(0.5)


def remove_stale_workshops() -> list[str]:
    """Remove what crashed earlier runs on this port base left: accounts, jobs, reservations
    and exports of workshops named ``q<port base>...`` (a demo's workshops are not)."""
    stale = {u.split("-")[1] for u in unix_users(f"ws-{NAME_PREFIX}")}
    stale |= set(re.findall(rf"ReservationName=ws-({_OURS.pattern}) ", reservations()))
    if EXPORTS.is_dir():
        stale |= {p.name for p in EXPORTS.iterdir() if _OURS.fullmatch(p.name)}
    for name in sorted(stale):
        if _OURS.fullmatch(name):
            cleanup(name)
    return sorted(stale)


def login(hub: RunningHub, user: str, password: str) -> HubClient:
    """A participant logged in with the password the join page showed them."""
    client = HubClient(hub.url)
    client.login(user, password)
    return client


def dump(obj: object) -> str:
    return json.dumps(obj, indent=1, default=str)
