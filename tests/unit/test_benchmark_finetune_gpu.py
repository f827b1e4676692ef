"""benchmarks.finetune_gpu: the command line, and the clear refusal without a GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# ``benchmarks`` is a top-level folder run as ``python -m benchmarks.<name>`` from the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import finetune_gpu
from benchmarks.report import RunResult

REPO = Path(__file__).resolve().parents[2]


def test_defaults_measure_full_and_lora() -> None:
    args = finetune_gpu.parse_args([])
    assert args.methods == ["full", "lora"] and args.model == "minilm-l6"
    assert args.steps >= 10 and args.runs >= 3 and not args.allow_cpu
    assert finetune_gpu.parse_args(["--methods", "lora", "--steps", "7"]).methods == ["lora"]


@pytest.mark.parametrize("argv", [["--methods", "qlora"], ["--methods", ","],
                                  ["--steps", "0"], ["--runs", "-1"], ["--batch-size", "x"]])
def test_bad_arguments_are_refused_with_the_name(argv: list[str],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        finetune_gpu.parse_args(argv)
    assert exit_info.value.code == 2
    assert argv[0] in capsys.readouterr().err


@pytest.mark.skipif(finetune_gpu.cuda_available(), reason="this machine has a GPU")
def test_without_cuda_it_refuses_before_doing_anything() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.finetune_gpu", "--runs", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == finetune_gpu.EXIT_NO_CUDA
    assert "no CUDA device: run this on a GPU machine" in proc.stderr
    assert proc.stdout == ""  # no JSON pretending to be a result


def test_document_and_table_report_tokens_per_second_and_the_ratio() -> None:
    args = finetune_gpu.parse_args(["--methods", "full"])
    results = {
        "ours_full": [RunResult(1, True, 1200.0, detail={"peak_gpu_mib": 900.0}),
                      RunResult(2, True, 1000.0, detail={"peak_gpu_mib": 910.0})],
        "hf_trainer_full": [RunResult(1, True, 1000.0, detail={"peak_gpu_mib": 950.0}),
                            RunResult(2, False, error="CUDA out of memory")],
    }
    document = finetune_gpu.document_for(args, results, "NVIDIA H200")
    assert document["ratio"]["ours_over_hf_full"] == pytest.approx(1.1)
    assert document["precision"] == "bf16 autocast"
    assert document["arms"]["hf_trainer_full"]["failures"] == 1
    table = finetune_gpu.table_for(document)
    assert "1100.00 (1000.00-1200.00)" in table and "1.10" in table and "950.0" in table
