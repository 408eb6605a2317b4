"""Memory and speed of the reversible models next to their peers, measured in one run.

    python tools/benchmark.py                          # the model table, 16x224x224, fp32
    python tools/benchmark.py --frames 4 --size 64     # a quick look
    python tools/benchmark.py --section data           # data loading (revvideo.data.benchmark)
    python tools/benchmark.py --json results.json      # also write the figures as JSON
    python tools/benchmark.py --device cuda --section budget --memory-budget 16

Model figures, per model:
- params, GFLOPs: fvcore, one clip, counted on the CPU whatever --device says.
- saved MiB/clip: tensors autograd keeps for backward, growth from batch 1 to batch 2.
- peak MiB/clip: peak memory of a training step (forward + backward), growth from batch 1 to 2;
  live tensor bytes on the CPU, `max_memory_allocated` on CUDA.
- step s/clip: wall time of a training step (forward + backward) divided by the batch size.
- infer clips/s: eval-mode forward under `torch.no_grad()`.
The depth sweep grows the last-but-one stage (stage transitions stay at layers 1, 3, depth - 2).

Memory-budget section (CUDA only), per model, depth and precision, each in a fresh process
limited to --memory-budget GiB with `torch.cuda.set_per_process_memory_fraction`:
- largest batch: the largest training batch whose step (forward, backward, SGD step) fits,
  found by doubling, then bisection to within --budget-tolerance, recovering from each
  out-of-memory error (revvideo.utils.memory.largest_batch).
- clips/s: training clips per second at that batch over --budget-steps steps after
  --budget-warmup, timed with CUDA events; if repeated steps no longer fit (the allocator
  fragments), the batch steps down until they do, and "timed at" says where they ran.
- peak GiB / reserved GiB: `max_memory_allocated` / `max_memory_reserved` over the timed steps.
fp32 is IEEE float32 (TF32 off for matmuls and convolutions); bf16 is bfloat16 autocast.
"""

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from revvideo.data import benchmark as data_benchmark
from revvideo.models import mvit_b_16x4, rev_mvit_b_16x4
from revvideo.utils.complexity import count_gflops, count_parameters
from revvideo.utils.memory import SavedTensorCounter, fits_in_memory, largest_batch, peak_bytes
from revvideo.utils.table import format_table

MIB = 2**20
GIB = 2**30


def _torchvision_mvit_v1_b(num_frames: int, crop_size: int) -> nn.Module:
    from torchvision.models.video import mvit, mvit_v1_b

    model = mvit_v1_b()
    if (num_frames, crop_size) != (16, 224):
        # The builder fixes 16x224; only the position encoding depends on the input size.
        t, h, w = (
            n // s for n, s in zip((num_frames, crop_size, crop_size), (2, 4, 4), strict=True)
        )
        model.pos_encoding = mvit.PositionalEncoding(96, (h, w), t, rel_pos_embed=False)
    return model


def _depth_arguments(depth: int, reversible: bool) -> dict:
    last = depth - 2
    arguments = dict(
        depth=depth,
        dim_mul=((1, 2.0), (3, 2.0), (last, 2.0)),
        head_mul=((1, 2.0), (3, 2.0), (last, 2.0)),
        pool_q_stride=((1, 1, 2, 2), (3, 1, 2, 2), (last, 1, 2, 2)),
    )
    return arguments | (dict(transition_layers=(1, 3, last)) if reversible else {})


MODELS: dict[str, Callable[..., nn.Module]] = {
    "Rev-MViT-B (reversible backward)": rev_mvit_b_16x4,
    "Rev-MViT-B (ordinary autograd)": lambda **kw: rev_mvit_b_16x4(custom_backward=False, **kw),
    "MViT-B (revvideo)": mvit_b_16x4,
    "mvit_v1_b (torchvision)": _torchvision_mvit_v1_b,
}
REFERENCE = "mvit_v1_b (torchvision)"


class Bench:
    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.args = args
        self.device = device
        self.autocast = torch.autocast(
            device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16"
        )

    def clip(self, batch: int) -> torch.Tensor:
        size = self.args.size
        return torch.randn(batch, 3, self.args.frames, size, size, device=self.device)

    def train_step(self, model: nn.Module, clip: torch.Tensor) -> None:
        with self.autocast:
            loss = model(clip).float().logsumexp(dim=1).mean()
        loss.backward()

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def saved_bytes(self, model: nn.Module, batch: int) -> int:
        with SavedTensorCounter(exclude=list(model.parameters())) as counter, self.autocast:
            model(self.clip(batch))
        return counter.bytes

    def step_peak_bytes(self, model: nn.Module, batch: int) -> int:
        clip = self.clip(batch)
        self.train_step(model, clip)  # creates .grad, so the measured step only accumulates
        return peak_bytes(lambda: self.train_step(model, clip), self.device)

    def timed(self, fn: Callable[[], object]) -> float:
        fn()
        times = []
        for _ in range(self.args.repeats):
            self.synchronize()
            start = time.perf_counter()
            fn()
            self.synchronize()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def per_clip(self, measure: Callable[[nn.Module, int], int], model: nn.Module) -> float:
        return (measure(model, 2) - measure(model, 1)) / MIB

    def model_row(self, name: str, build: Callable[..., nn.Module]) -> dict:
        torch.manual_seed(0)
        geometry = dict(num_frames=self.args.frames, crop_size=self.args.size)
        model = build(**geometry).train()
        # Counted before the move: fvcore's trace of torchvision's MViT fails on CUDA (its
        # repeat_interleave gets an index on the CPU), and the counts do not depend on the device.
        params = count_parameters(model)
        gflops = count_gflops(model, (1, 3, self.args.frames, self.args.size, self.args.size))
        model = model.to(self.device)
        batch = self.args.batch
        clip = self.clip(batch)
        step = self.timed(lambda: self.train_step(model, clip)) / batch
        model.eval()
        with torch.no_grad(), self.autocast:
            infer = batch / self.timed(lambda: model(clip))
        model.train()
        row = dict(
            model=name,
            params_m=params / 1e6,
            gflops=gflops,
            saved_mib_per_clip=self.per_clip(self.saved_bytes, model),
            peak_mib_per_clip=self.per_clip(self.step_peak_bytes, model),
            step_s_per_clip=step,
            infer_clips_per_s=infer,
        )
        print(f"  measured {name}", file=sys.stderr, flush=True)
        return row

    def depth_row(self, depth: int) -> dict:
        row: dict = dict(depth=depth)
        geometry = dict(num_frames=self.args.frames, crop_size=self.args.size)
        for name, build, reversible in (
            ("Rev-MViT-B", rev_mvit_b_16x4, True),
            ("MViT-B", mvit_b_16x4, False),
        ):
            torch.manual_seed(0)
            arguments = geometry | _depth_arguments(depth, reversible)
            model = build(**arguments).to(self.device).train()
            row[f"{name} saved MiB/clip"] = self.per_clip(self.saved_bytes, model)
            if reversible:
                row[f"{name} peak MiB/clip"] = self.per_clip(self.step_peak_bytes, model)
        print(f"  measured depth {depth}", file=sys.stderr, flush=True)
        return row


def _model_row(args: argparse.Namespace, device: torch.device, name: str) -> dict:
    return Bench(args, device).model_row(name, MODELS[name])


def _depth_row(args: argparse.Namespace, device: torch.device, depth: int) -> dict:
    return Bench(args, device).depth_row(depth)


def _in_fresh_process(fn: Callable, *arguments: object) -> dict:
    """Runs one measurement in its own process, so no allocator state (or fragmentation) of
    one model carries over to the next."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, *arguments).result()


def run_models(args: argparse.Namespace, device: torch.device) -> dict:
    rows = [_in_fresh_process(_model_row, args, device, name) for name in MODELS]
    reference = next(row for row in rows if row["model"] == REFERENCE)
    for row in rows:
        row["saved_x_lower"] = reference["saved_mib_per_clip"] / row["saved_mib_per_clip"]
        row["peak_x_lower"] = reference["peak_mib_per_clip"] / row["peak_mib_per_clip"]
        row["step_x"] = row["step_s_per_clip"] / reference["step_s_per_clip"]
        row["infer_x"] = row["infer_clips_per_s"] / reference["infer_clips_per_s"]
    sweep = [_in_fresh_process(_depth_row, args, device, depth) for depth in args.depths]
    return dict(models=rows, depth_sweep=sweep)


def print_models(result: dict, args: argparse.Namespace, device: torch.device) -> None:
    print(
        f"\n{args.frames}x{args.size}x{args.size} clips, {args.dtype}, {device}, "
        f"{torch.get_num_threads()} threads, batch {args.batch}, median of {args.repeats}; "
        f"ratios against {REFERENCE}"
    )
    columns = [
        ("model", "model", "s"),
        ("params_m", "params (M)", ".2f"),
        ("gflops", "GFLOPs", ".2f"),
        ("saved_mib_per_clip", "saved MiB/clip", ".1f"),
        ("saved_x_lower", "x lower", ".1f"),
        ("peak_mib_per_clip", "peak MiB/clip", ".1f"),
        ("peak_x_lower", "x lower", ".1f"),
        ("step_s_per_clip", "step s/clip", ".2f"),
        ("step_x", "x time", ".2f"),
        ("infer_clips_per_s", "infer clips/s", ".2f"),
        ("infer_x", "x speed", ".2f"),
    ]
    print(format_table(result["models"], columns))
    sweep = result["depth_sweep"]
    if sweep:
        print("\ndepth sweep (MiB per clip)")
        keys = [key for key in sweep[0] if key != "depth"]
        print(format_table(sweep, [("depth", "depth", "d")] + [(k, k, ".1f") for k in keys]))


# name: (builder, whether it is reversible; None: no deeper variants).
BUDGET_MODELS: dict[str, tuple[Callable[..., nn.Module], bool | None]] = {
    "Rev-MViT-B": (rev_mvit_b_16x4, True),
    "MViT-B (revvideo)": (mvit_b_16x4, False),
    "mvit_v1_b (torchvision)": (_torchvision_mvit_v1_b, None),
}
BUDGET_REFERENCE = "MViT-B (revvideo)"
BASE_DEPTH = 16
BUDGET_CLASSES = 400  # every builder's default head (Kinetics-400)


class BudgetRun:
    """One model at one depth and precision, training on CUDA inside the memory budget."""

    def __init__(
        self, args: argparse.Namespace, device: torch.device, name: str, depth: int, dtype: str
    ) -> None:
        self.args = args
        # The memory fraction is set per device and needs its index ("cuda" has none).
        index = torch.cuda.current_device() if device.index is None else device.index
        self.device = device = torch.device("cuda", index)
        torch.cuda.set_device(device)
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(
            min(1.0, args.memory_budget * GIB / total), device
        )
        # The legacy switches, not the fp32_precision ones: torch refuses a mix of the two, and
        # libraries still read the legacy ones.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        build, reversible = BUDGET_MODELS[name]
        arguments = dict(num_frames=args.frames, crop_size=args.size)
        if depth != BASE_DEPTH:
            arguments |= _depth_arguments(depth, reversible)
        torch.manual_seed(0)
        self.model = build(**arguments).to(device).train()
        # Plain SGD has no state, so each try of the search sees the memory of a steady step.
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-4)
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == "bf16")
        self.figures: dict = {}

    def inputs(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.args.size
        clip = torch.randn(batch, 3, self.args.frames, size, size, device=self.device)
        return clip, torch.randint(0, BUDGET_CLASSES, (batch,), device=self.device)

    def step(self, clip: torch.Tensor, labels: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast:
            loss = F.cross_entropy(self.model(clip), labels)
        loss.backward()
        self.optimizer.step()

    def trial(self, batch: int) -> None:
        self.step(*self.inputs(batch))

    def release(self) -> None:
        """After running out of memory: the gradients of the failed step go too."""
        self.optimizer.zero_grad(set_to_none=True)

    def measure(self, batch: int) -> None:
        clip, labels = self.inputs(batch)
        for _ in range(self.args.budget_warmup):
            self.step(clip, labels)
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
        start.record()
        for _ in range(self.args.budget_steps):
            self.step(clip, labels)
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1000
        self.figures = dict(
            timed_batch=batch,
            clips_per_s=batch * self.args.budget_steps / seconds,
            peak_gib=torch.cuda.max_memory_allocated(self.device) / GIB,
            reserved_gib=torch.cuda.max_memory_reserved(self.device) / GIB,
        )

    def row(self) -> dict:
        found = largest_batch(
            self.trial, tolerance=self.args.budget_tolerance, on_out_of_memory=self.release
        )
        batch = found
        while batch and not fits_in_memory(partial(self.measure, batch), self.release):
            batch -= max(1, batch // 16)
        return (
            dict(largest_batch=found, card=torch.cuda.get_device_name(self.device)) | self.figures
        )


def _budget_row(
    args: argparse.Namespace, device: torch.device, name: str, depth: int, dtype: str
) -> dict:
    row = dict(model=name, depth=depth, dtype=dtype)
    row |= BudgetRun(args, device, name, depth, dtype).row()
    print(f"  measured {_budget_summary(row)}", file=sys.stderr, flush=True)
    return row


def _budget_summary(row: dict) -> str:
    text = f"{row['model']}, depth {row['depth']}, {row['dtype']}: "
    text += f"largest batch {row['largest_batch']}"
    if "clips_per_s" not in row:
        return text
    return (
        f"{text}, {row['clips_per_s']:.1f} clips/s at batch {row['timed_batch']}, "
        f"peak {row['peak_gib']:.2f} GiB, reserved {row['reserved_gib']:.2f} GiB"
    )


def budget_cases(args: argparse.Namespace) -> list[tuple[str, int, str]]:
    """(model, depth, dtype) in the order they run: the models as built, then deeper ones."""
    cases = [(name, BASE_DEPTH, dtype) for dtype in args.budget_dtypes for name in BUDGET_MODELS]
    deeper = [name for name, (_, reversible) in BUDGET_MODELS.items() if reversible is not None]
    return cases + [
        (name, depth, dtype)
        for depth in args.budget_depths
        for dtype in args.budget_depth_dtypes
        for name in deeper
    ]


def run_budget(args: argparse.Namespace, device: torch.device) -> dict:
    rows = []
    for model, depth, dtype in budget_cases(args):
        try:
            rows.append(_in_fresh_process(_budget_row, args, device, model, depth, dtype))
        except Exception as error:  # one model failing (or its process dying) leaves the others
            rows.append(dict(model=model, depth=depth, dtype=dtype, error=repr(error)))
            print(f"  failed {model}, depth {depth}, {dtype}: {error!r}", file=sys.stderr)
    reference = {
        (row["depth"], row["dtype"]): row["clips_per_s"]
        for row in rows
        if row["model"] == BUDGET_REFERENCE and "clips_per_s" in row
    }
    for row in rows:
        if "clips_per_s" in row and (row["depth"], row["dtype"]) in reference:
            row["x_reference"] = row["clips_per_s"] / reference[row["depth"], row["dtype"]]
    card = next((row["card"] for row in rows if "card" in row), "no card answered")
    return dict(card=card, budget_gib=args.memory_budget, rows=rows)


def print_budget(result: dict, args: argparse.Namespace) -> None:
    print(
        f"\n{result['card']}, {result['budget_gib']:g} GiB budget, {args.frames}x{args.size}x"
        f"{args.size} clips, SGD training step, clips/s over {args.budget_steps} steps after "
        f"{args.budget_warmup}; x speed against {BUDGET_REFERENCE} of the same depth and dtype"
    )
    columns = [
        ("model", "model", "s"),
        ("depth", "depth", "d"),
        ("dtype", "dtype", "s"),
        ("largest_batch", "largest batch", "d"),
        ("timed_batch", "timed at", "d"),
        ("clips_per_s", "clips/s", ".1f"),
        ("x_reference", "x speed", ".2f"),
        ("peak_gib", "peak GiB", ".2f"),
        ("reserved_gib", "reserved GiB", ".2f"),
    ]
    print(format_table(result["rows"], columns))
    for row in result["rows"]:
        if "error" in row:
            print(f"{row['model']}, depth {row['depth']}, {row['dtype']} failed: {row['error']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--section", choices=["models", "data", "budget", "all"], default="models")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=2, help="batch for the timings")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--depths", type=int, nargs="*", default=[16, 24, 40])
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    budget = parser.add_argument_group("memory budget (CUDA)")
    budget.add_argument("--memory-budget", type=float, default=16.0, metavar="GIB")
    budget.add_argument(
        "--budget-dtypes",
        nargs="*",
        choices=["fp32", "bf16"],
        default=["fp32", "bf16"],
        help="precisions of the models as built",
    )
    budget.add_argument(
        "--budget-depths",
        type=int,
        nargs="*",
        default=[32, 48],
        help="deeper Rev-MViT-B and MViT-B to add",
    )
    budget.add_argument(
        "--budget-depth-dtypes",
        nargs="+",
        choices=["fp32", "bf16"],
        default=["fp32", "bf16"],
        help="precisions of the deeper models",
    )
    budget.add_argument("--budget-warmup", type=int, default=3, help="untimed steps first")
    budget.add_argument("--budget-steps", type=int, default=5, help="timed steps")
    budget.add_argument(
        "--budget-tolerance",
        type=float,
        default=1 / 16,
        help="stop the batch search within this fraction of the batch (0: exact)",
    )
    data_benchmark.add_arguments(parser)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    result: dict = {}
    if args.section in ("models", "all"):
        result["models"] = run_models(args, device)
        print_models(result["models"], args, device)
    if args.section in ("budget", "all"):
        if device.type == "cuda" and torch.cuda.is_available():
            result["budget"] = run_budget(args, device)
            print_budget(result["budget"], args)
        elif device.type == "cuda":
            print("the memory-budget section needs a CUDA GPU, and torch sees none: skipped")
        else:
            print(
                f"the memory-budget section needs a CUDA GPU (--device cuda), not {device}: skipped"
            )
    if args.section in ("data", "all"):
        result["data"] = data_benchmark.run(args)
        print("\ndata loading, the same files for every row")
        print(format_table(result["data"]))
    if args.json:
        args.json.write_text(
            json.dumps(dict(settings=vars(args) | {"json": None}, **result), indent=2)
        )


if __name__ == "__main__":
    main()
