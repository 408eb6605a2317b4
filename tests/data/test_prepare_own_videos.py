"""tools/prepare_kinetics.py on a folder of one's own videos (`<class>/<video>`), and its edges:
labels that are not folder names, bad annotation rows, names that cannot be a list row, two
inputs with one output name, leftovers of a killed run, outputs that would touch inputs."""

import os
import subprocess
import sys
from collections import Counter
from typing import NamedTuple

import pytest

from revvideo.classes import read_classnames_file
from revvideo.data.decoding import open_video
from revvideo.data.kinetics import (
    check_outputs,
    folder_layout,
    reencode_all,
    videos_from_annotations,
    videos_from_class_folders,
    videos_from_folders,
    write_lists,
)
from revvideo.data.paths import read_video_list
from revvideo.utils.errors import DataError

from .tools import load_tool, run_tool, tool_path
from .videos import write_indexed_video

TOOL = tool_path("prepare_kinetics")
# Videos per class: one class large enough for exact shares, some rounded, some too small.
COUNTS = {"cooking": 20, "dancing": 10, "juggling": 7, "knitting": 3, "solo": 1}


class Result(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def tool():
    return load_tool("prepare_kinetics")


@pytest.fixture
def prepare(tool, capsys):
    return lambda *args: Result(*run_tool(tool, capsys, *args))


def assert_user_error(result, *expected):
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    for text in expected:
        assert text in result.stderr


def class_tree(root, counts=COUNTS):
    """Empty files named like videos: nothing is decoded unless the videos are re-encoded."""
    for name, count in counts.items():
        os.makedirs(root / name, exist_ok=True)
        for i in range(count):
            (root / name / f"{name}{i:02d}.mp4").touch()
    return str(root)


def splits_of(found):
    """{(class name, split): number of videos}."""
    return Counter((found.class_names[video.label], video.split) for video in found.videos)


def test_class_folders_are_split_per_class_by_the_fractions(tmp_path):
    found = videos_from_class_folders(class_tree(tmp_path / "mine"), (0.7, 0.15, 0.15), seed=0)
    assert found.class_names == sorted(COUNTS)
    sizes = splits_of(found)
    for name, count in COUNTS.items():
        shares = [sizes[name, split] for split in ("train", "val", "test")]
        assert sum(shares) == count and shares[0] >= 1
        if count >= 7:
            for share, fraction in zip(shares, (0.7, 0.15, 0.15), strict=True):
                assert abs(share - count * fraction) < 1
    assert [sizes["cooking", split] for split in ("train", "val", "test")] == [14, 3, 3]
    assert sizes["solo", "train"] == 1
    # Every video in exactly one split, with its own folder's label.
    paths = [video.path for video in found.videos]
    assert len(paths) == len(set(paths)) == sum(COUNTS.values())
    for video in found.videos:
        assert os.path.basename(os.path.dirname(video.path)) == found.class_names[video.label]
    (notice,) = found.notices
    assert "2 of 5 classes have too few videos" in notice
    assert "'knitting'" in notice and "'solo'" in notice


def test_the_split_depends_on_the_seed_only(tmp_path):
    root = class_tree(tmp_path / "mine")
    first = videos_from_class_folders(root, seed=0).videos
    assert videos_from_class_folders(root, seed=0).videos == first
    assert videos_from_class_folders(root, seed=1).videos != first
    # Each class is shuffled on its own: a new class leaves the others' splits as they were.
    class_tree(tmp_path / "mine", {"waving": 5})
    again = videos_from_class_folders(root, seed=0)
    assert [v for v in again.videos if "waving" not in v.path] == first


@pytest.mark.parametrize(
    "fractions", [(0.7, 0.2, 0.2), (0, 0.5, 0.5), (1.2, -0.1, -0.1), (float("nan"), 0.5, 0.5)]
)
def test_split_fractions_must_be_shares_of_one(tmp_path, fractions):
    with pytest.raises(DataError, match="summing to 1"):
        videos_from_class_folders(class_tree(tmp_path / "mine"), fractions)


def test_a_zero_fraction_leaves_its_split_out_without_a_notice(tmp_path):
    found = videos_from_class_folders(
        class_tree(tmp_path / "mine", {"a": 5, "b": 4}), (0.8, 0.2, 0)
    )
    assert {video.split for video in found.videos} == {"train", "val"}
    assert found.notices == []


def test_class_indices_are_kinetics_400s_when_every_name_is_one(tmp_path):
    found = videos_from_class_folders(class_tree(tmp_path / "k", {"abseiling": 2, "zumba": 2}))
    assert len(found.class_names) == 400
    assert sorted({video.label for video in found.videos}) == [0, 399]
    # Names that differ only in spelling are one class, as classes are matched by name.
    found = videos_from_class_folders(class_tree(tmp_path / "c", {"Cooking": 2, "cooking": 2}))
    assert found.class_names == ["Cooking"]
    assert {video.label for video in found.videos} == {0}


def test_layout_is_found_by_looking_into_the_folder(tmp_path):
    class_tree(tmp_path / "classes", {"a": 1})
    class_tree(tmp_path / "splits" / "train", {"a": 1})
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "clip.mp4").touch()
    (tmp_path / "loose" / "empty").mkdir()
    assert folder_layout(str(tmp_path / "classes")) == "classes"
    assert folder_layout(str(tmp_path / "splits")) == "splits"
    with pytest.raises(DataError, match=r"none of the layouts.*<class>/<video>"):
        folder_layout(str(tmp_path / "loose"))
    # Folders beside the splits are left out with a notice; a class called "test" is no split.
    class_tree(tmp_path / "splits", {"cooking": 1})
    (notice,) = videos_from_folders(str(tmp_path / "splits")).notices
    assert notice.startswith("1 folders of videos beside the split folders (train) left out")
    class_tree(tmp_path / "classes", {"test": 1})
    assert folder_layout(str(tmp_path / "classes")) == "splits"
    with pytest.raises(DataError, match=r"no video files .*left out: 'a'; a class called"):
        videos_from_folders(str(tmp_path / "classes"))


def test_command_line_splits_a_class_tree_and_reads_back(tmp_path, prepare):
    root = class_tree(tmp_path / "mine", {"cooking": 10, "dancing": 10, "solo": 1})
    (tmp_path / "mine" / "stray.mp4").touch()
    out = tmp_path / "data"
    result = prepare(out, "--videos", root, "--split", 0.6, 0.2, 0.2, "--seed", 3)
    assert result.returncode == 0, result.stderr
    assert "notice: 1 of 3 classes have too few videos for every split" in result.stdout
    assert "notice: 1 videos directly in" in result.stdout
    assert f"{out}: train 13, val 4, test 4 videos of 3 classes" in result.stdout
    assert read_classnames_file(out / "classnames.json") == ["cooking", "dancing", "solo"]
    listed = {}
    for split in ("train", "val", "test"):
        paths = read_video_list(str(out), split, num_classes=3)
        listed[split] = sorted(paths[i] for i in range(len(paths)))
    assert listed == {
        split: sorted(
            (video.path, {"label": video.label})
            for video in videos_from_class_folders(root, (0.6, 0.2, 0.2), seed=3).videos
            if video.split == split
        )
        for split in ("train", "val", "test")
    }
    # A later run with another split leaves no list of the earlier one behind.
    assert prepare(out, "--videos", root, "--split", 0.8, 0.2, 0, "--overwrite").returncode == 0
    assert not (out / "test.csv").exists()


def test_help_shows_the_three_layouts_and_every_default():
    result = subprocess.run(
        [sys.executable, TOOL, "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for layout in (
        "<videos>/<split>/<class>/<video>",
        "<videos>/<class>/<video>",
        "--annotations train=",
    ):
        assert layout in text
    for option in (
        "--split",
        "--seed",
        "--kinetics400",
        "--resize",
        "--jobs",
        "--annotations",
        "--overwrite",
    ):
        assert option in text
    assert text.count("(default:") == 7


def test_option_mistakes_are_one_line(tmp_path, prepare):
    root = class_tree(tmp_path / "k" / "train", {"a": 1})
    assert_user_error(prepare(tmp_path / "o", "--videos", root, "--split", 0.5, 0.5), "--split")
    assert_user_error(
        prepare(tmp_path / "o", "--videos", tmp_path / "k", "--seed", 2),
        "--split and --seed split class folders",
    )
    assert not (tmp_path / "o").exists()


def annotations(path, *rows, header="label,youtube_id,time_start,time_end,split"):
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return str(path)


def test_annotation_rows_are_checked_line_by_line(tmp_path):
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "aaa_000001_000002.mp4").touch()
    bom = tmp_path / "bom.csv"
    bom.write_bytes(
        "\ufefflabel,youtube_id,time_start,time_end,split\nzumba,aaa,1,2,train\n".encode()
    )
    found = videos_from_annotations({"train": str(bom)}, str(tmp_path / "dl"))
    assert [os.path.basename(video.path) for video in found.videos] == ["aaa_000001_000002.mp4"]
    cases = {
        "zumba,aaa,one,2,train": "line 3: time_start 'one' is not a number of seconds",
        "zumba,aaa,1,inf,train": "line 3: time_end 'inf' is not a number of seconds",
        "zumba,aaa,1": "line 3: fewer columns than the header names",
        '"line\nbreak",aaa,1,2,train': r"line 4: class name 'line\nbreak' cannot be a folder",
        "..,aaa,1,2,train": "line 3: class name '..' cannot be a folder",
    }
    for row, message in cases.items():
        path = annotations(tmp_path / "a.csv", "zumba,aaa,1,2,train", row)
        with pytest.raises(DataError) as error:
            videos_from_annotations({"train": path}, str(tmp_path / "dl"))
        assert str(error.value).startswith(f"{path}, {message}")
        assert "\n" not in str(error.value)


def test_a_label_cannot_write_outside_the_output_folder(tmp_path, prepare):
    os.makedirs(tmp_path / "dl")
    write_indexed_video(tmp_path / "dl" / "aaa.mp4", count=4, height=32, width=32)
    labels = annotations(tmp_path / "train.csv", "../../../../escape,aaa,0,1,train")
    out = tmp_path / "a" / "b" / "c" / "out"
    result = prepare(
        out, "--videos", tmp_path / "dl", "--annotations", f"train={labels}", "--resize", 32
    )
    assert_user_error(result, f"{labels}, line 2: class name '../../../../escape'")
    assert not [
        name for _, dirs, files in os.walk(tmp_path) for name in dirs + files if "escape" in name
    ]


def test_a_path_that_would_split_its_row_is_skipped_and_counted(tmp_path):
    root = class_tree(tmp_path / "mine", {"a": 3, "b": 3})
    (tmp_path / "mine" / "a" / "two\nlines.mp4").touch()
    (tmp_path / "mine" / "b" / "tab\there.mp4").touch()
    (tmp_path / "mine" / "b" / "a space, a comma.mp4").touch()  # rows split at the last space
    found = videos_from_class_folders(root, (1, 0, 0))
    assert len(found.videos) == 7
    (notice,) = found.notices
    assert notice.startswith("2 video files skipped: their paths hold a newline")
    assert repr(str(tmp_path / "mine" / "a" / "two\nlines.mp4")) in notice
    write_lists(str(tmp_path / "out"), found.videos, found.class_names)
    listed = read_video_list(str(tmp_path / "out"), "train", num_classes=2)
    assert sorted(listed[i][0] for i in range(len(listed))) == [v.path for v in found.videos]


def test_reencoding_keeps_inputs_that_share_a_name_and_cleans_up_partial_files(tmp_path):
    source = tmp_path / "mine" / "cooking"
    os.makedirs(source / "sub")
    # Told apart by their frame counts at 12 fps.
    for name, count in [("a.avi", 6), ("a.mp4", 9), ("sub/a.mp4", 12), ("x.partial.mp4", 3)]:
        write_indexed_video(source / name, count=count, fps=12, height=32, width=32)
    out = tmp_path / "out"
    # What a killed run leaves: written_whole's partial files.
    leftovers = [
        out / "videos/cooking/.a.mp4.mp4.4194303.tmp.mp4",
        out / "videos/gone/.b.mp4.mp4.4194303.tmp.mp4",
    ]
    for path in leftovers:
        os.makedirs(path.parent, exist_ok=True)
        path.write_bytes(b"cut short")
    found = videos_from_class_folders(str(tmp_path / "mine"), (1, 0, 0))
    done, failed, *_ = reencode_all(found.videos, str(tmp_path / "mine"), str(out), short_side=32)
    assert failed == [] and not any(path.exists() for path in leftovers)
    seconds = {}
    for video in done:
        reader = open_video(video.path)
        seconds[os.path.relpath(video.path, out / "videos/cooking")] = reader.duration
        reader.close()
    expected = {
        "a.avi.mp4": 0.5,
        "a.mp4.mp4": 0.75,
        "sub/a.mp4.mp4": 1.0,
        "x.partial.mp4.mp4": 0.25,
    }
    assert seconds == pytest.approx(expected, abs=0.05)
    written = {video.path: os.path.getmtime(video.path) for video in done}
    again = reencode_all(found.videos, str(tmp_path / "mine"), str(out), short_side=32)
    assert {video.path: os.path.getmtime(video.path) for video in again.videos} == written


def test_outputs_never_land_on_inputs(tmp_path, prepare):
    # A class tree called "videos": <output>/videos of the output folder tmp_path is this tree.
    root = tmp_path / "videos"
    os.makedirs(root / "cooking")
    write_indexed_video(root / "cooking" / "a.mp4", count=4, height=32, width=32)
    before = {path: os.path.getmtime(path) for path in root.rglob("*")}
    result = prepare(root, "--videos", root, "--resize", 32, "--jobs", 1)
    assert_user_error(
        result, "overlaps the videos folder", f"choose an output folder outside {root}"
    )
    assert {path: os.path.getmtime(path) for path in root.rglob("*")} == before
    for out in (root / "lists", tmp_path):
        with pytest.raises(DataError, match="overlaps the videos folder"):
            check_outputs(str(out), str(root), reencoding=True)
    check_outputs(str(root), str(root))  # Lists alone do not touch the videos.
    labels = tmp_path / "out" / "train.csv"
    labels.parent.mkdir()
    labels.write_text("label,youtube_id,time_start,time_end,split\n")
    with pytest.raises(DataError, match="is an input that the lists written into"):
        check_outputs(str(tmp_path / "out"), str(root), [str(labels)])
    with pytest.raises(DataError, match="is a file"):
        check_outputs(str(labels), str(root))


def test_lists_in_the_output_folder_are_replaced_or_removed_only_when_asked(tmp_path, prepare):
    root = class_tree(tmp_path / "mine", {"cooking": 10, "dancing": 10})
    out = tmp_path / "data"
    out.mkdir()
    (out / "train.csv").write_text("my/own.mp4 3\n")
    (out / "test.csv").write_text("my/test.mp4 1\n")
    (out / "notes.txt").write_text("mine\n")
    mine = {path.name: path.read_text() for path in out.iterdir()}
    assert_user_error(
        prepare(out, "--videos", root),
        f"{out} already holds train.csv, test.csv: add --overwrite",
    )
    assert {path.name: path.read_text() for path in out.iterdir()} == mine
    # Asked to, it replaces them and says what it wrote and removed.
    result = prepare(out, "--videos", root, "--split", 0.8, 0.2, 0, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert (
        f"{out}: wrote train.csv, val.csv, classnames.json; removed test.csv, which this "
        "dataset leaves empty"
    ) in result.stdout
    assert (out / "notes.txt").read_text() == "mine\n"
    # Its own lists of a run before are lists like any other.
    assert_user_error(prepare(out, "--videos", root), "already holds train.csv, val.csv")


def test_a_split_given_twice_is_an_error_and_a_clip_annotated_twice_is_listed_once(
    tmp_path, prepare
):
    os.makedirs(tmp_path / "dl")
    for name in ("aaa", "bbb", "ccc", "ddd"):
        (tmp_path / "dl" / f"{name}_000010_000020.mp4").touch()
    first = annotations(tmp_path / "a.csv", "cooking,aaa,10,20,train", "dancing,bbb,10,20,train")
    second = annotations(tmp_path / "b.csv", "cooking,ccc,10,20,train", "dancing,ddd,10,20,train")
    val = annotations(tmp_path / "v.csv", "cooking,aaa,10,20,val", "dancing,ddd,10,20,val")
    out = tmp_path / "out"
    result = prepare(
        out, "--videos", tmp_path / "dl", "--annotations", f"train={first}", f"train={second}"
    )
    assert_user_error(result, f"--annotations gives train twice ({first}, {second})")
    assert not out.exists()
    # A clip evaluated must not be trained on: it stays in val only.
    result = prepare(
        out, "--videos", tmp_path / "dl", "--annotations", f"train={second}", f"val={val}"
    )
    assert result.returncode == 0, result.stderr
    assert (
        "notice: 1 clips are annotated more than once (ddd_000010_000020.mp4 (train and val)): "
        "each is listed once, in the last of its rows in the order train, val, test"
    ) in result.stdout
    assert (out / "train.csv").read_text() == "../dl/ccc_000010_000020.mp4 0\n"
    assert (out / "val.csv").read_text() == (
        "../dl/aaa_000010_000020.mp4 0\n../dl/ddd_000010_000020.mp4 1\n"
    )
