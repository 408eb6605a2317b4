import os
import subprocess
import sys

import pytest

from revvideo.classes import kinetics400_class_names
from revvideo.data.decoding import open_video
from revvideo.data.kinetics import (
    reencode_all,
    videos_from_annotations,
    videos_from_folders,
    write_lists,
)
from revvideo.data.paths import read_video_list
from revvideo.utils.errors import DataError

from .videos import write_indexed_video

TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "prepare_kinetics.py")


def touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()


def test_kinetics400_names_come_from_torchvision():
    names = kinetics400_class_names()
    assert len(names) == 400 and names[:2] == ["abseiling", "air drumming"]


def test_folder_tree_with_kinetics_names_uses_kinetics_indices(tmp_path):
    for split, name in [("train", "abseiling"), ("train", "air_drumming"), ("val", "zumba")]:
        touch(tmp_path / "k" / split / name / "clip.mp4")
    found = videos_from_folders(str(tmp_path / "k"))
    videos, names = found.videos, found.class_names
    assert len(names) == 400
    assert sorted((video.split, video.label) for video in videos) == [
        ("train", 0),
        ("train", 1),
        ("val", 399),
    ]
    write_lists(str(tmp_path / "out"), videos, names)
    listed = read_video_list(str(tmp_path / "out"), "val", num_classes=400)
    assert listed[0] == (str(tmp_path / "k/val/zumba/clip.mp4"), {"label": 399})


def test_other_folder_names_are_numbered_in_sorted_order(tmp_path):
    for name in ("waving", "clapping"):
        touch(tmp_path / "train" / name / "a.avi")
    assert videos_from_folders(str(tmp_path)).class_names == ["clapping", "waving"]
    with pytest.raises(DataError, match="not Kinetics-400 class names"):
        videos_from_folders(str(tmp_path), kinetics400=True)


def test_official_annotations_are_matched_against_downloads(tmp_path):
    annotation = tmp_path / "train.csv"
    annotation.write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "abseiling,aaa,10,20,train\n"
        '"air drumming",bbb,0,10,train\n'
        "zumba,ccc,5,15,train\n"
    )
    touch(tmp_path / "dl" / "abseiling" / "aaa_000010_000020.mp4")
    touch(tmp_path / "dl" / "bbb.mkv")
    found = videos_from_annotations({"train": str(annotation)}, str(tmp_path / "dl"))
    assert [(os.path.basename(v.path), v.label) for v in found.videos] == [
        ("aaa_000010_000020.mp4", 0),
        ("bbb.mkv", 1),
    ]
    assert found.missing == {"train": ["ccc_000005_000015 zumba"]}


def test_reencoding_shrinks_resumes_and_lists_failures(tmp_path):
    source = tmp_path / "src"
    os.makedirs(source / "train" / "a")
    write_indexed_video(source / "train" / "a" / "one.avi", count=12, fps=12)
    write_indexed_video(source / "train" / "a" / "two.mp4", count=12, fps=12, height=64, width=48)
    write_indexed_video(source / "train" / "a" / "turned.mp4", count=12, fps=12, rotation=-90)
    (source / "train" / "a" / "bad.mp4").write_bytes(b"not a video")
    found = videos_from_folders(str(source))
    videos, names = found.videos, found.class_names
    out = str(tmp_path / "out")
    done, failed = reencode_all(videos, out, names, short_side=32, jobs=1)
    assert [os.path.basename(path) for path, _ in failed] == ["bad.mp4"]
    sizes = {}
    for video in done:
        reader = open_video(video.path)
        frames, _ = reader.read_frames([0.0])
        sizes[os.path.basename(video.path)] = tuple(frames.shape[1:3])
        assert reader.duration == pytest.approx(1.0, abs=0.05)
        reader.close()
    # The display rotation is kept: the turned video still shows upright, in portrait.
    assert sizes == {"one.mp4": (32, 42), "two.mp4": (42, 32), "turned.mp4": (42, 32)}
    written = {video.path: os.path.getmtime(video.path) for video in done}
    again, _ = reencode_all(videos, out, names, short_side=32, jobs=2)
    assert {video.path: os.path.getmtime(video.path) for video in again} == written


def test_command_line(tmp_path):
    touch(tmp_path / "dl" / "train" / "waving" / "a.mp4")
    done = subprocess.run(
        [sys.executable, TOOL, str(tmp_path / "out"), "--videos", str(tmp_path / "dl")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "train 1 videos of 1 classes" in done.stdout
    assert (tmp_path / "out" / "train.csv").read_text() == "../dl/train/waving/a.mp4 0\n"
    bad = subprocess.run(
        [sys.executable, TOOL, str(tmp_path / "out"), "--videos", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: --videos")
    assert "Traceback" not in bad.stderr
