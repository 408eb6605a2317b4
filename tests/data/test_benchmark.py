import subprocess
import sys
from pathlib import Path

import pytest
import torch

from revvideo.benchmark import Settings, pipeline
from revvideo.benchmark import data as benchmark
from revvideo.cli.benchmark import build_parser
from revvideo.utils.errors import DataError
from revvideo.utils.table import format_table

from .videos import write_dataset, write_indexed_video


@pytest.mark.slow
def test_benchmark_rows_compare_loaders_on_the_same_files(tmp_path):
    for name in ("a.mp4", "b.avi"):
        write_indexed_video(tmp_path / name, count=45, fps=15)
    entries = [("a.mp4", 0), ("b.avi", 0)]
    write_dataset(tmp_path, {"train": entries, "test": entries})
    options = ["--section", "data", "--data-dir", str(tmp_path), "--data-workers", "1"]
    rows = benchmark.run(Settings(**vars(build_parser().parse_args(options))))
    names = [row["name"] for row in rows]
    assert names == [
        "train: plain pytorchvideo recipe (pyav)",
        "train: revvideo, pyav",
        "train: revvideo, decord",
        "test 5x3: plain pytorchvideo recipe (pyav)",
        "test 5x3: revvideo, pyav",
        "test 5x3: revvideo, decord",
        "test 5x3: revvideo, pyav, uint8 views for a GPU",
        "decode every frame once (pyav), the floor",
    ]
    for row in rows[:3]:
        assert row["clips/s"] > 0 and row["x plain"] > 0
    for row in rows[3:]:
        assert row["videos/s"] > 0 and row["x plain"] > 0
    assert rows[0]["x plain"] == rows[3]["x plain"] == 1.0
    table = format_table(rows)
    assert table.splitlines()[0].startswith("name") and len(table.splitlines()) == 10


def test_the_memory_budget_section_says_in_one_line_that_it_needs_cuda():
    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "tools/benchmark.py", "--device", "cpu", "--section", "budget"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=root, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "the memory-budget section needs a CUDA GPU (--device cuda), not cpu: skipped"
    ]


def _settings(folder, *options):
    arguments = ["--data-dir", str(folder), "--device", "cpu", *options]
    return Settings(**vars(build_parser().parse_args(arguments)))


def _kinetics_like(folder):
    for name in ("a.mp4", "b.avi"):
        write_indexed_video(folder / name, count=45, fps=15)
    entries = [("a.mp4", 0), ("b.avi", 0)]
    write_dataset(folder, {"train": entries, "test": entries})


@pytest.mark.slow
def test_the_worker_table_gives_clips_per_second_per_worker(tmp_path):
    _kinetics_like(tmp_path)
    rows = benchmark.run_workers(_settings(tmp_path, "--data-worker-counts", "1", "2"))

    assert [row["workers"] for row in rows] == [1, 2]
    for row in rows:
        assert row["clips/s"] > 0
        assert row["clips/s per worker"] == pytest.approx(row["clips/s"] / row["workers"], abs=0.01)


@pytest.mark.slow
def test_the_pipeline_section_sets_training_fed_by_the_loader_beside_the_model_alone(tmp_path):
    _kinetics_like(tmp_path)
    options = ["--frames", "4", "--size", "32", "--batch", "1", "--data-workers", "1"]
    options += ["--pipeline-warmup", "1", "--pipeline-steps", "3"]
    row = pipeline.run_pipeline(_settings(tmp_path, *options), torch.device("cpu"))

    assert (row["model"], row["batch"], row["workers"]) == ("Rev-MViT-B", 1, 1)
    assert row["model_only_clips_per_s"] > 0 and row["end_to_end_clips_per_s"] > 0
    assert row["percent_of_model_only"] == pytest.approx(
        100 * row["end_to_end_clips_per_s"] / row["model_only_clips_per_s"]
    )


def test_the_pipeline_section_says_when_a_batch_needs_more_videos(tmp_path):
    _kinetics_like(tmp_path)
    settings = _settings(tmp_path, "--frames", "4", "--size", "32", "--batch", "4")
    with pytest.raises(DataError, match=r"fewer videos than a batch \(4\)"):
        pipeline.run_pipeline(settings, torch.device("cpu"))
