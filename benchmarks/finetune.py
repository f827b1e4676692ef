"""Fine-tuning overhead: Ray Train (2 CPU workers) against plain PyTorch DDP (torchrun, gloo).

Run from the repository root::

    python -m benchmarks.finetune --runs 3 --steps 20

Both arms run :func:`shopfloor.finetune.trainloop.timed_steps`: the same model (the catalog's
MiniLM, top layers trained as in the *quick* preset), the same data (example_notebooks/data/
reviews.csv), the same batches and the same number of steps, 2 workers of 1 CPU thread each,
interleaved run by run (ray, torchrun, ray, torchrun, ...) so that load from other users hits
both alike. Measured per run:

* ``loop`` — the timed training steps alone (after 2 warm-up steps, between barriers), rank 0;
* ``end_to_end`` — launch to exit: Ray Train's worker group start, model loading, steps
  (``TorchTrainer.fit``; Ray itself is started once, before all runs) against ``torchrun``
  launching 2 fresh Python processes that do the same;
* per worker: samples/s and peak resident memory (``ru_maxrss``).

The target is ``ratio.loop_ray_over_torchrun`` at most 1.10: Ray Train must not slow the
training step down. Output: JSON on stdout, a table on stderr (``benchmarks/report.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.report import RunResult, emit, format_table, median, ratio, summarize

REPO = Path(__file__).resolve().parents[1]
REVIEWS = REPO / "example_notebooks" / "data" / "reviews.csv"
TARGET = 1.10


def build_config(catalog: Path, steps: int, out_dir: Path) -> dict[str, Any]:
    """The one worker configuration both arms use (via the recipe pipeline)."""
    from shopfloor.finetune.catalog import MINILM_NAME
    from shopfloor.finetune.recipe import FineTuneJob, Recipe

    recipe = Recipe(name="bench", data=str(REVIEWS), model=MINILM_NAME, preset="quick",
                    workers=2, catalog_dir=str(catalog), runs_dir=str(out_dir))
    job = FineTuneJob(recipe)
    return {**job.train_config(job.check()), "steps": steps, "out_dir": str(out_dir)}


def torchrun_worker(config_path: str) -> None:
    """One torchrun process: join the gloo group, time the steps, write its JSON."""
    import torch
    import torch.distributed as dist

    from shopfloor.finetune.trainloop import timed_steps

    config = json.loads(Path(config_path).read_text())
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    result = timed_steps(config, rank, world, torch.device("cpu"))
    Path(config["out_dir"], f"torchrun-rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def _collect(out_dir: Path, arm: str) -> list[dict[str, Any]]:
    files = sorted(out_dir.glob(f"{arm}-rank*.json"))
    workers = [json.loads(f.read_text()) for f in files]
    for f in files:
        f.unlink()
    return workers


def _result(run: int, arm: str, started: float, out_dir: Path, error: str | None
            ) -> tuple[RunResult, RunResult]:
    end_to_end = time.perf_counter() - started
    workers = _collect(out_dir, arm)
    if error or len(workers) != 2:
        why = error or f"{len(workers)} of 2 workers reported"
        return RunResult(run, False, error=why), RunResult(run, False, error=why)
    detail = {"workers": [{k: round(v, 3) if isinstance(v, float) else v
                           for k, v in w.items()} for w in workers]}
    loop = max(w["loop_seconds"] for w in workers)
    return (RunResult(run, True, loop, detail=detail),
            RunResult(run, True, end_to_end, detail={}))


def run_ray(run: int, config: dict[str, Any], out_dir: Path) -> tuple[RunResult, RunResult]:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from shopfloor.finetune.trainloop import timed_steps_per_worker

    started = time.perf_counter()
    error = None
    try:
        TorchTrainer(
            timed_steps_per_worker, train_loop_config=config,
            scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
            run_config=RunConfig(name=f"bench-ray-{run}", storage_path=str(out_dir / "ray")),
        ).fit()
    except Exception as exc:  # recorded as a failed run with its reason
        error = f"{type(exc).__name__}: {exc}"[:500]
    return _result(run, "ray", started, out_dir, error)


def run_torchrun(run: int, config_path: Path, out_dir: Path,
                 timeout: float) -> tuple[RunResult, RunResult]:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(29500 + run % 50), "-m", "benchmarks.finetune",
               "--torchrun-worker", str(config_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    try:
        proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        error = None if proc.returncode == 0 else (
            f"torchrun exited {proc.returncode}: {proc.stderr[-500:]}")
    except subprocess.TimeoutExpired:
        error = f"torchrun took longer than {timeout} s"
    return _result(run, "torchrun", started, out_dir, error)


def _per_worker(runs: list[RunResult]) -> dict[str, Any]:
    workers = [w for r in runs if r.ok for w in r.detail["workers"]]
    total = median([w["samples_per_s"] for w in workers])
    return {
        "samples_per_s_median": total,
        "samples_per_s_per_worker": None if total is None else total / 2,
        "peak_rss_mb_max": max((w["peak_rss_mb"] for w in workers), default=None),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.finetune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--json-out", help="also write the JSON here")
    parser.add_argument("--table", action="store_true", help="table on stdout, not JSON")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (catalog, checkpoints, worker JSON)")
    parser.add_argument("--torchrun-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.torchrun_worker:
        torchrun_worker(args.torchrun_worker)
        return 0

    import ray

    from shopfloor.finetune.catalog import build_demo_catalog

    work = Path(tempfile.mkdtemp(prefix="shopfloor-bench-finetune-"))
    catalog = build_demo_catalog(work / "catalog")
    config = build_config(catalog, args.steps, work)
    config_path = work / "config.json"
    config_path.write_text(json.dumps(config))
    ray.init(num_cpus=2, object_store_memory=100 * 1024 * 1024, include_dashboard=False,
             log_to_driver=False)
    arms: dict[str, list[RunResult]] = {k: [] for k in
                                        ("ray_loop", "torchrun_loop", "ray_e2e", "torchrun_e2e")}
    try:
        for run in range(args.runs):
            loop, e2e = run_ray(run, config, work)
            arms["ray_loop"].append(loop)
            arms["ray_e2e"].append(e2e)
            loop, e2e = run_torchrun(run, config_path, work, args.timeout)
            arms["torchrun_loop"].append(loop)
            arms["torchrun_e2e"].append(e2e)
    finally:
        ray.shutdown()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    labels = {"ray_loop": "Ray Train: timed steps", "torchrun_loop": "torchrun DDP: timed steps",
              "ray_e2e": "Ray Train: fit() end to end", "torchrun_e2e": "torchrun: end to end"}
    blocks = {k: summarize(labels[k], v) for k, v in arms.items()}
    loop_ratio = ratio(blocks["ray_loop"]["median"], blocks["torchrun_loop"]["median"])
    e2e_ratio = ratio(blocks["ray_e2e"]["median"], blocks["torchrun_e2e"]["median"])
    document = {
        "benchmark": "finetune", "host": platform.node(), "cpus": os.cpu_count(),
        "steps": args.steps, "batch_size": config["batch_size"], "workers": 2,
        "model": "minilm-l6 (top 2 layers + head trained)", "target_loop_ratio": TARGET,
        "arms": blocks,
        "per_worker": {"ray": _per_worker(arms["ray_loop"]),
                       "torchrun": _per_worker(arms["torchrun_loop"])},
        "ratio": {"loop_ray_over_torchrun": loop_ratio,
                  "end_to_end_ray_over_torchrun": e2e_ratio},
        "meets_target": loop_ratio is not None and loop_ratio <= TARGET,
    }
    per = document["per_worker"]

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    footer = [
        f"loop ratio Ray/torchrun: {loop_ratio:.3f} (target <= {TARGET})" if loop_ratio else
        "loop ratio: -",
        f"end-to-end ratio Ray/torchrun: {e2e_ratio:.3f}" if e2e_ratio else "end-to-end: -",
        f"samples/s per worker (median): ray {num(per['ray']['samples_per_s_per_worker'])}, "
        f"torchrun {num(per['torchrun']['samples_per_s_per_worker'])}",
        f"peak RSS per worker (MB, max): ray {num(per['ray']['peak_rss_mb_max'])}, "
        f"torchrun {num(per['torchrun']['peak_rss_mb_max'])}",
    ]
    emit(document, format_table("Fine-tuning: Ray Train vs torchrun (seconds)", blocks, footer),
         json_out=args.json_out, table_on_stdout=args.table)
    failed = any(not r.ok for runs in arms.values() for r in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
