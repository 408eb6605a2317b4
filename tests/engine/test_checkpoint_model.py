"""A checkpoint that stores its config brings its model: fine-tuning or testing it with a config
that describes another model (the fine-tuning recipe of Rev-MViT-B) takes the architecture and
the clip geometry from the checkpoint, keeps the recipe, and lets the command line decide."""

import logging

from revvideo.config import load_config
from revvideo.config.validate import config_value
from revvideo.engine.fine_tuning import MODEL_KEYS, adopt_checkpoint_model
from revvideo.models import build_model

from .helpers import ROOT, newest_test_results, run_net, tiny_cfg

RECIPE = ROOT / "configs" / "finetune" / "REV_MVIT_B_16x4.yaml"


def _recipe(dataset, output_dir, checkpoint, *opts):
    return load_config(
        RECIPE,
        [
            *("DATA.PATH_TO_DATA_DIR", str(dataset), "OUTPUT_DIR", str(output_dir)),
            *("TRAIN.CHECKPOINT_FILE_PATH", str(checkpoint)),
            *opts,
        ],
    )


def test_fine_tuning_takes_the_checkpoints_model_and_keeps_the_recipe(
    tiny_dataset, checkpoint, tmp_path, caplog
):
    stored = tiny_cfg(tiny_dataset, tmp_path / "trained")
    cfg = _recipe(tiny_dataset, tmp_path / "tuned", checkpoint)
    assert cfg.MVIT.DEPTH != stored.MVIT.DEPTH  # the recipe describes Rev-MViT-B
    with caplog.at_level(logging.INFO, logger="revvideo.engine.fine_tuning"):
        adopt_checkpoint_model(cfg, explicit=())

    assert all(config_value(cfg, key) == config_value(stored, key) for key in MODEL_KEYS)
    assert cfg.MODEL.NUM_CLASSES == 0  # the dataset's
    # The recipe's own keys, including its regularisation of the model, stay.
    assert cfg.MVIT.DROPPATH_RATE == 0.025 and cfg.SOLVER.MAX_EPOCH == 30
    assert cfg.SOLVER.LAYER_DECAY == 0.75
    assert f"model from {checkpoint}: RevMViT of depth 4 on 4x32x32 clips" in caplog.text
    cfg.MODEL.NUM_CLASSES = 3
    build_model(cfg).load_state_dict(build_model(stored).state_dict())  # the weights fit


def test_keys_the_command_line_sets_win(tiny_dataset, checkpoint, tmp_path, caplog):
    cfg = _recipe(tiny_dataset, tmp_path / "tuned", checkpoint, "DATA.NUM_FRAMES", "8")
    with caplog.at_level(logging.INFO, logger="revvideo.engine.fine_tuning"):
        adopt_checkpoint_model(cfg, explicit=("DATA.NUM_FRAMES", "MODEL.NUM_CLASSES"))
    assert cfg.DATA.NUM_FRAMES == 8 and cfg.MVIT.DEPTH == 4
    assert cfg.MODEL.NUM_CLASSES == _recipe(tiny_dataset, tmp_path, checkpoint).MODEL.NUM_CLASSES
    assert "set on the command line: DATA.NUM_FRAMES" in caplog.text


def test_a_checkpoint_without_a_revvideo_config_leaves_the_config(tiny_dataset, tmp_path):
    import torch

    bare = tmp_path / "bare.pyth"
    torch.save({"model_state": build_model(tiny_cfg(tiny_dataset, tmp_path)).state_dict()}, bare)
    cfg = _recipe(tiny_dataset, tmp_path / "tuned", bare)
    before = cfg.dump()
    adopt_checkpoint_model(cfg, explicit=())
    assert cfg.dump() == before


def test_the_fine_tuning_recipe_trains_from_the_checkpoint_offline(
    tiny_dataset, checkpoint, tmp_path
):
    """The README's offline fine-tuning command, shortened to one epoch on the CPU."""
    output_dir = tmp_path / "tuned"
    done = run_net(
        RECIPE,
        *("DATA.PATH_TO_DATA_DIR", str(tiny_dataset), "OUTPUT_DIR", str(output_dir)),
        *("TRAIN.CHECKPOINT_FILE_PATH", str(checkpoint), "SOLVER.MAX_EPOCH", "1"),
        *("SOLVER.WARMUP_EPOCHS", "0.0", "TRAIN.BATCH_SIZE", "4", "TRAIN.MIXED_PRECISION", "False"),
        *("DATA_LOADER.NUM_WORKERS", "0", "TEST.NUM_ENSEMBLE_VIEWS", "1"),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"model from {checkpoint}: RevMViT of depth 4" in done.stdout
    assert newest_test_results(output_dir)["num_videos"] == 6


def test_a_checkpoint_that_does_not_fit_says_what_model_it_holds(
    tiny_dataset, checkpoint, tmp_path
):
    import pytest

    from revvideo.checkpoint import load_model_state, read_checkpoint
    from revvideo.utils.errors import CheckpointError

    deeper = build_model(tiny_cfg(tiny_dataset, tmp_path, MVIT__DEPTH=5))
    with pytest.raises(
        CheckpointError, match=r"it holds a RevMViT of depth 4 and width 16 on 4x32x32"
    ):
        load_model_state(deeper, read_checkpoint(checkpoint), checkpoint)
