"""tools/prepare_kinetics.py and the folder layouts run_net reads: hidden files and folders
(.DS_Store, .git, .thumbnails/, macOS's ._a.mp4) are never classes or videos, and are counted;
a name that is not UTF-8 says so; the lists appear whole or not at all."""

import errno
import os

import pytest

from revvideo.classes import folder_class_names, read_classnames_file
from revvideo.data.kinetics import (
    Video,
    check_class_name,
    videos_from_class_folders,
    videos_from_folders,
    write_lists,
)
from revvideo.data.paths import read_video_list
from revvideo.utils.errors import DataError
from revvideo.utils.files import WriteError

from .tools import load_tool, run_tool


@pytest.fixture(scope="module")
def tool():
    return load_tool("prepare_kinetics")


def touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()


def with_hidden_things(root):
    """Classes a and b of 5 videos each, among what macOS, git and file browsers leave."""
    for name in ("a", "b"):
        for i in range(5):
            touch(root / name / f"{i}.mp4")
        touch(root / name / f"._{0}.mp4")  # AppleDouble: metadata, not a video
        touch(root / name / ".DS_Store")
    touch(root / ".DS_Store")
    touch(root / ".git" / "objects" / "x.mp4")
    touch(root / ".thumbnails" / "0.mp4")
    touch(root / "a" / ".cache" / "0.mp4")
    return root


def test_hidden_files_and_folders_are_neither_classes_nor_videos(tmp_path):
    found = videos_from_class_folders(str(with_hidden_things(tmp_path / "mine")), (1, 0, 0))
    assert found.class_names == ["a", "b"]
    assert sorted(os.path.relpath(video.path, tmp_path / "mine") for video in found.videos) == [
        f"{name}/{i}.mp4" for name in ("a", "b") for i in range(5)
    ]
    assert found.notices == []


def test_hidden_folders_in_split_folders_are_no_classes(tmp_path):
    for split in ("train", "val"):
        touch(tmp_path / "k" / split / "waving" / "a.mp4")
        touch(tmp_path / "k" / split / "waving" / "._a.mp4")
        touch(tmp_path / "k" / split / ".thumbnails" / "a.mp4")
        os.makedirs(tmp_path / "k" / split / ".git")
    assert folder_class_names(str(tmp_path / "k")) == ["waving"]
    found = videos_from_folders(str(tmp_path / "k"))
    assert found.class_names == ["waving"]
    assert [os.path.basename(video.path) for video in found.videos] == ["a.mp4", "a.mp4"]
    # run_net reads the same folders as a dataset: the same classes and videos.
    listed = read_video_list(str(tmp_path / "k"), "train", num_classes=1)
    assert [listed[i][0] for i in range(len(listed))] == [
        str(tmp_path / "k" / "train" / "waving" / "a.mp4")
    ]


def test_the_tool_counts_the_hidden_files_and_folders_it_skipped(tmp_path, tool, capsys):
    videos = with_hidden_things(tmp_path / "mine")
    out = tmp_path / "out"
    status, printed, err = run_tool(tool, capsys, out, "--videos", videos)
    assert status == 0, err
    assert (
        f"{out}: train 6, val 2, test 2 videos of 2 classes; 8 hidden files and folders skipped "
        "(names starting with '.')"
    ) in printed, printed
    assert read_classnames_file(out / "classnames.json") == ["a", "b"]
    assert "._" not in (out / "train.csv").read_text()


def test_a_class_folder_whose_name_is_not_utf8_says_so(tmp_path):
    root = tmp_path / "mine"
    for name in (b"caf\xe9", b"tea"):
        for i in range(3):
            touch(os.path.join(os.fsencode(root), name, b"%d.mp4" % i))
    with pytest.raises(DataError) as error:
        videos_from_class_folders(str(root))
    assert str(error.value) == (
        f"class folder in {root}: the name caf\\xe9 is not valid UTF-8, which the lists are "
        "written in; rename it"
    )
    with pytest.raises(DataError, match="newline or a control character"):
        check_class_name("two\nlines", "here")


def test_a_video_whose_name_is_not_utf8_is_skipped_and_named(tmp_path):
    root = tmp_path / "mine"
    for name in ("a", "b"):
        for i in range(3):
            touch(root / name / f"{i}.mp4")
    touch(os.path.join(os.fsencode(root / "a"), b"caf\xe9.mp4"))
    touch(root / "b" / "two\nlines.mp4")
    found = videos_from_class_folders(str(root), (1, 0, 0))
    assert len(found.videos) == 6
    split_row = repr(str(root / "b" / "two\nlines.mp4"))
    assert found.notices == [
        f"1 video files skipped: their paths hold a newline or control character, which would "
        f"split their row of the list ({split_row}); rename them to list them",
        f"1 video files skipped: their paths are not valid UTF-8, which the lists are written "
        f"in ({root / 'a'}/caf\\xe9.mp4); rename them to list them",
    ]


def _lists(out, names):
    return [Video("train", label, str(out / f"{name}.mp4")) for label, name in enumerate(names)]


def _list_contents(out):
    return {path.name: path.read_bytes() for path in out.iterdir()}


def test_a_list_that_cannot_be_written_whole_leaves_the_earlier_one(tmp_path, monkeypatch):
    out = tmp_path / "out"
    write_lists(str(out), _lists(out, ["a", "b"]), ["a", "b"])
    before = _list_contents(out)

    # A row that cannot be written (its path is not UTF-8) stops the write half-way.
    cut = [*_lists(out, ["c", "d"]), Video("train", 1, os.fsdecode(bytes(out) + b"/\xe9.mp4"))]
    with pytest.raises(UnicodeEncodeError):
        write_lists(str(out), cut, ["c", "d"])
    assert _list_contents(out) == before

    def disk_full(handle):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(WriteError, match=r"cannot write .*: the disk is full"):
        write_lists(str(out), _lists(out, ["c", "d"]), ["c", "d"])
    assert _list_contents(out) == before
