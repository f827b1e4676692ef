"""The fine-tuning recipe on a real Shopfloor Ray cluster: a Slurm job, run as alice.

The same recipe as test_finetune.py, but submitted through the Ray Jobs API to a cluster that
``RayCluster`` started on the cpu partition, exactly as the wizard's "compute" step does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

PYTHON = "/opt/shopfloor/venv/bin/python"
CATALOG = Path("/opt/shopfloor/models")
REVIEWS = Path(__file__).parents[2] / "example_notebooks" / "data" / "reviews.csv"


def test_classifier_trains_on_a_slurm_ray_cluster(local_cluster: object) -> None:
    if not any(CATALOG.glob("*")):
        pytest.fail(f"{CATALOG} is empty: `make test` builds it (shopfloor models build-demo)")
    work = Path(f"/home/alice/ft-slurm-{os.getpid()}")
    work.mkdir()
    shutil.copy(REVIEWS, work / "reviews.csv")
    shutil.chown(work, "alice", "alice")
    shutil.chown(work / "reviews.csv", "alice", "alice")
    name = f"ft-{os.getpid()}"
    code = f"""
import json
from shopfloor.finetune.recipe import FineTuneJob, Recipe
from shopfloor.finetune.catalog import MINILM_NAME
from shopfloor.ray.cluster import RayCluster
from shopfloor.resources import ResourceRequest
from shopfloor.site import RaySettings

cluster = RayCluster.create({name!r}, ResourceRequest(partition="cpu", nodes=1, cpus=3,
                            memory_gb=3, walltime_minutes=15),
                            settings=RaySettings(idle_timeout_minutes=10))
try:
    cluster.wait_ready(120)
    job = FineTuneJob(Recipe(name="reviews", data={str(work / 'reviews.csv')!r},
                             model=MINILM_NAME, text_column="text", label_column="label",
                             preset="quick", workers=2, runs_dir={str(work / 'runs')!r},
                             catalog_dir={str(CATALOG)!r}))
    job_id = job.submit(cluster)
    result = job.wait_submitted(cluster, job_id, timeout=300)
    print(json.dumps({{"job": cluster.config()["head_job"], **result.metrics}}))
finally:
    cluster.stop()
    cluster.forget()
"""
    try:
        out = subprocess.run(["sudo", "-n", "-u", "alice", PYTHON, "-c", code], cwd="/tmp",
                             capture_output=True, text=True, timeout=420, check=False)
        assert out.returncode == 0, out.stderr[-3000:]
        metrics = json.loads(out.stdout.strip().splitlines()[-1])
        assert metrics["accuracy"] >= 0.8, metrics
        assert metrics["majority_baseline"] < 0.4
        # Checkpoints and metrics landed in alice's own storage, written by her jobs.
        run = work / "runs" / "reviews"
        assert (run / "metrics.json").owner() == "alice"
        assert list(run.glob("checkpoint_*"))
        left = subprocess.run(["squeue", "-h", "-j", str(metrics["job"]), "-o", "%T"],
                              capture_output=True, text=True).stdout.split()
        assert not [s for s in left if s in {"PENDING", "RUNNING"}]
    finally:
        shutil.rmtree(work, ignore_errors=True)
