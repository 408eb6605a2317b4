"""Frames read at chosen times are the frames a decode of the whole video from its first frame
shows then, in every container, whatever seeks happen on the way; and a frame size that changes
midway gives frames of one size.

Each video is checked against a plain decode of its own file (tests/data/videos.plain_decode),
not against the times it was written with: the container's clock (an MPEG stream's start time,
an AVI's B-frame delay) is the reader's to follow.
"""

import av
import pytest
import torch

from revvideo.data import build_dataset, build_loader
from revvideo.data.decoding import BACKENDS, display_rotation, open_video, scaled_size

from .videos import (
    frame_number,
    plain_decode,
    shown_at,
    write_dataset,
    write_joined,
    write_numbered_video,
    write_size_change,
)

# extension -> (codec, encoder options): a keyframe every 12 frames (MPEG-2's default), B-frames
# where the codec has them (x264's default 3, 2 elsewhere).
CONTAINERS = {
    "mp4": ("libx264", {"g": "12"}),
    "mkv": ("libx264", {"g": "12"}),
    "avi": ("mpeg4", {"g": "12", "bf": "2", "b": "2M"}),
    "webm": ("libvpx-vp9", {"g": "12", "deadline": "realtime", "cpu-used": "8", "b": "1M"}),
    "mpg": ("mpeg2video", {"bf": "2", "b": "2M"}),
    "ts": ("libx264", {"g": "12"}),
}
# Times (seconds) in a 50-frame 25 fps video: the start, within the first GOP (where MPEG
# program streams froze), a few frames in, the middle, near the end and past it.
TIMES = [0.0, 0.04, 0.12, 0.2, 0.4, 0.5, 0.7, 1.0, 1.3, 1.9, 1.96, 2.5]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """extension -> (path, plain decode) of a numbered 2 s video in that container."""
    folder = tmp_path_factory.mktemp("seeking")
    made = {}
    for extension, (codec, options) in CONTAINERS.items():
        path = write_numbered_video(folder / f"numbered.{extension}", codec, options=options)
        decoded = plain_decode(path)
        assert [number for _, number, _ in decoded] == list(range(50)), "every frame decodes"
        made[extension] = (path, decoded)
    return made


def numbers_read(video, times, short_side=None):
    frames, rows = video.read_frames(times, short_side)
    return [frame_number(frames[row]) for row in rows]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("extension", CONTAINERS)
def test_every_time_gets_the_frame_a_plain_decode_shows(videos, extension, backend):
    path, decoded = videos[extension]
    expected = [shown_at(decoded, time) for time in TIMES]
    alone = []
    for time in TIMES:
        video = open_video(path, backend)
        alone.append(numbers_read(video, [time])[0])
        video.close()
    assert alone == expected, "one time per opening: a seek to it, or none for the start"
    video = open_video(path, backend)
    assert numbers_read(video, TIMES) == expected, "all times in one pass"
    # One reader, read from here and there in turn: back to the start after it has moved on.
    order = [1.0, 0.0, 1.9, 0.2, 0.5, 0.04, 1.3, 0.12]
    assert [numbers_read(video, [time])[0] for time in order] == [
        shown_at(decoded, time) for time in order
    ]
    # A test clip's times across the whole video, scaled as test views are.
    clip = [0.0, 0.16, 0.32, 0.48, 0.64, 0.8, 0.96, 1.12, 1.28, 1.44, 1.6, 1.76, 1.92]
    assert numbers_read(video, clip, short_side=64) == [shown_at(decoded, t) for t in clip]
    video.close()


@pytest.mark.parametrize("extension", CONTAINERS)
def test_reading_the_rotation_leaves_the_container_at_the_first_frame(videos, extension):
    # The rotation is on decoded frames only. Seeking back to the start after decoding one
    # landed on the second keyframe in MPEG streams: re-encoded videos (prepare_kinetics, the
    # demo's annotated video) lost their first GOP.
    path, _ = videos[extension]
    with av.open(path) as container:
        stream = container.streams.video[0]
        assert display_rotation(container, stream) == 0
        numbers = [
            frame_number(frame.to_ndarray(format="rgb24")) for frame in container.decode(stream)
        ]
    assert numbers == list(range(50))


def test_the_clock_starts_at_the_stream_start_in_mpeg_streams(videos):
    # Their first timestamps are not 0 (about 0.5 s in program streams, 1.4 s in transport
    # streams); times count from them, as from 0 elsewhere.
    for extension in ("mpg", "ts"):
        path, decoded = videos[extension]
        assert decoded[0][0] == 0.0
        video = open_video(path)
        assert video.duration == pytest.approx(2.0, abs=0.05)
        video.close()


@pytest.mark.parametrize(
    ("extension", "codec"),
    [
        ("mp4", "libx264"),
        ("mov", "libx264"),
        ("mkv", "libx264"),
        ("webm", "libvpx-vp9"),
        ("flv", "libx264"),
        ("flv", "flv"),  # Sorenson H.263, whose packets have no duration
    ],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_stream_starting_late_lasts_from_its_start(tmp_path, backend, extension, codec):
    # Timestamps from 400 s on, as segments cut with `ffmpeg -copyts` keep them: Matroska's
    # header duration counts from 0 (402 s), so reads past 2 s were called truncated.
    times = [400 + number / 25 for number in range(50)]
    path = write_numbered_video(tmp_path / f"late.{extension}", codec, times=times)
    decoded = plain_decode(path)
    video = open_video(path, backend)
    try:
        assert video.duration == pytest.approx(2.0)
        wanted = [0.0, 1.0, 1.96, 2.5]
        assert (
            numbers_read(video, wanted) == [shown_at(decoded, t) for t in wanted] == [0, 25, 49, 49]
        )
    finally:
        video.close()


# x265 makes open GOPs by default; MPEG-2's are open unless the encoder closes them.
X265_OPEN = {"x265-params": "log-level=none:keyint=24"}
X265_CLOSED = {"x265-params": "log-level=none:keyint=24:open-gop=0"}


@pytest.mark.parametrize(
    ("extension", "codec", "options", "open_gops"),
    [
        ("mp4", "libx265", X265_OPEN, True),
        ("mkv", "libx265", X265_OPEN, True),
        ("mkv", "mpeg2video", {"g": "12", "bf": "2", "b": "2M"}, True),
        ("mp4", "libx265", X265_CLOSED, False),
    ],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_frames_shown_before_the_keyframe_they_follow_are_read(
    tmp_path, backend, extension, codec, options, open_gops
):
    # In an open GOP the frames just before a keyframe are decoded after it; a seek to that
    # keyframe skips them, and decord returned frames 3 on from the ones asked for.
    path = write_numbered_video(tmp_path / f"gops.{extension}", codec, count=72, options=options)
    decoded = plain_decode(path)
    assert [number for _, number, _ in decoded] == list(range(72))
    times = [0.92, 0.96, 1.0, 1.88, 2.4]
    numbers, fallbacks = [], set()
    for time in times:
        video = open_video(path, backend)
        numbers.append(numbers_read(video, [time])[0])
        fallbacks.add(bool(getattr(video, "fallback", None)))
        video.close()
    assert numbers == [shown_at(decoded, time) for time in times]
    assert fallbacks == {backend == "decord" and open_gops}, "decord reads closed GOPs"


@pytest.mark.parametrize(
    ("extension", "codec", "options"),
    [("ts", "libx264", {"g": "12"}), ("ts", "mpeg2video", {"b": "2M"}), ("mpg", "mpeg2video", {})],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_frame_size_that_changes_midway_gives_one_size(
    tmp_path, backend, extension, codec, options
):
    # 320x240 for 25 frames, then 320x180 (a camera switching to 16:9).
    path = write_size_change(
        tmp_path / f"changes.{extension}", codec, [(25, 240, 320), (25, 180, 320)], options=options
    )
    decoded = plain_decode(path)
    assert {size for _, _, size in decoded} == {(240, 320), (180, 320)}
    times = [0.0, 0.5, 0.96, 1.0, 1.5, 1.96]
    video = open_video(path, backend)
    try:
        frames, rows = video.read_frames(times)
        # The header's size, which is the first frames': the later frames are stretched to it.
        assert frames.shape == (len(set(rows)), 240, 320, 3) and frames.dtype == torch.uint8
        assert [frame_number(frames[row]) for row in rows] == [shown_at(decoded, t) for t in times]
        # The later part alone is read at the same size (a clip does not depend on where it is).
        frames, rows = video.read_frames([1.2, 1.6])
        assert frames.shape[1:] == (240, 320, 3)
        assert [frame_number(frames[row]) for row in rows] == [
            shown_at(decoded, t) for t in (1.2, 1.6)
        ]
        frames, _ = video.read_frames([0.9, 1.1], short_side=60)
        assert frames.shape[1:] == (*scaled_size(240, 320, 60), 3)
    finally:
        video.close()


@pytest.mark.parametrize(
    ("extension", "codec", "options"),
    [("ts", "libx264", {"g": "12"}), ("mpg", "mpeg2video", {"bf": "2", "b": "2M"})],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_recordings_joined_byte_wise_play_one_after_the_other(
    tmp_path, backend, extension, codec, options
):
    # `cat a.ts b.ts`: valid MPEG-TS whose timestamps start again at the join, where the frame
    # size changes too. Each time names a frame in both parts; players show the parts in turn.
    path = write_joined(
        tmp_path / f"joined.{extension}", codec, [(25, 240, 320), (25, 180, 320)], options=options
    )
    decoded = plain_decode(path)
    starts = [start for start, _, _ in decoded]
    assert starts != sorted(starts), "timestamps start again"
    # Every frame is 1/25 s after the one decoded before it (MPEG-2's decoder drops the last
    # frame of the first part, which the second part's new size flushes out).
    in_turn = [(row / 25, number, size) for row, (_, number, size) in enumerate(decoded)]
    times = [0.0, 0.5, 0.96, 1.0, 1.04, 1.5, 1.96, 2.5]
    expected = [shown_at(in_turn, time) for time in times]
    alone = []
    for time in times:
        video = open_video(path, backend)
        alone.append(numbers_read(video, [time])[0])
        video.close()
    assert alone == expected
    video = open_video(path, backend)
    try:
        assert video.duration == pytest.approx(2.0, abs=0.05)
        frames, rows = video.read_frames(times)
        assert frames.shape[1:] == (240, 320, 3)
        assert [frame_number(frames[row]) for row in rows] == expected
    finally:
        video.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_and_testing_read_a_video_whose_size_changes(tmp_path, small_cfg, backend):
    # What ended in "all input arrays must have the same shape" when clips were stacked.
    (tmp_path / "videos").mkdir()
    entries = []
    for number, extension in enumerate(("ts", "mpg")):
        codec = "libx264" if extension == "ts" else "mpeg2video"
        name = f"videos/changes{number}.{extension}"
        write_size_change(tmp_path / name, codec, [(25, 240, 320), (25, 180, 320)])
        entries.append((name, number))
    small_cfg.DATA.PATH_TO_DATA_DIR = write_dataset(tmp_path, {"train": entries, "test": entries})
    small_cfg.DATA.DECODING_BACKEND = backend
    for split in ("train", "test"):
        dataset = build_dataset(small_cfg, split)
        for index in range(len(dataset)):
            item = dataset[index]
            assert not item["skipped"], item["skipped"]
            assert item["video"].shape[1:] == (3, 4, 32, 32)


@pytest.mark.parametrize("workers", [0, 2])
def test_decord_falls_back_to_pyav_counted_and_logged_once_per_fault(
    tmp_path, small_cfg, caplog, workers
):
    # decord 0.6 cannot copy out frames 72 wide ("The size must exactly match"), whatever their
    # height; it cannot time MPEG program streams. Each video is read with PyAV and counted;
    # each fault is logged once, whichever loader worker met it.
    names = [f"v{height}.mp4" for height in (54, 96, 120)] + [f"v{n}.mpg" for n in range(2)]
    for name in names[:3]:
        height = int(name[1:-4])
        write_numbered_video(tmp_path / name, "libx264", count=10, height=height, width=72)
    for name in names[3:]:
        write_numbered_video(tmp_path / name, "mpeg2video", count=10)
    for name in names:
        video = open_video(str(tmp_path / name), "decord")
        assert numbers_read(video, [0.0, 0.2]) == [0, 5]
        assert numbers_read(video, [0.3]) == [7], "read on with PyAV"
        assert video.fallback
        video.close()
    small_cfg.DATA.PATH_TO_DATA_DIR = write_dataset(tmp_path, {"test": [(n, 0) for n in names]})
    small_cfg.DATA.DECODING_BACKEND = "decord"
    small_cfg.DATA_LOADER.NUM_WORKERS = workers
    small_cfg.TEST.BATCH_SIZE = 3
    loader = build_loader(small_cfg, "test")
    with caplog.at_level("WARNING", logger="revvideo.data.loader"):
        batches = list(loader)
    assert sum(len(batch["video_index"]) for batch in batches) == 5 * 3
    counts = loader.fallbacks
    assert sorted(counts.values()) == [2, 3] and len(counts) == 2, counts
    assert any("size must exactly match" in fault for fault in counts)
    logged = [record.getMessage() for record in caplog.records]
    assert len(logged) == 2 and all("read with PyAV" in message for message in logged), logged
    named = [[name for name in names if f"/{name}:" in line] for line in logged]
    assert sorted(len(line) for line in named) == [1, 1]
    assert {line[0].split(".")[1] for line in named} == {"mp4", "mpg"}
