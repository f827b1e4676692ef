"""Ray cluster create → Jobs API ready on Slurm: Shopfloor's RayCluster vs a site's script.

Run from the repository root, as root (every arm submits as the user through ``sudo``)::

    sudo /opt/shopfloor/venv/bin/python -m benchmarks.ray_cluster --runs 5 --table

Arms, interleaved per round with the first arm rotating, on the same cluster (partition
``cpu``, 1 CPU and 1 GiB per node), all timed from just before ``sbatch``:

* ``ours_Nn``: ``RayCluster.create(...)`` as the user; *ready* = all N nodes ALIVE and the Jobs
  API answers (with the token). Phases: the head's launcher running, the head's dashboard
  answering, the head node alive in Ray, all nodes joined, the Jobs API answering. Polled as
  the anchor is: the state API every 0.1 s, Slurm + Ray status every 1 s.
* ``ray_loop_Nn`` (the anchor): Ray's ``slurm-basic.sh`` as a careful site engineer writes
  it, the fixed sleeps replaced by readiness loops (GCS port open → all workers at once →
  state API lists N nodes ALIVE and the Jobs API answers → the program line). *ready* = the
  program line reached and the dashboard lists N nodes alive, whichever is later.
* ``ray_docs_Nn`` (``--with-sleeps``): the docs' script as published (``sleep 10``, then
  ``sleep 5`` per worker); ``payload_before_ready`` marks runs where the sleeps were too short.

Deviations from the docs needed on a shared 2-core machine: a private ``--temp-dir`` and small
``--num-cpus``/``--object-store-memory``; the loop uses ``--port-base`` instead of 6379/8265
(the docs arm keeps those); no auth in the anchors. JSON on stdout, a table on stderr
(``--table``: table on stdout).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.anchors import load_average, phase_medians, rotate
from benchmarks.report import RunResult, emit, format_table, ratio, summarize

PYTHON = "/opt/shopfloor/venv/bin/python"
RAY = "/opt/shopfloor/venv/bin/ray"
TARGET_SECONDS = 5.0
TARGET_RATIO = 0.7

OURS = """
import json, time
import requests
from shopfloor.ray.cluster import RayCluster
from shopfloor.resources import ResourceRequest
from shopfloor.site import RaySettings
req = ResourceRequest(partition={partition!r}, nodes={nodes}, cpus=1, memory_gb=1,
                      walltime_minutes=15)
wall0, start = time.time(), time.monotonic()
c = RayCluster.create({name!r}, req, settings=RaySettings(idle_timeout_minutes=5))
marks = {{"submitted": time.monotonic() - start}}
job = c.config()["head_job"]
next_full, status = 0.0, None
try:
    # Polls like the anchor's harness: the head's state API every 0.1 s (one HTTP call), the
    # full status (Slurm + Ray, as RayCluster.wait_ready) every 1 s or once all nodes are up.
    while time.monotonic() - start < 120:
        now = time.monotonic() - start
        nodes = c.ray_nodes()
        alive = sum(n.get("state") == "ALIVE" for n in nodes or [])
        if nodes is not None:
            marks.setdefault("head_up", now)
        if alive >= 1:
            marks.setdefault("head_node_alive", now)
        if status is None or now >= next_full or alive >= {nodes}:
            status, next_full = c.status(), now + 1.0
            if status.phase == "stopped":
                raise SystemExit("the cluster stopped: " + status.message)
            if status.ready:
                marks.setdefault("head_up", now)
                marks.setdefault("head_node_alive", now)
                marks.setdefault("nodes_joined", now)
                # Ready means the Jobs API answers too (what a user submits to).
                if requests.get(c.dashboard_address + "/api/jobs/", headers=c.auth_header(),
                                timeout=5).status_code == 200:
                    break
        time.sleep(0.1)
    else:
        raise SystemExit("not ready within 120 s: " + (status.message if status else "-"))
    ready = marks["jobs_api_ready"] = time.monotonic() - start
    head = c.head() or {{}}
finally:
    # Also when not ready: never leave the cluster's job to idle out on the shared nodes.
    c.stop()
    if "jobs_api_ready" not in marks:  # keep why in the report: forget() removes the log
        import sys
        for log in sorted((c.directory / "logs").glob("*.log")):
            lines = [l for l in log.read_text(errors="replace").splitlines() if "raynode" in l]
            print("\\n".join(l[:300] for l in lines[-6:]), file=sys.stderr)
    c.forget()
marks["head_job_started"] = head.get("started", wall0) - wall0
print(json.dumps({{"seconds": ready, "job_id": job, "nodes_alive": status.nodes_alive,
                  "phases": {{k: round(v, 3) for k, v in marks.items()}}}}))
"""

DOCS_SCRIPT = """#!/bin/bash
#SBATCH --job-name=bench-ray-docs
#SBATCH --partition={partition}
#SBATCH --nodes={nodes}
#SBATCH --tasks-per-node=1
#SBATCH --cpus-per-task=1
#SBATCH --mem=1024M
#SBATCH --time=00:15:00
#SBATCH --output={workdir}/%j.log
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled
nodes=$(scontrol show hostnames "$SLURM_JOB_NODELIST")
nodes_array=($nodes)
head_node=${{nodes_array[0]}}
head_node_ip=$(scontrol -o show node "$head_node" | sed 's/.*NodeAddr=\\([^ ]*\\).*/\\1/')
port=6379
ip_head=$head_node_ip:$port
srun --nodes=1 --ntasks=1 -w "$head_node" {ray} start --head --node-ip-address="$head_node_ip" \\
    --port=$port --dashboard-host="$head_node_ip" --num-cpus 1 --object-store-memory 80000000 \\
    --temp-dir={workdir}/t0 --block &
sleep 10
worker_num=$((SLURM_JOB_NUM_NODES - 1))
for ((i = 1; i <= worker_num; i++)); do
    node_i=${{nodes_array[$i]}}
    node_ip=$(scontrol -o show node "$node_i" | sed 's/.*NodeAddr=\\([^ ]*\\).*/\\1/')
    srun --nodes=1 --ntasks=1 -w "$node_i" {ray} start --address "$ip_head" \\
        --node-ip-address="$node_ip" --num-cpus 1 --object-store-memory 80000000 \\
        --temp-dir={workdir}/t$i --block &
    sleep 5
done
date +%s.%N > {workdir}/payload-$SLURM_JOB_ID
echo "$head_node_ip" > {workdir}/head-$SLURM_JOB_ID
wait
"""


# Ray's documented script as a careful site engineer writes it: the fixed sleeps replaced by
# readiness loops. Start the head; wait until its GCS port accepts connections (a bash TCP
# probe, no Python start per poll); start every worker at once; then wait until the
# dashboard lists all nodes ALIVE and the Jobs API answers, polling every 0.2 s, and only then
# run the program. Ports come from --port-base (the docs' 6379/8265 may be taken by others).
LOOP_SCRIPT = """#!/bin/bash
#SBATCH --job-name=bench-ray-loop
#SBATCH --partition={partition}
#SBATCH --nodes={nodes}
#SBATCH --tasks-per-node=1
#SBATCH --cpus-per-task=1
#SBATCH --mem=1024M
#SBATCH --time=00:15:00
#SBATCH --output={workdir}/%j.log
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled
nodes=$(scontrol show hostnames "$SLURM_JOB_NODELIST")
nodes_array=($nodes)
head_node=${{nodes_array[0]}}
head_node_ip=$(scontrol -o show node "$head_node" | sed 's/.*NodeAddr=\\([^ ]*\\).*/\\1/')
port={gcs_port}
ip_head=$head_node_ip:$port
date +%s.%N > {workdir}/sbatch-started-$SLURM_JOB_ID
srun --nodes=1 --ntasks=1 -w "$head_node" {ray} start --head --node-ip-address="$head_node_ip" \\
    --port=$port --dashboard-host="$head_node_ip" --dashboard-port={dashboard_port} \\
    --num-cpus 1 --object-store-memory 80000000 --temp-dir={workdir}/t0 --block &
until (exec 3<>/dev/tcp/$head_node_ip/$port) 2>/dev/null; do sleep 0.1; done
date +%s.%N > {workdir}/gcs-$SLURM_JOB_ID
worker_num=$((SLURM_JOB_NUM_NODES - 1))
for ((i = 1; i <= worker_num; i++)); do
    node_i=${{nodes_array[$i]}}
    node_ip=$(scontrol -o show node "$node_i" | sed 's/.*NodeAddr=\\([^ ]*\\).*/\\1/')
    srun --nodes=1 --ntasks=1 -w "$node_i" {ray} start --address "$ip_head" \\
        --node-ip-address="$node_ip" --num-cpus 1 --object-store-memory 80000000 \\
        --temp-dir={workdir}/t$i --block &
done
dash=http://$head_node_ip:{dashboard_port}
until [ "$(curl -sf "$dash/api/v0/nodes?limit=100" | {count_alive})" -ge "$SLURM_JOB_NUM_NODES" ] \\
        && curl -sf "$dash/api/jobs/" > /dev/null; do
    sleep 0.2
done
date +%s.%N > {workdir}/payload-$SLURM_JOB_ID
echo "$head_node_ip" > {workdir}/head-$SLURM_JOB_ID
wait
"""
#: Counts ALIVE nodes in the state API's answer on stdin (0 for no or bad input).
COUNT_ALIVE = ("/usr/bin/python3 -c 'import json,sys\n"
               "try: r=json.load(sys.stdin)[\"data\"][\"result\"][\"result\"]\n"
               "except Exception: r=[]\n"
               "print(sum(n.get(\"state\")==\"ALIVE\" for n in r))'")


def sh(cmd: list[str], timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                          **kw)


def wait_job_gone(job: str, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not sh(["squeue", "-h", "-j", job, "-o", "%T"]).stdout.strip():
            return True
        time.sleep(0.5)
    return False


def cancel_job(job: str, tries: int = 3) -> None:
    """``scancel`` until Slurm lets the job go: a cancel lost on a busy slurmctld would leave
    the anchor's job holding both nodes, and every later run would wait for it."""
    for _ in range(tries):
        sh(["scancel", job])
        if wait_job_gone(job, timeout=30):
            return
    print(f"job {job} is still in the queue after {tries} cancels", file=sys.stderr)


def run_ours(run: int, user: str, partition: str, nodes: int) -> RunResult:
    name = f"bench-{nodes}n-{run}"
    out = sh(["sudo", "-n", "-u", user, PYTHON, "-c",
              OURS.format(partition=partition, nodes=nodes, name=name)], timeout=180,
             cwd="/tmp")
    if out.returncode != 0:
        lines = (out.stderr.strip() or "no output").splitlines()
        # The launcher's last lines (printed before the error) say what Ray did.
        return RunResult(run, False, error=lines[-1][-300:],
                         detail={"launcher_log": lines[-7:-1]})
    data = json.loads(out.stdout.strip().splitlines()[-1])
    wait_job_gone(data["job_id"])
    return RunResult(run, True, data["seconds"], detail={
        "job_id": data["job_id"], "nodes_alive": data["nodes_alive"],
        "phases": data["phases"]})


def _ray_nodes_alive(head_ip: str, port: int = 8265) -> int:
    try:
        with urllib.request.urlopen(f"http://{head_ip}:{port}/api/v0/nodes",
                                    timeout=2) as resp:
            data = json.loads(resp.read())
    except (OSError, ValueError):
        return 0
    nodes = data.get("data", {}).get("result", {}).get("result", [])
    return sum(1 for n in nodes if n.get("state") == "ALIVE")


def _head_address(job: str) -> str | None:
    """NodeAddr of the job's first node once it runs (the docs' head node)."""
    host = sh(["squeue", "-h", "-j", job, "-o", "%B"]).stdout.strip()
    if not host or host in {"n/a", "(null)"}:
        return None
    out = sh(["scontrol", "-o", "show", "node", host]).stdout
    return out.split("NodeAddr=", 1)[1].split()[0] if "NodeAddr=" in out else None


def _stamp(path: Path, origin_wall: float) -> float | None:
    """Seconds from ``origin_wall`` to the ``date +%s.%N`` a script wrote to ``path``."""
    try:
        return round(float(path.read_text().strip()) - origin_wall, 3)
    except (OSError, ValueError):
        return None


def run_script(run: int, user: str, partition: str, nodes: int, *, loop: bool,
               port_base: int) -> RunResult:
    """One run of Ray's documented script: fixed sleeps (``loop=False``) or readiness loops."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-ray-docs-", dir="/tmp"))
    sh(["chown", user, str(workdir)])
    if loop:
        script = LOOP_SCRIPT.format(partition=partition, nodes=nodes, workdir=workdir, ray=RAY,
                                    gcs_port=port_base, dashboard_port=port_base + 1,
                                    count_alive=COUNT_ALIVE)
        dashboard_port = port_base + 1
    else:
        script = DOCS_SCRIPT.format(partition=partition, nodes=nodes, workdir=workdir, ray=RAY)
        dashboard_port = 8265
    wall0, start = time.time(), time.monotonic()
    out = sh(["sudo", "-n", "-u", user, "sbatch", "--parsable"], input=script, cwd="/tmp")
    if out.returncode != 0:
        return RunResult(run, False, error=out.stderr.strip()[-300:])
    job = out.stdout.strip().split(";")[0]
    payload, ray_ready, head_ip = None, None, None
    phases: dict[str, float | None] = {}
    try:
        deadline = start + 120
        while time.monotonic() < deadline and (payload is None or ray_ready is None):
            if head_ip is None:
                head_ip = _head_address(job)
            if payload is None and (workdir / f"payload-{job}").exists():
                payload = time.monotonic() - start
            if ray_ready is None and head_ip and _ray_nodes_alive(
                    head_ip, dashboard_port) >= nodes:
                ray_ready = time.monotonic() - start
            time.sleep(0.1)
        phases = {"script_started": _stamp(workdir / f"sbatch-started-{job}", wall0),
                  "gcs_up": _stamp(workdir / f"gcs-{job}", wall0),
                  "program_line": _stamp(workdir / f"payload-{job}", wall0)}
    finally:
        cancel_job(job)
        sh(["rm", "-rf", str(workdir)])
    if payload is None or ray_ready is None:
        return RunResult(run, False, error="not ready (payload reached and all nodes alive) "
                         "within 120 s", detail={"job_id": job})
    # The user's program can use the whole cluster only when both have happened; the fixed
    # sleeps often let it start before the workers joined (payload_before_ready).
    detail: dict[str, Any] = {
        "job_id": job, "payload_s": round(payload, 3), "ray_ready_s": round(ray_ready, 3),
        "payload_before_ready": payload < ray_ready}
    if loop:
        detail["phases"] = phases
    return RunResult(run, True, max(payload, ray_ready), detail=detail)


def arms_for(with_sleeps: bool) -> list[str]:
    """The arms of one round: ours, the readiness-loop anchor, the docs' fixed sleeps."""
    return ["ours", "ray_loop", *(["ray_docs"] if with_sleeps else [])]


def summarize_ray(results: dict[str, list[RunResult]], sizes: list[int]) -> dict[str, Any]:
    """Blocks per arm and size, ratios against the anchors and the targets of issue 17."""
    blocks = {key: summarize(key, runs, phases_median=phase_medians(runs))
              for key, runs in results.items()}
    ratios: dict[str, float | None] = {}
    for n in sizes:
        ours = blocks.get(f"ours_{n}n", {}).get("median")
        ratios[f"ours_over_ray_loop_{n}n"] = ratio(ours,
                                                   blocks.get(f"ray_loop_{n}n", {}).get("median"))
        if f"ray_docs_{n}n" in blocks:
            ratios[f"ours_over_ray_docs_{n}n"] = ratio(ours, blocks[f"ray_docs_{n}n"]["median"])
    ours_2n = blocks.get("ours_2n", {}).get("median")
    over_loop = ratios.get("ours_over_ray_loop_2n")
    targets = {"ours_2n_median_under_s": TARGET_SECONDS,
               "ours_over_ray_loop_2n_at_most": TARGET_RATIO,
               "met": (ours_2n is not None and ours_2n < TARGET_SECONDS
                       and over_loop is not None and over_loop <= TARGET_RATIO)}
    return {"arms": blocks, "ratio": ratios, "target": targets}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--user", default="alice")
    parser.add_argument("--partition", default="cpu")
    parser.add_argument("--nodes", default="2", help="comma-separated cluster sizes")
    parser.add_argument("--port-base", type=int, default=9620,
                        help="GCS port of the readiness-loop anchor (+1: its dashboard)")
    parser.add_argument("--with-sleeps", action="store_true",
                        help="also run the docs' script with its fixed sleeps (10 s + 5 s "
                        "per worker)")
    parser.add_argument("--json-out")
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.nodes.split(",")]
    arms = arms_for(args.with_sleeps)
    load_start = load_average()
    results: dict[str, list[RunResult]] = {}
    for run in range(1, args.runs + 1):
        for nodes in sizes:
            for arm in rotate(arms, run - 1):
                key = f"{arm}_{nodes}n"
                if arm == "ours":
                    result = run_ours(run, args.user, args.partition, nodes)
                else:
                    result = run_script(run, args.user, args.partition, nodes,
                                        loop=arm == "ray_loop", port_base=args.port_base)
                results.setdefault(key, []).append(result)
                print(f"{key} run {run}: {result.seconds or result.error}", flush=True,
                      file=sys.stderr)
    summary = summarize_ray(results, sizes)
    document = {
        "benchmark": "ray_cluster_create_to_ready", "partition": args.partition,
        "user": args.user, "load_start": load_start, "load_end": load_average(), **summary,
    }
    footer = [f"ratio {k}: {v:.2f}" if v else f"ratio {k}: -"
              for k, v in summary["ratio"].items()]
    for key, block in summary["arms"].items():
        footer.append(f"phases {key} (median s): {block['phases_median']}")
    footer.append(f"below 1: ours is ready sooner. Target: ours_2n median under "
                  f"{TARGET_SECONDS:g} s and at most {TARGET_RATIO}x the readiness loop.")
    footer.append(f"load average: start {load_start['load1']}, end "
                  f"{document['load_end']['load1']} ({load_start['cpus']} cores)")
    emit(document, format_table("Ray cluster create -> Jobs API ready (s)", summary["arms"],
                                footer),
         json_out=args.json_out, table_on_stdout=args.table)
    failures = sum(b["failures"] for b in summary["arms"].values())
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
