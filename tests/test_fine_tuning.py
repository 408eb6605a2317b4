"""Fine-tuning loads: every tensor that fits, a new head, resized position embeddings, and a
one-line error when the backbone does not fit."""

import pytest
import torch
from tiny_models import tiny_rev_mvit, tiny_rev_vit

from revvideo.checkpoint import (
    RELEASES,
    checkpoint_file,
    load_fine_tuning_state,
    read_checkpoint,
    save_checkpoint,
)
from revvideo.models import rev_mvit_b_16x4
from revvideo.utils.errors import CheckpointError


def _saved(tmp_path, model):
    path = tmp_path / "pretrained.pyth"
    save_checkpoint(path, model)
    return path, read_checkpoint(path)


def test_another_class_count_loads_the_backbone_and_reinitialises_the_head(tmp_path):
    torch.manual_seed(0)
    pretrained = tiny_rev_mvit(num_classes=6)
    path, checkpoint = _saved(tmp_path, pretrained)
    torch.manual_seed(1)
    model = tiny_rev_mvit(num_classes=3)
    fresh_head = model.head.projection.weight.detach().clone()

    changes = load_fine_tuning_state(model, checkpoint, path)

    assert changes == ["re-initialised the classification head (6 -> 3 classes)"]
    state, loaded = pretrained.state_dict(), model.state_dict()
    backbone = [key for key in state if not key.startswith("head.projection.")]
    assert len(backbone) == len(state) - 2
    assert all(torch.equal(loaded[key], state[key]) for key in backbone)
    assert torch.equal(model.head.projection.weight, fresh_head)


def test_the_same_model_loads_unchanged(tmp_path):
    pretrained = tiny_rev_mvit(num_classes=6)
    path, checkpoint = _saved(tmp_path, pretrained)
    model = tiny_rev_mvit(num_classes=6)

    assert load_fine_tuning_state(model, checkpoint, path) == []
    assert all(torch.equal(model.state_dict()[k], v) for k, v in pretrained.state_dict().items())


def test_separable_position_embeddings_follow_frames_and_crop(tmp_path):
    pretrained = tiny_rev_mvit(num_classes=6)  # 4 frames at 32 px: 2 x 8 x 8 tokens
    with torch.no_grad():
        # A linear ramp is what interpolation must keep: along time, and along the rows.
        ramp = torch.linspace(0, 1, 2)[None, :, None].expand_as(pretrained.pos_embed_temporal)
        pretrained.pos_embed_temporal.copy_(ramp)
        rows = torch.arange(8.0).repeat_interleave(8)[None, :, None]
        pretrained.pos_embed_spatial.copy_(rows.expand_as(pretrained.pos_embed_spatial))
    path, checkpoint = _saved(tmp_path, pretrained)
    model = tiny_rev_mvit(num_classes=6, num_frames=8, crop_size=64)  # 4 x 16 x 16 tokens

    changes = load_fine_tuning_state(model, checkpoint, path)

    assert changes == [
        "resized pos_embed_spatial (64 -> 256 positions)",
        "resized pos_embed_temporal (2 -> 4 positions)",
    ]
    temporal = model.pos_embed_temporal[0, :, 0]
    assert temporal[0] < temporal[1] < temporal[2] < temporal[3]
    assert temporal.min() >= 0 and temporal.max() <= 1
    spatial = model.pos_embed_spatial[0, :, 0].reshape(16, 16)
    # Bicubic interpolation of a ramp: the same in every column, rising down the rows.
    torch.testing.assert_close(spatial, spatial[:, :1].expand(16, 16))
    assert (spatial[1:, 0] >= spatial[:-1, 0] - 1e-6).all()
    with torch.no_grad():
        assert torch.isfinite(model.eval()(torch.randn(1, 3, 8, 64, 64))).all()


def test_a_joint_position_embedding_is_resized_over_its_grid(tmp_path):
    # 4 frames at 32 px in patches of 2 x 8 x 8: 2 x 4 x 4 tokens, one embedding for them all.
    pretrained = tiny_rev_vit(num_classes=5, sep_pos_embed=False)
    path, checkpoint = _saved(tmp_path, pretrained)
    model = tiny_rev_vit(num_classes=5, sep_pos_embed=False, crop_size=64)  # 2 x 8 x 8

    changes = load_fine_tuning_state(model, checkpoint, path)

    assert changes == ["resized pos_embed (32 -> 128 positions)"]
    old = pretrained.pos_embed.reshape(2, 4, 4, -1)
    new = model.pos_embed.reshape(2, 8, 8, -1)
    # Each frame's grid is resized on its own: the mean of a frame's positions is kept.
    torch.testing.assert_close(new.mean(dim=(1, 2)), old.mean(dim=(1, 2)), atol=0.01, rtol=0)


def test_a_backbone_that_does_not_fit_is_one_line_naming_the_first_mismatch(tmp_path):
    path, checkpoint = _saved(tmp_path, tiny_rev_mvit(num_classes=6, embed_dim=8))
    model = tiny_rev_mvit(num_classes=3)

    with pytest.raises(CheckpointError, match=r"does not fit RevMViT: \S+ has shape") as error:
        load_fine_tuning_state(model, checkpoint, path)
    assert "\n" not in str(error.value)


def test_another_architecture_names_its_missing_keys(tmp_path):
    path, checkpoint = _saved(tmp_path, tiny_rev_vit(num_classes=3))

    with pytest.raises(CheckpointError, match=r"missing keys \(.*\); \d+ unexpected keys"):
        load_fine_tuning_state(tiny_rev_mvit(num_classes=3), checkpoint, path)


def test_a_release_name_fine_tunes_into_other_classes_and_frames(tmp_path, monkeypatch):
    # The release as PySlowFast publishes it, already in the hub cache (nothing downloads).
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    release = RELEASES["rev_mvit_b_16x4_k400"]
    (tmp_path / "checkpoints").mkdir()
    published = rev_mvit_b_16x4(400)
    torch.save(
        {"model_state": published.state_dict()}, tmp_path / "checkpoints" / release.file_name
    )
    path = checkpoint_file("rev_mvit_b_16x4_k400", "TRAIN.CHECKPOINT_FILE_PATH")
    model = rev_mvit_b_16x4(num_classes=5, num_frames=8)  # 4 temporal positions, not 8

    changes = load_fine_tuning_state(model, read_checkpoint(path), path)

    assert changes == [
        "re-initialised the classification head (400 -> 5 classes)",
        "resized pos_embed_temporal (8 -> 4 positions)",
    ]
    patch = "patch_embed.proj.weight"
    assert torch.equal(model.state_dict()[patch], published.state_dict()[patch])
