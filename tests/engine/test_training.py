"""Training and testing in this process on a tiny dataset: outputs, resume inputs, NaN, views."""

import csv
import json
import logging
import shutil

import pytest
import torch

import revvideo.engine.evaluate
import revvideo.engine.train
from revvideo.checkpoint import read_checkpoint
from revvideo.classes import write_classnames_file
from revvideo.config import ConfigError, load_config
from revvideo.engine import NonFiniteLossError, run
from revvideo.engine.precision import MixedPrecision
from revvideo.utils.errors import CheckpointError, DataError

from .helpers import (
    FIXED_CLIPS,
    epoch_weights,
    newest_test_results,
    records,
    tiny_cfg,
)


@pytest.fixture(scope="module")
def trained_run(tiny_dataset, tmp_path_factory):
    """Output folder of a finished 2-epoch run with its multi-view test."""
    output_dir = tmp_path_factory.mktemp("trained")
    assert run(tiny_cfg(tiny_dataset, output_dir)) == 0
    return output_dir


def test_a_run_writes_everything_a_person_watches(trained_run):
    cfg = load_config(trained_run / "config.yaml")
    assert str(trained_run) == cfg.OUTPUT_DIR
    assert cfg.MVIT.EMBED_DIM == 16

    steps = records(trained_run, "step")
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    assert all(r["loss"] > 0 and r["lr"] > 0 and r["clips_per_s"] > 0 for r in steps)
    epochs = records(trained_run, "epoch")
    assert [(r["epoch"], r["step"]) for r in epochs] == [(1, 3), (2, 6)]
    assert all(0 <= r["val_top1"] <= 100 and r["train_top1"] is not None for r in epochs)
    assert all(r["skipped_videos"] == 0 for r in epochs)
    (test_record,) = records(trained_run, "test")
    assert test_record["step"] == 6

    assert list((trained_run / "tensorboard").glob("events.out.tfevents.*"))
    tested = trained_run / "test" / "checkpoint_epoch_00002"
    for path in (trained_run / "curves.png", tested / "confusion.png"):
        assert path.read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in (trained_run / "checkpoints").iterdir()) == [
        "best.pyth",
        "checkpoint_epoch_00001.pyth",
        "checkpoint_epoch_00002.pyth",
        "last.pyth",
    ]
    checkpoint = read_checkpoint(trained_run / "checkpoints" / "checkpoint_epoch_00002.pyth")
    assert checkpoint["epoch"] == 2
    assert checkpoint["class_names"] == ["up", "down", "still"]

    results = json.loads((tested / "test_results.json").read_text())
    assert results["num_videos"] == 6
    assert results["num_views"] == 2
    assert results["num_unscored"] == 0
    assert results["top1_acc"] == test_record["top1_acc"]
    assert results["top5_acc"] == 100.0  # 3 classes: the top 3
    with open(tested / "predictions.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 6
    assert set(rows[0]) == {"video", "label", "top1", "top1_prob", "top2", "top2_prob"} | {
        "top3",
        "top3_prob",
    }
    correct = sum(row["label"] == row["top1"] for row in rows)
    assert results["top1_acc"] == pytest.approx(100 * correct / 6)
    assert all(
        float(row["top1_prob"]) >= float(row["top2_prob"]) >= float(row["top3_prob"])
        for row in rows
    )
    assert all(
        sum(float(row[f"top{k}_prob"]) for k in (1, 2, 3)) == pytest.approx(1, abs=2e-4)
        for row in rows
    )


def test_testing_a_checkpoint_alone_gives_the_same_results(trained_run, tiny_dataset, tmp_path):
    checkpoint = trained_run / "checkpoints" / "checkpoint_epoch_00002.pyth"
    cfg = tiny_cfg(
        tiny_dataset, tmp_path, TRAIN__ENABLE=False, TEST__CHECKPOINT_FILE_PATH=str(checkpoint)
    )
    assert run(cfg) == 0
    results = newest_test_results(tmp_path)
    trained = newest_test_results(trained_run)
    assert results["top1_acc"] == trained["top1_acc"]
    assert results["checkpoint"] == str(checkpoint)
    assert not (tmp_path / "checkpoints").exists()


def test_testing_a_checkpoint_with_another_class_count_names_its_classes(
    trained_run, tiny_dataset, tmp_path
):
    checkpoint = trained_run / "checkpoints" / "checkpoint_epoch_00002.pyth"
    cfg = tiny_cfg(
        tiny_dataset, tmp_path, TRAIN__ENABLE=False, TEST__CHECKPOINT_FILE_PATH=str(checkpoint),
        MODEL__NUM_CLASSES=6,
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"is 6 but .* scores 3 classes \('up', 'down', 'still'"):
        run(cfg)


def test_unreadable_test_videos_are_counted_not_scored(trained_run, tiny_dataset, tmp_path):
    dataset = tmp_path / "data"
    shutil.copytree(tiny_dataset, dataset)
    (dataset / "videos" / "corrupt.mp4").write_bytes(b"\x00" * 1000)
    with open(dataset / "test.csv", "a") as lines:
        lines.write("videos/corrupt.mp4 1\nvideos/missing.mp4 2\n")
    cfg = tiny_cfg(dataset, tmp_path / "out", TRAIN__ENABLE=False)
    cfg.TEST.CHECKPOINT_FILE_PATH = str(trained_run / "checkpoints" / "checkpoint_epoch_00002.pyth")
    assert run(cfg) == 0
    results = newest_test_results(tmp_path / "out")
    assert (results["num_videos"], results["num_unscored"]) == (6, 2)
    assert sorted(entry["video"].rsplit("/", 1)[1] for entry in results["unscored"]) == [
        "corrupt.mp4",
        "missing.mp4",
    ]
    assert all(entry["reason"] for entry in results["unscored"])


def test_videos_missing_views_are_scored_with_a_warning(
    trained_run, tiny_dataset, tmp_path, monkeypatch, caplog
):
    build_loader = revvideo.engine.evaluate.build_loader

    class DropsTheLastView:
        """The real test loader, losing the last view of the first batch."""

        def __init__(self, cfg, split, views_for_gpu):
            self.loader = build_loader(cfg, split, views_for_gpu)
            self.dataset, self.skipped = self.loader.dataset, []
            self.model_input = self.loader.model_input

        def __len__(self):
            return len(self.loader)

        def __iter__(self):
            for number, batch in enumerate(self.loader):
                if number == 0:
                    batch = {key: value[:-1] for key, value in batch.items() if key != "skipped"}
                yield batch

    monkeypatch.setattr(revvideo.engine.evaluate, "build_loader", DropsTheLastView)
    cfg = tiny_cfg(tiny_dataset, tmp_path, TRAIN__ENABLE=False)
    cfg.TEST.CHECKPOINT_FILE_PATH = str(trained_run / "checkpoints" / "checkpoint_epoch_00002.pyth")
    with caplog.at_level(logging.WARNING):
        assert run(cfg) == 0
    assert "1 test videos have fewer than 2 views" in caplog.text
    results = newest_test_results(tmp_path)
    assert (results["num_videos"], results["num_missing_views"]) == (6, 1)


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        (["still", "down", "up"], r"\(the same classes in another order\): resuming would"),
        (
            ["cat", "dog", "fish"],
            r"trained on the classes 'up', 'down', 'still', and .* has 'cat', 'dog'",
        ),
    ],
)
def test_a_run_resumed_on_other_classes_stops_before_training_or_writing(
    trained_run, tiny_dataset, tmp_path, classes, message
):
    # The finished run, asked for a third epoch on a dataset that numbers other classes.
    output_dir, dataset = tmp_path / "run", tmp_path / "data"
    shutil.copytree(trained_run, output_dir)
    shutil.copytree(tiny_dataset, dataset)
    write_classnames_file(dataset / "classnames.json", classes)
    config = (output_dir / "config.yaml").read_text()
    cfg = tiny_cfg(dataset, output_dir, SOLVER__MAX_EPOCH=3)
    with pytest.raises(DataError, match=message):
        run(cfg)
    assert (output_dir / "config.yaml").read_text() == config  # still the checkpoints' config
    assert len(list((output_dir / "checkpoints").iterdir())) == 4


def test_a_run_to_resume_that_the_config_does_not_fit_is_named(trained_run, tiny_dataset, tmp_path):
    output_dir = tmp_path / "run"
    shutil.copytree(trained_run, output_dir)
    config = (output_dir / "config.yaml").read_text()
    cfg = tiny_cfg(tiny_dataset, output_dir, SOLVER__MAX_EPOCH=3, MVIT__EMBED_DIM=8)
    with pytest.raises(CheckpointError, match=r"holds a run to resume \(TRAIN\.AUTO_RESUME\)"):
        run(cfg)
    assert (output_dir / "config.yaml").read_text() == config


def test_a_run_resumed_with_another_global_batch_stops_and_names_the_batch(
    trained_run, tiny_dataset, tmp_path
):
    output_dir = tmp_path / "run"
    shutil.copytree(trained_run, output_dir)
    cfg = tiny_cfg(tiny_dataset, output_dir, SOLVER__MAX_EPOCH=3, TRAIN__BATCH_SIZE=2)
    with pytest.raises(ConfigError) as raised:
        run(cfg)
    assert (
        "was trained with epochs of 3 steps of a global batch of 4 (TRAIN.BATCH_SIZE 4 x "
        "TRAIN.ACCUMULATION_STEPS 1); this config has 6 of 2 (TRAIN.BATCH_SIZE 2 x "
        "TRAIN.ACCUMULATION_STEPS 1), and the learning-rate schedule would no longer follow the "
        "epochs: set the batch back"
    ) in str(raised.value)
    assert len(list((output_dir / "checkpoints").iterdir())) == 4


def test_a_finished_run_is_tested_again_with_another_batch(trained_run, tiny_dataset, tmp_path):
    output_dir = tmp_path / "run"
    shutil.copytree(trained_run, output_dir)
    assert run(tiny_cfg(tiny_dataset, output_dir, TRAIN__BATCH_SIZE=2)) == 0  # nothing to train
    assert len(records(output_dir, "test")) == 2


def test_a_run_resumes_with_its_global_batch_split_into_accumulation_steps(
    trained_run, tiny_dataset, tmp_path
):
    # Short of memory on another machine: half the batch, twice the steps, the same schedule.
    output_dir = tmp_path / "run"
    shutil.copytree(trained_run, output_dir)
    split = dict(TRAIN__BATCH_SIZE=2, TRAIN__ACCUMULATION_STEPS=2, TEST__ENABLE=False)
    assert run(tiny_cfg(tiny_dataset, output_dir, SOLVER__MAX_EPOCH=3, **split)) == 0
    third = read_checkpoint(output_dir / "checkpoints" / "checkpoint_epoch_00003.pyth")
    assert third["scheduler_state"]["step_count"] == 9


def test_gradient_accumulation_equals_the_larger_batch(tiny_dataset, tmp_path):
    common = dict(FIXED_CLIPS, SOLVER__MAX_EPOCH=1, TEST__ENABLE=False)
    common["SOLVER__OPTIMIZING_METHOD"] = "sgd"
    assert run(tiny_cfg(tiny_dataset, tmp_path / "big", TRAIN__BATCH_SIZE=4, **common)) == 0
    small = dict(common, TRAIN__BATCH_SIZE=2, TRAIN__ACCUMULATION_STEPS=2)
    assert run(tiny_cfg(tiny_dataset, tmp_path / "accumulated", **small)) == 0
    big, accumulated = (epoch_weights(tmp_path / name, 1) for name in ("big", "accumulated"))
    initial = read_checkpoint(tmp_path / "big" / "checkpoints" / "checkpoint_epoch_00001.pyth")
    assert initial["scheduler_state"]["step_count"] == 3
    for name, tensor in big.items():
        torch.testing.assert_close(accumulated[name], tensor, rtol=0, atol=1e-6, msg=name)


def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    tiny_dataset, tmp_path, monkeypatch
):
    real_loss = revvideo.engine.train.soft_target_cross_entropy
    calls = []

    def diverging_loss(logits, target, weight):
        calls.append(1)
        loss = real_loss(logits, target, weight)
        return loss * float("nan") if len(calls) == 5 else loss  # epoch 2, step 2

    monkeypatch.setattr(revvideo.engine.train, "soft_target_cross_entropy", diverging_loss)
    cfg = tiny_cfg(tiny_dataset, tmp_path, SOLVER__MAX_EPOCH=3)
    with pytest.raises(NonFiniteLossError) as error:
        run(cfg)
    message = str(error.value)
    assert "\n" not in message
    assert "loss is nan at epoch 2, step 2 of 3" in message
    assert "checkpoint_epoch_00001.pyth" in message
    checkpoints = tmp_path / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "best.pyth",
        "checkpoint_epoch_00001.pyth",
        "last.pyth",
    ]
    saved = read_checkpoint(checkpoints / "checkpoint_epoch_00001.pyth")
    assert saved["scheduler_state"]["step_count"] == 3
    assert all(torch.isfinite(t).all() for t in saved["model_state"].values())


def test_mixed_precision_is_bf16_on_the_cpu(tiny_dataset, tmp_path):
    precision = MixedPrecision(True, torch.device("cpu"))
    assert precision.dtype == torch.bfloat16 and not precision.scaler.is_enabled()
    with precision.autocast():
        assert (torch.randn(2, 3) @ torch.randn(3, 2)).dtype == torch.bfloat16
    assert MixedPrecision(False, torch.device("cpu")).dtype is None
    cfg = tiny_cfg(tiny_dataset, tmp_path, TRAIN__MIXED_PRECISION=True, SOLVER__MAX_EPOCH=1)
    assert run(cfg) == 0
    steps = records(tmp_path, "step")
    assert len(steps) == 3 and all(0 < r["loss"] < 5 for r in steps)


def test_an_installed_run_names_the_installed_demo(tiny_dataset, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("sys.argv", ["/venv/bin/revvideo-train", "--cfg", "x.yaml"])
    cfg = tiny_cfg(tiny_dataset, tmp_path, SOLVER__MAX_EPOCH=1, TEST__ENABLE=False)
    with caplog.at_level(logging.INFO):
        assert run(cfg) == 0
    assert "classify a video: revvideo-classify <video> --checkpoint " in caplog.text
