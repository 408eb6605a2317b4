"""Fixtures: a small config and a small dataset of indexed videos (see videos.py)."""

import os

import pytest

from revvideo.config import get_cfg

from .videos import good_entries, write_dataset, write_indexed_video


@pytest.fixture
def small_cfg():
    """Config for 4-frame clips of 32 px from 15 fps videos, no workers, small batches."""
    cfg = get_cfg()
    cfg.MODEL.NUM_CLASSES = 3
    cfg.DATA.NUM_FRAMES = 4
    cfg.DATA.SAMPLING_RATE = 2
    cfg.DATA.TARGET_FPS = 15
    cfg.DATA.TRAIN_JITTER_SCALES = [36, 44]
    cfg.DATA.TRAIN_CROP_SIZE = 32
    cfg.DATA.TEST_CROP_SIZE = 32
    cfg.TRAIN.BATCH_SIZE = 2
    cfg.TEST.BATCH_SIZE = 6
    cfg.TEST.NUM_ENSEMBLE_VIEWS = 3
    cfg.TEST.NUM_SPATIAL_CROPS = 1
    cfg.DATA_LOADER.NUM_WORKERS = 0
    cfg.DATA_LOADER.PIN_MEMORY = False
    return cfg


@pytest.fixture
def small_dataset(tmp_path, small_cfg):
    """Six good 2 s videos (two per class, mp4 and avi) listed in train/val/test CSVs."""
    entries = good_entries()
    os.makedirs(tmp_path / "videos", exist_ok=True)
    for name, _ in entries:
        write_indexed_video(tmp_path / name, count=30)
    root = write_dataset(tmp_path, {"train": entries, "val": entries, "test": entries})
    small_cfg.DATA.PATH_TO_DATA_DIR = root
    return root
