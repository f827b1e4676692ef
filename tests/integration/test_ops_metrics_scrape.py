"""/hub/metrics after real spawns: one session that starts, one request the policy refuses."""

from __future__ import annotations

import pytest
import requests
from opssupport import sample, scrape
from support import RunningHub

pytestmark = [pytest.mark.hub, pytest.mark.cluster, pytest.mark.slow]


def test_metrics_move_with_real_spawns(hub: RunningHub) -> None:
    admin_token = hub.client("admin").token()
    # Prometheus must authenticate: the hub's metrics are not public.
    assert requests.get(f"{hub.url}/hub/metrics", timeout=30).status_code == 403
    before = scrape(hub.url, admin_token)

    alice = hub.client("alice")
    token = alice.token()
    refused = alice.api("POST", "/users/alice/servers/toobig", token=token,
                        json={"user_options": {"partition": "debug", "cpus": 10_000}})
    assert refused.status_code == 400, refused.text
    # A partition name the site does not have must not become a label.
    odd = alice.api("POST", "/users/alice/servers/odd", token=token,
                    json={"user_options": {"partition": "nosuch-partition"}})
    assert odd.status_code == 400, odd.text
    resp = alice.spawn_form("metrics", partition="debug", cpus=1, memory_gb=0.5, walltime=10)
    assert resp.status_code == 302, resp.text[-500:]
    try:
        alice.wait_ready("metrics", timeout=120)
        after = scrape(hub.url, admin_token)
    finally:
        alice.stop("metrics")

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("shopfloor_spawn_duration_seconds_count",
                 partition="debug", outcome="ready") == 1
    took = moved("shopfloor_spawn_duration_seconds_sum", partition="debug", outcome="ready")
    assert 0.5 < took < 120, took
    assert moved("shopfloor_spawn_duration_seconds_count",
                 partition="debug", outcome="refused") == 1
    assert moved("shopfloor_spawn_duration_seconds_count",
                 partition="invalid", outcome="refused") == 1
    assert not any("nosuch" in str(labels) for _, labels in after)
    # Slurm traffic went through the observed seam: the session's sbatch, the watcher's
    # batched squeue (the job id was watched, so a poll asked about at least one job).
    assert moved("shopfloor_slurm_command_duration_seconds_count", command="sbatch") >= 1
    assert moved("shopfloor_slurm_command_duration_seconds_count", command="squeue") >= 1
    assert moved("shopfloor_job_poll_size_count") >= 1
    assert moved("shopfloor_job_poll_size_sum") >= 1
    # The periodic count of Ray clusters has run (a gauge per state, 0 without clusters).
    assert ("shopfloor_ray_clusters", (("state", "running"),)) in after
