"""What a benchmark run measures and how: tools/benchmark.py's options, where each one and its
default are documented."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Settings:
    section: str  # models, data, budget, paper, pipeline, peak, timeline, deploy or all
    frames: int
    size: int
    batch: int
    repeats: int
    depths: list[int]
    dtype: str  # fp32 or bf16
    device: str | None  # None: cuda if available, else cpu
    json: Path | None
    paper_models: list[str]
    memory_budget: float  # GiB
    budget_dtypes: list[str]
    budget_depths: list[int]
    budget_depth_dtypes: list[str]
    budget_warmup: int
    budget_steps: int
    budget_tolerance: float
    budget_levers: list[str]  # lever names joined by +, e.g. overlap+compile
    budget_fill_batch: int | None  # None: the batch the reference model was timed at
    data_dir: str | None
    data_videos: int
    data_video_size: list[int]  # width, height
    data_workers: int
    data_worker_counts: list[int]
    pipeline_warmup: int
    pipeline_steps: int
    peak_sites: int
    timeline_minutes: list[float]
    deploy_clients: list[int]
    deploy_requests: int
    deploy_workers: int
