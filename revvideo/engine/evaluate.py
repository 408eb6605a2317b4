"""Validation during training (top-1, or the logits a temperature is fitted to), and the
multi-view test with its result files.

The test scores every view of every video (TEST.NUM_ENSEMBLE_VIEWS clips x
TEST.NUM_SPATIAL_CROPS crops), combines the views' softmax scores, at the model's temperature,
per video (DATA.ENSEMBLE_METHOD) and writes, each file whole, into a new folder of its own
(new_test_folder), so that no test replaces a file: OUTPUT_DIR/test/<checkpoint stem>, or
<stem>-2, -3, ... where that name is taken.
  config.yaml        the config the test ran with
  test_results.json  top1_acc with top1_ci95 (its 95 % Wilson interval), top5_acc,
                     mean_class_acc, ece and ece_uncalibrated (at temperature 1), all percent;
                     temperature; per_class (name -> precision, recall, f1 in percent, support);
                     num_videos (scored), num_views (per video), num_unscored, the unscored
                     videos and why, the class names scored, ...
  predictions.csv    video, label, then the top 5 classes with their probabilities
  confusion.png      the confusion matrix (see plots.plot_confusion)
  reliability.png    accuracy per confidence bin against the diagonal (plots.plot_reliability)
A split under SMALL_SPLIT videos is a warning that gives the interval (small_split_warning).

The model's classes are matched to the dataset's by name (revvideo.classes.match_classes):
another order is remapped, other classes are an error unless TEST.SHARED_CLASSES_ONLY.

Both stop after the batch at hand on a stop request (revvideo.engine.stopping.StopRequest):
validation returns no top-1, the test raises Interrupted before making its folder.
"""

import contextlib
import csv
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from fvcore.common.config import CfgNode
from torch import nn

from revvideo.classes import ClassMatch, ClassNames, match_classes
from revvideo.data import VideoDataset, VideoLoader, build_loader
from revvideo.engine.distributed import all_gather_objects, all_reduce, is_main_process
from revvideo.engine.metrics import (
    Reliability,
    VideoScores,
    classification_metrics,
    expected_calibration_error,
    per_class_metrics,
    reliability,
    wilson_interval,
)
from revvideo.engine.monitor import progress_bar
from revvideo.engine.plots import plot_confusion, plot_reliability
from revvideo.engine.precision import MixedPrecision
from revvideo.engine.stopping import StopRequest, stopping
from revvideo.utils.errors import DataError, UserError
from revvideo.utils.files import written_whole

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
RESULTS_FILE = "test_results.json"
PREDICTIONS_FILE = "predictions.csv"
CONFUSION_FILE = "confusion.png"
RELIABILITY_FILE = "reliability.png"
TEST_DIR = "test"
# A split with fewer videos than this is a warning: its accuracy's interval is wide.
SMALL_SPLIT = 30


@torch.no_grad()
def _centre_clips(
    model: nn.Module,
    loader: VideoLoader,
    device: torch.device,
    precision: MixedPrecision,
    stop: StopRequest | None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(logits (B, K), labels (B,)) on `device` of each batch of single centre clips, the model in
    eval mode meanwhile; the batch at which `stop` is requested is the last."""
    model.eval()
    try:
        with stopping(stop, iter(loader)) as batches:
            for batch in batches:
                with precision.autocast():
                    logits = model(loader.model_input(batch["video"], device))
                yield logits, batch["label"].to(device)
                if stop is not None and stop.requested:
                    break
    finally:
        model.train()


def _stopped(stop: StopRequest | None, device: torch.device) -> bool:
    """Whether `stop` was requested on any process (it then is on every process)."""
    requested = stop is not None and stop.requested
    stopped = all_reduce(torch.tensor([float(requested)], device=device)).item()
    return stop is not None and stop.agree(stopped > 0)


def validation_logits(
    model: nn.Module,
    loader: VideoLoader,
    device: torch.device,
    precision: MixedPrecision,
    stop: StopRequest | None = None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The logits (N, K) of single centre clips and their labels (N,), over all processes (float32
    and int64, on the CPU, rank 0's clips first); None if nothing decoded, or if `stop` was
    requested on any process (it then is on every process: `stop.requested`)."""
    logits, labels = [], []
    for batch_logits, batch_labels in _centre_clips(model, loader, device, precision, stop):
        logits.append(batch_logits.float().cpu())
        labels.append(batch_labels.cpu())
    if _stopped(stop, device):
        return None
    gathered = all_gather_objects((logits, labels))
    logits = [batch for process_logits, _ in gathered for batch in process_logits]
    labels = [batch for _, process_labels in gathered for batch in process_labels]
    return (torch.cat(logits), torch.cat(labels)) if logits else None


def validate(
    model: nn.Module,
    loader: VideoLoader,
    device: torch.device,
    precision: MixedPrecision,
    stop: StopRequest | None = None,
) -> float | None:
    """Top-1 (percent) of single centre clips over all processes; None if nothing decoded, or if
    `stop` was requested on any process. Counts on the device: no logits leave it."""
    counts = torch.zeros(2, dtype=torch.long, device=device)  # correct, clips
    for logits, labels in _centre_clips(model, loader, device, precision, stop):
        counts[0] += (logits.argmax(dim=1) == labels).sum()
        counts[1] += len(labels)
    if _stopped(stop, device):
        return None
    correct, total = all_reduce(counts).tolist()
    return 100.0 * correct / total if total else None


def top1_with_interval(correct: int, total: int) -> str:
    """E.g. "top-1 66.67 % (95 % CI 20.77-93.85)" for 2 of 3; total must be positive."""
    low, high = wilson_interval(correct, total)
    return f"top-1 {100 * correct / total:.2f} % (95 % CI {low:.2f}-{high:.2f})"


def small_split_warning(split: str, correct: int, total: int) -> str | None:
    """The warning for `correct` of `total` videos of `split` right when total is under
    SMALL_SPLIT (and positive), with the 95 % interval of the accuracy; None from SMALL_SPLIT on."""
    if total >= SMALL_SPLIT:
        return None
    return (
        f"the {split} split has only {total} videos: {top1_with_interval(correct, total)}; on "
        "so few videos the accuracy is known only to within that interval"
    )


@torch.no_grad()
def multiview_test(
    cfg: CfgNode,
    model: nn.Module,
    device: torch.device,
    precision: MixedPrecision,
    *,
    checkpoint: str,
    class_names: ClassNames,
    stop: StopRequest | None = None,
    temperature: float = 1.0,
) -> dict[str, Any]:
    """Scores the test split view by view and returns the results; rank 0 writes them into a
    new folder (see the module doc) and logs them with its name.

    `checkpoint` names the weights being tested, for the record and the folder; `class_names`
    are the model's; each view's logits are divided by `temperature` before its softmax.
    Raises UserError for a temperature that is not a positive number; DataError when no video
    at all can be scored, and when the model's classes and the dataset's differ (see the module
    doc); Interrupted, with nothing written, when `stop` is requested on any process while the
    views are scored. The files are written with a Ctrl-C held back (`stop.held`).
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise UserError(f"the temperature must be a positive number, got {temperature}")
    loader = build_loader(cfg, "test", views_for_gpu=device.type == "cuda")
    dataset = loader.dataset
    match = match_classes(
        class_names, dataset.class_names, shared_only=cfg.TEST.SHARED_CLASSES_ONLY
    )
    if match.notice and is_main_process():
        logger.warning("%s", match.notice)
    scores, uncalibrated, reasons = _score_views(
        model, loader, device, precision, cfg, temperature, stop
    )
    videos = _video_results(dataset, match, scores, reasons, checkpoint)
    labels = videos.labels[videos.scored]
    metrics = classification_metrics(videos.probabilities[videos.scored], labels)
    correct, total = int(metrics.confusion.trace()), int(metrics.confusion.sum())
    calibration = reliability(videos.probabilities[videos.scored], labels)
    uncalibrated_probabilities = _in_dataset_classes(match, dataset, uncalibrated.normalized())[1]
    per_class = per_class_metrics(metrics.confusion)
    results = {
        "top1_acc": metrics.top1,
        "top1_ci95": list(wilson_interval(correct, total)),
        "top5_acc": metrics.top5,
        "mean_class_acc": metrics.mean_class,
        "ece": calibration.ece,
        "ece_uncalibrated": expected_calibration_error(
            uncalibrated_probabilities[videos.scored], labels
        ),
        "temperature": float(temperature),
        "num_videos": int(videos.scored.sum()),
        "num_views": dataset.views_per_video,
        "num_unscored": len(videos.unscored),
        "num_missing_views": videos.num_partial,
        "ensemble_method": cfg.DATA.ENSEMBLE_METHOD,
        "num_classes": len(videos.names),
        "class_names": videos.names,
        "class_matching": match.notice or "the model's classes are the dataset's, in order",
        "per_class": {
            name: {"precision": p, "recall": r, "f1": f1, "support": n}
            for name, p, r, f1, n in zip(
                videos.names,
                per_class.precision.tolist(),
                per_class.recall.tolist(),
                per_class.f1.tolist(),
                per_class.support.tolist(),
                strict=True,
            )
        },
        "checkpoint": checkpoint,
        "unscored": videos.unscored,
    }
    if is_main_process():
        with stop.held() if stop is not None else contextlib.nullcontext():
            folder = new_test_folder(cfg.OUTPUT_DIR, checkpoint)
            _write_files(folder, cfg, results, dataset, videos, metrics.confusion, calibration)
        logger.info(
            "test: %s, top-5 %.2f %%, mean class accuracy %.2f %%, ECE %.2f %% at temperature "
            "%.3g (%.2f %% at 1) on %d videos x %d views (%d unscored); results in %s",
            top1_with_interval(correct, total),
            results["top5_acc"],
            results["mean_class_acc"],
            results["ece"],
            temperature,
            results["ece_uncalibrated"],
            results["num_videos"],
            results["num_views"],
            results["num_unscored"],
            folder,
        )
        warning = small_split_warning("test", correct, total)
        if warning:
            logger.warning("%s", warning)
    if videos.unscored:
        logger.warning(
            "%d test videos are not scored (each listed in %s with the reason)",
            len(videos.unscored),
            RESULTS_FILE,
        )
    return results


def _score_views(
    model: nn.Module,
    loader: VideoLoader,
    device: torch.device,
    precision: MixedPrecision,
    cfg: CfgNode,
    temperature: float,
    stop: StopRequest | None = None,
) -> tuple[VideoScores, VideoScores, dict[int, tuple[str, str]]]:
    """Every view's softmax scores at `temperature` and at 1, each combined per video over all
    processes, and the videos skipped on any process: video index -> (path, reason).
    Interrupted when `stop` is requested on any process (after the batch at hand on this one)."""
    scores, uncalibrated = (
        VideoScores(len(loader.dataset), cfg.MODEL.NUM_CLASSES, cfg.DATA.ENSEMBLE_METHOD)
        for _ in range(2)
    )
    model.eval()
    with (
        stopping(stop, iter(loader)) as batches,
        progress_bar(len(loader), "test", is_main_process(), unit="batch") as bar,
    ):
        for batch in batches:
            with precision.autocast():
                logits = model(loader.model_input(batch["video"], device)).float()
            scores.add((logits / temperature).softmax(dim=1), batch["video_index"])
            uncalibrated.add(logits.softmax(dim=1), batch["video_index"])
            bar.update()
            if stop is not None and stop.requested:
                break
    if stop is not None:
        stopped = all_reduce(torch.tensor([float(stop.requested)], device=device)).item()
        if stop.agree(stopped > 0):
            stop.interrupt()
    scores.all_reduce(device)
    uncalibrated.all_reduce(device)
    reasons = {
        skip.video_index: (skip.path, skip.reason)
        for skipped in all_gather_objects(loader.skipped)
        for skip in skipped
    }
    return scores, uncalibrated, reasons


@dataclass
class _VideoResults:
    """Per video of the test split (V videos, K classes scored)."""

    labels: torch.Tensor  # (V,) in the scored classes; -1 for a class the model does not know
    probabilities: torch.Tensor  # (V, K)
    names: list[str]  # the K classes scored
    scored: torch.Tensor  # (V,) bool: counted in the metrics
    unscored: list[dict[str, str]]  # {"video", "reason"} of the others
    num_partial: int  # scored videos with fewer views than asked


def _video_results(
    dataset: VideoDataset,
    match: ClassMatch,
    scores: VideoScores,
    reasons: dict[int, tuple[str, str]],
    checkpoint: str,
) -> _VideoResults:
    """Which videos count and their scores in the dataset's classes; raises when none does, or
    when the scores are not finite."""
    views_per_video = dataset.views_per_video
    scored = scores.views > 0
    if not scored.any():
        example = next(iter(reasons.values()), None)
        why = f"; e.g. {example[0]}: {example[1]}" if example else ""
        raise DataError(f"none of the {len(dataset)} test videos could be decoded{why}")
    partial = scored & (scores.views < views_per_video)
    if partial.any():
        logger.warning(
            "%d test videos have fewer than %d views, e.g. %s (%d views); they are scored "
            "on the views they have",
            int(partial.sum()),
            views_per_video,
            dataset.path(int(partial.nonzero()[0])),
            int(scores.views[partial][0]),
        )
    labels, probabilities, names = _in_dataset_classes(match, dataset, scores.normalized())
    unscored = []
    for index in (~scored).nonzero().flatten().tolist():
        path, reason = reasons.get(index, (dataset.path(index), "no view was decoded"))
        unscored.append({"video": path, "reason": reason})
    unknown_class = scored & (labels < 0)
    for index in unknown_class.nonzero().flatten().tolist():
        unscored.append({"video": dataset.path(index), "reason": "its class is not the model's"})
    scored &= labels >= 0
    if not scored.any():
        raise DataError("no test video belongs to a class the model knows")
    if not torch.isfinite(probabilities[scored]).all():
        raise UserError(
            f"the model gives non-finite scores: the weights of {checkpoint} are broken"
        )
    return _VideoResults(labels, probabilities, names, scored, unscored, int(partial.sum()))


def _in_dataset_classes(
    match: ClassMatch, dataset: VideoDataset, probabilities: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Labels (V,), probabilities (V, K) and the K class names, with the classes scored: the
    dataset's, in its order, whose scores the model's outputs give by name. A video of a class
    the model does not know (only when scoring shared classes) gets label -1."""
    scored = match.scored_labels
    position = {label: i for i, label in enumerate(scored)}
    labels = torch.tensor([position.get(dataset.label(i), -1) for i in range(len(dataset))])
    columns = torch.tensor([match.model_index[label] for label in scored])
    return labels, probabilities[:, columns], [match.names[label] for label in scored]


def new_test_folder(output_dir: str | Path, checkpoint: str) -> Path:
    """Makes and returns OUTPUT_DIR/test/<checkpoint stem>, or <stem>-2, -3, ... where that name
    is taken: `mkdir` fails on a taken name, so no two tests ever share a folder."""
    parent = Path(output_dir) / TEST_DIR
    parent.mkdir(parents=True, exist_ok=True)
    stem = Path(checkpoint).stem
    folder, number = parent / stem, 1
    while True:
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            number += 1
            folder = parent / f"{stem}-{number}"


def _write_files(
    folder: Path,
    cfg: CfgNode,
    results: dict[str, Any],
    dataset: VideoDataset,
    videos: _VideoResults,
    confusion: torch.Tensor,
    calibration: Reliability,
) -> None:
    """The test's files, each written whole; test_results.json last, so that a folder holding
    it holds them all."""
    writers = {
        CONFIG_FILE: lambda path: path.write_text(cfg.dump()),
        PREDICTIONS_FILE: lambda path: _write_predictions(path, dataset, videos),
        CONFUSION_FILE: lambda path: plot_confusion(confusion, videos.names, path),
        RELIABILITY_FILE: lambda path: plot_reliability(
            calibration, path, temperature=results["temperature"]
        ),
        RESULTS_FILE: lambda path: _write_results(path, results),
    }
    for name, write in writers.items():
        with written_whole(folder / name) as partial:
            write(partial)


def _write_results(path: Path, results: dict[str, Any]) -> None:
    with open(path, "w") as file:
        json.dump(results, file, indent=1)


def _write_predictions(path: Path, dataset: VideoDataset, videos: _VideoResults) -> None:
    """One row per scored video: path, true class, then the top 5 classes and probabilities."""
    names = videos.names
    k = min(5, videos.probabilities.shape[1])
    top_probabilities, top_classes = videos.probabilities.topk(k, dim=1)
    header = ["video", "label"]
    for rank in range(1, k + 1):
        header += [f"top{rank}", f"top{rank}_prob"]
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for index in videos.scored.nonzero().flatten().tolist():
            row = [dataset.path(index), names[videos.labels[index]]]
            for cls, prob in zip(
                top_classes[index].tolist(), top_probabilities[index].tolist(), strict=True
            ):
                row += [names[cls], f"{prob:.4f}"]
            writer.writerow(row)
