"""Where a training step's peak memory goes (tools/benchmark.py --section peak): for each
memory-budget model at --batch clips, what is alive at the peak of one training step (after a
warm one), summed by the line of the model's code (revvideo's or torchvision's) that allocated
it. On CUDA the allocator's history of the step is replayed to its peak; on the CPU the live
tensors are followed as the step runs (revvideo.utils.memory.LiveTensorTracker)."""

from __future__ import annotations

import sys
import traceback
from collections import Counter
from collections.abc import Iterable

import torch

from revvideo.benchmark.budget import BASE_DEPTH, BUDGET_MODELS, BudgetRun
from revvideo.benchmark.models import GIB, MIB, TrainingStep, in_fresh_process, training_inputs
from revvideo.benchmark.settings import Settings
from revvideo.utils.memory import LiveTensorTracker
from revvideo.utils.table import format_table

# Frames of these files say where the model, not the framework or the benchmark, asked for the
# memory.
_MODEL_CODE = ("/revvideo/models/", "/torchvision/models/")
_ALLOCATED, _FREED = "alloc", ("free_requested", "free_completed")
NO_MODEL_FRAME = "no model frame (built-in ops' backward, the loss, the optimizer)"


def _site(frames: Iterable[tuple[str, int, str]]) -> str:
    """The innermost (first) of `frames` (file, line, function) in the model's code, as
    `file.py:line function`."""
    for filename, line, function in frames:
        if any(part in filename for part in _MODEL_CODE):
            return f"{filename.rsplit('/', 1)[-1]}:{line} {function}"
    return NO_MODEL_FRAME


class _SiteTracker(LiveTensorTracker):
    """A LiveTensorTracker that notes where each storage was allocated and, at the peak, how
    many bytes are alive by site (`at_peak`)."""

    def __init__(self) -> None:
        super().__init__()
        self._sites: dict[int, str] = {}
        self.at_peak: Counter = Counter()

    def _release(self, key: int) -> None:
        super()._release(key)
        self._sites.pop(key, None)

    def _allocated(self, keys: list[int], func) -> None:
        stack = reversed(traceback.extract_stack())
        site = _site((frame.filename, frame.lineno, frame.name) for frame in stack)
        # The op too: on the CPU a backward's allocations all come from one line.
        self._sites.update(dict.fromkeys(keys, f"{site} ({func.__name__})"))

    def _new_peak(self) -> None:
        self.at_peak = Counter()
        for key, nbytes in self._tracked.items():
            self.at_peak[self._sites[key]] += nbytes


def live_at_peak(trace: list[dict]) -> tuple[int, Counter]:
    """(the peak of the bytes allocated within an allocator trace and still held, those bytes by
    allocation site): each block counts from its "alloc" to its first free action; blocks from
    before the trace (last step's gradients, freed as a step starts) do not count, as on the
    CPU, where only tensors made inside the step are tracked."""
    live: dict[int, tuple[int, str]] = {}
    total = peak = 0
    at_peak: Counter = Counter()
    for entry in trace:
        if entry["action"] == _ALLOCATED:
            frames = entry.get("frames", [])
            site = _site((frame["filename"], frame["line"], frame["name"]) for frame in frames)
            live[entry["addr"]] = (entry["size"], site)
            total += entry["size"]
            if total > peak:
                peak = total
                at_peak = Counter()
                for size, site in live.values():
                    at_peak[site] += size
        elif entry["action"] in _FREED and entry["addr"] in live:
            total -= live.pop(entry["addr"])[0]
    return peak, at_peak


def _cuda_step_peak(
    settings: Settings, device: torch.device, name: str
) -> tuple[int, Counter, dict]:
    """(the step's peak bytes, those bytes by site, the allocator's figures) on CUDA."""
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
    step_peak, by_site = live_at_peak(snapshot["device_traces"][run.device.index])
    allocator = dict(
        before_gib=before / GIB,
        peak_gib=torch.cuda.max_memory_allocated(run.device) / GIB,
        reserved_gib=torch.cuda.max_memory_reserved(run.device) / GIB,
    )
    return step_peak, by_site, allocator


def _cpu_step_peak(settings: Settings, name: str) -> tuple[int, Counter, dict]:
    """(the step's peak bytes, those bytes by site, nothing more) on the CPU."""
    build, _ = BUDGET_MODELS[name]
    torch.manual_seed(0)
    model = build(num_frames=settings.frames, crop_size=settings.size).train()
    step = TrainingStep(model, torch.device("cpu"), settings.dtype)
    clip, labels = training_inputs(settings, settings.batch, torch.device("cpu"))
    step(clip, labels)  # the gradients exist from here on, as in every later step
    with _SiteTracker() as tracker:
        step(clip, labels)
    return tracker.peak_bytes, tracker.at_peak, {}


def _peak_row(settings: Settings, device: torch.device, name: str) -> dict:
    if device.type == "cuda":
        step_peak, by_site, allocator = _cuda_step_peak(settings, device, name)
    else:
        step_peak, by_site, allocator = _cpu_step_peak(settings, name)
    row = dict(
        model=name,
        batch=settings.batch,
        dtype=settings.dtype,
        device=str(device),
        step_peak_mib_per_clip=step_peak / MIB / settings.batch,
        sites=[
            (site, size / MIB / settings.batch)
            for site, size in by_site.most_common(settings.peak_sites)
        ],
        **allocator,
    )
    print(f"  measured {name}", file=sys.stderr, flush=True)
    return row


def run_peak(settings: Settings, device: torch.device) -> dict:
    return dict(
        rows=[in_fresh_process(_peak_row, settings, device, name) for name in BUDGET_MODELS]
    )


def print_peak(result: dict, settings: Settings) -> None:
    for row in result["rows"]:
        allocator = (
            f"{row['before_gib']:.2f} GiB allocated before the step (weights, gradients), peak "
            f"{row['peak_gib']:.2f} GiB, reserved {row['reserved_gib']:.2f} GiB; "
            if "peak_gib" in row
            else "live tensors; "
        )
        print(
            f"\n{row['model']}, {row['device']}, batch {row['batch']}, {row['dtype']}, "
            f"{settings.frames}x{settings.size}x{settings.size}: {allocator}the step's own peak "
            f"{row['step_peak_mib_per_clip']:.1f} MiB per clip, alive then:"
        )
        rows = [{"allocated at": site, "MiB/clip": round(size, 1)} for site, size in row["sites"]]
        print(format_table(rows))
