"""Memory and speed of the reversible models next to their peers (tools/benchmark.py is the
command; its docstring says what each figure means).

Sections: `models` (the model table and depth sweep), `budget` (CUDA: the largest batch within a
memory budget and clips/s there), `paper` (the paper's ImageNet table), `data` (data loading,
and clips/s per loader worker), `pipeline` (training fed by the loader against the model
alone), `peak` (what is alive at a training step's peak, by the line that allocated it),
`timeline` (long videos: windows/s and peak memory), `deploy` (revvideo-serve's requests/s and
latency, onnxruntime against eager PyTorch).
`run(settings)` runs the sections `settings.section` names and prints their tables.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import torch

from revvideo.benchmark import budget, data, deploy, models, paper, peak, pipeline, timeline
from revvideo.benchmark.settings import Settings
from revvideo.utils.files import written_whole
from revvideo.utils.table import format_table

__all__ = ["Settings", "run"]


def run(settings: Settings) -> dict:
    """Measures, prints each section's table, writes `settings.json` if set; returns the figures."""
    device = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    settings.device = str(device)
    result: dict = {}
    if settings.section in ("models", "all"):
        result["models"] = models.run_models(settings, device)
        models.print_models(result["models"], settings, device)
    if settings.section in ("budget", "all") and _has_cuda(device, "memory-budget"):
        result["budget"] = budget.run_budget(
            settings, device, lambda figures: _write_json(settings, result | {"budget": figures})
        )
        budget.print_budget(result["budget"], settings)
    if settings.section == "peak":
        result["peak"] = peak.run_peak(settings, device)
        peak.print_peak(result["peak"], settings)
    if settings.section in ("data", "all"):
        result["data"] = data.run(settings)
        print("\ndata loading, the same files for every row")
        print(format_table(result["data"]))
        result["data_workers"] = data.run_workers(settings)
        print("\ntraining clips/s of revvideo's loader (pyav) by the number of worker processes")
        print(format_table(result["data_workers"]))
    if settings.section == "pipeline":
        result["pipeline"] = pipeline.run_pipeline(settings, device)
        pipeline.print_pipeline(result["pipeline"], settings)
    if settings.section == "timeline":
        result["timeline"] = timeline.run_timeline(settings, device)
        timeline.print_timeline(result["timeline"], device)
    if settings.section == "deploy":
        result["deploy"] = deploy.run_deploy(settings, device)
        deploy.print_deploy(result["deploy"], device)
    if settings.section == "paper":
        result["paper"] = paper.run_paper(settings, device)
        paper.print_paper(result["paper"], settings, device)
    _write_json(settings, result)
    return result


def _write_json(settings: Settings, result: dict) -> None:
    """Writes the figures to `settings.json`, if set, whole: a run cut off meanwhile leaves the
    figures written last."""
    if not settings.json:
        return
    figures = dict(settings=asdict(settings) | {"json": None}, **result)
    with written_whole(settings.json) as partial:
        partial.write_text(json.dumps(figures, indent=2))


def _has_cuda(device: torch.device, section: str) -> bool:
    """Whether a CUDA-only section can run; if not, says so in one line."""
    if device.type == "cuda" and torch.cuda.is_available():
        return True
    if device.type == "cuda":
        print(f"the {section} section needs a CUDA GPU, and torch sees none: skipped")
    else:
        print(f"the {section} section needs a CUDA GPU (--device cuda), not {device}: skipped")
    return False
