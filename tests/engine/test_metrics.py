"""Multi-view aggregation and accuracy metrics on hand-made scores; the training loss."""

import pytest
import torch
import torch.nn.functional as F

from revvideo.engine.metrics import VideoScores, classification_metrics
from revvideo.engine.train import soft_target_cross_entropy


def _views():
    """Video 0 (label 0): two views that disagree; video 1 (label 2): one confident view;
    video 2 (label 1): no view at all."""
    probabilities = torch.tensor(
        [
            [0.5, 0.4, 0.1],  # video 0, view 0
            [0.1, 0.8, 0.1],  # video 0, view 1: alone it would say class 1
            [0.0, 0.1, 0.9],  # video 1, view 0
        ]
    )
    return probabilities, torch.tensor([0, 0, 1])


def test_sum_ensemble_adds_the_views_of_each_video():
    probabilities, video_index = _views()
    scores = VideoScores(num_videos=3, num_classes=3, method="sum")
    scores.add(probabilities[:2], video_index[:2])
    scores.add(probabilities[2:], video_index[2:])
    assert scores.views.tolist() == [2, 1, 0]
    assert scores.scores[0].tolist() == pytest.approx([0.6, 1.2, 0.2])
    assert scores.normalized()[0].tolist() == pytest.approx([0.3, 0.6, 0.1])
    assert scores.normalized()[2].tolist() == [0, 0, 0]


def test_max_ensemble_keeps_the_largest_score_per_class():
    probabilities, video_index = _views()
    scores = VideoScores(num_videos=3, num_classes=3, method="max")
    scores.add(probabilities, video_index)
    assert scores.scores[0].tolist() == pytest.approx([0.5, 0.8, 0.1])
    assert scores.scores[1].tolist() == pytest.approx([0.0, 0.1, 0.9])


def test_unknown_ensemble_method():
    with pytest.raises(ValueError, match="ensemble method"):
        VideoScores(1, 2, method="mean")


def test_top1_top5_and_mean_class_accuracy():
    # 7 classes; the true class ranks 1st, 1st, 2nd, 6th and 3rd for five videos.
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0],  # label 0: rank 1
            [0.8, 0.1, 0.1, 0.0, 0.0, 0.0, 0.0],  # label 0: rank 1
            [0.6, 0.4, 0.0, 0.0, 0.0, 0.0, 0.0],  # label 1: rank 2
            [0.30, 0.25, 0.2, 0.1, 0.08, 0.07, 0.0],  # label 5: rank 6
            [0.5, 0.3, 0.2, 0.0, 0.0, 0.0, 0.0],  # label 2: rank 3
        ]
    )
    labels = torch.tensor([0, 0, 1, 5, 2])
    metrics = classification_metrics(scores, labels)
    assert metrics.top1 == pytest.approx(40.0)
    assert metrics.top5 == pytest.approx(80.0)
    # Per class: class 0 100 %, classes 1, 2 and 5 0 %; classes without videos do not count.
    assert metrics.mean_class == pytest.approx(25.0)
    assert metrics.confusion.sum() == 5
    assert metrics.confusion[0, 0] == 2
    assert metrics.confusion[1, 0] == 1
    assert metrics.confusion[5, 0] == 1
    assert metrics.confusion[2, 0] == 1


def test_top5_with_fewer_than_five_classes_is_top_k():
    metrics = classification_metrics(torch.tensor([[0.2, 0.8], [0.6, 0.4]]), torch.tensor([0, 0]))
    assert (metrics.top1, metrics.top5) == (50.0, 100.0)


def test_soft_target_cross_entropy_matches_label_smoothing():
    logits = torch.randn(6, 5)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    smoothing = 0.1
    target = F.one_hot(labels, 5).float() * (1 - smoothing) + smoothing / 5
    expected = F.cross_entropy(logits, labels, label_smoothing=smoothing)
    assert soft_target_cross_entropy(logits, target).item() == pytest.approx(expected.item())
