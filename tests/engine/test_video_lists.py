"""The video lists a run reads, checked before it writes anything: a video listed with two
labels stops it (DataError, one line); a video listed twice with one label, and a class without
training videos, are one warning each."""

import logging

import pytest

from revvideo.classes import write_classnames_file
from revvideo.engine import run
from revvideo.engine.run import check_video_lists
from revvideo.utils.errors import DataError

from .helpers import tiny_cfg

LOGGER = "revvideo.engine.run"


def _lists(folder, **lists):
    """train/val/test.csv in `folder`: `lists` by split, else three videos of its own."""
    folder.mkdir(exist_ok=True)
    for split in ("train", "val", "test"):
        own = "".join(f"{split}_{label}.mp4 {label}\n" for label in range(3))
        (folder / f"{split}.csv").write_text(lists.get(split, own))
    return folder


def test_a_video_with_two_labels_stops_the_run_before_it_writes(tmp_path):
    data = _lists(tmp_path / "data", val="a.mp4 0\nb.mp4 1\nc.mp4 2\nb.mp4 0\n")
    cfg = tiny_cfg(data, tmp_path / "out")
    with pytest.raises(DataError) as error:
        run(cfg)
    assert str(error.value) == (
        f"{data / 'val.csv'}: {data / 'b.mp4'} is listed with label 1 at line 2 and with label 0 "
        "at line 4, and a video has one class: correct or remove one of the lines"
    )
    assert not (tmp_path / "out").exists()


def test_classes_without_training_videos_are_one_warning_naming_them(tmp_path, caplog):
    data = _lists(tmp_path / "data", train="a.mp4 1\nb.mp4 1\n")
    write_classnames_file(data / "classnames.json", ["up", "down", "still"])
    with caplog.at_level(logging.INFO, logger=LOGGER):
        check_video_lists(tiny_cfg(data, tmp_path / "out"))
    assert [(record.levelname, record.message) for record in caplog.records] == [
        (
            "WARNING",
            f"2 of the 3 classes have no video in {data / 'train.csv'}, so the model cannot "
            "learn them: 'up', 'still'",
        )
    ]


def test_unnamed_classes_without_training_videos_are_named_by_label(tmp_path, caplog):
    data = _lists(tmp_path / "data", train="a.mp4 0\nb.mp4 1\n")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        check_video_lists(tiny_cfg(data, tmp_path / "out"))
    assert caplog.messages == [
        f"1 of the 3 classes has no video in {data / 'train.csv'}, so the model cannot learn it: "
        "label 2"
    ]


def test_a_video_listed_twice_with_one_label_is_a_warning(tmp_path, caplog):
    data = _lists(tmp_path / "data", train="a.mp4 0\nb.mp4 1\nc.mp4 2\nb.mp4 1\n")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        check_video_lists(tiny_cfg(data, tmp_path / "out"))
    assert caplog.messages == [
        f"{data / 'train.csv'}: 1 video is listed more than once with the same label, so it "
        f"counts more than once: {data / 'b.mp4'} (lines 2, 4)"
    ]


def test_lists_that_agree_say_nothing(tmp_path, caplog):
    data = _lists(tmp_path / "data")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        check_video_lists(tiny_cfg(data, tmp_path / "out"))
        check_video_lists(tiny_cfg(data, tmp_path / "out", TRAIN__ENABLE=False))
    assert caplog.messages == []


def test_videos_in_two_splits_are_one_warning_per_pair(tmp_path, caplog):
    shared = "train_0.mp4 0\ntrain_1.mp4 1\nmine.mp4 2\n"
    data = _lists(tmp_path / "data", val="val_0.mp4 0\ntrain_2.mp4 2\n", test=shared)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        check_video_lists(tiny_cfg(data, tmp_path / "out"))
    assert caplog.messages == [
        f"1 of the videos in {data / 'val.csv'} are also in {data / 'train.csv'}: "
        f"{str(data / 'train_2.mp4')!r}",
        f"2 of the videos in {data / 'test.csv'} are also in {data / 'train.csv'}: "
        f"{str(data / 'train_0.mp4')!r}, {str(data / 'train_1.mp4')!r}",
    ]
