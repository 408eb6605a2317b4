"""Checkpoint names, the newest checkpoint, generator states and atomic saving."""

import random

import numpy as np
import pytest
import torch
from tiny_models import tiny_rev_mvit

from revvideo.checkpoint import save_checkpoint
from revvideo.checkpoint.training import (
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_training_state,
    remove_mid_epoch_checkpoints,
    rng_state,
    save_training_state,
    set_rng_state,
)
from revvideo.config import get_cfg
from revvideo.engine.optim import WarmupCosineSchedule
from revvideo.utils.errors import CheckpointError


def test_names_and_order(tmp_path):
    assert checkpoint_path(tmp_path, 3).name == "checkpoint_epoch_00003.pyth"
    assert checkpoint_path(tmp_path, 3, 17).name == "checkpoint_epoch_00003_step_000017.pyth"
    assert latest_checkpoint(tmp_path) is None
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for name in (
        "checkpoint_epoch_00010.pyth",
        "checkpoint_epoch_00002.pyth",
        "checkpoint_epoch_00010_step_000005.pyth",
        "checkpoint_epoch_00009_step_000100.pyth",
        ".checkpoint_epoch_00011.pyth.123.tmp.pyth",  # a partial write: never a checkpoint
        "notes.txt",
        "last.pyth",  # the run's models: never resumed from
        "best.pyth",
    ):
        (folder / name).write_bytes(b"")
    assert [path.name for path in list_checkpoints(tmp_path)] == [
        "checkpoint_epoch_00002.pyth",
        "checkpoint_epoch_00009_step_000100.pyth",
        "checkpoint_epoch_00010.pyth",
        "checkpoint_epoch_00010_step_000005.pyth",
    ]
    assert latest_checkpoint(tmp_path).name == "checkpoint_epoch_00010_step_000005.pyth"
    remove_mid_epoch_checkpoints(tmp_path, before=folder / "checkpoint_epoch_00010.pyth")
    assert not (folder / "checkpoint_epoch_00009_step_000100.pyth").exists()
    assert (folder / "checkpoint_epoch_00010_step_000005.pyth").exists()
    assert (folder / "last.pyth").exists() and (folder / "best.pyth").exists()


def test_generator_states_round_trip():
    state = rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(state)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert expected[:2] == again[:2]
    assert torch.equal(expected[2], again[2])


def _training_objects():
    model = tiny_rev_mvit()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    schedule = WarmupCosineSchedule(
        optimizer,
        peak_lr=1e-3,
        start_lr=1e-4,
        end_lr=0.0,
        warmup_epochs=1.0,
        max_epoch=4,
        steps_per_epoch=5,
        cosine_after_warmup=True,
    )
    return model, optimizer, schedule, torch.amp.GradScaler("cpu", enabled=False)


def _save(path, objects, epochs_done):
    save_training_state(
        path,
        *objects,
        epochs_done=epochs_done,
        steps_done=0,
        steps_per_epoch=5,
        rng_states=[rng_state()],
        cfg=get_cfg(),
        class_names=["a", "b"],
        source="pretrained.pyth",
        optimizer_steps=5 * epochs_done,
    )


def test_training_state_round_trip(tmp_path):
    objects = _training_objects()
    model, optimizer, schedule, _ = objects
    model(torch.randn(2, 3, 4, 32, 32)).sum().backward()
    optimizer.step()
    schedule.step()
    path = tmp_path / "checkpoint_epoch_00001.pyth"
    _save(path, objects, epochs_done=1)

    restored = _training_objects()
    extra = load_training_state(path, *restored)
    assert (extra["epoch"], extra["epoch_step"], extra["steps_per_epoch"]) == (1, 0, 5)
    assert extra["class_names"] == ["a", "b"]
    assert extra["provenance"] == {"source": "pretrained.pyth", "epoch": 1, "step": 5}
    assert get_cfg().dump() == extra["cfg"]
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, restored[0].state_dict()[name])
    assert restored[2].step_count == 1
    assert restored[1].param_groups[0]["lr"] == pytest.approx(schedule.lr_at(1))
    exp_avg = optimizer.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(restored[1].state_dict()["state"][0]["exp_avg"], exp_avg)


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    objects = _training_objects()
    path = tmp_path / "checkpoints" / "checkpoint_epoch_00001.pyth"
    _save(path, objects, epochs_done=1)
    before = path.read_bytes()

    def disk_full(obj, file, *args, **kwargs):
        file.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device"):
        _save(path, objects, epochs_done=2)
    with pytest.raises(CheckpointError):
        _save(checkpoint_path(tmp_path, 2), objects, epochs_done=2)
    assert path.read_bytes() == before
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [path.name]
    assert latest_checkpoint(tmp_path) == path


def test_weights_without_training_state_are_not_resumed(tmp_path):
    objects = _training_objects()
    path = tmp_path / "weights.pyth"
    save_checkpoint(path, objects[0])
    with pytest.raises(CheckpointError, match=r"no training state.*TRAIN\.CHECKPOINT_FILE_PATH"):
        load_training_state(path, *objects)
