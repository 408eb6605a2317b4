"""Where a training step's peak GPU memory goes (tools/benchmark.py --section peak, CUDA): for
each memory-budget model at --batch clips, the CUDA allocator's history over one training step
(after a warm one) is replayed to the moment of its peak, and the blocks alive then are summed
by the line of revvideo (else of the model's library) that allocated them."""

from __future__ import annotations

import sys
from collections import Counter

import torch

from revvideo.benchmark.budget import BASE_DEPTH, BUDGET_MODELS, BudgetRun
from revvideo.benchmark.models import GIB, MIB, in_fresh_process
from revvideo.benchmark.settings import Settings
from revvideo.utils.table import format_table

# Frames of these files say where the model, not the framework, asked for the memory.
_OWN_CODE = ("/revvideo/", "/torchvision/")
_ALLOCATED, _FREED = "alloc", ("free_requested", "free_completed")


def _site(frames: list[dict]) -> str:
    """The innermost frame of the model's own code, as `file.py:line function`."""
    for frame in frames:
        if any(part in frame["filename"] for part in _OWN_CODE):
            return f"{frame['filename'].rsplit('/', 1)[-1]}:{frame['line']} {frame['name']}"
    return "no model frame (built-in ops' backward, the loss, the optimizer)"


def live_at_peak(trace: list[dict]) -> tuple[int, Counter]:
    """(bytes above the start at the peak, those bytes by allocation site) of an allocator
    trace: each block counts from its "alloc" to its first free action."""
    live: dict[int, tuple[int, str]] = {}
    total = peak = 0
    at_peak: Counter = Counter()
    for entry in trace:
        if entry["action"] == _ALLOCATED:
            live[entry["addr"]] = (entry["size"], _site(entry.get("frames", [])))
            total += entry["size"]
            if total > peak:
                peak = total
                at_peak = Counter()
                for size, site in live.values():
                    at_peak[site] += size
        elif entry["action"] in _FREED and entry["addr"] in live:
            total -= live.pop(entry["addr"])[0]
    return peak, at_peak


def _peak_row(settings: Settings, device: torch.device, name: str) -> dict:
    run = BudgetRun(settings, device, name, BASE_DEPTH, settings.dtype)
    clip, labels = run.inputs(settings.batch)
    run.step(clip, labels)  # the gradients exist from here on, as in every later step
    torch.cuda.synchronize(run.device)
    before = torch.cuda.memory_allocated(run.device)
    torch.cuda.reset_peak_memory_stats(run.device)
    torch.cuda.memory._record_memory_history(
        "all", context="alloc", stacks="python", max_entries=1_000_000
    )
    run.step(clip, labels)
    torch.cuda.synchronize(run.device)
    snapshot = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(None)
    trace = snapshot["device_traces"][run.device.index]
    step_peak, by_site = live_at_peak(trace)
    row = dict(
        model=name,
        batch=settings.batch,
        dtype=settings.dtype,
        before_gib=before / GIB,
        peak_gib=torch.cuda.max_memory_allocated(run.device) / GIB,
        reserved_gib=torch.cuda.max_memory_reserved(run.device) / GIB,
        step_peak_mib_per_clip=step_peak / MIB / settings.batch,
        sites=[
            (site, size / MIB / settings.batch)
            for site, size in by_site.most_common(settings.peak_sites)
        ],
    )
    print(f"  measured {name}", file=sys.stderr, flush=True)
    return row


def run_peak(settings: Settings, device: torch.device) -> dict:
    return dict(
        rows=[in_fresh_process(_peak_row, settings, device, name) for name in BUDGET_MODELS]
    )


def print_peak(result: dict, settings: Settings) -> None:
    for row in result["rows"]:
        print(
            f"\n{row['model']}, batch {row['batch']}, {row['dtype']}, "
            f"{settings.frames}x{settings.size}x{settings.size}: {row['before_gib']:.2f} GiB "
            f"allocated before the step (weights, gradients), peak {row['peak_gib']:.2f} GiB, "
            f"reserved {row['reserved_gib']:.2f} GiB; the step's own peak "
            f"{row['step_peak_mib_per_clip']:.1f} MiB per clip, alive then:"
        )
        rows = [{"allocated at": site, "MiB/clip": round(size, 1)} for site, size in row["sites"]]
        print(format_table(rows))
