"""Shopfloor's metrics beyond the hub's own spawns, for real, on one hub of this module:

* the apps service's ``/services/apps/metrics`` after a real app open (cold start, then a
  warm hit) and the workshop service's ``/services/workshop/metrics`` after a real join, each
  only for the bearer ``$SHOPFLOOR_METRICS_TOKEN`` and never showing a secret, token, code or
  kernel id;
* the ``timeout`` spawn outcome: a session whose job cannot start before the hub's
  ``start_timeout`` (its reservation begins next week) ends with the user told why and what to
  do, its Slurm job cancelled, and ``shopfloor_spawn_duration_seconds{outcome="timeout"}``.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from appsupport import install_notebook, kernel_id, origin_of, service_login, wait_app_ready
from appsupport import wait_for_service as apps_service_ready
from opssupport import private_hub, sample, scrape
from prometheus_client.parser import text_string_to_metric_families
from support import PORT_BASE, RunningHub, job_hub_port
from workshopsupport import running_workshop, trainer_client, wait_for_service

from shopfloor.extensions.metrics import METRICS_TOKEN_ENV
from shopfloor.workshops.client import WorkshopClient, WorkshopError

pytestmark = [pytest.mark.hub, pytest.mark.cluster, pytest.mark.slow]

#: This module's hub: ports base+3..5, its apps service base+14, its workshop service
#: base+16, all inside this run's block of 20 and apart from the shared test hub's.
OFFSET = 3
START_TIMEOUT = 30
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def metrics_token() -> Iterator[str]:
    """The token Prometheus sends to the services; the hub hands it to them on start."""
    token = secrets.token_urlsafe(24)
    old = os.environ.get(METRICS_TOKEN_ENV)
    os.environ[METRICS_TOKEN_ENV] = token
    try:
        yield token
    finally:
        if old is None:
            os.environ.pop(METRICS_TOKEN_ENV, None)
        else:
            os.environ[METRICS_TOKEN_ENV] = old


@pytest.fixture(scope="module")
def mhub(local_cluster: object, passwords: dict[str, str],
         metrics_token: str) -> Iterator[RunningHub]:
    with private_hub(OFFSET, passwords, hub={"start_timeout": START_TIMEOUT}, apps={
            "allow_public": True, "idle_stop_minutes": 10, "pool_size": 1,
            "partition": "cpu", "cpus": 1, "memory_gb": 1, "walltime": "0:20:00"}) as hub:
        yield hub


def service_base(hub: RunningHub, service: str) -> str:
    """A service's internal address (where Prometheus scrapes it): hub API port +10 / +12."""
    api_port = int(hub.site.hub.hub_bind_url.rsplit(":", 1)[1])
    return f"http://127.0.0.1:{api_port + (10 if service == 'apps' else 12)}"


def service_metrics(hub: RunningHub, service: str, token: str) -> tuple[str, Samples]:
    resp = requests.get(f"{service_base(hub, service)}/services/{service}/metrics",
                        headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert resp.status_code == 200, resp.text[-300:]
    samples: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return resp.text, samples


def assert_refused_without_token(hub: RunningHub, service: str, hub_token: str) -> None:
    """No token, a wrong one, the hub's own token: 403, on the internal address and through
    the hub's public proxy alike."""
    for base in (service_base(hub, service), hub.url):
        url = f"{base}/services/{service}/metrics"
        for headers in ({}, {"Authorization": "Bearer wrong-token"},
                        {"Authorization": "Bearer "}, {"Authorization": f"token {hub_token}"},
                        {"Authorization": f"Bearer {hub_token}"}):
            resp = requests.get(url, headers=headers, timeout=30, allow_redirects=False)
            assert resp.status_code in (401, 403), (url, headers.keys(), resp.status_code)
            assert "shopfloor_" not in resp.text


def cancel_jobs_named(suffix: str) -> None:
    out = subprocess.run(["squeue", "-h", "-o", "%i|%j"], capture_output=True, text=True,
                         check=False).stdout
    for line in out.splitlines():
        job_id, _, name = line.partition("|")
        if name.endswith(suffix):
            subprocess.run(["scancel", job_id], check=False)


def test_apps_service_metrics_after_cold_start_and_warm_hit(
        mhub: RunningHub, metrics_token: str) -> None:
    apps_service_ready(mhub.url)
    alice = mhub.client("alice")
    token = alice.token()
    assert_refused_without_token(mhub, "apps", token)
    _, before = service_metrics(mhub, "apps", metrics_token)
    notebook: Path = install_notebook("alice")
    slug = f"m{PORT_BASE}{secrets.token_hex(3)}"
    try:
        resp = requests.post(f"{mhub.url}/services/apps/api/apps", timeout=60,
                             headers={"Authorization": f"token {token}"},
                             json={"notebook": str(notebook), "title": "Metrics", "slug": slug})
        assert resp.status_code == 201, resp.text
        service_login(alice)
        started = time.monotonic()
        cold_page = wait_app_ready(alice, origin_of(mhub), f"alice/{slug}")
        cold_took = time.monotonic() - started
        _, after_cold = service_metrics(mhub, "apps", metrics_token)
        warm_page = wait_app_ready(alice, origin_of(mhub), f"alice/{slug}", timeout=30)
        text, after = service_metrics(mhub, "apps", metrics_token)
    finally:
        cancel_jobs_named(f"-alice-{slug}")

    def moved(now: Samples, name: str, **labels: str) -> float:
        return sample(now, name, **labels) - sample(before, name, **labels)

    # The first visit started the job: one cold open, timed; its page is not a warm hit.
    assert moved(after_cold, "shopfloor_app_opens_total", start="cold") == 1
    assert moved(after_cold, "shopfloor_app_opens_total", start="warm") == 0
    assert moved(after_cold, "shopfloor_app_cold_start_seconds_count") == 1
    served = moved(after_cold, "shopfloor_app_cold_start_seconds_sum")
    assert 0.5 < served <= cold_took + 1, (served, cold_took)
    # The second visit found it running.
    assert moved(after, "shopfloor_app_opens_total", start="cold") == 1
    assert moved(after, "shopfloor_app_opens_total", start="warm") == 1
    # Nothing of a user, a token or a kernel in what Prometheus stores.
    kernels = {kernel_id(cold_page.text), kernel_id(warm_page.text)}
    for secret in (*kernels, token, metrics_token, slug, "alice"):
        assert secret not in text, secret
    assert metrics_token not in mhub.log_text()


def test_workshop_service_metrics_after_real_joins(
        mhub: RunningHub, metrics_token: str) -> None:
    wait_for_service(mhub)
    trainer = trainer_client(mhub)
    assert_refused_without_token(mhub, "workshop", mhub.client("trainer").token())
    _, before = service_metrics(mhub, "workshop", metrics_token)
    with running_workshop(mhub, trainer, "m", hours=1, capacity=2, partition="debug") as info:
        anon = WorkshopClient(f"{mhub.url}/services/workshop", "")
        joined = anon.join(info["code"], "Metrics Person")
        with pytest.raises(WorkshopError):
            anon.join("WRONG-CODE-99", "Guesser")
        text, after = service_metrics(mhub, "workshop", metrics_token)

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("shopfloor_workshop_joins_total", outcome="joined") == 1
    assert moved("shopfloor_workshop_joins_total", outcome="wrong_code") == 1
    for secret in (joined["password"], joined["username"], info["code"], info["name"],
                   "Metrics Person", metrics_token):
        assert str(secret) not in text, secret
    assert metrics_token not in mhub.log_text()


# -- the timeout outcome ---------------------------------------------------------------------


def progress_events(hub: RunningHub, user: str, server: str, token: str,
                    timeout: float) -> list[dict[str, object]]:
    """The spawn's progress events (as the spawn page reads them) until it ends."""
    url = f"{hub.url}/hub/api/users/{user}/servers/{server}/progress"
    events: list[dict[str, object]] = []
    with requests.get(url, headers={"Authorization": f"token {token}"}, stream=True,
                      timeout=(10, timeout)) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                event = json.loads(line[5:])
                events.append(event)
                if event.get("failed") or event.get("ready"):
                    break
    return events


def hub_jobs_of(hub: RunningHub, user: str, server: str) -> list[str]:
    api_port = int(hub.site.hub.hub_bind_url.rsplit(":", 1)[1])
    out = subprocess.run(["squeue", "-h", "-u", user, "-o", "%i|%j"], capture_output=True,
                         text=True, check=True).stdout
    return [line.split("|")[0] for line in out.splitlines()
            if line.endswith(f"-{user}-{server}") and job_hub_port(line.split("|")[0])
            == api_port]


@pytest.fixture
def future_reservation() -> Iterator[str]:
    """A reservation for alice on the debug node that begins in a week: a job asking for it
    stays pending (reason Reservation) and nobody else's job is held up meanwhile."""
    name = f"sfmt{PORT_BASE}{secrets.token_hex(2)}"
    subprocess.run(["scontrol", "create", "reservation", f"ReservationName={name}",
                    "StartTime=now+7days", "Duration=10", "Nodes=debug1", "Users=alice"],
                   capture_output=True, text=True, check=True)
    try:
        yield name
    finally:
        subprocess.run(["scontrol", "delete", f"ReservationName={name}"],
                       capture_output=True, check=False)


def test_spawn_that_cannot_start_in_time_times_out(
        mhub: RunningHub, future_reservation: str) -> None:
    admin_token = mhub.client("admin").token()
    before = scrape(mhub.url, admin_token)
    alice = mhub.client("alice")
    token = alice.token()
    resp = alice.spawn_form("late", partition="debug", cpus=1, memory_gb=0.5, walltime=10,
                            reservation=future_reservation)
    assert resp.status_code == 302, resp.text[-500:]
    try:
        started = time.monotonic()
        events = progress_events(mhub, "alice", "late", token, timeout=START_TIMEOUT + 60)
        took = time.monotonic() - started
        # Nothing of the job is left in Slurm's queue.
        deadline = time.monotonic() + 30
        while hub_jobs_of(mhub, "alice", "late") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert hub_jobs_of(mhub, "alice", "late") == []
        after = scrape(mhub.url, admin_token)
    finally:
        alice.stop("late")
    final = events[-1]
    assert final.get("failed"), events
    message = str(final["message"])
    # Why: it was still queued, for its reservation; what to do about it.
    assert "reservation" in message.lower(), message
    assert "cancel" in message.lower(), message
    assert "start it again" in message.lower() or "try again" in message.lower(), message
    assert took < START_TIMEOUT + 30, took
    assert (sample(after, "shopfloor_spawn_duration_seconds_count", partition="debug",
                   outcome="timeout")
            - sample(before, "shopfloor_spawn_duration_seconds_count", partition="debug",
                     outcome="timeout")) == 1
    waited = (sample(after, "shopfloor_spawn_duration_seconds_sum", partition="debug",
                     outcome="timeout")
              - sample(before, "shopfloor_spawn_duration_seconds_sum", partition="debug",
                       outcome="timeout"))
    assert START_TIMEOUT - 10 < waited <= START_TIMEOUT + 1, waited
    # The pending page said why while it waited.
    assert any("reservation" in str(e.get("message", "")).lower() for e in events[:-1]), events
