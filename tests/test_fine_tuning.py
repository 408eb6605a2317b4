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
from revvideo.classes import ClassNames
from revvideo.models import rev_mvit_b_16x4
from revvideo.utils.errors import CheckpointError

# Said whenever rows go by position, here where neither side names its classes.
UNNAMED = (
    "classification head: neither the checkpoint nor the dataset names its classes, so the "
    "checkpoint's {} rows are taken as the labels by position"
)


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

    assert load_fine_tuning_state(model, checkpoint, path) == [UNNAMED.format(6)]
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
        UNNAMED.format(6),
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

    assert changes == [UNNAMED.format(5), "resized pos_embed (32 -> 128 positions)"]
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


# Classes travel by name: the head's rows follow the dataset's class names, not their indices.
HEAD_KEYS = ("head.projection.weight", "head.projection.bias")


def _named_checkpoint(tmp_path, names, seed=0):
    torch.manual_seed(seed)
    pretrained = tiny_rev_mvit(num_classes=len(names))
    path = tmp_path / "named.pyth"
    save_checkpoint(path, pretrained, class_names=list(names))
    return pretrained.state_dict(), path, read_checkpoint(path)


def _fresh(num_classes, seed=1):
    torch.manual_seed(seed)
    model = tiny_rev_mvit(num_classes=num_classes)
    return model, {key: model.state_dict()[key].clone() for key in HEAD_KEYS}


def test_the_same_classes_in_another_order_keep_their_rows_by_name(tmp_path):
    old = ["up", "down", "still"]
    pretrained, path, checkpoint = _named_checkpoint(tmp_path, old)
    model, _ = _fresh(3)
    order = ["still", "up", "down"]

    changes = load_fine_tuning_state(model, checkpoint, path, ClassNames(order, "dataset"))

    assert changes == ["classification head: 3 classes kept by name (reordered)"]
    for key in HEAD_KEYS:
        expected = torch.stack([pretrained[key][old.index(name)] for name in order])
        assert torch.equal(model.state_dict()[key], expected)


def test_new_classes_get_fresh_rows_and_the_checkpoints_others_are_dropped(tmp_path):
    old = ["a", "b", "c", "d", "Air drumming"]
    pretrained, path, checkpoint = _named_checkpoint(tmp_path, old)
    model, fresh = _fresh(5)
    order = ["air_drumming", "x", "a", "y", "c"]  # names match as everywhere: normalised

    changes = load_fine_tuning_state(model, checkpoint, path, ClassNames(order, "dataset"))

    assert changes == [
        "classification head: 3 classes kept by name (reordered), 2 new ('x', 'y'), 2 of the "
        "checkpoint's dropped ('b', 'd')"
    ]
    loaded = model.state_dict()
    for key in HEAD_KEYS:
        for row, source in enumerate([4, None, 0, None, 2]):
            # A new class's row is the one the model initialised it with.
            expected = fresh[key][row] if source is None else pretrained[key][source]
            assert torch.equal(loaded[key][row], expected), (key, row)


def test_fewer_classes_in_the_same_order_are_kept_without_reordering(tmp_path):
    pretrained, path, checkpoint = _named_checkpoint(tmp_path, ["a", "b", "c", "d"])
    model, _ = _fresh(2)

    changes = load_fine_tuning_state(model, checkpoint, path, ClassNames(["b", "d"], "dataset"))

    assert changes == [
        "classification head: 2 classes kept by name, 2 of the checkpoint's dropped ('a', 'c')"
    ]
    assert torch.equal(model.head.projection.bias, pretrained["head.projection.bias"][[1, 3]])


def test_the_same_count_of_other_classes_is_a_new_head(tmp_path):
    _, path, checkpoint = _named_checkpoint(tmp_path, ["a", "b", "c"])
    model, fresh = _fresh(3)

    changes = load_fine_tuning_state(
        model, checkpoint, path, ClassNames(["x", "y", "z"], "dataset")
    )

    assert changes == [
        "re-initialised the classification head (3 -> 3 classes): the checkpoint has none of "
        "the dataset's classes"
    ]
    assert all(torch.equal(model.state_dict()[key], fresh[key]) for key in HEAD_KEYS)


def test_the_same_classes_in_the_same_order_load_unchanged(tmp_path):
    pretrained, path, checkpoint = _named_checkpoint(tmp_path, ["a", "b"])
    model, _ = _fresh(2)

    assert load_fine_tuning_state(model, checkpoint, path, ClassNames(["a", "b"], "dataset")) == []
    assert all(torch.equal(model.state_dict()[key], pretrained[key]) for key in HEAD_KEYS)


def test_unnamed_classes_are_matched_by_position_and_said_so(tmp_path):
    torch.manual_seed(0)
    pretrained = tiny_rev_mvit(num_classes=3)
    path, checkpoint = _saved(tmp_path, pretrained)  # a bare state dict: no class names
    model, _ = _fresh(3)

    changes = load_fine_tuning_state(
        model, checkpoint, path, ClassNames(["c", "a", "b"], "dataset")
    )

    assert changes == [
        "classification head: the checkpoint names no classes, so its 3 rows are taken as the "
        "dataset's classes by position"
    ]
    assert all(torch.equal(model.state_dict()[k], pretrained.state_dict()[k]) for k in HEAD_KEYS)

    _, path, checkpoint = _named_checkpoint(tmp_path, ["a", "b", "c"])
    unnamed = ClassNames(["class_0", "class_1", "class_2"], "unnamed")
    assert load_fine_tuning_state(_fresh(3)[0], checkpoint, path, unnamed) == [
        "classification head: the dataset names no classes, so the checkpoint's 3 rows are "
        "taken as its labels by position"
    ]
