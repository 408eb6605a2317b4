"""The measurements behind tools/benchmark.py, imported once its arguments are parsed (so that
--help needs no torch). What each figure means is in tools/benchmark.py's docstring."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import VisionTransformer, vit_b_16, vit_l_16

from revvideo.data import benchmark as data_benchmark
from revvideo.models import (
    MViT,
    mvit_b_16x4,
    rev_mvit_b_16x4,
    rev_mvit_b_imagenet,
    rev_vit_b,
    rev_vit_l,
    rev_vit_s,
)
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
    """Measurements of models on inputs of one shape: `sample`, one input without the batch
    dimension, a clip (3, T, H, W) or an image (3, H, W); by default the clips --frames and
    --size describe."""

    def __init__(
        self, args: argparse.Namespace, device: torch.device, sample: tuple[int, ...] | None = None
    ) -> None:
        self.args = args
        self.device = device
        self.sample = sample or (3, args.frames, args.size, args.size)
        self.autocast = torch.autocast(
            device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16"
        )

    def clip(self, batch: int) -> torch.Tensor:
        return torch.randn(batch, *self.sample, device=self.device)

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

    def size_and_memory(self, name: str, model: nn.Module) -> dict:
        """Parameters, GFLOPs and memory per input of `model` (built on the CPU, in training
        mode), which is moved to the device."""
        # Counted before the move: fvcore's trace of torchvision's MViT fails on CUDA (its
        # repeat_interleave gets an index on the CPU), and the counts do not depend on the device.
        params = count_parameters(model)
        gflops = count_gflops(model, (1, *self.sample))
        model.to(self.device)
        return dict(
            model=name,
            params_m=params / 1e6,
            gflops=gflops,
            saved_mib_per_clip=self.per_clip(self.saved_bytes, model),
            peak_mib_per_clip=self.per_clip(self.step_peak_bytes, model),
        )

    def model_row(self, name: str, build: Callable[..., nn.Module]) -> dict:
        torch.manual_seed(0)
        model = build(num_frames=self.args.frames, crop_size=self.args.size).train()
        row = self.size_and_memory(name, model)
        batch = self.args.batch
        clip = self.clip(batch)
        row["step_s_per_clip"] = self.timed(lambda: self.train_step(model, clip)) / batch
        model.eval()
        with torch.no_grad(), self.autocast:
            row["infer_clips_per_s"] = batch / self.timed(lambda: model(clip))
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


# --- the paper's ImageNet table ---------------------------------------------------------------


@dataclass(frozen=True)
class PaperModel:
    """A row of the paper's ImageNet table: our model and the figure the paper reports."""

    name: str
    build: Callable[[int], nn.Module]  # image size -> the model, 1000 classes
    paper_mb: float  # training memory per 224 px image in the paper (MB)


def _vit_s_twin(size: int) -> nn.Module:
    """ViT-S/16 (DeiT-S's geometry) built with torchvision's ViT, which has no ViT-S."""
    return VisionTransformer(
        image_size=size, patch_size=16, num_layers=12, num_heads=6, hidden_dim=384, mlp_dim=1536
    )


def _mvit_b_image(size: int) -> nn.Module:
    """MViT-B for images, PySlowFast's ImageNet/MVIT_B_16_CONV: the image Rev-MViT-B's geometry
    (rev_mvit_b_imagenet) in ordinary blocks, with MViT's class token."""
    return MViT(
        1000,
        num_frames=1,
        crop_size=size,
        patch_2d=True,
        patch_kernel=(7, 7),
        patch_stride=(4, 4),
        patch_padding=(3, 3),
        sep_pos_embed=False,
        drop_path_rate=0.1,
        head_dropout_rate=0.0,
        pool_kvq_kernel=(1, 3, 3),
        pool_kv_stride_adaptive=(1, 4, 4),
    )


def _image_model(builder: Callable[..., nn.Module], size: int) -> nn.Module:
    return builder(1000, num_frames=1, crop_size=size)


# The paper's Table (ImageNet-1k, memory per image at 224 px; its abstract's "up to 15.5x" is
# ViT-L's): (the non-reversible model, its reversible twin), by the name --paper-models uses.
PAPER_PAIRS: dict[str, tuple[PaperModel, PaperModel]] = {
    "ViT-S": (
        PaperModel("ViT-S (torchvision twin)", _vit_s_twin, 66.5),
        PaperModel("Rev-ViT-S", partial(_image_model, rev_vit_s), 8.8),
    ),
    "ViT-B": (
        PaperModel("vit_b_16 (torchvision)", lambda size: vit_b_16(image_size=size), 129.7),
        PaperModel("Rev-ViT-B", partial(_image_model, rev_vit_b), 17.0),
    ),
    "ViT-L": (
        PaperModel("vit_l_16 (torchvision)", lambda size: vit_l_16(image_size=size), 349.3),
        PaperModel("Rev-ViT-L", partial(_image_model, rev_vit_l), 22.6),
    ),
    "MViT-B": (
        PaperModel("MViT-B (revvideo, image)", _mvit_b_image, 153.6),
        PaperModel("Rev-MViT-B (image)", partial(_image_model, rev_mvit_b_imagenet), 66.8),
    ),
}


def _paper_row(args: argparse.Namespace, device: torch.device, pair: str, index: int) -> dict:
    model = PAPER_PAIRS[pair][index]
    torch.manual_seed(0)
    bench = Bench(args, device, (3, args.size, args.size))
    row = bench.size_and_memory(model.name, model.build(args.size).train())
    row["paper_mb_per_image"] = model.paper_mb
    print(f"  measured {model.name}", file=sys.stderr, flush=True)
    return row


def run_paper(args: argparse.Namespace, device: torch.device) -> dict:
    """Both rows of each pair in --paper-models, each in a fresh process; the reversible row
    carries the reductions, ours (peak and saved) and the paper's."""
    rows = []
    for pair in args.paper_models:
        plain, reversible = (
            _in_fresh_process(_paper_row, args, device, pair, index) for index in (0, 1)
        )
        reversible["peak_x_lower"] = plain["peak_mib_per_clip"] / reversible["peak_mib_per_clip"]
        reversible["saved_x_lower"] = plain["saved_mib_per_clip"] / reversible["saved_mib_per_clip"]
        reversible["paper_x_lower"] = plain["paper_mb_per_image"] / reversible["paper_mb_per_image"]
        reversible["meets_paper"] = reversible["peak_x_lower"] >= reversible["paper_x_lower"]
        rows += [plain, reversible]
    return dict(rows=rows)


def print_paper(result: dict, args: argparse.Namespace, device: torch.device) -> None:
    print(
        f"\n{args.size}x{args.size} images, {args.dtype}, {device}, {torch.get_num_threads()} "
        "threads, memory per image (growth from batch 1 to 2); the paper's figures (MB per "
        "image) and reductions in the columns after ours"
    )
    rows = [
        row | ({"meets": "yes" if row["meets_paper"] else "no"} if "meets_paper" in row else {})
        for row in result["rows"]
    ]
    columns = [
        ("model", "model", "s"),
        ("params_m", "params (M)", ".2f"),
        ("gflops", "GFLOPs", ".2f"),
        ("peak_mib_per_clip", "peak MiB/img", ".1f"),
        ("paper_mb_per_image", "paper MB/img", ".1f"),
        ("saved_mib_per_clip", "saved MiB/img", ".1f"),
        ("peak_x_lower", "x lower peak", ".1f"),
        ("saved_x_lower", "x lower saved", ".1f"),
        ("paper_x_lower", "paper x lower", ".1f"),
        ("meets", "at least the paper's", "s"),
    ]
    print(format_table(rows, columns))
    reversible = [row for row in result["rows"] if "meets_paper" in row]
    short = [row["model"] for row in reversible if not row["meets_paper"]]
    verdict = f"no: {', '.join(short)} fall short" if short else "yes"
    print(f"every reversible row's peak reduction at least the paper's: {verdict}")


def run(args: argparse.Namespace) -> None:
    """Runs the sections --section names and prints their tables (and --json's file)."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    args.device = str(device)
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
    if args.section == "paper":
        result["paper"] = run_paper(args, device)
        print_paper(result["paper"], args, device)
    if args.json:
        args.json.write_text(
            json.dumps(dict(settings=vars(args) | {"json": None}, **result), indent=2)
        )
