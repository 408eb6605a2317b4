"""A run's model by name: checkpoints/last.pyth (the newest) and best.pyth (the best on
validation) are model checkpoints; a run folder stands for them; resuming ignores them."""

import logging
import shutil

import pytest
import torch

import revvideo.engine.train
from revvideo.checkpoint import read_checkpoint
from revvideo.checkpoint.training import TRAINING_STATE_KEYS, latest_checkpoint
from revvideo.demo.classifier import load_classifier
from revvideo.engine import run

from .helpers import epoch_weights, evaluation_cfg, newest_test_results, records, tiny_cfg


def script_validation(monkeypatch, correct: list[int]) -> None:
    """Validation that finds correct[i] of 6 videos right at its i-th call."""
    calls = iter(correct)

    def validation_logits(model, loader, device, precision, stop=None):
        right = next(calls)
        labels = torch.arange(6) % 3
        predicted = torch.where(torch.arange(6) < right, labels, (labels + 1) % 3)
        return 3.0 * torch.eye(3)[predicted], labels

    def validate(model, loader, device, precision, stop=None):
        logits, labels = validation_logits(model, loader, device, precision, stop)
        return 100.0 * (logits.argmax(dim=1) == labels).float().mean().item()

    # The trainer validates with validate() between epochs, with validation_logits() at the end.
    monkeypatch.setattr(revvideo.engine.train, "validate", validate)
    monkeypatch.setattr(revvideo.engine.train, "validation_logits", validation_logits)


@pytest.fixture(scope="module")
def scripted_run(tiny_dataset, tmp_path_factory):
    """A 3-epoch run whose validation top-1 is 66.7, 66.7 and 50 %: its best is epoch 2."""
    output_dir = tmp_path_factory.mktemp("scripted")
    with pytest.MonkeyPatch.context() as monkeypatch:
        script_validation(monkeypatch, [4, 4, 3])
        cfg = tiny_cfg(tiny_dataset, output_dir, SOLVER__MAX_EPOCH=3, TEST__ENABLE=False)
        assert run(cfg) == 0
    return output_dir


def _same_weights(state: dict, other: dict) -> bool:
    return all(torch.equal(tensor, other[name]) for name, tensor in state.items())


def test_last_is_the_newest_model_and_best_the_latest_of_the_best_on_validation(scripted_run):
    assert [record["val_top1"] for record in records(scripted_run, "epoch")] == pytest.approx(
        [200 / 3, 200 / 3, 50.0]
    )
    folder = scripted_run / "checkpoints"
    assert sorted(path.name for path in folder.iterdir()) == [
        "best.pyth",
        *(f"checkpoint_epoch_{epoch:05d}.pyth" for epoch in (1, 2, 3)),
        "last.pyth",
    ]
    final = read_checkpoint(folder / "checkpoint_epoch_00003.pyth")
    last, best = read_checkpoint(folder / "last.pyth"), read_checkpoint(folder / "best.pyth")
    for model in (last, best):
        assert not set(TRAINING_STATE_KEYS) & set(model)  # a model, not a training state
        assert model["cfg"] == final["cfg"]
        assert model["class_names"] == ["up", "down", "still"]
    assert last["provenance"] == {"source": "scratch", "epoch": 3, "step": 9}
    assert _same_weights(last["model_state"], epoch_weights(scripted_run, 3))
    assert best["provenance"] == {"source": "scratch", "epoch": 2, "step": 6}
    assert best["val_top1"] == pytest.approx(200 / 3)
    assert _same_weights(best["model_state"], epoch_weights(scripted_run, 2))
    assert not _same_weights(best["model_state"], last["model_state"])
    # The temperature fitted at the end calibrates the earlier best too.
    assert isinstance(final["temperature"], float) and final["temperature"] != 1.0
    assert last["temperature"] == best["temperature"] == final["temperature"]


def test_resuming_ignores_the_run_models_and_remembers_the_best(
    scripted_run, tiny_dataset, tmp_path, monkeypatch, caplog
):
    output_dir = tmp_path / "run"
    shutil.copytree(scripted_run, output_dir)
    folder = output_dir / "checkpoints"
    assert latest_checkpoint(output_dir) == folder / "checkpoint_epoch_00003.pyth"
    best_before = read_checkpoint(folder / "best.pyth")

    script_validation(monkeypatch, [2])  # epoch 4: 33.3 %, below epoch 2's 66.7 %
    cfg = tiny_cfg(tiny_dataset, output_dir, SOLVER__MAX_EPOCH=4, TEST__ENABLE=False)
    with caplog.at_level(logging.INFO):
        assert run(cfg) == 0
    assert f"resuming from {folder / 'checkpoint_epoch_00003.pyth'} (epoch 4, step 9)" in (
        caplog.text
    )
    last, best = read_checkpoint(folder / "last.pyth"), read_checkpoint(folder / "best.pyth")
    assert last["provenance"]["epoch"] == 4
    assert best["provenance"]["epoch"] == 2
    assert _same_weights(best["model_state"], best_before["model_state"])
    # Refitted on epoch 4's validation: another temperature than before, the same as last's.
    assert best["temperature"] == last["temperature"] != best_before["temperature"]


def test_a_run_folder_is_tested_by_its_best_model(scripted_run, tiny_dataset, tmp_path, caplog):
    best = scripted_run / "checkpoints" / "best.pyth"
    with caplog.at_level(logging.INFO):
        assert run(evaluation_cfg(tiny_dataset, tmp_path, scripted_run)) == 0
    assert (
        f"TEST.CHECKPOINT_FILE_PATH {scripted_run} is a training run: using {best}, its best on "
        "validation"
    ) in caplog.messages
    assert f"testing {best}" in caplog.messages
    results = newest_test_results(tmp_path)
    assert results["checkpoint"] == str(best)
    assert results["temperature"] == read_checkpoint(best)["temperature"]


def test_the_demo_classifies_with_a_run_folders_best_model(scripted_run):
    classifier = load_classifier(scripted_run, None, torch.device("cpu"))
    assert str(classifier.source) == str(scripted_run / "checkpoints" / "best.pyth")
