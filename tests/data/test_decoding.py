import math
import os
import signal
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from revvideo.data.decoding import BACKENDS, VideoDecodeError, open_video, scaled_size
from revvideo.data.synthetic import write_video

from .videos import (
    frame_index,
    frame_number,
    indexed_frames,
    write_audio_only,
    write_indexed_video,
    write_numbered_video,
)

pytestmark = pytest.mark.parametrize("backend", BACKENDS)


def read_indices(path, backend, times, short_side=None):
    video = open_video(str(path), backend)
    try:
        frames, rows = video.read_frames(times, short_side)
    finally:
        video.close()
    return [frame_index(frames[row]) for row in rows], frames


def test_each_time_gets_the_frame_shown_then(tmp_path, backend):
    path = write_indexed_video(tmp_path / "v.mp4", count=30, fps=15)
    times = [0.0, 0.05, 0.1, 1.0, 1.93]
    indices, frames = read_indices(path, backend, times)
    assert indices == [0, 0, 1, 15, 28]
    assert len(frames) == 4, "a frame shown at several times is decoded and returned once"


def test_times_past_the_end_repeat_the_last_frame(tmp_path, backend):
    path = write_indexed_video(tmp_path / "short.mp4", count=6, fps=15)
    indices, _ = read_indices(path, backend, [0.2, 0.35, 0.5, 1.0, 3.0])
    assert indices == [3, 5, 5, 5, 5]


def test_times_in_any_order_get_their_frames(tmp_path, backend):
    path = write_indexed_video(tmp_path / "v.mkv", count=30, fps=15)
    indices, frames = read_indices(path, backend, [1.5, 0.2, 1.0, 0.2, 0.0])
    assert indices == [22, 3, 15, 3, 0]
    assert len(frames) == 4


def test_frames_a_millisecond_apart_are_told_apart(tmp_path, backend):
    # At 1000 fps frame n starts at n ms: a tolerance of 1 ms took a time for the next frame.
    path = write_numbered_video(tmp_path / "fast.mkv", "libx264", count=100, fps=1000)
    video = open_video(path, backend)
    try:
        frames, rows = video.read_frames([0.0, 0.02, 0.05, 0.0505, 0.099])
    finally:
        video.close()
    assert [frame_number(frames[row]) for row in rows] == [0, 20, 50, 50, 99]


@pytest.mark.parametrize("fps", [15, 30000 / 1001])
def test_a_time_at_a_frame_start_rounded_to_the_millisecond_gets_that_frame(tmp_path, backend, fps):
    # Matroska stores times in whole milliseconds: frame 1 of 15 fps starts at 0.067 s, after
    # the 1 / 15 s asked for.
    path = write_indexed_video(tmp_path / "v.mkv", count=30, fps=fps)
    indices, _ = read_indices(path, backend, [number / fps for number in range(30)])
    assert indices == list(range(30))


@pytest.mark.parametrize("times", [[], [math.nan], [0.0, math.inf], [-math.inf, 1.0]])
def test_no_times_or_times_that_are_no_instant_are_a_value_error(tmp_path, backend, times):
    # A caller's mistake, not a fault of the video: not a VideoDecodeError, which skips it.
    path = write_indexed_video(tmp_path / "v.mp4", count=10)
    video = open_video(path, backend)
    try:
        with pytest.raises(ValueError, match="times"):
            video.read_frames(times)
    finally:
        video.close()


@pytest.mark.parametrize("extension", ["mp4", "avi", "mkv", "webm", "mpg", "ts"])
def test_common_containers_and_codecs(tmp_path, backend, extension):
    path = write_indexed_video(tmp_path / f"v.{extension}", count=30, fps=15)
    video = open_video(path, backend)
    assert video.duration == pytest.approx(2.0, abs=0.07)
    video.close()
    times = [i / 15 + 0.01 for i in range(0, 30, 3)]
    indices, frames = read_indices(path, backend, times)
    assert indices == list(range(0, 30, 3))
    assert frames.shape[1:] == (48, 64, 3)
    # A clip from the middle: PyAV seeks to the keyframe before it first.
    indices, _ = read_indices(path, backend, [1.0, 1.2, 1.4])
    assert indices == [15, 18, 21]


def test_variable_frame_rate_is_sampled_by_timestamp(tmp_path, backend):
    starts = [0.0, 0.1, 0.15, 0.5, 0.55, 0.6, 1.2, 1.25, 1.3, 2.0]
    path = write_indexed_video(tmp_path / "vfr.mkv", count=len(starts), fps=20, times=starts)
    times = [0.0, 0.12, 0.3, 0.56, 1.0, 1.26, 1.9, 2.05]
    indices, _ = read_indices(path, backend, times)
    assert indices == [int(np.searchsorted(starts, t, side="right")) - 1 for t in times]
    video = open_video(path, backend)
    # Up to the end of the last frame, not frames / average frame rate.
    assert 2.0 < video.duration < 2.1
    video.close()


@pytest.mark.parametrize(
    ("name", "height", "width"),
    [("odd.avi", 47, 33), ("portrait.mp4", 64, 36), ("landscape.mp4", 36, 64)],
)
def test_odd_and_portrait_sizes_decode_and_scale(tmp_path, backend, name, height, width):
    path = write_indexed_video(tmp_path / name, count=10, height=height, width=width)
    indices, frames = read_indices(path, backend, [0.0, 0.3])
    assert indices == [0, 4]
    assert frames.shape[1:3] == (height, width)
    _, scaled = read_indices(path, backend, [0.0], short_side=24)
    assert scaled.shape[1:3] == scaled_size(height, width, 24)
    assert min(scaled.shape[1:3]) == 24


@pytest.mark.parametrize("short_side", [None, 16])
def test_a_display_rotation_is_applied(tmp_path, backend, short_side):
    # Phones store portrait video as landscape frames and a rotation; -90 degrees is shown
    # turned a quarter clockwise: the stored left edge at the top, the stored top at the right.
    path = write_indexed_video(tmp_path / "v.mp4", count=4, height=32, width=64, rotation=-90)
    video = open_video(path, backend)
    try:
        frames, _ = video.read_frames([0.0, 0.1], short_side)
    finally:
        video.close()
    assert frames.shape[1:] == ((64, 32, 3) if short_side is None else (32, 16, 3))
    green, blue = frames[0, ..., 1].float(), frames[0, ..., 2].float()
    edge = frames.shape[2] // 8
    assert green[-edge:].mean() - green[:edge].mean() > 150, "green rises top to bottom"
    assert blue[:, :edge].mean() - blue[:, -edge:].mean() > 150, "blue falls left to right"


def test_scaled_size_keeps_the_aspect_ratio(backend):
    assert scaled_size(320, 426, 224) == (224, 298)
    assert scaled_size(1280, 720, 256) == (455, 256)


def test_a_raw_stream_says_how_to_put_it_in_a_container(tmp_path, backend):
    path = tmp_path / "phone.h264"
    write_video(str(path), indexed_frames(10), 15, "libx264")
    with pytest.raises(VideoDecodeError) as error:
        open_video(str(path), backend)
    assert str(error.value) == (
        "raw H.264 video without a container, so its frames have no times: wrap it in one with "
        "`ffmpeg -framerate <its frame rate> -i phone.h264 -c copy phone.mp4`"
    )


def broken_file(tmp_path, kind):
    path = tmp_path / f"{kind}.mp4"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        return os.devnull
    elif kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        # The index (moov) is written last, so half a file has none.
        whole = Path(write_indexed_video(tmp_path / "whole.mp4", count=30)).read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    elif kind == "truncated_faststart":
        whole = Path(
            write_indexed_video(
                tmp_path / "whole_fast.mp4", count=60, container_options={"movflags": "faststart"}
            )
        ).read_bytes()
        path.write_bytes(whole[: len(whole) * 2 // 3])
    elif kind == "audio_only":
        write_audio_only(path)
    return str(path)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("missing", "missing file"),
        ("empty", "empty file"),
        ("garbage", ""),
        ("truncated", ""),
        ("truncated_faststart", ""),
        ("audio_only", "no video stream"),
        # Opening a pipe or a capture device would wait for a writer or stream on: neither is a
        # video file, and neither is empty.
        ("fifo", "not a regular file (a FIFO)"),
        ("device", "not a regular file (a character device)"),
        ("directory", "not a regular file (a directory)"),
    ],
)
def test_unusable_files_raise_a_short_reason(tmp_path, backend, kind, reason):
    path = broken_file(tmp_path, kind)
    with pytest.raises(VideoDecodeError) as error, no_hang():
        video = open_video(path, backend)
        video.read_frames([i / 15 for i in range(0, 60, 4)])
    message = str(error.value)
    assert reason in message
    assert "\n" not in message and 0 < len(message) < 200


@contextmanager
def no_hang(seconds=30):
    """Fails instead of hanging (opening a FIFO waits for a writer)."""

    def fail(*_):
        raise TimeoutError("hung")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
