"""The model table and depth sweep of tools/benchmark.py, and what the other sections share:
`Bench` (memory and time of models on one input shape) and `in_fresh_process`."""

from __future__ import annotations

import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import torch
import torch.nn.functional as F
from torch import nn

from revvideo.benchmark.settings import Settings
from revvideo.models import mvit_b_16x4, rev_mvit_b_16x4
from revvideo.models.reversible import StageTransition
from revvideo.utils.cli import interrupts_ignored
from revvideo.utils.complexity import count_gflops, count_parameters
from revvideo.utils.memory import SavedTensorCounter, peak_bytes
from revvideo.utils.table import format_table

MIB = 2**20
GIB = 2**30


def torchvision_mvit_v1_b(num_frames: int, crop_size: int) -> nn.Module:
    from torchvision.models.video import mvit, mvit_v1_b

    model = mvit_v1_b()
    if (num_frames, crop_size) != (16, 224):
        # The builder fixes 16x224; only the position encoding depends on the input size.
        t, h, w = (
            n // s for n, s in zip((num_frames, crop_size, crop_size), (2, 4, 4), strict=True)
        )
        model.pos_encoding = mvit.PositionalEncoding(96, (h, w), t, rel_pos_embed=False)
    return model


def depth_arguments(depth: int, reversible: bool) -> dict:
    last = depth - 2
    arguments = dict(
        depth=depth,
        dim_mul=((1, 2.0), (3, 2.0), (last, 2.0)),
        head_mul=((1, 2.0), (3, 2.0), (last, 2.0)),
        pool_q_stride=((1, 1, 2, 2), (3, 1, 2, 2), (last, 1, 2, 2)),
    )
    return arguments | (dict(transition_layers=(1, 3, last)) if reversible else {})


def store_deep_stages(model: nn.Module) -> nn.Module:
    """`model` (a RevMViT) with the blocks of its last two stages storing their activations
    (MVIT.REV.STORED_LAYERS): the layers that keep the least skip their recompute."""
    layers = model.rev_backbone.layers
    transitions = [
        index for index, layer in enumerate(layers) if isinstance(layer, StageTransition)
    ]
    model.rev_backbone.stored_layers = frozenset(
        index for index in range(transitions[-2] + 1, len(layers)) if index not in transitions
    )
    return model


MODELS: dict[str, Callable[..., nn.Module]] = {
    "Rev-MViT-B (reversible backward)": rev_mvit_b_16x4,
    "Rev-MViT-B (last two stages stored)": lambda **kw: store_deep_stages(rev_mvit_b_16x4(**kw)),
    "Rev-MViT-B (ordinary autograd)": lambda **kw: rev_mvit_b_16x4(custom_backward=False, **kw),
    "MViT-B (revvideo)": mvit_b_16x4,
    "mvit_v1_b (torchvision)": torchvision_mvit_v1_b,
}
REFERENCE = "mvit_v1_b (torchvision)"


CLASSES = 400  # every builder's default head (Kinetics-400)


def training_inputs(
    settings: Settings, batch: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch` random clips of the settings' size and random labels, on `device`, for a
    TrainingStep."""
    size = settings.size
    clip = torch.randn(batch, 3, settings.frames, size, size, device=device)
    return clip, torch.randint(0, CLASSES, (batch,), device=device)


def no_tf32() -> None:
    """fp32 figures in fp32 on CUDA: no TF32 in matrix products and convolutions. The legacy
    switches, not the fp32_precision ones: torch refuses a mix of the two, and libraries still
    read the legacy ones."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


class TrainingStep:
    """One training step of `model`: cross-entropy, backward and a plain SGD step (it has no
    state, so every step needs the memory of the first), in fp32 or bf16 autocast."""

    def __init__(self, model: nn.Module, device: torch.device, dtype: str) -> None:
        self.model = model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")

    def __call__(self, clip: torch.Tensor, labels: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast:
            loss = F.cross_entropy(self.model(clip), labels)
        loss.backward()
        self.optimizer.step()

    def release(self) -> None:
        """After running out of memory: the gradients of the failed step go too."""
        self.optimizer.zero_grad(set_to_none=True)


class Bench:
    """Measurements of models on inputs of one shape: `sample`, one input without the batch
    dimension, a clip (3, T, H, W) or an image (3, H, W); by default the clips --frames and
    --size describe."""

    def __init__(
        self, settings: Settings, device: torch.device, sample: tuple[int, ...] | None = None
    ) -> None:
        no_tf32()
        self.settings = settings
        self.device = device
        self.sample = sample or (3, settings.frames, settings.size, settings.size)
        self.autocast = torch.autocast(
            device.type, dtype=torch.bfloat16, enabled=settings.dtype == "bf16"
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
        for _ in range(self.settings.repeats):
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
        model = build(num_frames=self.settings.frames, crop_size=self.settings.size).train()
        row = self.size_and_memory(name, model)
        batch = self.settings.batch
        clip = self.clip(batch)
        row["step_s_per_clip"] = self.timed(lambda: self.train_step(model, clip)) / batch
        model.eval()
        with torch.no_grad(), self.autocast:
            row["infer_clips_per_s"] = batch / self.timed(lambda: model(clip))
        print(f"  measured {name}", file=sys.stderr, flush=True)
        return row

    def depth_row(self, depth: int) -> dict:
        row: dict = dict(depth=depth)
        geometry = dict(num_frames=self.settings.frames, crop_size=self.settings.size)
        for name, build, reversible in (
            ("Rev-MViT-B", rev_mvit_b_16x4, True),
            ("MViT-B", mvit_b_16x4, False),
        ):
            torch.manual_seed(0)
            arguments = geometry | depth_arguments(depth, reversible)
            model = build(**arguments).to(self.device).train()
            row[f"{name} saved MiB/clip"] = self.per_clip(self.saved_bytes, model)
            if reversible:
                row[f"{name} peak MiB/clip"] = self.per_clip(self.step_peak_bytes, model)
        print(f"  measured depth {depth}", file=sys.stderr, flush=True)
        return row


def _model_row(settings: Settings, device: torch.device, name: str) -> dict:
    return Bench(settings, device).model_row(name, MODELS[name])


def _depth_row(settings: Settings, device: torch.device, depth: int) -> dict:
    return Bench(settings, device).depth_row(depth)


def in_fresh_process(fn: Callable, *arguments: object) -> dict:
    """Runs one measurement in its own process, so no allocator state (or fragmentation) of
    one model carries over to the next. That process ignores Ctrl-C: on one, this process
    ends it."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        with interrupts_ignored():  # the process starts here, within submit
            future = pool.submit(fn, *arguments)
        try:
            return future.result()
        except KeyboardInterrupt:
            for process in multiprocessing.active_children():
                process.kill()
            raise


def run_models(settings: Settings, device: torch.device) -> dict:
    rows = [in_fresh_process(_model_row, settings, device, name) for name in MODELS]
    reference = next(row for row in rows if row["model"] == REFERENCE)
    for row in rows:
        row["saved_x_lower"] = reference["saved_mib_per_clip"] / row["saved_mib_per_clip"]
        row["peak_x_lower"] = reference["peak_mib_per_clip"] / row["peak_mib_per_clip"]
        row["step_x"] = row["step_s_per_clip"] / reference["step_s_per_clip"]
        row["infer_x"] = row["infer_clips_per_s"] / reference["infer_clips_per_s"]
    sweep = [in_fresh_process(_depth_row, settings, device, depth) for depth in settings.depths]
    return dict(models=rows, depth_sweep=sweep)


def print_models(result: dict, settings: Settings, device: torch.device) -> None:
    print(
        f"\n{settings.frames}x{settings.size}x{settings.size} clips, {settings.dtype}, {device}, "
        f"{torch.get_num_threads()} threads, batch {settings.batch}, median of {settings.repeats}; "
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
