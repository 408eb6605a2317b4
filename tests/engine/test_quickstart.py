"""The README's quick start from nothing to a tested model, and the fine-tuning chain that starts
from its checkpoint: other classes with new names, evaluation in another class order, the demo."""

import shutil
import sys

import pytest

from revvideo.classes import read_classnames_file, write_classnames_file
from revvideo.config import load_config
from revvideo.data.synthetic import generate_synthetic_dataset

from .helpers import ROOT, newest_test_folder, newest_test_results, run_command, run_net

CONFIG = ROOT / "configs" / "synthetic" / "REV_MVIT_XS.yaml"
# Three of the quick start's motions, named anew: fine-tuning must find them by what the
# backbone learnt, whatever they are called.
NEW_NAMES = {"up": "rise", "down": "fall", "spin": "twirl"}
# A short fine-tuning run: 12 training videos, 5 epochs of 3 steps.
SHORT_RUN = (
    "DATA.GENERATE_SYNTHETIC", "False",
    "MODEL.NUM_CLASSES", "0",
    "TRAIN.BATCH_SIZE", "4",
    "TRAIN.EVAL_PERIOD", "5",
    "TRAIN.CHECKPOINT_PERIOD", "5",
    "SOLVER.MAX_EPOCH", "5",
    "SOLVER.WARMUP_EPOCHS", "1.0",
    "SOLVER.HEAD_LR_MULT", "10.0",
)  # fmt: skip


@pytest.fixture(scope="module")
def quick_start(tmp_path_factory):
    """The quick start's run: (process, output folder)."""
    root = tmp_path_factory.mktemp("quick_start")
    result = run_net(
        CONFIG, "OUTPUT_DIR", str(root / "output"), "DATA.PATH_TO_DATA_DIR", str(root / "data"),
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result, root / "output"


@pytest.mark.slow
def test_the_embedded_default_trains_and_tests_above_90_percent(quick_start):
    result, output = quick_start
    results = newest_test_results(output)
    assert results["num_videos"] == 72 and results["num_unscored"] == 0
    assert results["top1_acc"] >= 90.0
    low, high = results["top1_ci95"]
    assert low < results["top1_acc"] <= high <= 100.0
    assert sum(entry["support"] for entry in results["per_class"].values()) == 72
    assert 0.0 <= results["ece"] <= 100.0 and results["temperature"] > 0
    last_lines = result.stdout.splitlines()[-2:]
    epochs = load_config(CONFIG).SOLVER.MAX_EPOCH
    checkpoint = output / "checkpoints" / f"checkpoint_epoch_{epochs:05d}.pyth"
    assert last_lines[0] == f"final checkpoint: {checkpoint}"
    assert (
        last_lines[1]
        == f"classify a video: python demo/classify.py <video> --checkpoint {checkpoint}"
    )


def _own_videos(root):
    """Three classes of new videos under new names: 4 training, 2 validation, 8 test videos
    each, listed in CSVs with a classnames.json."""
    generate_synthetic_dataset(
        str(root),
        seed=7,
        classes=tuple(NEW_NAMES),
        videos_per_class={"train": 4, "val": 2, "test": 8},
    )
    write_classnames_file(root / "classnames.json", list(NEW_NAMES.values()))
    return root


@pytest.mark.slow
def test_fine_tuning_on_own_classes_beats_scratch_and_is_scored_by_name(quick_start, tmp_path):
    pretrained = sorted((quick_start[1] / "checkpoints").glob("*.pyth"))[-1]
    videos = _own_videos(tmp_path / "own")
    data = ("DATA.PATH_TO_DATA_DIR", str(videos))

    tuned = run_net(
        CONFIG, *SHORT_RUN, *data, "OUTPUT_DIR", str(tmp_path / "tuned"),
        "TRAIN.CHECKPOINT_FILE_PATH", str(pretrained),
    )  # fmt: skip
    scratch = run_net(CONFIG, *SHORT_RUN, *data, "OUTPUT_DIR", str(tmp_path / "scratch"))
    assert tuned.returncode == 0, tuned.stdout + tuned.stderr
    assert scratch.returncode == 0, scratch.stdout + scratch.stderr
    assert (
        f"initial weights: {pretrained} (re-initialised the classification head (6 -> 3 "
        "classes): the checkpoint has none of the dataset's classes)" in tuned.stdout
    )
    tuned_top1 = newest_test_results(tmp_path / "tuned")["top1_acc"]
    scratch_top1 = newest_test_results(tmp_path / "scratch")["top1_acc"]
    print(
        f"fine-tuned top-1 {tuned_top1:.2f} %, from scratch {scratch_top1:.2f} %", file=sys.stderr
    )
    # The backbone loaded: the same short run is far better than one from random weights.
    assert tuned_top1 >= 80.0
    assert tuned_top1 >= scratch_top1 + 30.0
    assert newest_test_results(tmp_path / "tuned")["class_names"] == ["rise", "fall", "twirl"]

    # The same test videos numbered in another class order: remapped by name, the same top-1.
    reordered = tmp_path / "reordered"
    reordered.mkdir()
    order = ["twirl", "rise", "fall"]
    old_names = read_classnames_file(videos / "classnames.json")
    lines = []
    for line in (videos / "test.csv").read_text().splitlines():
        path, label = line.rsplit(" ", 1)
        lines.append(f"{videos / path} {order.index(old_names[int(label)])}\n")
    (reordered / "test.csv").write_text("".join(lines))
    write_classnames_file(reordered / "classnames.json", order)
    tuned_checkpoint = tmp_path / "tuned" / "checkpoints" / "checkpoint_epoch_00005.pyth"
    # The synthetic config itself, on a folder that holds another dataset: its lists are read.
    evaluated = run_net(
        CONFIG, "DATA.PATH_TO_DATA_DIR", str(reordered),
        "OUTPUT_DIR", str(tmp_path / "evaluated"), "TRAIN.ENABLE", "False",
        "TEST.CHECKPOINT_FILE_PATH", str(tuned_checkpoint), "MODEL.NUM_CLASSES", "0",
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    assert "the dataset numbers the model's 3 classes in another order" in evaluated.stdout
    assert f"{reordered} holds a dataset that is not the synthetic one" in evaluated.stdout
    results = newest_test_results(tmp_path / "evaluated")
    print(f"evaluated in another class order: top-1 {results['top1_acc']:.2f} %", file=sys.stderr)
    assert results["top1_acc"] == pytest.approx(tuned_top1, abs=1e-9)
    assert results["class_names"] == order
    predicted = (newest_test_folder(tmp_path / "evaluated") / "predictions.csv").read_text()
    predicted = predicted.splitlines()[1:]
    assert {row.split(",")[1] for row in predicted} == set(order)

    # The demo speaks the new names, and ranks a video's classes as the test did.
    video, _, top1 = predicted[0].split(",")[:3]
    demo = run_command(
        [sys.executable, str(ROOT / "demo" / "classify.py"), str(video), "--checkpoint",
         str(tuned_checkpoint), "--topk", "3"]
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    ranked = [line.split()[1] for line in demo.stdout.splitlines()[1:4]]
    assert sorted(ranked) == ["fall", "rise", "twirl"] and ranked[0] == top1


@pytest.mark.slow
def test_classes_that_differ_stop_the_test_unless_only_shared_ones_are_scored(
    quick_start, tmp_path
):
    pretrained = sorted((quick_start[1] / "checkpoints").glob("*.pyth"))[-1]
    videos = _own_videos(tmp_path / "own")  # rise, fall, twirl: none of the quick start's
    shutil.copy(videos / "classnames.json", tmp_path / "names.json")
    write_classnames_file(videos / "classnames.json", ["up", "fall", "spin"])
    opts = (
        "DATA.GENERATE_SYNTHETIC", "False", "DATA.PATH_TO_DATA_DIR", str(videos),
        "TRAIN.ENABLE", "False", "TEST.CHECKPOINT_FILE_PATH", str(pretrained),
    )  # fmt: skip

    refused = run_net(CONFIG, *opts, "OUTPUT_DIR", str(tmp_path / "refused"))
    shared = run_net(
        CONFIG, *opts, "OUTPUT_DIR", str(tmp_path / "shared"), "TEST.SHARED_CLASSES_ONLY", "True"
    )

    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1] == (
        "error: the model's classes and the dataset's differ: 1 dataset classes unknown to the "
        "model ('fall'); 4 model classes not in the dataset ('down', 'grow', 'shrink', ...); to "
        "score only the 2 shared classes, set TEST.SHARED_CLASSES_ONLY True"
    )
    assert not (tmp_path / "refused").exists()
    assert shared.returncode == 0, shared.stdout + shared.stderr
    results = newest_test_results(tmp_path / "shared")
    assert results["class_names"] == ["up", "spin"]
    assert results["num_videos"] == 16 and results["num_unscored"] == 8
    assert results["top1_acc"] >= 80.0
