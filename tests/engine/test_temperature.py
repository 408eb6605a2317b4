"""The temperature fitted on the validation split at the end of training: stored with the final
weights and used by the test of whatever checkpoint is tested."""

import logging
import shutil

import pytest
import torch

from revvideo.checkpoint import load_checkpoint, read_checkpoint
from revvideo.data import build_loader
from revvideo.engine import run
from revvideo.engine.evaluate import validation_logits
from revvideo.engine.metrics import fit_temperature
from revvideo.engine.precision import MixedPrecision
from revvideo.models import build_model

from .helpers import evaluation_cfg, newest_test_results, tiny_cfg


class _Messages(logging.Handler):
    """Keeps the messages of INFO and above."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def calibrated_run(tiny_dataset, tmp_path_factory):
    """A finished 2-epoch run with its test: its config, folder and log messages."""
    output_dir = tmp_path_factory.mktemp("calibrated")
    cfg = tiny_cfg(tiny_dataset, output_dir)
    logger, handler = logging.getLogger("revvideo"), _Messages()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        assert run(cfg) == 0
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return cfg, output_dir, handler.messages


def test_the_final_weights_carry_the_temperature_fitted_on_validation(calibrated_run):
    cfg, output_dir, messages = calibrated_run
    folder = output_dir / "checkpoints"
    final = read_checkpoint(folder / "checkpoint_epoch_00002.pyth")
    temperature = final["temperature"]
    assert isinstance(temperature, float)
    assert "temperature" not in read_checkpoint(folder / "checkpoint_epoch_00001.pyth")
    for name in ("last.pyth", "best.pyth"):
        assert read_checkpoint(folder / name)["temperature"] == temperature

    # The final weights' own validation logits give the same temperature.
    model = build_model(cfg)
    load_checkpoint(folder / "checkpoint_epoch_00002.pyth", model)
    cpu = torch.device("cpu")
    logits, labels = validation_logits(
        model, build_loader(cfg, "val"), cpu, MixedPrecision(False, cpu)
    )
    assert fit_temperature(logits, labels) == pytest.approx(temperature, rel=1e-6)
    before = torch.nn.functional.cross_entropy(logits, labels).item()
    after = torch.nn.functional.cross_entropy(logits / temperature, labels).item()
    assert after <= before
    assert (
        f"temperature {temperature:.3f} fitted on 6 validation videos (NLL {before:.4f} -> "
        f"{after:.4f})"
    ) in messages
    assert any(
        message.startswith("the validation split has only 6 videos: top-1 ") for message in messages
    )
    assert newest_test_results(output_dir)["temperature"] == temperature


def test_a_tested_checkpoint_brings_its_temperature_and_one_without_tests_at_1(
    calibrated_run, tiny_dataset, checkpoint, tmp_path
):
    _, output_dir, _ = calibrated_run
    final = output_dir / "checkpoints" / "checkpoint_epoch_00002.pyth"
    assert run(evaluation_cfg(tiny_dataset, tmp_path / "final", final)) == 0
    assert (
        newest_test_results(tmp_path / "final")["temperature"]
        == read_checkpoint(final)["temperature"]
    )
    assert "temperature" not in read_checkpoint(checkpoint)
    assert run(evaluation_cfg(tiny_dataset, tmp_path / "plain", checkpoint)) == 0
    assert newest_test_results(tmp_path / "plain")["temperature"] == 1.0


def test_a_finished_run_tested_again_keeps_its_temperature(calibrated_run, tiny_dataset, tmp_path):
    _, output_dir, _ = calibrated_run
    again = tmp_path / "run"
    shutil.copytree(output_dir, again)
    assert run(tiny_cfg(tiny_dataset, again)) == 0  # nothing to train: only the test
    expected = read_checkpoint(again / "checkpoints" / "checkpoint_epoch_00002.pyth")
    assert newest_test_results(again)["temperature"] == expected["temperature"]


def test_no_temperature_is_fitted_when_every_validation_video_is_right(
    tiny_dataset, tmp_path, monkeypatch, caplog
):
    import revvideo.engine.train as train

    def all_right(*arguments, **keywords):
        labels = torch.tensor([0, 1, 2, 0, 1, 2])
        return torch.nn.functional.one_hot(labels, 3).float() * 5.0, labels

    monkeypatch.setattr(train, "validation_logits", all_right)
    cfg = tiny_cfg(tiny_dataset, tmp_path / "out", SOLVER__MAX_EPOCH=1, TEST__ENABLE=False)
    with caplog.at_level(logging.INFO, logger="revvideo.engine.train"):
        assert run(cfg) == 0
    assert "no temperature fitted: all of the 6 validation videos are classified right" in (
        caplog.text
    )
    final = read_checkpoint(tmp_path / "out" / "checkpoints" / "checkpoint_epoch_00001.pyth")
    assert "temperature" not in final
