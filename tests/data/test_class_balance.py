"""Imbalanced classes: DATA.CLASS_BALANCE sampler draws each class equally often, sharded over
ranks; class_counts reads the list; prepare_kinetics prints videos per class and warns of
classes with fewer than two; loader workers never outnumber the CPUs."""

import logging
import math
import os
import warnings
from collections import Counter

import pytest
import torch

import revvideo.data.build
import revvideo.data.dataset
from revvideo.data import build_dataset, build_loader
from revvideo.data.dataset import class_counts
from revvideo.data.loader import ClassBalancedSampler

from .tools import load_tool, run_tool
from .videos import good_entries, write_dataset

# 100 videos: 60, 30, 9 and 1 of classes 0-3.
IMBALANCED = [0] * 60 + [1] * 30 + [2] * 9 + [3]


def test_the_sampler_draws_each_class_about_equally_often():
    sampler = ClassBalancedSampler(IMBALANCED, seed=0)
    draws = []
    for epoch in range(20):
        sampler.set_epoch(epoch)
        epoch_draws = list(sampler)
        assert len(epoch_draws) == len(sampler) == len(IMBALANCED), "an epoch keeps its size"
        draws += [key % len(IMBALANCED) for key in epoch_draws]
    per_class = Counter(IMBALANCED[index] for index in draws)
    # Each class is a binomial(2000, 1/4): 500 draws, spread sqrt(2000 * 1/4 * 3/4) = 19.4.
    spread = math.sqrt(len(draws) * 0.25 * 0.75)
    for label in range(4):
        assert abs(per_class[label] - len(draws) / 4) < 4 * spread, per_class
    # Within a class, every video in turn: class 1's 30 videos all come up.
    assert {index for index in draws if IMBALANCED[index] == 1} == set(range(60, 90))


def test_the_sampler_repeats_for_a_seed_and_epoch_and_reshuffles_for_another():
    def epoch_draws(seed, epoch):
        sampler = ClassBalancedSampler(IMBALANCED, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert epoch_draws(0, 3) == epoch_draws(0, 3)
    assert epoch_draws(0, 3) != epoch_draws(0, 4)
    assert epoch_draws(0, 3) != epoch_draws(1, 3)


def test_shards_are_disjoint_parts_of_one_draw_and_repeats_are_numbered():
    shards = []
    for rank in range(3):
        sampler = ClassBalancedSampler(IMBALANCED, rank=rank, world_size=3, seed=0)
        sampler.set_epoch(5)
        shards.append(list(sampler))
    # 100 videos over 3 ranks: 34 each, as DistributedSampler pads them.
    assert [len(shard) for shard in shards] == [34, 34, 34]
    keys = [key for shard in shards for key in shard]
    assert len(set(keys)) == len(keys), "no draw on two ranks"
    # The k-th draw of video i is i + k * 100: video 99 (class 3) comes up about 25 times.
    repeats = sorted(key // 100 for key in keys if key % 100 == 99)
    assert repeats == list(range(len(repeats))) and len(repeats) > 10


def test_the_train_loader_balances_a_list_and_a_repeated_video_gets_other_clips(
    small_cfg, small_dataset
):
    entries = good_entries()
    # Five videos of class 0, one of class 1.
    train = [(path, 0) for path, _ in entries[:5]] + [(entries[5][0], 1)]
    write_dataset(small_dataset, {"train": train})
    small_cfg.DATA.CLASS_BALANCE = "sampler"
    small_cfg.AUG.ENABLE = True
    loader = build_loader(small_cfg, "train")
    assert class_counts(loader.dataset) == [5, 1, 0]
    # Video 5, a class of its own, is drawn about half the time: an epoch that draws it twice.
    epoch = next(e for e in range(10) if _draws(loader, e).count(5) >= 2)
    loader.set_epoch(epoch)
    batches = [batch for batch in loader]
    drawn = [int(i) for batch in batches for i in batch["video_index"]]
    assert drawn == _draws(loader, epoch) and len(drawn) == 6
    clips = torch.cat([b["video"] for b in batches])[torch.tensor(drawn) == 5]
    assert not torch.equal(clips[0], clips[1]), "a repeat of a video is another clip"
    loader.set_epoch(epoch)
    again = [batch for batch in loader]
    for batch, same in zip(batches, again, strict=True):
        assert torch.equal(batch["video"], same["video"]), "an epoch makes the same clips again"
    assert _draws(loader, epoch + 1) != drawn, "set_epoch reshuffles"


def _draws(loader, epoch):
    """The videos the training loader draws in `epoch`, by their row in the list."""
    loader.set_epoch(epoch)
    return [key % len(loader.dataset) for key in loader.batch_sampler.sampler]


def test_class_counts_read_the_list_without_decoding(small_cfg, small_dataset, monkeypatch):
    def decodes(*args, **kwargs):
        raise AssertionError("class_counts decoded a video")

    monkeypatch.setattr(revvideo.data.dataset, "open_video", decodes)
    entries = good_entries()
    write_dataset(small_dataset, {"train": [(path, 2) for path, _ in entries[:4]]})
    assert class_counts(build_dataset(small_cfg, "train")) == [0, 0, 4]


@pytest.fixture
def two_cpus(monkeypatch):
    """This process may run on 2 CPUs; the once-a-process notice is said afresh."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    revvideo.data.build._note_fewer_workers.cache_clear()
    yield
    revvideo.data.build._note_fewer_workers.cache_clear()


def test_loader_workers_are_capped_at_the_cpus_with_one_notice(
    small_cfg, small_dataset, two_cpus, caplog
):
    small_cfg.DATA_LOADER.NUM_WORKERS = 8
    with caplog.at_level(logging.INFO, logger="revvideo.data.build"):
        loaders = [build_loader(small_cfg, split) for split in ("train", "val", "test")]
    assert [loader.num_workers for loader in loaders] == [2, 2, 2]
    notes = [record.getMessage() for record in caplog.records if "workers" in record.getMessage()]
    assert notes == [
        "2 loader workers instead of DATA_LOADER.NUM_WORKERS 8: this process may use 2 CPUs"
    ]
    # PyTorch's own warning reads the same CPUs, and has nothing to say.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaders[0].check_worker_number_rationality()
    loaders[0].num_workers = 8
    with pytest.warns(UserWarning, match="8 worker processes"):
        loaders[0].check_worker_number_rationality()

    small_cfg.DATA_LOADER.NUM_WORKERS = 1
    caplog.clear()
    assert build_loader(small_cfg, "train").num_workers == 1
    assert "workers" not in caplog.text


def test_prepare_kinetics_prints_videos_per_class_and_warns_of_a_class_with_one(tmp_path, capsys):
    counts = {"train": {"cooking": 3, "dancing": 1}, "val": {"cooking": 2, "dancing": 2}}
    for split, per_class in counts.items():
        for name, count in per_class.items():
            os.makedirs(tmp_path / "videos" / split / name)
            for number in range(count):
                (tmp_path / "videos" / split / name / f"{number}.mp4").touch()
    out = tmp_path / "out"
    status, printed, _ = run_tool(
        load_tool("prepare_kinetics"), capsys, out, "--videos", tmp_path / "videos"
    )
    assert status == 0
    assert (
        "videos per class:\n  class    train  val\n  cooking      3    2\n  dancing      1    2\n"
    ) in printed
    warned = [line for line in printed.splitlines() if line.startswith("warning:")]
    assert warned == [
        "warning: train: 1 of 2 classes has fewer than two videos (the model learns them from "
        "one video or none): 'dancing'"
    ]
