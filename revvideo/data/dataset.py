"""VideoDataset: one item per video, decoded once for every clip cut from it."""

from __future__ import annotations

import math
import multiprocessing
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from typing import NamedTuple

import numpy as np
import torch
from pytorchvideo.data.clip_sampling import ClipSampler, RandomClipSampler
from pytorchvideo.data.labeled_video_paths import LabeledVideoPaths

from revvideo.data.clip_sampling import EvenClipsPerVideoSampler, clip_starts, frame_times
from revvideo.data.decoding import VideoDecodeError, VideoReader, open_video
from revvideo.data.transforms import MultiViewCrops, TrainAugmentation

# A training item tries this many videos (the one asked for, then random others) before giving up.
MAX_TRAIN_DRAWS = 10


class SkippedVideo(NamedTuple):
    """A video left out of an epoch: its row in the video list, its path and why."""

    video_index: int
    path: str
    reason: str


class FallbackVideo(NamedTuple):
    """A video read with PyAV because decord could not read it: its row, its path and decord's
    reason."""

    video_index: int
    path: str
    fault: str


class TrainClips:
    """One random clip per video, augmented `num_samples` times (repeated augmentation)."""

    def __init__(
        self,
        num_frames: int,
        clip_duration: Fraction,
        augmentation: TrainAugmentation,
        num_samples: int = 1,
    ) -> None:
        self.num_frames = num_frames
        self.clip_duration = clip_duration
        self.sampler: ClipSampler = RandomClipSampler(clip_duration)
        self.augmentation = augmentation
        self.views_per_video = num_samples

    def __call__(self, video: VideoReader) -> torch.Tensor:
        """float32 (num_samples, 3, T, crop, crop)."""
        (start,) = clip_starts(self.sampler, video.duration)
        frames, rows = video.read_frames(frame_times(start, self.clip_duration, self.num_frames))
        clip = frames[rows].permute(0, 3, 1, 2)
        size = self.augmentation.crop_size
        views = empty_for_transfer((self.views_per_video, 3, self.num_frames, size, size))
        for view in views:
            self.augmentation(clip, out=view)
        return views


class TestClips:
    """K clips spread over the whole video x S spatial crops, from a single decoding pass."""

    def __init__(
        self,
        num_frames: int,
        clip_duration: Fraction,
        num_clips: int,
        crops: MultiViewCrops,
    ) -> None:
        self.num_frames = num_frames
        self.clip_duration = clip_duration
        self.sampler: ClipSampler = EvenClipsPerVideoSampler(clip_duration, num_clips)
        self.crops = crops
        self.views_per_video = num_clips * crops.num_spatial_crops

    def __call__(self, video: VideoReader) -> torch.Tensor:
        """(K * S, 3, T, crop, crop) of crops.dtype; view k * S + s is crop s of clip k."""
        clip_times = [
            frame_times(start, self.clip_duration, self.num_frames)
            for start in clip_starts(self.sampler, video.duration)
        ]
        # Overlapping clips share frames: each distinct time is read once.
        times = sorted({time for times in clip_times for time in times})
        frames, rows = video.read_frames(times, short_side=self.crops.crop_size)
        row_of_time = dict(zip(times, rows, strict=True))
        size = self.crops.crop_size
        views = empty_for_transfer(
            (self.views_per_video, 3, self.num_frames, size, size), self.crops.dtype
        )
        clip_rows = [[row_of_time[time] for time in times] for times in clip_times]
        return self.crops(frames, clip_rows, out=views)


def empty_for_transfer(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An uninitialised tensor; inside a loader worker, in shared memory.

    Views written there reach the main process without a copy, as default_collate's batches do
    (it allocates them the same way); a batch of one video is passed on as it is.
    """
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * dtype.itemsize)
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


class VideoDataset(torch.utils.data.Dataset):
    """Videos of a pytorchvideo LabeledVideoPaths list; item i is video i, all its clips at once.

    An item is a dict:
      "video": (V, 3, T, H, W), V = clips.views_per_video, or V = 0 when unusable: float32
        normalised clips, or uint8 test views for a GPU (see MultiViewCrops);
      "label": int; "video_index": int (row in the list);
      "view_index": int64 (V,): the repeated-augmentation index (train) or k * S + s (test);
      "skipped": list of SkippedVideo met while making the item;
      "fallbacks": list of FallbackVideo (only with `backend` "decord", see
        decoding.DecordVideo).
    `class_names` names the labels (by index), None when the list names no classes; labels are
    below `num_classes`.
    In training an unusable video is replaced by a random other one (up to MAX_TRAIN_DRAWS
    tries); otherwise the item has no views and names the video in "skipped".
    With `seed`, every random choice an item makes (clip start, augmentation, replacement
    video) comes from generators seeded by (seed, `epoch`, index): an epoch's clips are the same
    whichever process or loader worker makes them, in whatever order, and a run resumed in the
    middle of an epoch makes the rest of it exactly as an uninterrupted run would. Item
    i + k * len(self) is video i again with random choices of its own: a video drawn k + 1 times
    in an epoch (ClassBalancedSampler) gives k + 1 different items.
    """

    def __init__(
        self,
        videos: LabeledVideoPaths,
        clips: TrainClips | TestClips,
        *,
        training: bool,
        num_classes: int,
        backend: str = "pyav",
        decoder_threads: int = 1,
        class_names: list[str] | None = None,
        seed: int | None = None,
    ) -> None:
        self.videos = videos
        self.seed = seed
        self.epoch = 0
        self.class_names = class_names
        self.num_classes = num_classes
        self.clips = clips
        self.views_per_video = clips.views_per_video
        self.training = training
        self.backend = backend
        self.decoder_threads = decoder_threads
        # Videos that crashed a loader worker this epoch; never opened again.
        self.excluded: set[int] = set()
        # Per worker: (pid, index of the video being decoded or -1), read after a worker dies.
        self._progress = None

    def __len__(self) -> int:
        return len(self.videos)

    def label(self, index: int) -> int:
        return self.videos[index][1]["label"]

    def path(self, index: int) -> str:
        return self.videos[index][0]

    def track_progress(self, num_workers: int):
        """Shared memory where each worker notes (its pid, the video it decodes or -1).

        Made before the workers start; VideoLoader reads it when a worker dies.
        """
        self._progress = multiprocessing.RawArray("q", [-1] * (2 * num_workers))
        return self._progress

    def __getitem__(self, key: int) -> dict:
        repeat, index = divmod(key, len(self))
        if self.seed is None:
            return self._make_item(index)
        # A first draw is seeded as before repeats existed: epochs without them are unchanged.
        with _generators_seeded_by(self.seed, self.epoch, index, *([repeat] if repeat else [])):
            return self._make_item(index)

    def _make_item(self, index: int) -> dict:
        skipped, fallbacks = [], []
        draws = MAX_TRAIN_DRAWS if self.training else 1
        for draw in range(draws):
            if draw:
                index = random.randrange(len(self))
            path = self.path(index)
            try:
                views = self._decode(index, path, fallbacks)
            except Exception as err:  # Any failure on one video skips it, never the epoch.
                skipped.append(SkippedVideo(index, path, _reason(err)))
                continue
            return {
                "video": views,
                "label": self.label(index),
                "video_index": index,
                "view_index": torch.arange(len(views)),
                "skipped": skipped,
                "fallbacks": fallbacks,
            }
        return {
            "video": torch.empty(0),
            "label": -1,
            "video_index": index,
            "view_index": torch.empty(0, dtype=torch.long),
            "skipped": skipped,
            "fallbacks": fallbacks,
        }

    def _decode(self, index: int, path: str, fallbacks: list[FallbackVideo]) -> torch.Tensor:
        if index in self.excluded:
            raise VideoDecodeError("crashed a loader worker earlier this epoch")
        self._note_progress(index)
        try:
            video = open_video(path, self.backend, self.decoder_threads)
            try:
                views = self.clips(video)
            finally:
                video.close()
            if getattr(video, "fallback", None):
                fallbacks.append(FallbackVideo(index, path, video.fallback))
            return views
        finally:
            self._note_progress(-1)

    def _note_progress(self, index: int) -> None:
        worker = torch.utils.data.get_worker_info()
        if self._progress is not None and worker is not None:
            self._progress[2 * worker.id] = os.getpid()
            self._progress[2 * worker.id + 1] = index


def class_counts(dataset: VideoDataset) -> list[int]:
    """Videos per class, (dataset.num_classes,), read from the list (nothing is decoded)."""
    counts = [0] * dataset.num_classes
    for index in range(len(dataset)):
        counts[dataset.label(index)] += 1
    return counts


@contextmanager
def _generators_seeded_by(*key: int) -> Iterator[None]:
    """Python's and torch's CPU generators seeded from `key` inside, as they were after."""
    # SeedSequence mixes the key: items next to each other get unrelated streams.
    seed = int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0])
    python_state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        # Not torch.manual_seed: that also reseeds the GPUs, whose generators (dropout) are
        # the training process's own.
        torch.default_generator.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)


def _reason(err: Exception) -> str:
    if isinstance(err, VideoDecodeError):
        return str(err)
    return f"{type(err).__name__}: {err}"
