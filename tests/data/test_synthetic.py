import errno
import json
import os
import subprocess
import sys
import threading
import time

import av
import numpy as np
import pytest

from revvideo.data import synthetic
from revvideo.data.decoding import open_video
from revvideo.utils.errors import DataError

from .tools import load_tool, run_tool, tool_path

SMALL = {"train": 2, "val": 1, "test": 1}


def test_videos_are_a_function_of_the_seed():
    first, fps = synthetic.render_video("grow", np.random.default_rng([3, 1]))
    again, _ = synthetic.render_video("grow", np.random.default_rng([3, 1]))
    other, _ = synthetic.render_video("grow", np.random.default_rng([4, 1]))
    assert first.dtype == np.uint8 and first.ndim == 4 and fps in synthetic._FRAME_RATES
    assert np.array_equal(first, again)
    assert first.shape != other.shape or not np.array_equal(first, other)


def test_dataset_files_are_a_function_of_the_seed(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for root in (first, second):
        synthetic.generate_synthetic_dataset(str(root), seed=0, videos_per_class={"train": 5})
    files = sorted(path.relative_to(first) for path in first.rglob("*") if path.is_file())
    videos = [name for name in files if name.suffix in (".mp4", ".avi")]
    assert len(videos) == 30
    for name in files:
        if name in videos:
            frames = [_decoded(root / name) for root in (first, second)]
            assert np.array_equal(*frames), name
        else:
            assert (first / name).read_bytes() == (second / name).read_bytes(), name


def _decoded(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def trajectories(motion, count=400):
    samples = [
        synthetic._trajectory(motion, np.random.default_rng([7, n]), np.arange(30) / 15)
        for n in range(count)
    ]
    return [np.stack([sample[i] for sample in samples]) for i in range(4)]


# _trajectory returns per-frame x, y, log size and angle.
X, Y, SIZE, ANGLE = range(4)


@pytest.mark.parametrize(
    ("first", "second", "quantity"),
    [
        ("up", "down", Y),
        ("grow", "shrink", SIZE),
        ("up_then_down", "down_then_up", Y),
        ("spin", "still", ANGLE),
    ],
)
def test_one_frame_cannot_tell_paired_classes_apart(first, second, quantity):
    """A frame drawn from either class shows the bar with the same distribution of position,
    size or angle, while the motion between frames differs."""
    a, b = trajectories(first)[quantity], trajectories(second)[quantity]
    if quantity == ANGLE:
        a, b = np.mod(a, np.pi), np.mod(b, np.pi)
    quantiles = [0.1, 0.25, 0.5, 0.75, 0.9]
    spread = np.quantile(a, 0.9) - np.quantile(a, 0.1)
    assert np.allclose(np.quantile(a, quantiles), np.quantile(b, quantiles), atol=0.06 * spread)
    a, b = trajectories(first)[quantity], trajectories(second)[quantity]
    # Over the first half second: opposite directions, or motion against none.
    a_moves, b_moves = np.diff(a[:, :8], axis=1), np.diff(b[:, :8], axis=1)
    if first == "spin":
        assert np.abs(a_moves).min() > 0.1 and np.abs(b_moves).max() == 0
    else:
        a_direction, b_direction = np.sign(a_moves.mean(axis=1)), np.sign(b_moves.mean(axis=1))
        assert len(set(a_direction)) == 1 and (b_direction == -a_direction[0]).all()


def dark_centroid_rows(frames):
    """Mean row of the bar's dark outline, per frame."""
    dark = frames.max(axis=3) < 40
    rows = np.arange(frames.shape[1])[None, :, None]
    return (dark * rows).sum(axis=(1, 2)) / np.maximum(dark.sum(axis=(1, 2)), 1)


def test_rendered_bars_move_the_way_the_class_says():
    for seed in range(5):
        up, _ = synthetic.render_video("up", np.random.default_rng([seed]))
        down, _ = synthetic.render_video("down", np.random.default_rng([seed]))
        assert dark_centroid_rows(up)[-1] < dark_centroid_rows(up)[0] - 4
        assert dark_centroid_rows(down)[-1] > dark_centroid_rows(down)[0] + 4


def test_ensure_generates_once_and_never_touches_other_folders(tmp_path):
    root = str(tmp_path / "synthetic")
    classes = ["up", "down", "spin"]
    synthetic.ensure_synthetic_dataset(root, seed=1, classes=classes, videos_per_class=SMALL)
    with open(os.path.join(root, "train.csv")) as csv:
        lines = csv.read().splitlines()
    assert len(lines) == 6
    extensions = set()
    for line in lines:
        path, label = line.rsplit(" ", 1)
        assert int(label) in range(3)
        extensions.add(path.rsplit(".", 1)[1])
        video = open_video(os.path.join(root, path))
        assert 1.1 <= video.duration <= 1.9
        video.close()
    assert extensions <= {"mp4", "avi"}
    with open(os.path.join(root, "classnames.json")) as names:
        assert json.load(names) == {"up": 0, "down": 1, "spin": 2}

    marker = os.path.join(root, synthetic.MARKER)
    written = os.path.getmtime(marker)
    synthetic.ensure_synthetic_dataset(root, seed=1, classes=classes, videos_per_class=SMALL)
    assert os.path.getmtime(marker) == written, "an existing dataset is kept"
    synthetic.ensure_synthetic_dataset(root, seed=2, classes=classes, videos_per_class=SMALL)
    with open(marker) as file:
        assert json.load(file)["seed"] == 2
    assert not [name for name in os.listdir(tmp_path) if "partial" in name or "stale" in name]

    foreign = tmp_path / "kinetics"
    foreign.mkdir()
    (foreign / "train.csv").write_text("a.mp4 0\n")
    with pytest.raises(DataError, match="not empty"):
        synthetic.ensure_synthetic_dataset(str(foreign), videos_per_class=SMALL)
    assert (foreign / "train.csv").read_text() == "a.mp4 0\n"


def test_command_line_tool(tmp_path):
    tool = tool_path("make_synthetic_dataset")
    output = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            tool,
            str(output),
            "--classes",
            "up,down",
            "--train",
            "1",
            "--val",
            "1",
            "--test",
            "1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "6 videos of 2 classes" in done.stdout
    bad = subprocess.run(
        [sys.executable, tool, str(tmp_path / "x"), "--classes", "up,sideways"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: --classes") and "Traceback" not in bad.stderr


@pytest.fixture(scope="module")
def tool():
    return load_tool("make_synthetic_dataset")


def assert_one_line_error(status, err, expected):
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert expected in err, err


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--classes", "up,up"], "--classes needs at least two of"),
        (["--train", "-1"], "argument --train: expected a positive integer, got '-1'"),
        (["--test", "0"], "argument --test: expected a positive integer, got '0'"),
        (["--seed", "-1"], "argument --seed: expected a whole number, 0 or more, got '-1'"),
    ],
)
def test_option_mistakes_are_one_line_and_write_nothing(tmp_path, tool, capsys, options, expected):
    status, _, err = run_tool(tool, capsys, tmp_path / "out", *options)
    assert_one_line_error(status, err, expected)
    assert os.listdir(tmp_path) == []


def test_an_output_it_cannot_use_is_one_line_before_any_video_is_made(
    tmp_path, tool, capsys, monkeypatch
):
    def never(*args, **kwargs):
        raise AssertionError("generated a video")

    monkeypatch.setattr(synthetic, "render_video", never)
    (tmp_path / "f").write_text("x\n")
    status, _, err = run_tool(tool, capsys, tmp_path / "f")
    assert_one_line_error(status, err, f"{tmp_path / 'f'} is a file: give a folder")
    assert sorted(os.listdir(tmp_path)) == ["f"]

    def read_only(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)

    monkeypatch.setattr(synthetic, "_locked", read_only)
    status, _, err = run_tool(tool, capsys, tmp_path / "d")
    assert_one_line_error(
        status, err, f"cannot write {tmp_path / 'd'} ({tmp_path / 'd'}.lock: Permission denied)"
    )


def test_files_it_did_not_write_are_never_removed(tmp_path):
    root = tmp_path / "data"
    synthetic.ensure_synthetic_dataset(str(root), classes=["up", "down"], videos_per_class=SMALL)
    (root / "NOTES.txt").write_text("mine\n")
    (root / "videos" / "val" / "up" / "mine.mp4").write_bytes(b"mine")
    before = sorted(path.relative_to(root) for path in root.rglob("*"))
    with pytest.raises(DataError) as error:
        synthetic.ensure_synthetic_dataset(
            str(root), seed=1, classes=["up", "down"], videos_per_class=SMALL
        )
    assert str(error.value) == (
        f"{root} holds a synthetic dataset of other settings, which would be replaced, and "
        "files it did not write, which would go with it: 'NOTES.txt', "
        "'videos/val/up/mine.mp4'; move them, or choose another folder"
    )
    assert sorted(path.relative_to(root) for path in root.rglob("*")) == before
    assert sorted(os.listdir(tmp_path)) == ["data"]


def test_the_lock_file_is_there_only_while_the_lock_is_held(tmp_path):
    lock = str(tmp_path / "data.lock")
    inside, most = [], []

    def hold():
        with synthetic._locked(lock):
            inside.append(1)
            most.append(len(inside))
            time.sleep(0.02)
            inside.pop()

    # Each holder removes the file as it lets go: a waiter that then gets the lock of a file
    # gone must not take it for the lock a newcomer holds on a new file.
    threads = [threading.Thread(target=hold) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(most) == 8 and max(most) == 1
    assert os.listdir(tmp_path) == []
