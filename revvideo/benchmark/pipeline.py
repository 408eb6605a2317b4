"""Whether the data keeps up (tools/benchmark.py --section pipeline): Rev-MViT-B training steps
on clips that revvideo's loader decodes and augments from the data benchmark's files (PyAV,
--data-workers processes), against the same steps on one batch kept on the device. The data
keeps up when end-to-end clips/s is close to the model-only figure (the goal on a GPU: >= 90 %)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator

import torch

from revvideo.benchmark.data import loader_config, video_folder
from revvideo.benchmark.models import TrainingStep, training_inputs
from revvideo.benchmark.settings import Settings
from revvideo.data import VideoLoader, build_loader
from revvideo.models import rev_mvit_b_16x4
from revvideo.utils.errors import DataError
from revvideo.utils.table import format_table

MODEL = "Rev-MViT-B"


def _epochs(loader: VideoLoader, batch: int) -> Iterator[dict]:
    """Full batches without end, epoch after epoch, as a long training run sees them (a last,
    smaller batch of an epoch is dropped, so both ways time the same steps)."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        delivered = 0
        for loaded in loader:
            if len(loaded["video"]) == batch:
                delivered += 1
                yield loaded
        if not delivered:
            raise DataError(
                f"the training list has fewer videos than a batch ({batch}): give --data-dir "
                "more videos, or a smaller --batch"
            )
        epoch += 1


def run_pipeline(settings: Settings, device: torch.device) -> dict:
    # At least two batches an epoch.
    folder = video_folder(settings, max(settings.data_videos, 2 * settings.batch))
    cfg = loader_config(
        folder,
        "pyav",
        settings.data_workers,
        frames=settings.frames,
        crop_size=settings.size,
        batch=settings.batch,
    )
    loader = build_loader(cfg, "train")
    torch.manual_seed(0)
    model = rev_mvit_b_16x4(num_frames=settings.frames, crop_size=settings.size)
    step = TrainingStep(model.to(device).train(), device, settings.dtype)

    def clips_per_s(next_inputs: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> float:
        for _ in range(settings.pipeline_warmup):
            step(*next_inputs())
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start, clips = time.perf_counter(), 0
        for _ in range(settings.pipeline_steps):
            clip, labels = next_inputs()
            step(clip, labels)
            clips += len(clip)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return clips / (time.perf_counter() - start)

    fixed = training_inputs(settings, settings.batch, device)
    model_only = clips_per_s(lambda: fixed)
    print(f"  measured {MODEL} on one batch on the device", file=sys.stderr, flush=True)
    batches = _epochs(loader, settings.batch)

    def loaded() -> tuple[torch.Tensor, torch.Tensor]:
        batch = next(batches)
        return loader.model_input(batch["video"], device), batch["label"].to(device)

    end_to_end = clips_per_s(loaded)
    print(f"  measured {MODEL} fed by the loader", file=sys.stderr, flush=True)
    return dict(
        model=MODEL,
        device=str(device),
        dtype=settings.dtype,
        batch=settings.batch,
        workers=settings.data_workers,
        model_only_clips_per_s=model_only,
        end_to_end_clips_per_s=end_to_end,
        percent_of_model_only=100 * end_to_end / model_only,
    )


def print_pipeline(result: dict, settings: Settings) -> None:
    print(
        f"\ntraining on {settings.frames}x{settings.size}x{settings.size} clips decoded from "
        f"the data benchmark's files, {settings.pipeline_steps} steps after "
        f"{settings.pipeline_warmup}; model only: the same steps on one batch on the device"
    )
    columns = [
        ("model", "model", "s"),
        ("device", "device", "s"),
        ("dtype", "dtype", "s"),
        ("batch", "batch", "d"),
        ("workers", "loader workers", "d"),
        ("model_only_clips_per_s", "model only clips/s", ".2f"),
        ("end_to_end_clips_per_s", "end to end clips/s", ".2f"),
        ("percent_of_model_only", "% of model only", ".1f"),
    ]
    print(format_table([result], columns))
