"""build_dataset / build_loader: the data pipeline described by a config."""

from __future__ import annotations

import functools
import logging
import os

import torch
from fvcore.common.config import CfgNode
from pytorchvideo.data.labeled_video_paths import LabeledVideoPaths
from torch.utils.data.distributed import DistributedSampler

from revvideo.classes import dataset_class_names
from revvideo.config.validate import check_choice, validate_config
from revvideo.data.clip_sampling import clip_duration
from revvideo.data.dataset import TestClips, TrainClips, VideoDataset, class_counts
from revvideo.data.decoding import BACKENDS
from revvideo.data.loader import ClassBalancedSampler, ShardSampler, VideoLoader
from revvideo.data.paths import SPLITS, read_video_list
from revvideo.data.transforms import (
    ERASE_MODES,
    INTERPOLATIONS,
    MultiViewCrops,
    Normalize,
    TrainAugmentation,
    parse_rand_augment,
)
from revvideo.utils.errors import ConfigError

logger = logging.getLogger(__name__)

# PySlowFast's MViT configs name torchvision's decoder, which pytorchvideo 0.1.5 cannot drive
# with torchvision 0.29; PyAV decodes the same frames.
BACKEND_ALIASES = {"torchvision": "pyav"}


def build_dataset(cfg: CfgNode, split: str, views_for_gpu: bool = False) -> VideoDataset:
    """The VideoDataset of `split` ("train", "val" or "test") under DATA.PATH_TO_DATA_DIR.

    train: one random clip per video, augmented AUG.NUM_SAMPLE times; val: the centre clip,
    centre crop; test: TEST.NUM_ENSEMBLE_VIEWS clips x TEST.NUM_SPATIAL_CROPS crops. Val and
    test views are uint8, for the GPU to normalise, if `views_for_gpu` (the caller knows where
    the model runs), else normalised float32 (see MultiViewCrops).
    The config is checked first (it may have been made in code).
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    validate_config(cfg)
    check_data_config(cfg)
    backend = _backend(cfg)
    videos, class_names = split_videos(cfg, split)
    num_frames = cfg.DATA.NUM_FRAMES
    duration = clip_duration(num_frames, cfg.DATA.SAMPLING_RATE, cfg.DATA.TARGET_FPS)
    if split == "train":
        clips = TrainClips(
            num_frames, duration, _train_augmentation(cfg), num_samples=cfg.AUG.NUM_SAMPLE
        )
    else:
        num_clips, num_crops = (
            (cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS) if split == "test" else (1, 1)
        )
        normalize = None if views_for_gpu else Normalize(cfg.DATA.MEAN, cfg.DATA.STD)
        crops = MultiViewCrops(cfg.DATA.TEST_CROP_SIZE, num_crops, normalize)
        clips = TestClips(num_frames, duration, num_clips, crops)
    threads = 0 if cfg.DATA_LOADER.ENABLE_MULTI_THREAD_DECODE else 1
    return VideoDataset(
        videos,
        clips,
        training=split == "train",
        num_classes=len(class_names) if class_names else cfg.MODEL.NUM_CLASSES,
        backend=backend,
        decoder_threads=threads,
        class_names=class_names,
        seed=cfg.RNG_SEED if split == "train" else None,
    )


def check_data_config(cfg: CfgNode) -> None:
    """ConfigError (one line, naming the key) for a decoder or augmentation the data pipeline
    does not have."""
    check_choice("DATA.DECODING_BACKEND", cfg.DATA.DECODING_BACKEND, (*BACKENDS, *BACKEND_ALIASES))
    check_choice("AUG.INTERPOLATION", cfg.AUG.INTERPOLATION, INTERPOLATIONS)
    check_choice("AUG.RE_MODE", cfg.AUG.RE_MODE, ERASE_MODES)
    parse_rand_augment(cfg.AUG.AA_TYPE)  # a ConfigError naming AUG.AA_TYPE and the notation


def split_videos(cfg: CfgNode, split: str) -> tuple[LabeledVideoPaths, list[str] | None]:
    """The videos `split` lists under DATA.PATH_TO_DATA_DIR (read_video_list), and the
    dataset's class names (None where it names none)."""
    if not cfg.DATA.PATH_TO_DATA_DIR:
        raise ConfigError("DATA.PATH_TO_DATA_DIR is not set: the folder holding train.csv etc.")
    class_names = dataset_class_names(cfg.DATA.PATH_TO_DATA_DIR)
    videos = read_video_list(
        cfg.DATA.PATH_TO_DATA_DIR,
        split,
        len(class_names) if class_names else cfg.MODEL.NUM_CLASSES,
        cfg.DATA.PATH_PREFIX,
        cfg.DATA.PATH_LABEL_SEPARATOR,
    )
    return videos, class_names


def build_loader(cfg: CfgNode, split: str, views_for_gpu: bool = False) -> VideoLoader:
    """A VideoLoader for `split`, sharded over the torch.distributed ranks when initialised,
    with DATA_LOADER.NUM_WORKERS workers or as many as there are CPUs to run them, if fewer.

    train: TRAIN.BATCH_SIZE / world videos per batch (x AUG.NUM_SAMPLE clips), shuffled by a
    DistributedSampler seeded with RNG_SEED (call `set_epoch`), or drawn class-balanced by a
    ClassBalancedSampler (DATA.CLASS_BALANCE sampler), last partial batch dropped when there is
    a full one.
    val/test: whole videos per batch, about TEST.BATCH_SIZE / world clips (at least one
    video), each video on exactly one rank, in list order.
    """
    dataset = build_dataset(cfg, split, views_for_gpu)
    rank, world_size = distributed_rank_and_world_size()
    if split == "train":
        sampler = _train_sampler(cfg, dataset, rank, world_size)
        videos_per_batch = max(1, cfg.TRAIN.BATCH_SIZE // world_size)
        drop_last = len(sampler) >= videos_per_batch
    else:
        sampler = ShardSampler(len(dataset), rank, world_size)
        clips_per_batch = max(1, cfg.TEST.BATCH_SIZE // world_size)
        videos_per_batch = max(1, clips_per_batch // dataset.views_per_video)
        drop_last = False
    return VideoLoader(
        dataset,
        sampler,
        videos_per_batch,
        normalize=Normalize(cfg.DATA.MEAN, cfg.DATA.STD),
        drop_last=drop_last,
        num_workers=_workers(cfg.DATA_LOADER.NUM_WORKERS),
        pin_memory=cfg.DATA_LOADER.PIN_MEMORY and torch.cuda.is_available(),
        name=split,
    )


def distributed_rank_and_world_size() -> tuple[int, int]:
    """(rank, world size) of torch.distributed, or (0, 1) when it is not initialised."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _train_sampler(
    cfg: CfgNode, dataset: VideoDataset, rank: int, world_size: int
) -> DistributedSampler | ClassBalancedSampler:
    if cfg.DATA.CLASS_BALANCE != "sampler":
        return DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=cfg.RNG_SEED
        )
    counts = [count for count in class_counts(dataset) if count]
    logger.info(
        "class-balanced sampling (DATA.CLASS_BALANCE sampler): each of %d classes of %d to %d "
        "training videos is drawn about %.3g times an epoch",
        len(counts),
        min(counts),
        max(counts),
        len(dataset) / len(counts),
    )
    labels = [dataset.label(index) for index in range(len(dataset))]
    return ClassBalancedSampler(labels, rank, world_size, cfg.RNG_SEED)


def _workers(asked: int) -> int:
    """`asked`, or the CPUs this process may run on if fewer: more workers only wait for CPUs."""
    cpus = len(os.sched_getaffinity(0))
    if asked > cpus:
        _note_fewer_workers(asked, cpus)
    return min(asked, cpus)


@functools.cache  # once a process: train and val loaders ask alike
def _note_fewer_workers(asked: int, cpus: int) -> None:
    logger.info(
        "%d loader workers instead of DATA_LOADER.NUM_WORKERS %d: this process may use %d CPUs",
        cpus,
        asked,
        cpus,
    )


def _backend(cfg: CfgNode) -> str:
    backend = cfg.DATA.DECODING_BACKEND
    if backend in BACKEND_ALIASES:
        logger.warning("DATA.DECODING_BACKEND %s is read as %s", backend, BACKEND_ALIASES[backend])
    return BACKEND_ALIASES.get(backend, backend)


def _train_augmentation(cfg: CfgNode) -> TrainAugmentation:
    data, aug = cfg.DATA, cfg.AUG
    return TrainAugmentation(
        crop_size=data.TRAIN_CROP_SIZE,
        jitter_scales=data.TRAIN_JITTER_SCALES,
        relative_scales=data.TRAIN_JITTER_SCALES_RELATIVE,
        relative_aspects=data.TRAIN_JITTER_ASPECT_RELATIVE,
        flip=data.RANDOM_FLIP,
        interpolation=aug.INTERPOLATION,
        augment=aug.ENABLE,
        rand_augment=parse_rand_augment(aug.AA_TYPE),
        color_jitter=aug.COLOR_JITTER,
        erase_prob=aug.RE_PROB,
        erase_mode=aug.RE_MODE,
        erase_count=aug.RE_COUNT,
        mean=data.MEAN,
        std=data.STD,
    )
