"""classify.py --timeline and Classifier.timeline: windows over a whole video of colour blocks,
segments that follow the blocks, subtitles, short and damaged videos."""

import itertools
import json

import pytest
import torch

from revvideo.data.synthetic import write_video
from revvideo.demo.classifier import load_classifier
from revvideo.demo.timeline import Window, segments_of, smooth, subtitles, window_starts

from .conftest import CLASS_NAMES, colour_frames, run_tool, write_truncated

BLOCKS = ("red", "green", "blue", "red", "blue", "green")
BLOCK_SECONDS = 2.0  # 30 frames at 15 fps


@pytest.fixture(scope="module")
def blocks_video(tmp_path_factory):
    """12 s: 2 s of each colour of BLOCKS in turn, index at the front (so a cut copy opens)."""
    path = tmp_path_factory.mktemp("timeline") / "blocks.mp4"
    frames = colour_frames(BLOCKS, height=32, width=40)
    write_video(str(path), frames, 15, "libx264", container_options={"movflags": "faststart"})
    return str(path)


@pytest.fixture(scope="module")
def classifier(trained):
    return load_classifier(trained[0], None, torch.device("cpu"))


def truth(time):
    return BLOCKS[min(int(time // BLOCK_SECONDS), len(BLOCKS) - 1)]


def changes(labels):
    return sum(a != b for a, b in itertools.pairwise(labels))


def test_window_starts_cover_the_video():
    assert window_starts(2.0, 1.0, 0.5) == [0.0, 0.5, 1.0]
    assert window_starts(2.2, 1.0, 0.5) == pytest.approx([0.0, 0.5, 1.0, 1.2])
    assert window_starts(0.3, 1.0, 0.5) == [0.0]


def test_smooth_is_a_centred_moving_average():
    probabilities = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    smoothed = smooth(probabilities, 3)
    assert torch.allclose(smoothed[1], torch.tensor([2 / 3, 1 / 3]))
    assert torch.allclose(smoothed[0], torch.tensor([2 / 3, 1 / 3]))
    assert torch.allclose(smoothed.sum(dim=1), torch.ones(4))


def test_segments_change_far_less_than_noisy_windows():
    """Windows right 75 % of the time (else a random other class): the segments are at least as
    right and change label at most half as often."""
    generator = torch.Generator().manual_seed(0)
    true = [block for block in range(3) for _ in range(20)] * 2  # 6 blocks of 20 windows
    windows = []
    for index, label in enumerate(true):
        shown = label
        if torch.rand(1, generator=generator) < 0.25:
            shown = (label + int(torch.randint(1, 3, (1,), generator=generator))) % 3
        probabilities = torch.full((3,), 0.2)
        probabilities[shown] = 0.6
        windows.append(Window(index * 0.5, index * 0.5 + 1.0, probabilities))
    segments = segments_of(windows, CLASS_NAMES, min_length=1.0)
    centres = [w.start + 0.5 for w in windows]
    labelled = [next(s.name for s in segments if s.start <= t < s.end) for t in centres]
    own = [CLASS_NAMES[int(w.probabilities.argmax())] for w in windows]
    names = [CLASS_NAMES[label] for label in true]
    right = sum(a == b for a, b in zip(labelled, names, strict=True))
    assert right >= sum(a == b for a, b in zip(own, names, strict=True))
    assert right >= 0.9 * len(windows)
    assert changes(labelled) <= changes(own) / 2


def test_segments_follow_the_blocks(classifier, blocks_video):
    timeline = classifier.timeline(blocks_video)
    length = float(classifier.clip_duration)
    windows, segments = timeline.windows, timeline.segments
    assert not timeline.warnings
    # Windows half a clip apart over the whole video, the last ending at its end.
    assert windows[0].start == 0 and windows[-1].end == pytest.approx(12.0, abs=1e-3)
    assert windows[1].start == pytest.approx(length / 2)
    assert all(w.end - w.start == pytest.approx(length) for w in windows)
    # Contiguous segments covering the video.
    assert segments[0].start == 0 and segments[-1].end == pytest.approx(12.0, abs=1e-3)
    assert all(a.end == b.start for a, b in itertools.pairwise(segments))
    assert all(0 < s.probability <= 1 for s in segments)
    # At every window's centre, the segment is at least as right as the window's own top class.
    centres = [(w.start + w.end) / 2 for w in windows]
    own = [CLASS_NAMES[int(w.probabilities.argmax())] for w in windows]
    labelled = [next(s.name for s in segments if s.start <= t < s.end) for t in centres]
    right_own = sum(name == truth(t) for name, t in zip(own, centres, strict=True))
    right_segments = sum(name == truth(t) for name, t in zip(labelled, centres, strict=True))
    assert right_segments >= right_own
    assert right_segments >= 0.8 * len(windows)
    # One segment per block (5 changes), never more changes than the windows make.
    assert [s.name for s in segments] == list(BLOCKS)
    assert changes(labelled) <= changes(own)
    for segment, block in zip(segments, range(len(BLOCKS)), strict=True):
        assert segment.start == pytest.approx(block * BLOCK_SECONDS, abs=length)


def test_short_video_gets_one_window(classifier, tmp_path):
    path = tmp_path / "short.mp4"
    write_video(str(path), colour_frames(("blue",), frames_each=5, height=32, width=40), 15)
    timeline = classifier.timeline(str(path))
    assert len(timeline.windows) == 1 and len(timeline.segments) == 1
    assert timeline.windows[0].end == pytest.approx(5 / 15, abs=0.01)
    assert timeline.segments[0].name == "blue"
    assert len(timeline.warnings) == 1 and "shorter than a window" in timeline.warnings[0]


def test_truncated_video_keeps_the_windows_before_the_damage(classifier, blocks_video, tmp_path):
    path = write_truncated(tmp_path / "cut.mp4", blocks_video, 0.5)
    timeline = classifier.timeline(path)
    assert len(timeline.warnings) == 1
    assert "timeline of its first" in timeline.warnings[0]
    end = timeline.windows[-1].end
    # About half of the bytes: windows over several seconds, none past the 12 s.
    assert 2.0 < end < 11.0
    assert timeline.segments[-1].end == end
    assert [s.name for s in timeline.segments] == list(BLOCKS[: len(timeline.segments)])


def test_subtitles_srt_and_vtt(classifier, blocks_video):
    segments = classifier.timeline(blocks_video).segments
    srt = subtitles(segments)
    assert srt.count(" --> ") == len(segments)
    assert srt.startswith("1\n00:00:00,000 --> 00:00:")
    vtt = subtitles(segments, vtt=True)
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> ")


def test_cli_json_srt_and_plot(trained, blocks_video, tmp_path):
    srt, plot = tmp_path / "blocks.srt", tmp_path / "blocks.png"
    args = ["--checkpoint", trained[0], "--timeline", "--json", "--srt", srt]
    done = run_tool("demo/classify.py", blocks_video, *args, "--timeline-plot", plot, "--topk", 2)
    assert done.returncode == 0, done.stderr
    (entry,) = json.loads(done.stdout)
    timeline = entry["timeline"]
    assert set(timeline) == {"windows", "segments"}
    assert set(timeline["windows"][0]) == {"start", "end", "top_k"}
    assert set(timeline["windows"][0]["top_k"][0]) == {"class", "probability"}
    assert len(timeline["windows"][0]["top_k"]) == 2
    assert set(timeline["segments"][0]) == {"class", "start", "end", "probability"}
    assert [s["class"] for s in timeline["segments"]] == list(BLOCKS)
    assert entry["srt"] == str(srt) and entry["timeline_plot"] == str(plot)
    assert srt.read_text().count(" --> ") == len(timeline["segments"])
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_cli_text_prints_one_line_per_segment(trained, blocks_video):
    done = run_tool("demo/classify.py", blocks_video, "--checkpoint", trained[0], "--timeline")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if " s  " in line]
    assert len(lines) == len(BLOCKS)
    assert lines[0].strip().startswith("0.00-") and " red " in lines[0]


@pytest.mark.parametrize("stride", ["0", "-1", "abc", "nan"])
def test_bad_stride_is_one_error_line(trained, blocks_video, stride):
    args = ["--checkpoint", trained[0], "--timeline", "--stride", stride]
    done = run_tool("demo/classify.py", blocks_video, *args)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert "--stride" in done.stderr and "Traceback" not in done.stderr


def test_cli_damaged_video_keeps_its_first_windows(trained, blocks_video, tmp_path):
    path = write_truncated(tmp_path / "cut.mp4", blocks_video, 0.5)
    done = run_tool("demo/classify.py", path, "--checkpoint", trained[0], "--timeline", "--json")
    assert done.returncode == 0, done.stderr
    (entry,) = json.loads(done.stdout)
    windows = entry["timeline"]["windows"]
    assert 2.0 < windows[-1]["end"] < 11.0
    assert entry["timeline"]["segments"][-1]["end"] == windows[-1]["end"]
    stops = [line for line in done.stderr.splitlines() if "timeline of its first" in line]
    assert len(stops) == 1 and "Traceback" not in done.stderr


def test_an_image_model_has_a_timeline_of_frames(trained_images, blocks_video):
    classifier = load_classifier(trained_images[0], None, torch.device("cpu"))
    timeline = classifier.timeline(blocks_video)
    frame = float(classifier.clip_duration)
    assert frame == pytest.approx(1 / trained_images[1].DATA.TARGET_FPS) and not timeline.warnings
    assert all(w.end - w.start == pytest.approx(frame) for w in timeline.windows)
    assert timeline.windows[-1].end == pytest.approx(12.0, abs=1e-3)
    assert [s.name for s in timeline.segments] == list(BLOCKS)
