"""Memory and speed of the reversible models next to their peers, measured in one run.

    python tools/benchmark.py                          # the model table, 16x224x224, fp32
    python tools/benchmark.py --frames 4 --size 64     # a quick look
    python tools/benchmark.py --section data           # data loading (revvideo.data.benchmark)
    python tools/benchmark.py --json results.json      # also write the figures as JSON

Model figures, per model:
- params, GFLOPs: fvcore, one clip.
- saved MiB/clip: tensors autograd keeps for backward, growth from batch 1 to batch 2.
- peak MiB/clip: peak memory of a training step (forward + backward), growth from batch 1 to 2;
  live tensor bytes on the CPU, `max_memory_allocated` on CUDA.
- step s/clip: wall time of a training step (forward + backward) divided by the batch size.
- infer clips/s: eval-mode forward under `torch.no_grad()`.
The depth sweep grows the last-but-one stage (stage transitions stay at layers 1, 3, depth - 2).
"""

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from torch import nn

from revvideo.data import benchmark as data_benchmark
from revvideo.models import mvit_b_16x4, rev_mvit_b_16x4
from revvideo.utils.complexity import count_gflops, count_parameters
from revvideo.utils.memory import SavedTensorCounter, peak_bytes
from revvideo.utils.table import format_table

MIB = 2**20


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
        model = build(**geometry).to(self.device).train()
        batch = self.args.batch
        clip = self.clip(batch)
        step = self.timed(lambda: self.train_step(model, clip)) / batch
        model.eval()
        with torch.no_grad(), self.autocast:
            infer = batch / self.timed(lambda: model(clip))
        model.train()
        row = dict(
            model=name,
            params_m=count_parameters(model) / 1e6,
            gflops=count_gflops(model, (1, 3, self.args.frames, self.args.size, self.args.size)),
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--section", choices=["models", "data", "all"], default="models")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=2, help="batch for the timings")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--depths", type=int, nargs="*", default=[16, 24, 40])
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    data_benchmark.add_arguments(parser)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    result: dict = {}
    if args.section in ("models", "all"):
        result["models"] = run_models(args, device)
        print_models(result["models"], args, device)
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
