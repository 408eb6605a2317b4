"""A corpus of broken and odd video files through the dataset, the loader and the demo: nothing
raises, and every file is either scored or counted as skipped, with a one-line reason."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from demo.conftest import CLASS_NAMES, tiny_cfg, write_truncated
from PIL import Image

from revvideo.checkpoint import save_checkpoint
from revvideo.cli import classify
from revvideo.data import build_dataset, build_loader
from revvideo.data.decoding import BACKENDS
from revvideo.data.paths import video_files
from revvideo.data.synthetic import write_video
from revvideo.models import build_model

from .test_loader import all_batches, no_hang  # noqa: F401 (no_hang: an autouse fixture)
from .videos import indexed_frames, write_audio_only, write_dataset, write_indexed_video


def write_cut(path, **kwargs):
    """The first half of an indexed mp4 (see write_indexed_video for `kwargs`), alone in its
    folder."""
    whole = path.with_suffix(".whole.mp4")
    write_truncated(path, write_indexed_video(whole, **kwargs), 0.5)
    whole.unlink()


def write_zero_timescale(path):
    """An mp4 whose video track's time scale (its mdhd box) is 0. PyAV cannot write one, so a
    valid file's is zeroed; FFmpeg reads such a track with a time scale of 1."""
    write_indexed_video(path, count=30)
    data = bytearray(path.read_bytes())
    box = data.index(b"mdhd")
    assert data[box + 4] == 0, "a version 0 mdhd: version and flags, two times, the time scale"
    data[box + 16 : box + 20] = bytes(4)
    path.write_bytes(data)


# File name -> how it is made, and whether the test pipeline scores it.
CORPUS = {
    "good.mp4": (lambda path: write_indexed_video(path), True),
    "good.avi": (lambda path: write_indexed_video(path), True),
    "one_frame.mp4": (lambda path: write_indexed_video(path, count=1), True),
    # Smooth frames keep a 4000x3000 H.264 file about 100 kB and fast to encode.
    "huge.mp4": (lambda path: write_indexed_video(path, count=2, height=3000, width=4000), True),
    "vfr.mkv": (
        lambda path: write_indexed_video(path, count=6, times=[0, 0.1, 0.15, 0.9, 1.0, 2.0]),
        True,
    ),
    "rotated.mp4": (lambda path: write_indexed_video(path, rotation=90), True),
    # FFmpeg shows every frame 1024 s after the previous one: its first 2 s are frame 0.
    "zero_timescale.mp4": (write_zero_timescale, True),
    # FFmpeg reads an image as a video of one frame.
    "image.mp4": (lambda path: Image.fromarray(indexed_frames(1)[0]).save(path, "PNG"), True),
    # The index, written last, is gone.
    "truncated.mp4": (write_cut, False),
    # The index, written first, survives; the frames stop early. With a keyframe every 5 frames
    # the first ones decode.
    "truncated_faststart.mp4": (
        lambda path: write_cut(
            path, count=60, container_options={"movflags": "faststart"}, options={"g": "5"}
        ),
        False,
    ),
    "random.mp4": (
        lambda path: path.write_bytes(np.random.default_rng(0).bytes(5000)),
        False,
    ),
    "audio_only.mp4": (write_audio_only, False),
    "empty.mp4": (lambda path: path.write_bytes(b""), False),
    # An H.264 elementary stream: no container, no timestamps.
    "raw.h264": (
        lambda path: write_video(str(path), indexed_frames(10), 15, "libx264"),
        False,
    ),
}
SCORED = sorted(name for name, (_, scored) in CORPUS.items() if scored)
SKIPPED = sorted(name for name, (_, scored) in CORPUS.items() if not scored)
# decord 0.6 opens no image, fails to turn 48x64 frames a quarter ("The size must exactly
# match") and times a track of time scale 0 differently from FFmpeg: PyAV reads them.
DECORD_FALLBACKS = {"image.mp4", "rotated.mp4", "zero_timescale.mp4"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The folder holding every CORPUS file."""
    folder = tmp_path_factory.mktemp("corpus")
    for name, (write, _) in CORPUS.items():
        write(folder / name)
    return folder


@pytest.fixture
def corpus_cfg(small_cfg, corpus):
    """small_cfg on train and test lists of the whole corpus, labels in turn."""
    entries = [(name, index % 3) for index, name in enumerate(CORPUS)]
    small_cfg.DATA.PATH_TO_DATA_DIR = write_dataset(corpus, {"train": entries, "test": entries})
    # Training replaces a skipped video by a random other one: the same ones on every run.
    random.seed(0)
    torch.manual_seed(0)
    return small_cfg


def assert_one_line_reasons(skipped):
    for skip in skipped:
        assert skip.reason and "\n" not in skip.reason, skip


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("split", ["train", "test"])
def test_the_dataset_scores_or_skips_every_file(corpus_cfg, split, backend):
    corpus_cfg.DATA.DECODING_BACKEND = backend
    dataset = build_dataset(corpus_cfg, split)
    scored, skipped, fallbacks = [], [], set()
    for index in range(len(dataset)):
        item = dataset[index]
        name = Path(dataset.path(index)).name
        if item["skipped"]:
            assert item["skipped"][0].video_index == index
            assert_one_line_reasons(item["skipped"])
            skipped.append(name)
        else:
            assert item["video_index"] == index
            scored.append(name)
        # In training a skipped video is replaced by another; in test its item has no views.
        unscored = split == "test" and item["skipped"]
        assert len(item["view_index"]) == (0 if unscored else dataset.views_per_video)
        fallbacks |= {Path(video.path).name for video in item["fallbacks"]}
    assert sorted(scored) == SCORED
    assert len(scored) + len(skipped) == len(CORPUS)
    if split == "test":
        assert fallbacks == (DECORD_FALLBACKS if backend == "decord" else set())


@pytest.mark.parametrize("workers", [0, 1])
def test_the_loader_scores_or_skips_every_file(corpus_cfg, workers):
    corpus_cfg.DATA_LOADER.NUM_WORKERS = workers
    test = build_loader(corpus_cfg, "test")
    batches = all_batches(test)
    scored = {test.dataset.path(i) for b in batches for i in b["video_index"].tolist()}
    skipped = {skip.path for skip in test.skipped}
    assert sorted(Path(path).name for path in scored) == SCORED
    assert sorted(Path(path).name for path in skipped) == SKIPPED
    assert len(scored) + len(skipped) == len(CORPUS)
    assert_one_line_reasons(test.skipped)
    assert "\n" not in test.summary()

    train = build_loader(corpus_cfg, "train")
    batches = all_batches(train)
    assert sum(len(batch["label"]) for batch in batches) == len(CORPUS), "skipped are replaced"
    delivered = {train.dataset.path(i) for b in batches for i in b["video_index"].tolist()}
    assert {Path(path).name for path in delivered} <= set(SCORED)
    assert {skip.path for skip in train.skipped} == skipped


def test_the_demo_scores_or_skips_every_file(corpus, tmp_path, capsys):
    cfg = tiny_cfg()
    checkpoint = tmp_path / "untrained.pyth"
    save_checkpoint(checkpoint, build_model(cfg), cfg=cfg.dump(), class_names=CLASS_NAMES)
    # A raw .h264 file is no video extension: found in a folder only when named.
    inputs = [*video_files(str(corpus)), str(corpus / "raw.h264")]
    assert len(inputs) == len(CORPUS)

    options = ["--checkpoint", checkpoint, "--json", "--views", "2x1", "--device", "cpu"]
    options += ["--output", tmp_path / "annotated"]
    status = classify.main([str(arg) for arg in (corpus, corpus / "raw.h264", *options)])
    captured = capsys.readouterr()

    assert status == 1
    entries = json.loads(captured.out)
    assert [entry["path"] for entry in entries] == inputs
    failed = sorted(Path(entry["path"]).name for entry in entries if "error" in entry)
    classified = sorted(Path(entry["path"]).name for entry in entries if "top_k" in entry)
    # A video whose frames stop early is classified from the part that decodes.
    assert failed == sorted(set(SKIPPED) - {"truncated_faststart.mp4"})
    assert classified == sorted([*SCORED, "truncated_faststart.mp4"])
    annotated = {path.name for path in (tmp_path / "annotated").iterdir()}
    assert len(annotated) == len(classified) and {"good.mp4", "good_mp4.mp4"} <= annotated
    errors = captured.err.splitlines()
    assert errors[-1] == f"error: {len(failed)} of {len(CORPUS)} inputs could not be classified"
    assert all(line.startswith(("error: ", "warning: ")) for line in errors)
    assert sum(line.startswith("error: ") for line in errors) == len(failed) + 1
    assert f"error: {corpus / 'raw.h264'}: raw H.264 video without a container" in captured.err
