"""The job script is built from typed values only and refuses anything that could add lines."""

from __future__ import annotations

import pytest

from shopfloor.resources import ResourceRequest
from shopfloor.slurm.jobscript import JobScriptError, JobSpec, build_script


def spec(**kw: object) -> JobSpec:
    base = dict(
        name="shopfloor-alice-default",
        request=ResourceRequest(partition="gpu", cpus=2, memory_gb=1.5, gpus=1,
                                walltime_minutes=90, reservation="ws1"),
        command=["/opt/venv/bin/python", "-m", "x", "--arg=it's"],
        output="/home/alice/.shopfloor/logs/%j.log",
        workdir="/home/alice",
        env={"HOME": "/home/alice", "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/"},
    )
    base.update(kw)
    return JobSpec(**base)  # type: ignore[arg-type]


def test_sbatch_header_from_request() -> None:
    script = build_script(spec())
    header = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert header == [
        "#SBATCH --job-name=shopfloor-alice-default",
        "#SBATCH --partition=gpu",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --mem=1536M",
        "#SBATCH --time=0-01:30:00",
        "#SBATCH --output=/home/alice/.shopfloor/logs/%j.log",
        "#SBATCH --chdir=/home/alice",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --reservation=ws1",
    ]
    assert script.rstrip().endswith("exec /opt/venv/bin/python -m x '--arg=it'\"'\"'s'")
    assert "export SLURM_EXPORT_ENV=ALL" in script


def test_no_secret_in_script() -> None:
    script = build_script(spec())
    assert "TOKEN" not in script


@pytest.mark.parametrize(
    "kw",
    [
        {"name": "x\n#SBATCH --uid=0"},
        {"output": "/home/alice/log\n#SBATCH --uid=0"},
        {"output": "relative/path"},
        {"workdir": "/home/a b"},
        {"env": {"BAD NAME": "x"}},
        {"env": {"OK": "line\nnext"}},
        {"command": ["/bin/true", "a\rb"]},
    ],
)
def test_control_characters_never_reach_the_script(kw: dict[str, object]) -> None:
    with pytest.raises(JobScriptError):
        build_script(spec(**kw))


def test_bypassing_validation_still_cannot_add_lines() -> None:
    # model_construct skips validation, as a bug upstream might.
    bad = ResourceRequest.model_construct(partition="cpu\n#SBATCH --uid=0", nodes=1, cpus=1,
                                          memory_gb=1.0, gpus=0, walltime_minutes=10,
                                          account=None, qos=None, reservation=None)
    with pytest.raises(JobScriptError):
        build_script(spec(request=bad))
