"""The memory-budget section of tools/benchmark.py (CUDA): the largest training batch of each
model within a GPU memory budget, and its training clips/s there."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn

from revvideo.benchmark.models import (
    GIB,
    TrainingStep,
    depth_arguments,
    in_fresh_process,
    no_tf32,
    store_deep_stages,
    torchvision_mvit_v1_b,
    training_inputs,
)
from revvideo.benchmark.settings import Settings
from revvideo.models import mvit_b_16x4, rev_mvit_b_16x4
from revvideo.models.levers import compile_branches
from revvideo.utils.memory import fits_in_memory, largest_batch
from revvideo.utils.table import format_table

# name: (builder, whether it is reversible; None: no deeper variants).
BUDGET_MODELS: dict[str, tuple[Callable[..., nn.Module], bool | None]] = {
    "Rev-MViT-B": (rev_mvit_b_16x4, True),
    "MViT-B (revvideo)": (mvit_b_16x4, False),
    "mvit_v1_b (torchvision)": (torchvision_mvit_v1_b, None),
}
# The reversible engine's throughput levers, each switched on in a Rev-MViT-B of its own row.
LEVERS: dict[str, Callable[[nn.Module], object]] = {
    "overlap": lambda model: setattr(model.rev_backbone, "overlap_recompute", True),
    "compile": compile_branches,
    "store": store_deep_stages,
}
# Not a switch of the model: Rev-MViT-B trains at the batch the reference model was timed at,
# with as many of its deepest layers stored as fit beside it (MVIT.REV.STORED_LAYERS auto).
FILL = "fill"
LEVER_NAMES = (*LEVERS, FILL)
BUDGET_REFERENCE = "MViT-B (revvideo)"
BASE_DEPTH = 16


class BudgetRun:
    """One model at one depth and precision, training on CUDA inside the memory budget."""

    def __init__(
        self,
        settings: Settings,
        device: torch.device,
        name: str,
        depth: int,
        dtype: str,
        levers: Sequence[str] = (),
        fill_batch: int | None = None,
    ) -> None:
        self.settings = settings
        # The memory fraction is set per device and needs its index ("cuda" has none).
        index = torch.cuda.current_device() if device.index is None else device.index
        self.device = device = torch.device("cuda", index)
        torch.cuda.set_device(device)
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(
            min(1.0, settings.memory_budget * GIB / total), device
        )
        no_tf32()
        build, reversible = BUDGET_MODELS[name]
        arguments = dict(num_frames=settings.frames, crop_size=settings.size)
        if depth != BASE_DEPTH:
            arguments |= depth_arguments(depth, reversible)
        torch.manual_seed(0)
        model = build(**arguments).to(device).train()
        for lever in levers:
            if lever != FILL:
                LEVERS[lever](model)
        self.model = model
        self.fill_batch = fill_batch
        self.step = TrainingStep(model, device, dtype)
        self.figures: dict = {}

    def inputs(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return training_inputs(self.settings, batch, self.device)

    def trial(self, batch: int) -> None:
        self.step(*self.inputs(batch))

    def measure(self, batch: int) -> None:
        clip, labels = self.inputs(batch)
        for _ in range(self.settings.budget_warmup):
            self.step(clip, labels)
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
        start.record()
        for _ in range(self.settings.budget_steps):
            self.step(clip, labels)
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1000
        self.figures = dict(
            timed_batch=batch,
            clips_per_s=batch * self.settings.budget_steps / seconds,
            peak_gib=torch.cuda.max_memory_allocated(self.device) / GIB,
            reserved_gib=torch.cuda.max_memory_reserved(self.device) / GIB,
        )

    def row(self) -> dict:
        if self.fill_batch is not None:
            return self._filled_row(self.fill_batch)
        found = largest_batch(
            self.trial, tolerance=self.settings.budget_tolerance, on_out_of_memory=self.step.release
        )
        batch = found
        while batch and not fits_in_memory(partial(self.measure, batch), self.step.release):
            batch -= max(1, batch // 16)
        return dict(largest_batch=found) | self.figures

    def _filled_row(self, batch: int) -> dict:
        """At `batch`, the most deepest layers stored that fit (without the reserve of
        MVIT.REV.STORED_LAYERS auto); timed with one fewer at a time where repeated steps no longer
        fit."""
        stack = self.model.rev_backbone
        storable = len(stack.storable_layers())

        def trial(count: int) -> None:
            stack.store_deepest(count)
            self.trial(batch)

        count = largest_batch(trial, limit=storable, on_out_of_memory=self.step.release)
        while count >= 0:
            stack.store_deepest(count)
            if fits_in_memory(partial(self.measure, batch), self.step.release):
                break
            count -= 1
        else:
            raise RuntimeError(f"a batch of {batch} does not fit even with no layer stored")
        return dict(largest_batch=batch) | self.figures | dict(stored_layers=f"{count}/{storable}")


def _budget_row(
    settings: Settings,
    device: torch.device,
    name: str,
    depth: int,
    dtype: str,
    levers: tuple[str, ...],
    fill_batch: int | None,
) -> dict:
    row = dict(model=" + ".join((name, *levers)), depth=depth, dtype=dtype)
    run = BudgetRun(settings, device, name, depth, dtype, levers, fill_batch)
    row |= run.row() | dict(card=torch.cuda.get_device_name(run.device))
    print(f"  measured {_budget_summary(row)}", file=sys.stderr, flush=True)
    return row


def _budget_summary(row: dict) -> str:
    text = f"{row['model']}, depth {row['depth']}, {row['dtype']}: "
    text += f"largest batch {row['largest_batch']}"
    if "clips_per_s" not in row:
        return text
    if "stored_layers" in row:
        text += f" with {row['stored_layers']} layers stored"
    return (
        f"{text}, {row['clips_per_s']:.1f} clips/s at batch {row['timed_batch']}, "
        f"peak {row['peak_gib']:.2f} GiB, reserved {row['reserved_gib']:.2f} GiB"
    )


def budget_cases(settings: Settings) -> list[tuple[str, int, str, tuple[str, ...]]]:
    """(model, depth, dtype, levers) in the order they run: the models as built, then the deeper
    ones; after the Rev-MViT-B and MViT-B of each depth and dtype, Rev-MViT-B with each
    --budget-levers combination."""
    levers = [tuple(combination.split("+")) for combination in settings.budget_levers]
    deeper = [name for name, (_, reversible) in BUDGET_MODELS.items() if reversible is not None]
    groups = [(BASE_DEPTH, dtype, list(BUDGET_MODELS)) for dtype in settings.budget_dtypes]
    groups += [
        (depth, dtype, deeper)
        for depth in settings.budget_depths
        for dtype in settings.budget_depth_dtypes
    ]
    return [
        case
        for depth, dtype, names in groups
        for case in [(name, depth, dtype, ()) for name in names]
        + [("Rev-MViT-B", depth, dtype, combination) for combination in levers]
    ]


def _fill_batch(rows: list[dict], depth: int, dtype: str) -> int:
    """The batch the reference model of `depth` and `dtype` was timed at (its row ran first)."""
    for row in rows:
        case = (row["model"], row["depth"], row["dtype"])
        if case == (BUDGET_REFERENCE, depth, dtype) and "timed_batch" in row:
            return row["timed_batch"]
    raise RuntimeError(f"{FILL} trains at the batch of {BUDGET_REFERENCE}, which has none")


def run_budget(
    settings: Settings,
    device: torch.device,
    measured: Callable[[dict], None] = lambda figures: None,
) -> dict:
    """The section's figures; `measured` is given the figures so far after each row (a run cut
    off by a time limit keeps what it measured)."""
    rows = []
    for model, depth, dtype, levers in budget_cases(settings):
        try:
            fill_batch = None
            if FILL in levers:
                fill_batch = settings.budget_fill_batch or _fill_batch(rows, depth, dtype)
            rows.append(
                in_fresh_process(
                    _budget_row, settings, device, model, depth, dtype, levers, fill_batch
                )
            )
        except Exception as error:  # one model failing (or its process dying) leaves the others
            model = " + ".join((model, *levers))
            rows.append(dict(model=model, depth=depth, dtype=dtype, error=repr(error)))
            print(f"  failed {model}, depth {depth}, {dtype}: {error!r}", file=sys.stderr)
        measured(_budget_figures(settings, rows))
    return _budget_figures(settings, rows)


def _budget_figures(settings: Settings, rows: list[dict]) -> dict:
    """The section's figures from `rows`: each timed row with its speed against the reference
    model of its depth and dtype, once that has been timed."""
    reference = {
        (row["depth"], row["dtype"]): row["clips_per_s"]
        for row in rows
        if row["model"] == BUDGET_REFERENCE and "clips_per_s" in row
    }
    rows = [
        row | dict(x_reference=row["clips_per_s"] / reference[row["depth"], row["dtype"]])
        if "clips_per_s" in row and (row["depth"], row["dtype"]) in reference
        else row
        for row in rows
    ]
    card = next((row["card"] for row in rows if "card" in row), "no card answered")
    return dict(card=card, budget_gib=settings.memory_budget, rows=rows)


def print_budget(result: dict, settings: Settings) -> None:
    print(
        f"\n{result['card']}, {result['budget_gib']:g} GiB budget, {settings.frames}x{settings.size}x"
        f"{settings.size} clips, SGD training step, clips/s over {settings.budget_steps} steps after "
        f"{settings.budget_warmup}; x speed against {BUDGET_REFERENCE} of the same depth and dtype"
    )
    columns = [
        ("model", "model", "s"),
        ("depth", "depth", "d"),
        ("dtype", "dtype", "s"),
        ("largest_batch", "largest batch", "d"),
        ("timed_batch", "timed at", "d"),
        ("clips_per_s", "clips/s", ".1f"),
        ("x_reference", "x speed", ".2f"),
        ("stored_layers", "stored", "s"),
        ("peak_gib", "peak GiB", ".2f"),
        ("reserved_gib", "reserved GiB", ".2f"),
    ]
    print(format_table(result["rows"], columns))
    for row in result["rows"]:
        if "error" in row:
            print(f"{row['model']}, depth {row['depth']}, {row['dtype']} failed: {row['error']}")
