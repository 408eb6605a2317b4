"""Multi-view scores per video, the accuracy metrics computed from them with their
uncertainty, and the calibration of the probabilities (expected calibration error, temperature).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from revvideo.engine.distributed import all_reduce

ENSEMBLE_METHODS = ("sum", "max")


class VideoScores:
    """Softmax scores of every view, combined per video by sum or max.

    `scores` (num_videos, num_classes) holds the combination, `views` (num_videos,) how many
    views each video received. Every video is scored on exactly one process, so summing the
    tables of all processes (`all_reduce`) gathers them whatever the method.
    """

    def __init__(self, num_videos: int, num_classes: int, method: str = "sum") -> None:
        if method not in ENSEMBLE_METHODS:
            raise ValueError(f"ensemble method must be one of {ENSEMBLE_METHODS}, got {method!r}")
        self.method = method
        self.scores = torch.zeros(num_videos, num_classes, dtype=torch.float64)
        self.views = torch.zeros(num_videos, dtype=torch.long)

    def add(self, probabilities: torch.Tensor, video_index: torch.Tensor) -> None:
        """probabilities: (B, num_classes) softmax of B views; video_index: (B,) their videos."""
        probabilities = probabilities.detach().to("cpu", torch.float64)
        video_index = video_index.cpu()
        if self.method == "sum":
            self.scores.index_add_(0, video_index, probabilities)
        else:
            # Scores start at 0 and probabilities are >= 0, so including the start is harmless.
            rows = video_index.unsqueeze(1).expand_as(probabilities)
            self.scores.scatter_reduce_(0, rows, probabilities, reduce="amax")
        self.views.index_add_(0, video_index, torch.ones_like(video_index))

    def all_reduce(self, device: torch.device) -> None:
        """Combines the tables of all processes (each holds its own videos, zeros elsewhere)."""
        self.scores = all_reduce(self.scores.to(device)).cpu()
        self.views = all_reduce(self.views.to(device)).cpu()

    def normalized(self) -> torch.Tensor:
        """(num_videos, num_classes): mean probability over views for "sum", the max for "max"."""
        if self.method == "max":
            return self.scores.clone()
        return self.scores / self.views.clamp(min=1).unsqueeze(1)


@dataclass
class ClassificationMetrics:
    top1: float  # percent
    top5: float  # percent (top-k with k = number of classes when there are fewer than 5)
    mean_class: float  # percent: mean over classes with videos of their top-1 accuracy
    confusion: torch.Tensor  # (C, C) int64: videos of class row predicted as class column


def classification_metrics(scores: torch.Tensor, labels: torch.Tensor) -> ClassificationMetrics:
    """Metrics of scores (N, C) against labels (N,); N must be positive."""
    num_classes = scores.shape[1]
    ranked = scores.topk(min(5, num_classes), dim=1).indices
    predicted = ranked[:, 0]
    top1 = (predicted == labels).double().mean().item() * 100
    top5 = (ranked == labels.unsqueeze(1)).any(dim=1).double().mean().item() * 100
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    per_class = confusion.diagonal() / confusion.sum(dim=1).clamp(min=1)
    present = confusion.sum(dim=1) > 0
    mean_class = per_class[present].double().mean().item() * 100
    return ClassificationMetrics(top1, top5, mean_class, confusion)


def wilson_interval(correct: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval (low, high), in percent, of the proportion correct / total; with
    the default z, the 95 % interval. Unlike p +- z * se it stays inside 0-100 % and is not empty
    at 0 or `total` correct. Raises ValueError unless 0 <= correct <= total and total > 0."""
    if total <= 0 or not 0 <= correct <= total:
        raise ValueError(
            f"a proportion needs 0 <= correct <= total and total > 0, got {correct}/{total}"
        )
    p = correct / total
    z2 = z * z / total
    centre = (p + z2 / 2) / (1 + z2)
    half = z * math.sqrt(p * (1 - p) / total + z2 / (4 * total)) / (1 + z2)
    # At 0 and at `total` correct one end is 0 or 100 % exactly; rounding would move it.
    low = 0.0 if correct == 0 else 100 * (centre - half)
    high = 100.0 if correct == total else 100 * (centre + half)
    return low, high


@dataclass
class PerClassMetrics:
    """Per class (C,), from a confusion matrix (rows true, columns predicted). Precision, recall
    and F1 are in percent; a class never predicted has precision 0, a class without videos recall
    0, and F1 is 0 where precision and recall both are."""

    precision: torch.Tensor  # (C,) float64: correct / predicted as the class
    recall: torch.Tensor  # (C,) float64: correct / videos of the class
    f1: torch.Tensor  # (C,) float64: harmonic mean of precision and recall
    support: torch.Tensor  # (C,) int64: videos of the class


def per_class_metrics(confusion: torch.Tensor) -> PerClassMetrics:
    """Precision, recall, F1 and support of each class of `confusion` (C, C)."""
    correct = confusion.diagonal().double()
    support = confusion.sum(dim=1)
    precision = 100 * correct / confusion.sum(dim=0).clamp(min=1)
    recall = 100 * correct / support.clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    return PerClassMetrics(precision, recall, f1, support)


@dataclass
class Reliability:
    """What a reliability diagram shows: the predictions binned by their confidence (the top
    probability) into equal-width bins, bin b holding confidences in (b / B, (b + 1) / B]."""

    confidence: torch.Tensor  # (B,) float64: mean confidence in the bin; 0 where count is 0
    accuracy: torch.Tensor  # (B,) float64: fraction of the bin's top predictions that are right
    count: torch.Tensor  # (B,) int64: predictions in the bin
    ece: float  # percent: sum over bins of count / N * |accuracy - confidence|


def reliability(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> Reliability:
    """Reliability of `probabilities` (N, K) against `labels` (N,), in `bins` bins; for N = 0 an
    ECE of 0."""
    confidence, predicted = probabilities.double().max(dim=1)
    correct = (predicted == labels).double()
    # ceil: a confidence on a bin's upper edge belongs to that bin, as (lower, upper] says.
    index = (confidence * bins).ceil().long().clamp(1, bins) - 1
    count = torch.zeros(bins, dtype=torch.long).index_add_(0, index, torch.ones_like(index))
    total_confidence = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, confidence)
    total_correct = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, correct)
    ece = (total_correct - total_confidence).abs().sum().item() / max(len(labels), 1) * 100
    filled = count.clamp(min=1)
    return Reliability(total_confidence / filled, total_correct / filled, count, ece)


def expected_calibration_error(
    probabilities: torch.Tensor, labels: torch.Tensor, bins: int = 15
) -> float:
    """ECE in percent of `probabilities` (N, K) against `labels` (N,): how far, weighted by the
    bins' sizes, the top probability is from the accuracy of its confidence bin (see Reliability)."""
    return reliability(probabilities, labels, bins).ece


# The temperatures fit_temperature searches, and how closely (in log T) it finds the best.
TEMPERATURE_RANGE = (0.01, 100.0)
_LOG_T_TOLERANCE = 1e-6
_GOLDEN = (math.sqrt(5) - 1) / 2


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T that minimises the mean NLL of softmax(logits / T) for `logits` (N, K)
    and `labels` (N,), within TEMPERATURE_RANGE; 1.0 for N = 0.

    The NLL is convex in 1 / T, hence unimodal in log T: a golden-section search over log T finds
    its minimum, deterministically. Where it falls outside the range (every prediction right, or
    every one wrong), the nearer end is returned. Raises ValueError for non-finite logits.
    """
    if len(labels) == 0:
        return 1.0
    logits = logits.double()
    if not torch.isfinite(logits).all():
        raise ValueError("the logits to fit a temperature to must be finite")

    def nll(log_t: float) -> float:
        return F.cross_entropy(logits / math.exp(log_t), labels).item()

    low, high = (math.log(t) for t in TEMPERATURE_RANGE)
    left, right = high - _GOLDEN * (high - low), low + _GOLDEN * (high - low)
    nll_left, nll_right = nll(left), nll(right)
    while high - low > _LOG_T_TOLERANCE:
        if nll_left <= nll_right:
            high, right, nll_right = right, left, nll_left
            left = high - _GOLDEN * (high - low)
            nll_left = nll(left)
        else:
            low, left, nll_left = left, right, nll_right
            right = low + _GOLDEN * (high - low)
            nll_right = nll(right)
    return math.exp((low + high) / 2)
