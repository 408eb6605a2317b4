import itertools
import logging
import os
import shutil
import signal
from collections import Counter

import numpy as np
import pytest
import torch

import revvideo.data.build
import revvideo.data.dataset
from revvideo.data import build_dataset, build_loader
from revvideo.utils.errors import DataError

from .videos import clip_indices, good_entries, write_dataset, write_indexed_video


@pytest.fixture(autouse=True)
def no_hang():
    """Fails a test that runs over a minute instead of letting a hung loader block the run."""

    def fail(*_):
        raise TimeoutError("the test hung")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def plain_train(cfg):
    """Training without random changes to the frames: whole frames, no flip, no augmentation."""
    cfg.DATA.TRAIN_JITTER_SCALES_RELATIVE = [1.0, 1.0]
    cfg.DATA.TRAIN_JITTER_ASPECT_RELATIVE = [4 / 3, 4 / 3]
    cfg.DATA.RANDOM_FLIP = False
    cfg.AUG.ENABLE = False
    return cfg


def all_batches(loader):
    return [batch for batch in loader]


def test_train_batches_follow_the_contract(small_cfg, small_dataset):
    small_cfg.AUG.ENABLE = True
    small_cfg.AUG.NUM_SAMPLE = 2
    loader = build_loader(small_cfg, "train")
    batches = all_batches(loader)
    assert len(batches) == len(loader) == 3
    dataset = loader.dataset
    for batch in batches:
        assert batch["video"].shape == (4, 3, 4, 32, 32)
        assert batch["video"].dtype == torch.float32
        assert batch["view_index"].tolist() == [0, 1, 0, 1]
        index = batch["video_index"]
        assert index[0] == index[1] and index[2] == index[3]
        assert batch["label"].tolist() == [dataset.label(i) for i in index.tolist()]
        assert batch["skipped"] == []
        assert -2.5 < batch["video"].mean() < 2.5
    seen = torch.cat([batch["video_index"] for batch in batches]).tolist()
    assert sorted(set(seen)) == list(range(6)), "an epoch visits every video"
    assert loader.skipped == [] and loader.summary() == ""


def _augmented(cfg):
    """Every random choice on: clip start, resized crop, flip, RandAugment, erasing, 2 samples."""
    cfg.AUG.ENABLE = True
    cfg.AUG.NUM_SAMPLE = 2
    cfg.AUG.RE_PROB = 0.5
    cfg.DATA.RANDOM_FLIP = True
    return cfg


def test_an_epochs_training_clips_depend_only_on_the_seed_epoch_and_video(
    small_cfg, small_dataset, monkeypatch
):
    def reseeds_the_gpus(seed):
        raise AssertionError("an item reseeded the GPUs' generators (dropout in training)")

    monkeypatch.setattr(torch.cuda, "manual_seed_all", reseeds_the_gpus)
    dataset = build_dataset(_augmented(small_cfg), "train")
    dataset.epoch = 3
    first = dataset[4]["video"]
    torch.default_generator.manual_seed(123)  # other global generator states change nothing
    before = torch.get_rng_state()
    assert torch.equal(dataset[4]["video"], first)
    assert torch.equal(torch.get_rng_state(), before), "an item leaves the generators as found"
    assert not torch.equal(first[0], first[1]), "the two samples are augmented apart"
    dataset.epoch = 4
    assert not torch.equal(dataset[4]["video"], first), "another epoch, another clip"
    small_cfg.RNG_SEED += 1
    other_seed = build_dataset(small_cfg, "train")
    other_seed.epoch = 3
    assert not torch.equal(other_seed[4]["video"], first)


def test_loader_workers_and_a_mid_epoch_start_make_the_same_batches(small_cfg, small_dataset):
    small_cfg.TRAIN.BATCH_SIZE = 1
    in_process = build_loader(_augmented(small_cfg), "train")
    in_process.set_epoch(2)
    expected = all_batches(in_process)
    small_cfg.DATA_LOADER.NUM_WORKERS = 2
    with_workers = build_loader(small_cfg, "train")
    with_workers.set_epoch(2, first_batch=4)
    rest = all_batches(with_workers)
    assert len(rest) == len(expected) - 4
    for batch, wanted in zip(rest, expected[4:], strict=True):
        assert torch.equal(batch["video_index"], wanted["video_index"])
        assert torch.equal(batch["video"], wanted["video"])
    assert len(all_batches(with_workers)) == len(expected), "the start applies to one epoch"


@pytest.mark.parametrize(("fps", "step"), [(15, 2), (30, 4)])
def test_train_clip_takes_every_sampling_rate_frame_at_target_fps(tmp_path, small_cfg, fps, step):
    write_indexed_video(tmp_path / "v.mp4", count=36, fps=fps)
    small_cfg.DATA.PATH_TO_DATA_DIR = write_dataset(tmp_path, {"train": [("v.mp4", 0)]})
    small_cfg.TRAIN.BATCH_SIZE = 1
    dataset = build_dataset(plain_train(small_cfg), "train")
    starts = set()
    for epoch in range(12):
        dataset.epoch = epoch
        indices = clip_indices(dataset[0]["video"][0], small_cfg)
        assert np.diff(indices).tolist() == [step] * 3
        starts.add(indices[0])
    assert len(starts) > 3, "clips start at random times"


def test_short_videos_repeat_their_last_frame(tmp_path, small_cfg):
    write_indexed_video(tmp_path / "short.mp4", count=3, fps=15)
    small_cfg.DATA.PATH_TO_DATA_DIR = write_dataset(
        tmp_path, {"train": [("short.mp4", 0)], "test": [("short.mp4", 0)]}
    )
    train = build_dataset(plain_train(small_cfg), "train")
    assert clip_indices(train[0]["video"][0], small_cfg) == [0, 2, 2, 2]
    test = build_dataset(small_cfg, "test")[0]
    assert len(test["video"]) == 3
    for view in test["video"]:
        assert clip_indices(view, small_cfg) == [0, 2, 2, 2]


def test_test_views_span_the_video_and_decode_it_once(small_cfg, small_dataset, monkeypatch):
    opened = Counter()
    open_video = revvideo.data.dataset.open_video

    def counting_open(path, *args):
        opened[path] += 1
        return open_video(path, *args)

    monkeypatch.setattr(revvideo.data.dataset, "open_video", counting_open)
    small_cfg.TEST.NUM_SPATIAL_CROPS = 3
    small_cfg.TEST.BATCH_SIZE = 20
    loader = build_loader(small_cfg, "test")
    batches = all_batches(loader)
    assert len(batches) == 3, "two whole videos (9 views each) fit in 20 clips"
    video_index = torch.cat([batch["video_index"] for batch in batches])
    view_index = torch.cat([batch["view_index"] for batch in batches])
    assert video_index.tolist() == [i for i in range(6) for _ in range(9)]
    assert view_index.tolist() == list(range(9)) * 6
    assert set(opened.values()) == {1} and len(opened) == 6
    video = batches[0]["video"]
    assert video.shape == (18, 3, 4, 32, 32)
    # Clip k, crop s is row 3k + s. The first clip starts at 0, the last ends at the end of the
    # 2 s video (frames 0..29): frames 22, 24, 26, 28 fill its last 8/15 s.
    assert clip_indices(video[0], small_cfg) == [0, 2, 4, 6]
    assert clip_indices(video[6], small_cfg) == [22, 24, 26, 28]
    assert clip_indices(video[3], small_cfg) == [11, 13, 15, 17]
    for crop in (1, 2):
        assert clip_indices(video[crop], small_cfg) == [0, 2, 4, 6]


@pytest.mark.parametrize("split", ["val", "test"])
def test_views_for_a_gpu_are_uint8_and_normalise_to_the_cpu_views(small_cfg, small_dataset, split):
    cpu = torch.device("cpu")
    floats = build_loader(small_cfg, split, views_for_gpu=False)
    pixels = build_loader(small_cfg, split, views_for_gpu=True)
    for float_batch, pixel_batch in zip(floats, pixels, strict=True):
        assert float_batch["video"].dtype == torch.float32
        assert pixel_batch["video"].dtype == torch.uint8
        assert floats.model_input(float_batch["video"], cpu) is float_batch["video"]
        torch.testing.assert_close(
            pixels.model_input(pixel_batch["video"], cpu), float_batch["video"], atol=1e-6, rtol=0
        )


def test_val_is_one_centre_view(small_cfg, small_dataset):
    batch = next(iter(build_loader(small_cfg, "val")))
    assert batch["view_index"].tolist() == [0] * 6
    assert clip_indices(batch["video"][0], small_cfg) == [11, 13, 15, 17]


def add_broken_videos(root):
    """Writes broken files next to the good ones; returns their CSV entries."""
    videos = os.path.join(root, "videos")
    with open(os.path.join(videos, "empty.mp4"), "wb"):
        pass
    with open(os.path.join(videos, "garbage.avi"), "wb") as file:
        file.write(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    with open(os.path.join(videos, "v1.mp4"), "rb") as file:
        data = file.read()
    with open(os.path.join(videos, "truncated.mp4"), "wb") as file:
        file.write(data[: len(data) // 2])
    return [
        ("videos/missing.mp4", 0),
        ("videos/empty.mp4", 1),
        ("videos/garbage.avi", 2),
        ("videos/truncated.mp4", 0),
    ]


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_videos_are_skipped_counted_and_named(small_cfg, small_dataset, caplog, workers):
    entries = good_entries() + add_broken_videos(small_dataset)
    write_dataset(small_dataset, {"train": entries, "test": entries})
    small_cfg.DATA_LOADER.NUM_WORKERS = workers
    caplog.set_level(logging.WARNING)

    train = build_loader(small_cfg, "train")
    batches = all_batches(train)
    assert sum(len(batch["label"]) for batch in batches) == 10, "bad videos are replaced"
    assert all(index < 6 for batch in batches for index in batch["video_index"].tolist())

    test = build_loader(small_cfg, "test")
    batches = all_batches(test)
    scored = sorted(set(torch.cat([batch["video_index"] for batch in batches]).tolist()))
    assert scored == list(range(6))
    unscored = {skip.video_index: skip for skip in test.skipped}
    assert sorted(unscored) == [6, 7, 8, 9]
    assert unscored[6].reason == "missing file"
    assert unscored[7].reason == "empty file"
    assert unscored[8].reason.startswith("cannot open")
    assert unscored[9].reason.startswith("cannot open")
    summary = test.summary()
    assert summary.startswith("test: 4 of 10 videos could not be used and were not scored")
    assert "\n" not in summary and "garbage.avi" in summary
    warned = [record.getMessage() for record in caplog.records]
    assert any("missing.mp4: missing file" in message for message in warned)
    assert any(message.startswith("test: 4 of 10") for message in warned), "epoch summary"


def test_a_dataset_where_nothing_decodes_is_a_clear_error(small_cfg, small_dataset):
    shutil.rmtree(os.path.join(small_dataset, "videos"))
    with pytest.raises(DataError, match=r"videos in a row could not be used.*missing file"):
        all_batches(build_loader(small_cfg, "train"))
    test = build_loader(small_cfg, "test")
    assert all_batches(test) == []
    assert len(test.skipped) == 6


def test_each_rank_gets_its_share(small_cfg, small_dataset, monkeypatch):
    def loaders(split, world_size=3):
        result = []
        for rank in range(world_size):
            monkeypatch.setattr(
                revvideo.data.build,
                "distributed_rank_and_world_size",
                lambda rank=rank: (rank, world_size),
            )
            result.append(build_loader(small_cfg, split))
        return result

    small_cfg.TRAIN.BATCH_SIZE = 3
    tested = [
        torch.cat([b["video_index"] for b in all_batches(loader)]).unique().tolist()
        for loader in loaders("test")
    ]
    assert sorted(itertools.chain(*tested)) == list(range(6)), "every test video exactly once"

    orders = []
    for epoch in (0, 1):
        shards = []
        for loader in loaders("train"):
            assert loader.batch_size is None and loader._batches.batch_size == 1
            loader.set_epoch(epoch)
            shards.append([b["video_index"].item() for b in all_batches(loader)])
        assert sorted(itertools.chain(*shards)) == list(range(6))
        orders.append(shards)
    assert orders[0] != orders[1], "set_epoch reshuffles"


def test_a_decoder_crash_in_a_worker_skips_that_video(small_cfg, small_dataset, monkeypatch):
    entries = good_entries()
    crash = os.path.join(small_dataset, "videos", "crash.mp4")
    shutil.copy(os.path.join(small_dataset, "videos", "v1.mp4"), crash)
    write_dataset(small_dataset, {"test": [*entries[:3], ("videos/crash.mp4", 0), *entries[3:]]})
    open_video = revvideo.data.dataset.open_video

    def crashing_open(path, *args):
        if path == crash and torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGSEGV)
        return open_video(path, *args)

    monkeypatch.setattr(revvideo.data.dataset, "open_video", crashing_open)
    small_cfg.DATA_LOADER.NUM_WORKERS = 2
    small_cfg.TEST.BATCH_SIZE = 3
    loader = build_loader(small_cfg, "test")
    batches = all_batches(loader)
    scored = sorted(torch.cat([b["video_index"] for b in batches]).unique().tolist())
    assert scored == [0, 1, 2, 4, 5, 6]
    (skip,) = loader.skipped
    assert skip.video_index == 3 and skip.path == crash
    assert "crashed" in skip.reason
