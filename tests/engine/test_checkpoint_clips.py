"""Testing a checkpoint (TEST.CHECKPOINT_FILE_PATH): on the clips it was trained for, or a
one-line error naming the keys that differ, before anything is written."""

import pytest
import torch

from revvideo.checkpoint import read_checkpoint
from revvideo.config import ConfigError
from revvideo.engine import run

from .helpers import evaluation_cfg, tiny_cfg


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            dict(DATA__NUM_FRAMES=8),
            "this run tests 8x32x32 clips with DATA.NUM_FRAMES 8: set DATA.NUM_FRAMES 4 (a test "
            "takes the clips the checkpoint was trained for; fine-tuning it with "
            "TRAIN.CHECKPOINT_FILE_PATH adapts it to others)",
        ),
        # The model would take these clips, its position embeddings resized: not silently.
        (
            dict(DATA__TEST_CROP_SIZE=48),
            "this run tests 4x48x48 clips with DATA.TEST_CROP_SIZE 48: set DATA.TEST_CROP_SIZE 32 ",
        ),
        (
            dict(DATA__TRAIN_CROP_SIZE=48, DATA__TRAIN_JITTER_SCALES=[48, 56]),
            "this run tests 4x32x32 clips with DATA.TRAIN_CROP_SIZE 48: set DATA.TRAIN_CROP_SIZE "
            "32 ",
        ),
        (
            dict(DATA__NUM_FRAMES=8, DATA__TEST_CROP_SIZE=48),
            "this run tests 8x48x48 clips with DATA.NUM_FRAMES 8, DATA.TEST_CROP_SIZE 48: set "
            "DATA.NUM_FRAMES 4, DATA.TEST_CROP_SIZE 32 ",
        ),
    ],
    ids=["frames", "test-crop", "train-crop", "frames-and-test-crop"],
)
def test_other_clips_than_the_checkpoint_was_trained_on_are_named_before_writing(
    tiny_dataset, tmp_path, checkpoint, overrides, message
):
    cfg = evaluation_cfg(tiny_dataset, tmp_path / "out", checkpoint, **overrides)
    with pytest.raises(ConfigError) as info:
        run(cfg)
    assert str(info.value).startswith(
        f"{checkpoint} was trained on 4x32x32 clips (DATA.NUM_FRAMES 4, DATA.TRAIN_CROP_SIZE 32, "
        "DATA.TEST_CROP_SIZE 32); "
    )
    assert message in str(info.value)
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_tested_at_another_size_than_trained_takes_either_size(
    tiny_dataset, tmp_path, checkpoint
):
    content = read_checkpoint(checkpoint)
    stored = tiny_cfg(tiny_dataset, tmp_path / "trained", DATA__TEST_CROP_SIZE=40)
    content["cfg"] = stored.dump()
    torch.save(content, tmp_path / "tested_larger.pyth")
    for name, crop in (("at_training_size", 32), ("at_its_test_size", 40)):
        cfg = evaluation_cfg(
            tiny_dataset,
            tmp_path / name,
            tmp_path / "tested_larger.pyth",
            DATA__TEST_CROP_SIZE=crop,
        )
        assert run(cfg) == 0
    cfg = evaluation_cfg(
        tiny_dataset, tmp_path / "out", tmp_path / "tested_larger.pyth", DATA__TEST_CROP_SIZE=48
    )
    with pytest.raises(ConfigError, match=r"was trained on 4x32x32 clips and tested on 4x40x40 "):
        run(cfg)


def test_a_checkpoint_to_test_after_training_is_checked_before_training(
    tiny_dataset, tmp_path, checkpoint
):
    cfg = tiny_cfg(
        tiny_dataset, tmp_path / "out", TEST__CHECKPOINT_FILE_PATH=str(checkpoint),
        DATA__NUM_FRAMES=8,
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"this run tests 8x32x32 clips with DATA.NUM_FRAMES 8"):
        run(cfg)
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_that_stores_pyslowfast_config_has_only_its_weights_checked(
    tiny_dataset, tmp_path, checkpoint
):
    content = read_checkpoint(checkpoint)
    content["cfg"] = "TRAIN:\n  DATASET: kinetics\n"  # PySlowFast's keys, which are not ours
    torch.save(content, tmp_path / "slowfast.pyth")
    cfg = evaluation_cfg(tiny_dataset, tmp_path / "out", tmp_path / "slowfast.pyth")
    assert run(cfg) == 0


@pytest.mark.parametrize(
    ("crop", "message"),
    [
        (1000, "DATA.TEST_CROP_SIZE 1000 for validation and test of a model trained on "
               "DATA.TRAIN_CROP_SIZE 32 crops: set DATA.TEST_CROP_SIZE to 32, or to a size within "
               "DATA.TRAIN_JITTER_SCALES [32, 40]"),
        (16, "DATA.TEST_CROP_SIZE 16 for validation and test"),
    ],
)  # fmt: skip
def test_training_with_a_test_crop_the_model_does_not_take_stops_before_writing(
    tiny_dataset, tmp_path, crop, message
):
    cfg = tiny_cfg(tiny_dataset, tmp_path / "out", DATA__TEST_CROP_SIZE=crop)
    with pytest.raises(ConfigError) as info:
        run(cfg)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_training_takes_a_test_crop_within_its_training_scales(tiny_dataset, tmp_path):
    cfg = tiny_cfg(
        tiny_dataset, tmp_path / "out", DATA__TEST_CROP_SIZE=40, SOLVER__MAX_EPOCH=1,
        TEST__ENABLE=False,
    )  # fmt: skip
    assert run(cfg) == 0
