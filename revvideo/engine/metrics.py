"""Multi-view scores per video and the accuracy metrics computed from them."""

from dataclasses import dataclass

import torch

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
