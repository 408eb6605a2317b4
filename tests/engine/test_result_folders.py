"""Where a test's results go: every multi-view test, after training or of a checkpoint alone,
writes into a new folder of its own, OUTPUT_DIR/test/<checkpoint stem>[-N]/, so that no file in
OUTPUT_DIR is ever replaced; a test that fails makes no folder (for a stopped one, see
test_stop_signals.py)."""

import json
import logging

import pytest

import revvideo.engine.evaluate
from revvideo.engine import run
from revvideo.engine.evaluate import new_test_folder
from revvideo.utils.errors import UserError

from .helpers import evaluation_cfg, records, tiny_cfg

# A user's own files under the names of a test's files, in OUTPUT_DIR.
USER_FILES = {
    name: f"the user's own {name}\n"
    for name in (
        "test_results.json",
        "predictions.csv",
        "confusion.png",
        "reliability.png",
        "config.yaml",
    )
}


def _write_user_files(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text(USER_FILES[name])


def _assert_user_files_kept(folder, names):
    for name in names:
        assert (folder / name).read_text() == USER_FILES[name], name


def _assert_results_in(folder, checkpoint):
    """The test's five files in `folder`; its results."""
    assert sorted(path.name for path in folder.iterdir()) == [
        "config.yaml", "confusion.png", "predictions.csv", "reliability.png", "test_results.json",
    ]  # fmt: skip
    results = json.loads((folder / "test_results.json").read_text())
    assert results["checkpoint"] == str(checkpoint) and results["num_videos"] == 6
    assert (folder / "predictions.csv").read_text().startswith("video,label,top1,")
    for picture in ("confusion.png", "reliability.png"):
        assert (folder / picture).read_bytes().startswith(b"\x89PNG")
    return results


def test_each_evaluation_writes_into_a_new_folder_beside_a_users_files(
    tiny_dataset, tmp_path, checkpoint, caplog
):
    output = tmp_path / "out"
    _write_user_files(output, USER_FILES)
    with caplog.at_level(logging.INFO):
        assert run(evaluation_cfg(tiny_dataset, output, checkpoint)) == 0
        assert (
            run(evaluation_cfg(tiny_dataset, output, checkpoint, TEST__NUM_ENSEMBLE_VIEWS=1)) == 0
        )

    first, second = output / "test" / "trained", output / "test" / "trained-2"
    assert sorted(path.name for path in (output / "test").iterdir()) == ["trained", "trained-2"]
    assert _assert_results_in(first, checkpoint)["num_views"] == 2
    assert _assert_results_in(second, checkpoint)["num_views"] == 1
    assert "NUM_ENSEMBLE_VIEWS: 2" in (first / "config.yaml").read_text()
    assert "NUM_ENSEMBLE_VIEWS: 1" in (second / "config.yaml").read_text()
    for folder in (first, second):
        assert f"results in {folder}" in caplog.text
    _assert_user_files_kept(output, USER_FILES)
    assert [record["num_videos"] for record in records(output, "test")] == [6, 6]


def test_a_train_and_test_run_writes_its_results_into_a_folder_for_its_checkpoint(
    tiny_dataset, tmp_path
):
    output = tmp_path / "out"
    results_names = ["test_results.json", "predictions.csv", "confusion.png", "reliability.png"]
    _write_user_files(output, results_names)
    cfg = tiny_cfg(tiny_dataset, output, SOLVER__MAX_EPOCH=1)
    assert run(cfg.clone()) == 0
    assert run(cfg.clone()) == 0  # nothing left to train: tested again

    checkpoint = output / "checkpoints" / "checkpoint_epoch_00001.pyth"
    first = output / "test" / "checkpoint_epoch_00001"
    second = output / "test" / "checkpoint_epoch_00001-2"
    assert sorted(path.name for path in (output / "test").iterdir()) == [first.name, second.name]
    assert _assert_results_in(first, checkpoint) == _assert_results_in(second, checkpoint)
    assert "MAX_EPOCH: 1" in (first / "config.yaml").read_text()
    # The training run's own config is in OUTPUT_DIR, and both tests are in its log.
    assert "MAX_EPOCH: 1" in (output / "config.yaml").read_text()
    assert len(records(output, "test")) == 2
    _assert_user_files_kept(output, results_names)


def test_a_failed_test_makes_no_folder(tiny_dataset, tmp_path, checkpoint, monkeypatch):
    def breaks(*arguments, **keywords):
        raise UserError("the scores are broken")

    monkeypatch.setattr(revvideo.engine.evaluate, "classification_metrics", breaks)
    output = tmp_path / "out"
    with pytest.raises(UserError, match="the scores are broken"):
        run(evaluation_cfg(tiny_dataset, output, checkpoint))
    assert not output.exists()  # the run made it and wrote nothing


def test_a_name_taken_by_anything_is_skipped(tmp_path):
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "trained-2").write_text("a user's file")
    names = [new_test_folder(tmp_path, "/checkpoints/trained.pyth").name for _ in range(3)]
    assert names == ["trained", "trained-3", "trained-4"]
    assert (tmp_path / "test" / "trained-2").read_text() == "a user's file"
