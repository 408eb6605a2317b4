"""How fast a timeline runs, and that its memory does not grow with the video (tools/benchmark.py
--section timeline): `classify.py --timeline` on videos of --timeline-minutes, for the quick
start's model (Rev-MViT-XS) on each and for Rev-MViT-B (16x4) on the shortest, each in a fresh
process. The videos are blocks of synthetic motions (5 s each, one class after another) at
320x240 and 30 fps, generated once into the temporary folder; the models' weights are random,
which changes neither their speed nor their memory."""

from __future__ import annotations

import math
import os
import resource
import sys
import tempfile
import time

import av
import numpy as np
import torch

from revvideo.benchmark.models import in_fresh_process
from revvideo.benchmark.settings import Settings
from revvideo.config import load_config
from revvideo.data.synthetic import DEFAULT_CLASSES, render_video
from revvideo.demo.classifier import Classifier
from revvideo.models import build_model
from revvideo.utils.files import written_whole
from revvideo.utils.table import format_table

# Model name -> its config, the first being the quick start's.
MODELS = {
    "Rev-MViT-XS (quick start)": "configs/synthetic/REV_MVIT_XS.yaml",
    "Rev-MViT-B 16x4": "configs/kinetics/REV_MVIT_B_16x4.yaml",
}
BLOCK_SECONDS = 5.0
FPS = 30
WIDTH, HEIGHT = 320, 240


def class_blocks_video(path: str, seconds: float, seed: int = 0) -> list[str]:
    """Writes to `path` (whole or not at all) `seconds` of WIDTHxHEIGHT video at FPS: blocks of
    BLOCK_SECONDS, each of synthetic videos of one motion (revvideo.data.synthetic) played one
    after another, the motions in turn; returns the motion of each block."""
    rng = np.random.default_rng(seed)
    total = round(seconds * FPS)
    motions = []
    with written_whole(path) as partial, av.open(str(partial), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        index = 0
        while index < total:
            motion = DEFAULT_CLASSES[len(motions) % len(DEFAULT_CLASSES)]
            motions.append(motion)
            block_end = min(total, round(len(motions) * BLOCK_SECONDS * FPS))
            while index < block_end:
                clip, clip_fps = render_video(motion, rng)
                shown = min(block_end - index, math.ceil(len(clip) * FPS / clip_fps))
                for offset in range(shown):
                    picture = clip[min(len(clip) - 1, int(offset * clip_fps / FPS))]
                    frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
                    container.mux(stream.encode(frame.reformat(WIDTH, HEIGHT, "yuv420p")))
                index += shown
        container.mux(stream.encode())
    return motions


def _video(minutes: float) -> str:
    path = os.path.join(tempfile.gettempdir(), f"revvideo-benchmark-blocks-{minutes:g}min.mp4")
    if not os.path.isfile(path):
        class_blocks_video(path, minutes * 60)
    return path


def _timeline_row(name: str, cfg_file: str, video: str, minutes: float, device: str) -> dict:
    """One timeline of `video` by the model `name`, in this (fresh) process."""
    torch.manual_seed(0)
    cfg = load_config(cfg_file)
    names = [f"class {index}" for index in range(cfg.MODEL.NUM_CLASSES)]
    classifier = Classifier.from_cfg(cfg, build_model(cfg), names, torch.device(device), name)
    started = time.perf_counter()
    timeline = classifier.timeline(video)
    seconds = time.perf_counter() - started
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_rss /= 2**20 if sys.platform == "darwin" else 2**10
    return {
        "model": name,
        "minutes": minutes,
        "windows": len(timeline.windows),
        "seconds": seconds,
        "windows_per_s": len(timeline.windows) / seconds,
        "x_real_time": minutes * 60 / seconds,
        "peak_rss_mib": peak_rss,
        "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
    }


def run_timeline(settings: Settings, device: torch.device) -> list[dict]:
    minutes = sorted(settings.timeline_minutes)
    (quick_name, quick_cfg), (big_name, big_cfg) = MODELS.items()
    runs = [(quick_name, quick_cfg, length) for length in minutes]
    runs.append((big_name, big_cfg, minutes[0]))
    return [
        in_fresh_process(_timeline_row, name, cfg, _video(length), length, str(device))
        for name, cfg, length in runs
    ]


def print_timeline(rows: list[dict], device: torch.device) -> None:
    print(
        f"\ntimelines ({device}, {torch.get_num_threads()} threads): windows one clip long "
        f"every half clip, batches of centre crops; {WIDTH}x{HEIGHT} {FPS} fps videos"
    )
    columns = [
        ("model", "model", "s"),
        ("minutes", "video min", "g"),
        ("windows", "windows", "d"),
        ("seconds", "seconds", ".1f"),
        ("windows_per_s", "windows/s", ".2f"),
        ("x_real_time", "x real time", ".2f"),
        ("peak_rss_mib", "peak RSS MiB", ".0f"),
    ]
    if device.type == "cuda":
        columns.append(("peak_cuda_mib", "peak CUDA MiB", ".0f"))
    print(format_table(rows, columns))
    quick = [row for row in rows if row["model"] == rows[0]["model"]]
    if len(quick) > 1:
        growth = quick[-1]["peak_rss_mib"] / quick[0]["peak_rss_mib"]
        print(
            f"peak memory, {quick[-1]['minutes']:g} min against {quick[0]['minutes']:g} min: "
            f"x{growth:.3f} (goal: within 10 %)"
        )
