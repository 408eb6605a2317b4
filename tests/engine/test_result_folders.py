"""Where a run's results go, and that they never replace a file it did not write: each
evaluation-only run writes into a new folder of its own, OUTPUT_DIR/test/<checkpoint>[-N]/; a run
that trains writes its config and test results into OUTPUT_DIR itself, over its own earlier
ones only."""

import json
import logging

import pytest

from revvideo.checkpoint import model_entries, save_checkpoint
from revvideo.classes import dataset_class_names
from revvideo.engine import run
from revvideo.models import build_model
from revvideo.utils.errors import UserError

from .helpers import records, tiny_cfg

RESULT_FILES = ("test_results.json", "predictions.csv", "confusion.png", "config.yaml")
# What a user keeps under those names: none of it a run's.
USER_FILES = {name: f"the user's own {name}\n" for name in RESULT_FILES}


@pytest.fixture
def checkpoint(tiny_dataset, tmp_path):
    cfg = tiny_cfg(tiny_dataset, tmp_path / "trained")
    path = tmp_path / "trained.pyth"
    names = dataset_class_names(str(tiny_dataset))
    save_checkpoint(path, build_model(cfg), **model_entries(cfg, names, source="scratch"))
    return path


def _evaluation(tiny_dataset, output_dir, checkpoint, **overrides):
    return tiny_cfg(
        tiny_dataset, output_dir, TRAIN__ENABLE=False, TEST__CHECKPOINT_FILE_PATH=str(checkpoint),
        **overrides,
    )  # fmt: skip


def _write_user_files(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in USER_FILES.items():
        (folder / name).write_text(text)


def _assert_user_files_kept(folder):
    for name, text in USER_FILES.items():
        assert (folder / name).read_text() == text, name


def _assert_results_in(folder, checkpoint):
    results = json.loads((folder / "test_results.json").read_text())
    assert results["checkpoint"] == str(checkpoint) and results["num_videos"] == 6
    assert (folder / "predictions.csv").read_text().startswith("video,label,top1,")
    assert (folder / "confusion.png").read_bytes().startswith(b"\x89PNG")


def test_each_evaluation_writes_into_a_new_folder_of_its_own(
    tiny_dataset, tmp_path, checkpoint, caplog
):
    output = tmp_path / "out"
    _write_user_files(output)
    with caplog.at_level(logging.INFO):
        assert run(_evaluation(tiny_dataset, output, checkpoint)) == 0
        assert run(_evaluation(tiny_dataset, output, checkpoint, TEST__NUM_ENSEMBLE_VIEWS=1)) == 0

    first, second = output / "test" / "trained", output / "test" / "trained-2"
    for folder in (first, second):
        _assert_results_in(folder, checkpoint)
        assert f"this evaluation writes into a new folder, {folder} " in caplog.text
        assert f"results in {folder}" in caplog.text
        (record,) = records(folder, "test")
        assert record["num_videos"] == 6
    assert json.loads((first / "test_results.json").read_text())["num_views"] == 2
    assert json.loads((second / "test_results.json").read_text())["num_views"] == 1
    assert "NUM_ENSEMBLE_VIEWS: 1" in (second / "config.yaml").read_text()
    _assert_user_files_kept(output)
    assert sorted(p.name for p in (output / "test").iterdir()) == ["trained", "trained-2"]


def test_a_folder_of_the_checkpoint_name_already_there_is_not_reused(
    tiny_dataset, tmp_path, checkpoint
):
    output = tmp_path / "out"
    (output / "test" / "trained").mkdir(parents=True)  # empty, but not this run's
    assert run(_evaluation(tiny_dataset, output, checkpoint)) == 0
    assert not list((output / "test" / "trained").iterdir())
    _assert_results_in(output / "test" / "trained-2", checkpoint)


def test_a_failed_evaluation_leaves_no_folder(tiny_dataset, tmp_path, checkpoint, monkeypatch):
    import revvideo.engine.evaluate

    def breaks(*arguments, **keywords):
        raise UserError("the scores are broken")

    monkeypatch.setattr(revvideo.engine.evaluate, "classification_metrics", breaks)
    output = tmp_path / "out"
    with pytest.raises(UserError, match="the scores are broken"):
        run(_evaluation(tiny_dataset, output, checkpoint))
    assert [p.name for p in output.iterdir()] == [".run.lock"]


def test_a_training_run_writes_its_results_beside_a_users_files_not_over_them(
    tiny_dataset, tmp_path, caplog
):
    output = tmp_path / "out"
    _write_user_files(output)
    (output / "config.yaml").unlink()  # see the next test
    cfg = tiny_cfg(tiny_dataset, output, SOLVER__MAX_EPOCH=1)
    with caplog.at_level(logging.INFO):
        assert run(cfg) == 0

    folder = output / "test" / "checkpoint_epoch_00001"
    assert (
        f"{output / 'test_results.json'} was not written by a run here: it is kept, and this "
        f"test writes into a new folder, {folder}"
    ) in caplog.text
    _assert_results_in(folder, output / "checkpoints" / "checkpoint_epoch_00001.pyth")
    for name in ("test_results.json", "predictions.csv", "confusion.png"):
        assert (output / name).read_text() == USER_FILES[name]
    # The run's config is where it always is, and its test is in its log.
    assert "MAX_EPOCH: 1" in (output / "config.yaml").read_text()
    assert len(records(output, "test")) == 1


def test_a_training_run_stops_before_writing_where_a_users_config_is(tiny_dataset, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "config.yaml").write_text(USER_FILES["config.yaml"])
    with pytest.raises(UserError) as raised:
        run(tiny_cfg(tiny_dataset, output, SOLVER__MAX_EPOCH=1))
    assert str(raised.value) == (
        f"{output / 'config.yaml'} was not written by a run here (the run keeps its config under "
        "that name): move it away, or choose another OUTPUT_DIR"
    )
    assert (output / "config.yaml").read_text() == USER_FILES["config.yaml"]
    assert sorted(p.name for p in output.iterdir()) == ["config.yaml"]


def test_a_training_run_tested_again_replaces_its_own_results_saying_so(
    tiny_dataset, tmp_path, caplog
):
    output = tmp_path / "out"
    cfg = tiny_cfg(tiny_dataset, output, SOLVER__MAX_EPOCH=1)
    assert run(cfg.clone()) == 0
    with caplog.at_level(logging.INFO):
        assert run(cfg.clone()) == 0  # nothing to train: tested again
    assert f"test results in {output}, over this run's earlier ones" in caplog.text
    _assert_results_in(output, output / "checkpoints" / "checkpoint_epoch_00001.pyth")
    assert not (output / "test").exists()
    assert len(records(output, "test")) == 2

    # Edited since: no longer the run's.
    with open(output / "predictions.csv", "a") as file:
        file.write("my note\n")
    assert run(cfg.clone()) == 0
    assert (output / "predictions.csv").read_text().endswith("my note\n")
    _assert_results_in(output / "test" / "checkpoint_epoch_00001", output / "checkpoints" /
                       "checkpoint_epoch_00001.pyth")  # fmt: skip
