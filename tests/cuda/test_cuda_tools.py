"""The command-line tools on CUDA: tools/benchmark.py's model table, memory-budget, paper,
pipeline and peak sections on tiny inputs, and tools/run_net.py's quick start under torchrun."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.cuda

ROOT = Path(__file__).resolve().parents[2]
# Clips of 4 frames of 64 px: the full-width models, quick.
TINY_CLIPS = ["--frames", "4", "--size", "64"]


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _benchmark(tmp_path: Path, *arguments: str) -> dict:
    figures = tmp_path / "figures.json"
    command = [sys.executable, "tools/benchmark.py", "--device", "cuda", *TINY_CLIPS, *arguments]
    _run([*command, "--json", str(figures)], timeout=240)
    return json.loads(figures.read_text())


def test_the_model_table_runs_on_cuda(tmp_path):
    rows = {row["model"]: row for row in _benchmark(tmp_path, "--depths")["models"]["models"]}
    assert len(rows) == 5
    for row in rows.values():
        assert row["params_m"] > 20 and row["gflops"] > 0
        assert row["peak_mib_per_clip"] > 0 and row["step_s_per_clip"] > 0
        assert row["infer_clips_per_s"] > 0
    # The FLOPs are counted on the CPU: the same model with either backward has the same count.
    reversible = rows["Rev-MViT-B (reversible backward)"]
    plain = rows["Rev-MViT-B (ordinary autograd)"]
    assert reversible["gflops"] == plain["gflops"]
    # The CUDA allocator sees the activations the reversible backward does not keep.
    assert reversible["peak_mib_per_clip"] < plain["peak_mib_per_clip"] / 2
    stored = rows["Rev-MViT-B (last two stages stored)"]
    assert reversible["saved_mib_per_clip"] < stored["saved_mib_per_clip"]
    assert stored["saved_mib_per_clip"] < plain["saved_mib_per_clip"]


def test_the_memory_budget_section_finds_batches_that_fit_and_times_them(tmp_path):
    budget = 2.0
    result = _benchmark(
        tmp_path,
        "--section",
        "budget",
        "--memory-budget",
        str(budget),
        "--budget-dtypes",
        "fp32",
        "--budget-depths",
        "32",
        "--budget-depth-dtypes",
        "bf16",
        "--budget-warmup",
        "1",
        "--budget-steps",
        "2",
    )["budget"]
    assert result["card"] == torch.cuda.get_device_name()
    rows = result["rows"]
    assert not [row for row in rows if "error" in row]
    assert [(row["model"], row["depth"], row["dtype"]) for row in rows] == [
        ("Rev-MViT-B", 16, "fp32"),
        ("MViT-B (revvideo)", 16, "fp32"),
        ("mvit_v1_b (torchvision)", 16, "fp32"),
        ("Rev-MViT-B", 32, "bf16"),
        ("MViT-B (revvideo)", 32, "bf16"),
    ]
    for row in rows:
        assert 1 <= row["timed_batch"] <= row["largest_batch"]
        assert row["clips_per_s"] > 0
        # The budget caps what the allocator reserves, and so everything allocated.
        assert row["peak_gib"] <= row["reserved_gib"] <= budget
    # The reversible model keeps a fraction of MViT-B's activations: a larger batch fits.
    by_case = {(row["model"], row["depth"], row["dtype"]): row for row in rows}
    for depth, dtype in [(16, "fp32"), (32, "bf16")]:
        reversible = by_case["Rev-MViT-B", depth, dtype]["largest_batch"]
        assert reversible > 2 * by_case["MViT-B (revvideo)", depth, dtype]["largest_batch"]
    assert by_case["MViT-B (revvideo)", 16, "fp32"]["x_reference"] == 1.0


def test_a_lever_row_trains_rev_mvit_b_with_the_lever_on(tmp_path):
    options = ["--section", "budget", "--memory-budget", "2", "--budget-dtypes", "fp32"]
    options += ["--budget-depths", "--budget-levers", "overlap", "fill"]
    options += ["--budget-warmup", "1", "--budget-steps", "2"]
    rows = {row["model"]: row for row in _benchmark(tmp_path, *options)["budget"]["rows"]}
    assert not [row for row in rows.values() if "error" in row]
    plain, overlapped = rows["Rev-MViT-B"], rows["Rev-MViT-B + overlap"]
    assert overlapped["clips_per_s"] > 0 and overlapped["x_reference"] > 0
    # One more recompute step alive: the batch that fits shrinks by little, if at all.
    assert overlapped["largest_batch"] >= 0.75 * plain["largest_batch"]
    # At MViT-B's batch, Rev-MViT-B (about MViT-B's memory with every layer stored) has room to
    # store some of its layers.
    filled = rows["Rev-MViT-B + fill"]
    assert filled["largest_batch"] == rows["MViT-B (revvideo)"]["timed_batch"]
    stored, storable = map(int, filled["stored_layers"].split("/"))
    assert 1 <= stored <= storable == 16 and filled["clips_per_s"] > 0


def test_the_paper_table_runs_on_cuda(tmp_path):
    figures = tmp_path / "paper.json"
    command = [sys.executable, "tools/benchmark.py", "--device", "cuda", "--section", "paper"]
    command += ["--size", "64", "--paper-models", "ViT-S", "MViT-B", "--json", str(figures)]
    _run(command, timeout=240)
    rows = json.loads(figures.read_text())["paper"]["rows"]
    assert len(rows) == 4
    for plain, reversible in (rows[:2], rows[2:]):
        assert plain["peak_mib_per_clip"] > 0 and reversible["peak_mib_per_clip"] > 0
        # The allocator's peak per image, not the live-tensor count, is what is compared here.
        assert reversible["peak_x_lower"] == pytest.approx(
            plain["peak_mib_per_clip"] / reversible["peak_mib_per_clip"]
        )
        assert reversible["saved_x_lower"] > 5


def test_the_pipeline_section_trains_on_loaded_clips_on_cuda(tmp_path):
    figures = tmp_path / "pipeline.json"
    command = [sys.executable, "tools/benchmark.py", "--device", "cuda", "--section", "pipeline"]
    command += [*TINY_CLIPS, "--batch", "2", "--data-videos", "4", "--data-workers", "2"]
    command += ["--pipeline-warmup", "1", "--pipeline-steps", "4", "--json", str(figures)]
    _run(command, timeout=240)
    row = json.loads(figures.read_text())["pipeline"]
    assert row["device"].startswith("cuda")
    assert row["model_only_clips_per_s"] > 0 and row["end_to_end_clips_per_s"] > 0


def test_the_peak_section_names_where_the_memory_at_the_peak_was_allocated(tmp_path):
    # Clips large enough that activations, not the parameters' gradients (made inside the
    # measured step), decide the peak per clip.
    options = ["--frames", "8", "--size", "112", "--batch", "8", "--peak-sites", "5"]
    rows = _benchmark(tmp_path, "--section", "peak", *options)
    rows = {row["model"]: row for row in rows["peak"]["rows"]}
    assert len(rows) == 3
    for row in rows.values():
        assert 0 < row["before_gib"] < row["peak_gib"] <= row["reserved_gib"]
        assert 0 < len(row["sites"]) <= 5
        assert sum(size for _, size in row["sites"]) <= row["step_peak_mib_per_clip"] + 1e-6
    assert rows["Rev-MViT-B"]["step_peak_mib_per_clip"] < (
        rows["MViT-B (revvideo)"]["step_peak_mib_per_clip"] / 2
    )


def test_the_quick_start_trains_under_torchrun_on_one_gpu_in_bf16(tmp_path):
    config = ROOT / "configs" / "synthetic" / "REV_MVIT_XS.yaml"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    result = _run(
        [
            *torchrun,
            "--nproc_per_node",
            "1",
            "tools/run_net.py",
            "--cfg",
            str(config),
            "SOLVER.MAX_EPOCH",
            "1",
            "SOLVER.WARMUP_EPOCHS",  # the config's 5 would outlast the run
            "0.5",
            "TRAIN.MIXED_PRECISION",
            "True",
            "OUTPUT_DIR",
            str(tmp_path / "output"),
            "DATA.PATH_TO_DATA_DIR",
            str(tmp_path / "data"),
        ],
        timeout=300,
    )
    assert "on 1 process(es), cuda:0" in result.stdout
    assert "bfloat16 autocast" in result.stdout
    tested = tmp_path / "output" / "test" / "checkpoint_epoch_00001"
    results = json.loads((tested / "test_results.json").read_text())
    assert results["num_videos"] == 72 and results["num_unscored"] == 0
