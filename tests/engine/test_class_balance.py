"""DATA.CLASS_BALANCE loss: the training loss weighs each class by N / (K * n_k)."""

import logging
import math
import shutil

import pytest
import torch

from revvideo.engine.train import Trainer, balanced_class_weights, soft_target_cross_entropy
from revvideo.models import build_model

from .helpers import tiny_cfg


def _hand_loss(logits, target, weight):
    """Mean over rows of -sum_c weight_c target_c log softmax(logits)_c, one number at a time."""
    total = 0.0
    for row, soft in zip(logits.tolist(), target.tolist(), strict=True):
        norm = math.log(sum(math.exp(x) for x in row))
        total -= sum(w * t * (x - norm) for x, t, w in zip(row, soft, weight, strict=True))
    return total / len(logits)


def test_weights_make_each_class_count_alike_and_skip_classes_without_videos():
    # 6 videos: 3 of class 0, 2 of class 1, 1 of class 2, none of class 3; K = 3 classes.
    weights = balanced_class_weights([3, 2, 1, 0])
    torch.testing.assert_close(weights, torch.tensor([6 / 9, 6 / 6, 6 / 3, 0.0]))
    assert weights.dtype == torch.float32
    # Each class's videos weigh N / K together, and a video weighs 1 on average.
    assert (weights * torch.tensor([3, 2, 1, 0])).tolist() == pytest.approx([2, 2, 2, 0])


def test_the_weighted_loss_is_the_hand_computation_with_smoothing_and_mixup():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [1.0, 1.0, -2.0]])
    weight = [0.5, 1.0, 3.0]
    smoothed = torch.full((4, 3), 0.1 / 3) + 0.9 * torch.eye(3)[[0, 0, 0, 2]]  # imbalanced
    mixed = 0.7 * smoothed + 0.3 * smoothed.flip(0)  # mixup pairs row i with row B - 1 - i
    for target in (smoothed, mixed):
        loss = soft_target_cross_entropy(logits, target, torch.tensor(weight))
        assert loss.item() == pytest.approx(_hand_loss(logits, target, weight), rel=1e-6)
    unweighted = soft_target_cross_entropy(logits, smoothed)
    assert unweighted.item() == pytest.approx(_hand_loss(logits, smoothed, [1, 1, 1]), rel=1e-6)


def test_the_trainer_weighs_its_loss_by_the_training_videos_classes(tiny_dataset, tmp_path, caplog):
    # The tiny dataset without 3 of class 0's 4 training videos: 1, 4 and 4 of classes 0-2.
    dataset = tmp_path / "data"
    shutil.copytree(tiny_dataset, dataset)
    lines = (dataset / "train.csv").read_text().splitlines()
    kept = [line for line in lines if not line.endswith(" 0")][:8]
    kept.append(next(line for line in lines if line.endswith(" 0")))
    (dataset / "train.csv").write_text("".join(f"{line}\n" for line in kept))
    cfg = tiny_cfg(dataset, tmp_path / "out", DATA__CLASS_BALANCE="loss")
    (tmp_path / "out").mkdir()
    with caplog.at_level(logging.INFO):
        trainer = Trainer(cfg, torch.device("cpu"), build_model(cfg))
    trainer.log.close()
    expected = torch.tensor([9 / 3, 9 / 12, 9 / 12])
    torch.testing.assert_close(trainer.class_weights, expected)
    assert "class-weighted loss (DATA.CLASS_BALANCE loss): a class weighs 0.75 to 3" in caplog.text

    trainer.train_loader.set_epoch(0, 0)
    batch = next(iter(trainer.train_loader))
    video = trainer.train_loader.model_input(batch["video"], torch.device("cpu"))
    _, target = trainer.soft_targets(video.clone(), batch["label"])  # no mixup: only smoothing
    with torch.no_grad():
        logits = trainer.model(video)
    loss_times_clips, clips, _ = trainer._forward_backward(batch, synchronize=True).tolist()
    hand = _hand_loss(logits, target, expected.tolist())
    assert loss_times_clips / clips == pytest.approx(hand, rel=1e-5)
    assert hand != pytest.approx(_hand_loss(logits, target, [1, 1, 1]), rel=1e-3)
