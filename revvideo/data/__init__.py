"""The video data pipeline: lists of videos -> decoded, sampled, augmented clip batches.

Public API
----------
`build_dataset(cfg, split)` -> VideoDataset and `build_loader(cfg, split)` -> VideoLoader (a
torch.utils.data.DataLoader), for split "train", "val" or "test". Videos are listed in
`DATA.PATH_TO_DATA_DIR/<split>.csv` (`path label` lines) or a `<split>/<class>/<video>` tree.
`SoftTargets.from_cfg(cfg)` turns training labels into soft targets (label smoothing,
mixup / cutmix). `revvideo.data.synthetic.ensure_synthetic_dataset` makes the small motion
dataset that the quick start's config, configs/synthetic/REV_MVIT_XS.yaml, trains on (generated
on first use, as that config sets DATA.GENERATE_SYNTHETIC).

Batch contract (every split)
----------------------------
A batch is a dict whose rows are clips:
  "video":       (B, 3, T, H, W), T = DATA.NUM_FRAMES, H = W = DATA.TRAIN_CROP_SIZE (train)
                 or DATA.TEST_CROP_SIZE (val, test); float32, normalised with DATA.MEAN /
                 DATA.STD, except val and test views when CUDA is available: uint8 pixels
                 (a quarter of the bytes to write, share between processes and transfer),
                 which `loader.model_input(video, device)` normalises on the GPU;
  "label":       int64 (B,) class index;
  "video_index": int64 (B,) row of the video in the split's CSV (or folder listing);
  "view_index":  int64 (B,) which view of that video the clip is;
  "skipped":     list of SkippedVideo(video_index, path, reason) met while making the batch;
  "fallbacks":   list of FallbackVideo(video_index, path, fault): videos read with PyAV because
                 decord could not read them.
Train: B = videos per batch x AUG.NUM_SAMPLE; the AUG.NUM_SAMPLE clips of a video are
consecutive rows (view_index 0..NUM_SAMPLE-1), all cut from one random window. Each rank loads
TRAIN.BATCH_SIZE / world size videos per batch (DistributedSampler: shards are shuffled every
epoch and padded to equal length; with DATA.CLASS_BALANCE sampler, ClassBalancedSampler: each
class drawn equally often, with replacement, a repeated video with a clip of its own). Unusable videos are replaced by random others.
Test: each video is decoded once and all its TEST.NUM_ENSEMBLE_VIEWS x TEST.NUM_SPATIAL_CROPS
views are flattened into the batch dimension as consecutive rows, view_index = k * S + s for
temporal clip k (k = 0 starts at 0, the last ends at the video's end) and spatial crop s (along
the long side, s = 0 at the top/left end); a batch holds whole videos, about TEST.BATCH_SIZE /
world size clips. Every video is on exactly one rank (shards may differ by one video), so
scores are aggregated per video_index, and gathered over ranks at the end. Val: the same with
one centre clip and one centre crop per video.

What the engine calls
---------------------
  loader = build_loader(cfg, "train"); soft_targets = SoftTargets.from_cfg(cfg)
  for epoch in ...:
      loader.set_epoch(epoch)                     # reshuffles, seeds the epoch's clips
      for batch in loader:
          video = loader.model_input(batch["video"], device)
          video, soft_target = soft_targets(video, batch["label"].to(device))
      loader.skipped / loader.summary()           # this epoch's skipped videos, by video
With MIXUP.ENABLE False, `soft_targets` still returns label-smoothed soft targets (one-hot when
MIXUP.LABEL_SMOOTH_VALUE is 0). For test, `loader.skipped` lists the unscored videos.

Bad videos
----------
A missing, empty, truncated or corrupt file, or one without a video stream, is skipped: named
in a warning when met, in the batch's "skipped" list and in `loader.summary()` (also logged at
the end of the epoch). It never stops an epoch; in training only when no video at all decodes
(10 draws per batch item in a row) does the loader raise DataError. Worker processes
(DATA_LOADER.NUM_WORKERS) record the video they are decoding in shared memory, so a decoder
crash that kills a worker is reported as a skip of that video and the epoch resumes with new
workers (see VideoLoader). A missing list file, a malformed line or a label outside
[0, MODEL.NUM_CLASSES) raises revvideo.utils.errors.DataError with a one-line message.
"""

import importlib

# Loaded on first use (PEP 562), so that a light module of the package, such as `synthetic`,
# imports without the pipeline's torch and pytorchvideo (tools/make_synthetic_dataset.py's
# --help answers at once).
_HOMES = {
    "SkippedVideo": "dataset",
    "SoftTargets": "mixup",
    "VideoDataset": "dataset",
    "VideoLoader": "loader",
    "class_counts": "dataset",
    "build_dataset": "build",
    "build_loader": "build",
    "distributed_rank_and_world_size": "build",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
