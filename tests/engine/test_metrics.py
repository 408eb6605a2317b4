"""Multi-view aggregation, accuracy metrics with their uncertainty and calibration on hand-made
scores; the training loss."""

import pytest
import torch
import torch.nn.functional as F

from revvideo.engine.metrics import (
    VideoScores,
    classification_metrics,
    expected_calibration_error,
    per_class_metrics,
    reliability,
    wilson_interval,
)
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


@pytest.mark.parametrize(
    ("correct", "total", "interval"),
    [
        (2, 3, (20.77, 93.85)),
        (0, 10, (0.0, 27.75)),
        (10, 10, (72.25, 100.0)),
        (50, 100, (40.38, 59.62)),  # statsmodels' proportion_confint(50, 100, method="wilson")
    ],
)
def test_wilson_interval_of_known_proportions(correct, total, interval):
    low, high = wilson_interval(correct, total)
    assert (low, high) == pytest.approx(interval, abs=0.005)  # the values are given to 0.01


def test_wilson_interval_is_exact_at_the_ends():
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 100.0


@pytest.mark.parametrize(("correct", "total"), [(0, 0), (4, 3), (-1, 3)])
def test_wilson_interval_of_no_proportion(correct, total):
    with pytest.raises(ValueError, match="0 <= correct <= total and total > 0"):
        wilson_interval(correct, total)


def test_per_class_precision_recall_f1_and_support():
    # Rows true, columns predicted: class 0 has 3 videos (2 right, 1 taken for class 1), class 1
    # has 1 (right), class 2 has 2 (both taken for class 0), class 3 has none and is never
    # predicted.
    confusion = torch.tensor([[2, 1, 0, 0], [0, 1, 0, 0], [2, 0, 0, 0], [0, 0, 0, 0]])
    metrics = per_class_metrics(confusion)
    assert metrics.support.tolist() == [3, 1, 2, 0]
    assert metrics.precision.tolist() == pytest.approx([50.0, 50.0, 0.0, 0.0])
    assert metrics.recall.tolist() == pytest.approx([200 / 3, 100.0, 0.0, 0.0])
    # Harmonic means: 2 * 50 * 66.67 / 116.67 and 2 * 50 * 100 / 150; 0 where both are 0.
    assert metrics.f1.tolist() == pytest.approx([400 / 7, 200 / 3, 0.0, 0.0])


def test_ece_of_a_calibrated_set_is_zero():
    # Four predictions at 0.75, three right; two at 0.5 (a tie: class 0), one right.
    probabilities = torch.tensor([[0.75, 0.25]] * 2 + [[0.25, 0.75]] * 2 + [[0.5, 0.5]] * 2)
    labels = torch.tensor([0, 0, 1, 0, 0, 1])
    assert expected_calibration_error(probabilities, labels) == 0.0


def test_ece_of_an_overconfident_set():
    # Bins of 15: 10 predictions at 0.9 with 6 right (0.3 too sure), 5 at 0.6 with 3 right and 5
    # at 1.0 all right (calibrated): ECE = 10 / 20 * 0.3 = 15 %.
    probabilities = torch.tensor(
        [[0.9, 0.1]] * 10 + [[0.4, 0.6]] * 5 + [[1.0, 0.0]] * 5, dtype=torch.float64
    )
    labels = torch.tensor([0] * 6 + [1] * 4 + [1] * 3 + [0] * 2 + [0] * 5)
    assert expected_calibration_error(probabilities, labels) == pytest.approx(15.0, abs=1e-9)
    bins = reliability(probabilities, labels)
    filled = bins.count.nonzero().flatten().tolist()
    assert filled == [8, 13, 14]  # (0.533, 0.6], (0.867, 0.933], (0.933, 1]
    assert bins.count[filled].tolist() == [5, 10, 5] and bins.count.sum() == 20
    assert bins.confidence[filled].tolist() == pytest.approx([0.6, 0.9, 1.0])
    assert bins.accuracy[filled].tolist() == pytest.approx([0.6, 0.6, 1.0])
    assert bins.ece == pytest.approx(15.0, abs=1e-9)


def test_a_confidence_on_a_bin_edge_belongs_to_the_lower_bin():
    probabilities = torch.tensor([[0.5, 0.5], [0.75, 0.25], [1.0, 0.0]])
    bins = reliability(probabilities, torch.tensor([0, 1, 0]), bins=2)  # (0, 0.5], (0.5, 1]
    assert bins.count.tolist() == [1, 2]
    assert bins.accuracy.tolist() == [1.0, 0.5]
    # Bin 0: 1 right at 0.5; bin 1: 1 of 2 right at 0.875 mean; (0.5 + 0.75) / 3 = 41.67 %.
    assert bins.ece == pytest.approx(125 / 3)
