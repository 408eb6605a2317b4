"""Broken (NaN) weights are an error naming the checkpoint, never a reported result."""

import pytest
import torch

from revvideo.checkpoint import model_entries, save_checkpoint
from revvideo.cli._conversion import convert
from revvideo.engine import run
from revvideo.models import build_model
from revvideo.utils.errors import CheckpointError, UserError

from .helpers import tiny_cfg


@pytest.fixture
def nan_checkpoint(tiny_dataset, tmp_path):
    cfg = tiny_cfg(tiny_dataset, tmp_path / "trained")
    model = build_model(cfg)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    path = tmp_path / "nan.pyth"
    save_checkpoint(path, model, **model_entries(cfg, ["up", "down", "still"], source="test"))
    return cfg, path


def test_testing_nan_weights_is_an_error_naming_the_checkpoint(nan_checkpoint, tmp_path):
    cfg, path = nan_checkpoint
    cfg.TRAIN.ENABLE, cfg.TEST.CHECKPOINT_FILE_PATH = False, str(path)
    cfg.OUTPUT_DIR = str(tmp_path / "evaluated")

    with pytest.raises(UserError, match=rf"non-finite scores: the weights of {path} are broken"):
        run(cfg)
    assert not (tmp_path / "evaluated").exists()  # the run made it and wrote nothing


def test_converting_nan_weights_is_an_error_and_writes_nothing(nan_checkpoint, tmp_path):
    _, path = nan_checkpoint
    with pytest.raises(CheckpointError, match=rf"^{path} gives non-finite logits"):
        convert(str(path), tmp_path / "out.pyth", None, "revvideo")
    assert not (tmp_path / "out.pyth").exists()
