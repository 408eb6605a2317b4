"""Results that say how sure they are: the temperature fitted to logits, the validation logits
it is fitted on, the small-split warning, and the test's interval, per-class metrics, ECE before
and after the temperature and reliability diagram."""

import csv
import logging
import math
import signal

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from revvideo.classes import ClassNames, dataset_class_names
from revvideo.data import build_loader
from revvideo.engine import run
from revvideo.engine.evaluate import (
    multiview_test,
    small_split_warning,
    validate,
    validation_logits,
)
from revvideo.engine.metrics import (
    TEMPERATURE_RANGE,
    expected_calibration_error,
    fit_temperature,
    wilson_interval,
)
from revvideo.engine.precision import MixedPrecision
from revvideo.engine.stopping import StopRequest
from revvideo.utils.errors import UserError

from .helpers import evaluation_cfg, newest_test_folder, newest_test_results, tiny_cfg

CPU = torch.device("cpu")


def _drawn_at(temperature: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """20000 logits over 10 classes and labels drawn from softmax(logits / temperature)."""
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(20000, 10, generator=generator, dtype=torch.float64)
    probabilities = (logits / temperature).softmax(dim=1)
    labels = torch.multinomial(probabilities, 1, generator=generator).squeeze(1)
    return logits, labels


def _nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    return F.cross_entropy(logits.double() / temperature, labels).item()


@pytest.mark.parametrize("true_temperature", [0.5, 2.0])
def test_fit_temperature_recovers_the_temperature_labels_were_drawn_at(true_temperature):
    logits, labels = _drawn_at(true_temperature)
    fitted = fit_temperature(logits.float(), labels)

    # The maximum-likelihood estimate of a = 1 / T has a standard error of 1 / sqrt(I(a)), the
    # Fisher information I(a) being the sum over clips of the variance of the logits under
    # softmax(a * logits); 4 standard errors (3 % of a at T = 2, 4 % at 0.5) leave chance out.
    a = 1 / true_temperature
    probabilities = (a * logits).softmax(dim=1)
    mean = (probabilities * logits).sum(dim=1)
    variance = (probabilities * logits**2).sum(dim=1) - mean**2
    standard_error = variance.sum().rsqrt().item()
    assert abs(1 / fitted - a) < 4 * standard_error

    # It lowers the NLL, to a minimum.
    nll = _nll(logits, labels, fitted)
    assert nll < _nll(logits, labels, 1.0)
    assert nll <= min(_nll(logits, labels, fitted * 1.01), _nll(logits, labels, fitted / 1.01))
    assert fit_temperature(logits.float(), labels) == fitted  # deterministic


def test_fit_temperature_of_no_logits_or_of_all_right_ones():
    assert fit_temperature(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)) == 1.0
    # Every prediction right: the sharper the better, up to the range's end.
    logits, labels = torch.tensor([[5.0, 0.0], [0.0, 5.0]]), torch.tensor([0, 1])
    assert fit_temperature(logits, labels) == pytest.approx(TEMPERATURE_RANGE[0], rel=1e-5)
    with pytest.raises(ValueError, match="must be finite"):
        fit_temperature(torch.tensor([[math.nan, 0.0]]), torch.tensor([0]))


def test_small_split_warning_gives_the_interval_below_30_videos():
    assert small_split_warning("val", 2, 3) == (
        "the val split has only 3 videos: top-1 66.67 % (95 % CI 20.77-93.85); on so few "
        "videos the accuracy is known only to within that interval"
    )
    assert small_split_warning("test", 29, 29).startswith("the test split has only 29 videos")
    assert small_split_warning("test", 15, 30) is None


class ConstantLogits(nn.Module):
    """Gives every clip the same logits."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits))

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(clips), -1)


def test_validation_logits_are_each_clips_with_its_label(tiny_dataset, tmp_path):
    loader = build_loader(tiny_cfg(tiny_dataset, tmp_path), "val")
    model, precision = ConstantLogits([2.0, 0.0, 0.0]), MixedPrecision(False, CPU)
    logits, labels = validation_logits(model, loader, CPU, precision)

    assert logits.dtype == torch.float32 and logits.device == CPU
    assert torch.equal(logits, torch.tensor([[2.0, 0.0, 0.0]] * 6))
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]  # 2 val videos per class, in list order
    # validate: the top-1 of the same logits; every clip is taken for class 0.
    assert validate(model, loader, CPU, precision) == pytest.approx(100 / 3)

    stop = StopRequest()
    stop.signal_number = signal.SIGTERM  # as the handler sets it
    assert validation_logits(model, loader, CPU, precision, stop) is None
    assert validate(model, loader, CPU, precision, stop) is None


def test_the_test_divides_each_views_logits_by_the_temperature(tiny_dataset, tmp_path, caplog):
    """Every view gives logits (2, 0, 0): every video is taken for the first class, at
    softmax((2, 0, 0) / T)[0] = e^(2/T) / (e^(2/T) + 2)."""
    names = dataset_class_names(str(tiny_dataset))
    with caplog.at_level(logging.INFO):
        results = multiview_test(
            tiny_cfg(tiny_dataset, tmp_path), ConstantLogits([2.0, 0.0, 0.0]), CPU,
            MixedPrecision(False, CPU), checkpoint="constant.pyth",
            class_names=ClassNames(names, "dataset"), temperature=2.0,
        )  # fmt: skip

    confidence = {t: math.exp(2 / t) / (math.exp(2 / t) + 2) for t in (1.0, 2.0)}
    with open(newest_test_folder(tmp_path) / "predictions.csv") as file:
        rows = list(csv.DictReader(file))
    assert {row["top1"] for row in rows} == {names[0]}
    assert {float(row["top1_prob"]) for row in rows} == {round(confidence[2.0], 4)}

    # 2 of 6 videos right, each at that confidence.
    assert results["top1_acc"] == pytest.approx(100 / 3)
    assert results["top1_ci95"] == pytest.approx(list(wilson_interval(2, 6)))
    assert results["temperature"] == 2.0
    assert results["ece"] == pytest.approx(100 * (confidence[2.0] - 1 / 3))
    assert results["ece_uncalibrated"] == pytest.approx(100 * (confidence[1.0] - 1 / 3))
    assert results["per_class"] == {
        names[0]: {"precision": pytest.approx(100 / 3), "recall": 100.0, "f1": 50.0, "support": 2},
        names[1]: {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2},
        names[2]: {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2},
    }
    assert newest_test_results(tmp_path) == results
    low, high = wilson_interval(2, 6)
    assert f"test: top-1 33.33 % (95 % CI {low:.2f}-{high:.2f})" in caplog.text
    assert "ECE 24.28 % at temperature 2 (45.37 % at 1)" in caplog.text
    assert f"the test split has only 6 videos: top-1 33.33 % (95 % CI {low:.2f}-" in caplog.text


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.nan])
def test_a_temperature_that_is_not_positive_is_refused(tiny_dataset, tmp_path, temperature):
    with pytest.raises(UserError, match="the temperature must be a positive number"):
        multiview_test(
            tiny_cfg(tiny_dataset, tmp_path), ConstantLogits([0.0, 0.0, 0.0]), CPU,
            MixedPrecision(False, CPU), checkpoint="constant.pyth",
            class_names=ClassNames(["up", "down", "still"], "dataset"), temperature=temperature,
        )  # fmt: skip
    assert not (tmp_path / "test").exists()


def test_test_results_give_their_uncertainty_and_calibration(tiny_dataset, tmp_path, checkpoint):
    output = tmp_path / "out"
    assert run(evaluation_cfg(tiny_dataset, output, checkpoint)) == 0

    results = newest_test_results(output)
    folder = newest_test_folder(output)
    assert (folder / "reliability.png").read_bytes().startswith(b"\x89PNG")
    with open(folder / "predictions.csv") as file:
        rows = list(csv.DictReader(file))
    right = [row["label"] == row["top1"] for row in rows]
    assert results["top1_ci95"] == pytest.approx(list(wilson_interval(sum(right), len(rows))))
    low, high = results["top1_ci95"]
    assert low <= results["top1_acc"] <= high

    per_class = results["per_class"]
    assert list(per_class) == results["class_names"]
    for name, metrics in per_class.items():
        predicted = [row["label"] == name for row in rows if row["top1"] == name]
        labelled = [row["top1"] == name for row in rows if row["label"] == name]
        assert metrics["support"] == len(labelled) == 2
        assert metrics["precision"] == pytest.approx(100 * sum(predicted) / max(len(predicted), 1))
        assert metrics["recall"] == pytest.approx(100 * sum(labelled) / len(labelled))
    mean_recall = sum(metrics["recall"] for metrics in per_class.values()) / len(per_class)
    assert results["mean_class_acc"] == pytest.approx(mean_recall)

    # The ECE of the top probabilities predictions.csv gives to 4 decimals: they move it by
    # at most 0.005 %.
    confidence = torch.tensor([[float(row["top1_prob"]), 0.0] for row in rows])
    wrong = torch.tensor([0 if is_right else 1 for is_right in right])
    assert results["ece"] == pytest.approx(expected_calibration_error(confidence, wrong), abs=0.01)
    assert results["temperature"] == 1.0 and results["ece_uncalibrated"] == results["ece"]
