import os
import random
import subprocess
import sys

import av
import numpy as np
import pytest

from revvideo.classes import kinetics400_class_names, read_classnames_file
from revvideo.data.decoding import open_video
from revvideo.data.kinetics import (
    reencode_all,
    split_sizes,
    videos_from_annotations,
    videos_from_class_folders,
    videos_from_folders,
    write_lists,
)
from revvideo.data.paths import read_video_list
from revvideo.utils.errors import DataError

from .tools import load_tool, run_tool, tool_path
from .videos import plain_decode, write_indexed_video, write_joined, write_numbered_video

TOOL = tool_path("prepare_kinetics")


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
    videos = videos_from_folders(str(source)).videos
    out = str(tmp_path / "out")
    done, failed, *_ = reencode_all(videos, str(source), out, short_side=32, jobs=1)
    assert failed == [
        (
            str(source / "train" / "a" / "bad.mp4"),
            "cannot open it as a video: Invalid data found when processing input",
        )
    ]
    sizes = {}
    for video in done:
        reader = open_video(video.path)
        frames, _ = reader.read_frames([0.0])
        sizes[os.path.basename(video.path)] = tuple(frames.shape[1:3])
        assert reader.duration == pytest.approx(1.0, abs=0.05)
        reader.close()
    # The display rotation is kept: the turned video still shows upright, in portrait.
    assert sizes == {"one.avi.mp4": (32, 42), "two.mp4.mp4": (42, 32), "turned.mp4.mp4": (42, 32)}
    written = {video.path: os.path.getmtime(video.path) for video in done}
    again = reencode_all(videos, str(source), out, short_side=32, jobs=2)
    assert {video.path: os.path.getmtime(video.path) for video in again.videos} == written
    assert (again.encoded, again.reused, len(again.failed)) == (0, 3, 1)


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


@pytest.fixture(scope="module")
def tool():
    return load_tool("prepare_kinetics")


def class_folders(root, counts):
    """<root>/<class>/<n>.mp4 per class, as empty files: nothing is decoded without --resize."""
    for name, count in counts.items():
        os.makedirs(root / name, exist_ok=True)
        for i in range(count):
            touch(root / name / f"{i}.mp4")
    return root


def assert_one_line_error(status, err, *expected):
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    for text in expected:
        assert text in err


@pytest.mark.parametrize("split", [(1, 0, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)])
def test_a_split_without_train_or_val_is_refused(tmp_path, tool, capsys, split):
    # Training needs train.csv and val.csv: such a split would make a dataset it refuses.
    videos = class_folders(tmp_path / "vids", {"a": 4, "b": 4})
    status, _, err = run_tool(tool, capsys, tmp_path / "out", "--videos", videos, "--split", *split)
    assert_one_line_error(status, err, "--split", "train and val fractions must be above 0")
    assert not (tmp_path / "out").exists()


def test_val_gets_a_video_before_test_when_a_class_is_small():
    fractions = (0.7, 0.15, 0.15)
    for seed in range(5):
        rng = random.Random(seed)
        assert [split_sizes(count, fractions, rng) for count in (1, 2, 3)] == [
            [1, 0, 0],
            [1, 1, 0],
            [2, 1, 0],
        ]


def test_small_classes_still_give_a_dataset_training_can_use(tmp_path, tool, capsys):
    videos = class_folders(tmp_path / "vids", {"a": 2, "b": 3})
    out = tmp_path / "out"
    status, printed, err = run_tool(tool, capsys, out, "--videos", videos)
    assert status == 0, err
    assert "2 of 2 classes have too few videos for every split" in printed
    assert f"no test videos, so no {out}/test.csv" in printed
    assert f"{out}: train 3, val 2 videos of 2 classes" in printed
    listed = read_video_list(str(out), "val", num_classes=2)
    assert sorted(listed[i][1]["label"] for i in range(len(listed))) == [0, 1]


def test_classes_of_one_video_each_are_refused(tmp_path, tool, capsys):
    videos = class_folders(tmp_path / "vids", {"a": 1, "b": 1})
    status, _, err = run_tool(tool, capsys, tmp_path / "out", "--videos", videos)
    assert_one_line_error(
        status, err, f"no class folder in {videos} holds the 2 videos", "2 videos or more"
    )
    assert not (tmp_path / "out").exists()


def test_a_class_folder_without_videos_is_named_and_left_out(tmp_path, tool, capsys):
    videos = class_folders(tmp_path / "vids", {"a": 5, "b": 0, "c": 5})
    touch(videos / "b" / "notes.txt")  # Not a video: b holds none.
    out = tmp_path / "out"
    status, printed, err = run_tool(tool, capsys, out, "--videos", videos)
    assert status == 0, err
    assert f"1 of 3 class folders in {videos} hold no videos" in printed
    assert "left out: 'b'" in printed
    assert f"{out}: train 6, val 2, test 2 videos of 2 classes" in printed
    assert read_classnames_file(out / "classnames.json") == ["a", "c"]


def test_empty_class_folders_leaving_one_class_stop_the_tool(tmp_path, tool, capsys):
    # A classifier of one class learns nothing: better told now than after training.
    videos = class_folders(tmp_path / "vids", {"a": 4, "b": 0})
    status, _, err = run_tool(tool, capsys, tmp_path / "out", "--videos", videos)
    assert_one_line_error(status, err, "fewer than 2 classes", "left out: 'b'")
    assert not (tmp_path / "out").exists()


def durations(out, split):
    """{listed path relative to out: its duration} of out/<split>.csv."""
    listed = read_video_list(str(out), split, num_classes=2)
    found = {}
    for i in range(len(listed)):
        reader = open_video(listed[i][0])
        found[os.path.relpath(listed[i][0], out)] = round(reader.duration, 2)
        reader.close()
    return found


def test_a_reencoding_is_reused_only_for_its_own_source_and_short_side(tmp_path, tool, capsys):
    # Told apart by their frame counts at 12 fps: 6 frames last 0.5 s.
    source = tmp_path / "src"
    for split, name, count in [
        ("train", "a", 6),
        ("train", "b", 9),
        ("val", "a", 6),
        ("val", "b", 9),
    ]:
        os.makedirs(source / split / name)
        write_indexed_video(source / split / name / "x.mp4", count=count, fps=12)
    out = tmp_path / "out"
    status, printed, err = run_tool(
        tool, capsys, out, "--videos", source, "--resize", 32, "--jobs", 1
    )
    assert status == 0, err
    assert f"{out}/videos: 4 videos re-encoded, 0 reused" in printed
    # Another short side: every file is encoded again.
    status, printed, err = run_tool(
        tool, capsys, out, "--videos", source, "--resize", 24, "--jobs", 1, "--overwrite"
    )
    assert status == 0, err
    assert (
        f"{out}/videos: 4 videos re-encoded (4 replacing files of other sources or sizes)"
        in printed
    )
    for video in out.rglob("*.mp4"):
        reader = open_video(str(video))
        assert min(reader.read_frames([0.0])[0].shape[1:3]) == 24
        reader.close()
    # A second video of one name beside the first, and a first changed since: each listed with
    # its own frames, the others reused.
    write_indexed_video(source / "train" / "a" / "x.avi", count=18, fps=12)
    write_indexed_video(source / "train" / "b" / "x.mp4", count=12, fps=12)
    status, printed, err = run_tool(
        tool, capsys, out, "--videos", source, "--resize", 24, "--jobs", 1, "--overwrite"
    )
    assert status == 0, err
    assert (
        f"{out}/videos: 2 videos re-encoded (1 replacing files of other sources or sizes), 3 reused"
        in printed
    )
    assert durations(out, "train") == {
        "videos/train/a/x.mp4.mp4": 0.5,
        "videos/train/a/x.avi.mp4": 1.5,
        "videos/train/b/x.mp4.mp4": 1.0,
    }


def test_reencoding_keeps_frames_as_players_show_them_at_sizes_the_encoder_takes(tmp_path):
    source = tmp_path / "src" / "a"
    os.makedirs(source)
    # Two recordings joined byte-wise, each starting its timestamps again.
    write_joined(
        source / "joined.mpg", "mpeg2video", [(25, 48, 64), (25, 48, 64)], options={"b": "4M"}
    )
    # Frames 1 and 2 share a timestamp, as do 4 and 5.
    times = [0, 0.04, 0.04, 0.08, 0.12, 0.12, 0.16, 0.2]
    write_numbered_video(
        source / "repeated.mkv", "libx264", count=8, times=times, height=48, width=64
    )
    # One pixel: H.264 in yuv420p needs even sizes.
    with av.open(str(source / "dot.mkv"), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 1, 1, "yuv444p"
        for index in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((1, 1, 3), 200, np.uint8), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    found = videos_from_class_folders(str(tmp_path / "src"), (1, 0, 0), kinetics400=False)
    done, failed, *_ = reencode_all(found.videos, str(tmp_path / "src"), str(tmp_path / "out"), 32)
    assert failed == []
    encoded = {os.path.basename(video.path): video.path for video in done}
    joined = plain_decode(encoded["joined.mpg.mp4"])
    assert [number for _, number, _ in joined] == list(range(50))
    assert joined[-1][0] == pytest.approx(49 / 25)
    repeated = plain_decode(encoded["repeated.mkv.mp4"])
    assert [number for _, number, _ in repeated] == [0, 1, 3, 4, 6, 7]
    assert [start for start, _, _ in repeated] == pytest.approx([0, 0.04, 0.08, 0.12, 0.16, 0.2])
    with av.open(encoded["dot.mkv.mp4"]) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 10 and frames[0].shape == (2, 2, 3)


def test_videos_whose_reencodings_differ_only_in_case_are_not_mixed_up(tmp_path):
    # On a case-insensitive disk (macOS, Windows) X.mp4.mp4 and x.mp4.mp4 are one file.
    for name in ("X.mp4", "x.mp4"):
        touch(tmp_path / "src" / "a" / name)
    found = videos_from_class_folders(str(tmp_path / "src"), (1, 0, 0), kinetics400=False)
    done = reencode_all(found.videos, str(tmp_path / "src"), str(tmp_path / "out"), 32)
    assert [(os.path.basename(path), reason.split(",")[0]) for path, reason in done.failed] == [
        ("X.mp4", "empty file"),
        (
            "x.mp4",
            f"its re-encoding's name differs only in case from that of {tmp_path}/src/a/X.mp4",
        ),
    ]
