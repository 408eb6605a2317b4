"""Data-loading throughput, side by side on the same files (the data section of tools/benchmark.py).

Rows, all with the same number of worker processes over the same video files:
  train clips/s with full augmentation (16x4 clips at 30 fps, random resized crop to 224, flip,
  RandAugment rand-m7-n4-mstd0.5-inc1, random erasing 0.25), for revvideo's loader with PyAV and
  with decord, and for the plain pytorchvideo recipe (Kinetics + RandomClipSampler + per-clip
  pytorchvideo transforms, torchvision's random erasing);
  test videos/s for 5 x 3 multi-view (short side 224, three 224 crops), revvideo (PyAV and
  decord) against the plain recipe (Kinetics + ConstantClipsPerVideoSampler + per-clip
  transforms);
  the floor: videos/s for decoding every frame of every file once (PyAV, no RGB conversion).

Without --data-dir, Kinetics-like files are generated once and cached: 10 s, 30 fps H.264 of
--data-video-size (default 426x320: short side 320, as tools/prepare_kinetics.py makes them;
340x256 is the other common Kinetics copy). The command line (its options
--data-dir, --data-videos, --data-video-size, --data-workers, --data-worker-counts) is
tools/benchmark.py's.
"""

from __future__ import annotations

import os
import tempfile
import time

import av
import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as tv_transforms
from torch.utils.data import DataLoader, Dataset

from revvideo.benchmark.settings import Settings
from revvideo.config import get_cfg
from revvideo.data.build import build_loader
from revvideo.data.clip_sampling import clip_duration
from revvideo.data.pytorchvideo_transforms import RandAugment
from revvideo.data.synthetic import write_video

# The clips of PySlowFast's Rev-MViT-B 16x4 config (configs/Kinetics/REV_MVIT_B_16x4_CONV.yaml
# there, configs/kinetics/REV_MVIT_B_16x4.yaml here): 16 frames, one every 4 at 30 fps, 224 px
# crops, its mean and std. Its test takes 5 clips x 1 crop; 5 x 3 here, the heavier protocol.
# TRAIN_BATCH: the videos per GPU of configs/kinetics/REV_MVIT_B_16x4.yaml.
NUM_FRAMES, SAMPLING_RATE, TARGET_FPS = 16, 4, 30
CROP_SIZE = 224
NUM_CLIPS, NUM_CROPS = 5, 3
MEAN, STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)
TRAIN_BATCH = 8

_VIDEO_SECONDS, _VIDEO_FPS = 10, 30


def run(settings: Settings) -> list[dict]:
    """One dict per row: name, clips/s (train) or videos/s (test), seconds, x plain."""
    folder = video_folder(settings)
    workers = settings.data_workers
    train = (
        ("train: plain pytorchvideo recipe (pyav)", lambda: _time_plain_train(folder, workers)),
        ("train: revvideo, pyav", lambda: _time_revvideo(folder, "train", "pyav", workers)),
        ("train: revvideo, decord", lambda: _time_revvideo(folder, "train", "decord", workers)),
    )
    test = (
        ("test 5x3: plain pytorchvideo recipe (pyav)", lambda: _time_plain_test(folder, workers)),
        ("test 5x3: revvideo, pyav", lambda: _time_revvideo(folder, "test", "pyav", workers)),
        ("test 5x3: revvideo, decord", lambda: _time_revvideo(folder, "test", "decord", workers)),
        (
            "test 5x3: revvideo, pyav, uint8 views for a GPU",
            lambda: _time_revvideo(folder, "test", "pyav", workers, views_for_gpu=True),
        ),
        ("decode every frame once (pyav), the floor", lambda: _time_decode_only(folder, workers)),
    )
    videos = len(_lines(folder, "test"))
    rows = []
    for unit, timers in (("clips/s", train), ("videos/s", test)):
        plain = None
        for name, timer in timers:
            clips, seconds = timer()
            rate = (clips if unit == "clips/s" else videos) / seconds
            plain = plain or rate
            rows.append(
                {
                    "name": name,
                    unit: round(rate, 2),
                    "seconds": round(seconds, 2),
                    "x plain": round(rate / plain, 2),
                }
            )
    return rows


def run_workers(settings: Settings) -> list[dict]:
    """Training clips/s of revvideo's loader (PyAV, the recipe's augmentation) with each of
    --data-worker-counts workers, and per worker: the workers a GPU needs are its training
    clips/s divided by the per-worker figure."""
    folder = video_folder(settings)
    rows = []
    for asked in settings.data_worker_counts:
        loader = build_loader(loader_config(folder, "pyav", asked), "train")
        clips, seconds = _time_loader(loader)
        rate, workers = clips / seconds, loader.num_workers  # at most the CPUs available
        rows.append(
            {
                "workers": workers,
                "clips/s": round(rate, 2),
                "clips/s per worker": round(rate / max(workers, 1), 2),
                "seconds": round(seconds, 2),
            }
        )
    return rows


def loader_config(
    folder: str,
    backend: str,
    workers: int,
    *,
    frames: int = NUM_FRAMES,
    crop_size: int = CROP_SIZE,
    batch: int = TRAIN_BATCH,
):
    """The recipe's data config (its clip geometry unless given) reading `folder`'s lists."""
    cfg = get_cfg()
    cfg.MODEL.NUM_CLASSES = 400  # Kinetics-like videos, all labelled 0
    cfg.DATA.PATH_TO_DATA_DIR = folder
    cfg.DATA.DECODING_BACKEND = backend
    cfg.DATA.NUM_FRAMES, cfg.DATA.SAMPLING_RATE, cfg.DATA.TARGET_FPS = (
        frames,
        SAMPLING_RATE,
        TARGET_FPS,
    )
    cfg.DATA.TRAIN_CROP_SIZE = cfg.DATA.TEST_CROP_SIZE = crop_size
    cfg.DATA.TRAIN_JITTER_SCALES_RELATIVE = [0.08, 1.0]
    cfg.DATA.TRAIN_JITTER_ASPECT_RELATIVE = [0.75, 1.3333]
    cfg.AUG.ENABLE = True
    cfg.AUG.AA_TYPE = "rand-m7-n4-mstd0.5-inc1"
    cfg.AUG.RE_PROB = 0.25
    cfg.TRAIN.BATCH_SIZE = batch
    cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS = NUM_CLIPS, NUM_CROPS
    cfg.TEST.BATCH_SIZE = NUM_CLIPS * NUM_CROPS
    cfg.DATA_LOADER.NUM_WORKERS = workers
    return cfg


def _time_revvideo(
    folder: str, split: str, backend: str, workers: int, views_for_gpu: bool = False
) -> tuple[int, float]:
    """With `views_for_gpu`, test batches are uint8 views; their normalisation, one elementwise
    pass on the GPU, is not timed."""
    loader = build_loader(loader_config(folder, backend, workers), split, views_for_gpu)
    return _time_loader(loader)


def _time_loader(loader) -> tuple[int, float]:
    """(clips delivered, seconds) for one pass, worker start-up included."""
    start = time.perf_counter()
    clips = sum(len(batch["video"]) for batch in loader)
    return clips, time.perf_counter() - start


def _time_plain_train(folder: str, workers: int) -> tuple[int, float]:
    from pytorchvideo.data import Kinetics, RandomClipSampler
    from pytorchvideo.transforms import (
        ApplyTransformToKey,
        Div255,
        Normalize,
        Permute,
        RandomResizedCrop,
        UniformTemporalSubsample,
    )

    transform = ApplyTransformToKey(
        "video",
        tv_transforms.Compose(
            [
                UniformTemporalSubsample(NUM_FRAMES),
                Div255(),
                Permute((1, 0, 2, 3)),
                RandAugment(magnitude=7, num_layers=4, sampling_hparas={"sampling_std": 0.5}),
                tv_transforms.RandomErasing(p=0.25, value="random"),
                Permute((1, 0, 2, 3)),
                Normalize(MEAN, STD),
                RandomResizedCrop(CROP_SIZE, CROP_SIZE, (0.08, 1.0), (0.75, 1.3333)),
                tv_transforms.RandomHorizontalFlip(),
            ]
        ),
    )
    dataset = Kinetics(
        os.path.join(folder, "train.csv"),
        RandomClipSampler(clip_duration(NUM_FRAMES, SAMPLING_RATE, TARGET_FPS)),
        transform=transform,
        video_path_prefix=folder,
        decode_audio=False,
    )
    loader = DataLoader(
        _ClipsOnly(dataset), batch_size=TRAIN_BATCH, num_workers=workers, collate_fn=_stack
    )
    return _time_loader(loader)


def _time_plain_test(folder: str, workers: int) -> tuple[int, float]:
    from pytorchvideo.data import Kinetics
    from pytorchvideo.data.clip_sampling import ConstantClipsPerVideoSampler
    from pytorchvideo.transforms import (
        ApplyTransformToKey,
        Div255,
        Normalize,
        ShortSideScale,
        UniformCropVideo,
        UniformTemporalSubsample,
    )

    transform = tv_transforms.Compose(
        [
            ApplyTransformToKey(
                "video",
                tv_transforms.Compose(
                    [
                        UniformTemporalSubsample(NUM_FRAMES),
                        Div255(),
                        Normalize(MEAN, STD),
                        ShortSideScale(CROP_SIZE),
                    ]
                ),
            ),
            UniformCropVideo(CROP_SIZE),
        ]
    )
    dataset = Kinetics(
        os.path.join(folder, "test.csv"),
        ConstantClipsPerVideoSampler(
            clip_duration(NUM_FRAMES, SAMPLING_RATE, TARGET_FPS), NUM_CLIPS, augs_per_clip=NUM_CROPS
        ),
        video_sampler=torch.utils.data.SequentialSampler,
        transform=transform,
        video_path_prefix=folder,
        decode_audio=False,
    )
    loader = DataLoader(
        _ClipsOnly(dataset),
        batch_size=NUM_CLIPS * NUM_CROPS,
        num_workers=workers,
        collate_fn=_stack,
    )
    return _time_loader(loader)


class _ClipsOnly(torch.utils.data.IterableDataset):
    """Yields only the clip tensors of a pytorchvideo dataset (its dicts hold strings too)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __iter__(self):
        for sample in self.dataset:
            yield sample["video"]


def _stack(clips):
    return {"video": torch.stack(clips)}


class _DecodeEveryFrame(Dataset):
    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> int:
        with av.open(self.paths[index]) as container:
            stream = container.streams.video[0]
            stream.thread_count = 1
            return sum(1 for _ in container.decode(stream))


def _time_decode_only(folder: str, workers: int) -> tuple[int, float]:
    paths = [os.path.join(folder, line.rsplit(None, 1)[0]) for line in _lines(folder, "test")]
    loader = DataLoader(_DecodeEveryFrame(paths), batch_size=None, num_workers=workers)
    start = time.perf_counter()
    frames = sum(loader)
    return frames, time.perf_counter() - start


def _lines(folder: str, split: str) -> list[str]:
    with open(os.path.join(folder, f"{split}.csv")) as csv:
        return [line for line in csv.read().splitlines() if line.strip()]


def video_folder(settings: Settings, count: int | None = None) -> str:
    """--data-dir, else a folder of `count` (default: --data-videos) generated videos."""
    if settings.data_dir:
        return settings.data_dir
    width, height = settings.data_video_size
    return benchmark_videos(count or settings.data_videos, width, height)


def benchmark_videos(count: int, width: int, height: int) -> str:
    """Generates (once) `count` Kinetics-like videos and their train/test CSVs; returns the folder."""
    folder = os.path.join(
        tempfile.gettempdir(), f"revvideo-benchmark-{count}x{_VIDEO_SECONDS}s-{width}x{height}"
    )
    if os.path.isfile(os.path.join(folder, "test.csv")):
        return folder
    os.makedirs(os.path.join(folder, "videos"), exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for index in range(count):
        name = f"videos/{index:03d}.mp4"
        write_video(os.path.join(folder, name), _panning_texture(rng, width, height), _VIDEO_FPS)
        names.append(f"{name} 0\n")
    for split in ("train", "test"):
        with open(os.path.join(folder, f"{split}.csv"), "w") as csv:
            csv.writelines(names)
    return folder


def _panning_texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """uint8 (T, H, W, 3): a textured scene panning across the frame, so every frame changes."""
    count = _VIDEO_SECONDS * _VIDEO_FPS
    coarse = torch.from_numpy(rng.random((1, 3, 12, 16), dtype=np.float32))
    scene = F.interpolate(coarse, size=(2 * height, 2 * width), mode="bicubic")[0]
    scene = scene.permute(1, 2, 0).numpy() + 0.25 * rng.random((2 * height, 2 * width, 3))
    scene = np.clip(scene * 200, 0, 255).astype(np.uint8)
    frames = np.empty((count, height, width, 3), dtype=np.uint8)
    for index in range(count):
        top, left = (index * 2) % height, (index * 3) % width
        frames[index] = scene[top : top + height, left : left + width]
    return frames
