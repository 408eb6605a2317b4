"""The paper's ImageNet table (tools/benchmark.py --section paper): ViT-S/B/L and MViT-B against
their reversible twins, memory per image, next to the paper's figures."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torchvision.models import VisionTransformer, vit_b_16, vit_l_16

from revvideo.benchmark.models import Bench, in_fresh_process
from revvideo.benchmark.settings import Settings
from revvideo.models import MViT, rev_mvit_b_imagenet, rev_vit_b, rev_vit_l, rev_vit_s
from revvideo.utils.table import format_table


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


def _paper_row(settings: Settings, device: torch.device, pair: str, index: int) -> dict:
    model = PAPER_PAIRS[pair][index]
    torch.manual_seed(0)
    bench = Bench(settings, device, (3, settings.size, settings.size))
    row = bench.size_and_memory(model.name, model.build(settings.size).train())
    row["paper_mb_per_image"] = model.paper_mb
    print(f"  measured {model.name}", file=sys.stderr, flush=True)
    return row


def run_paper(settings: Settings, device: torch.device) -> dict:
    """Both rows of each pair in --paper-models, each in a fresh process; the reversible row
    carries the reductions, ours (peak and saved) and the paper's."""
    rows = []
    for pair in settings.paper_models:
        plain, reversible = (
            in_fresh_process(_paper_row, settings, device, pair, index) for index in (0, 1)
        )
        reversible["peak_x_lower"] = plain["peak_mib_per_clip"] / reversible["peak_mib_per_clip"]
        reversible["saved_x_lower"] = plain["saved_mib_per_clip"] / reversible["saved_mib_per_clip"]
        reversible["paper_x_lower"] = plain["paper_mb_per_image"] / reversible["paper_mb_per_image"]
        reversible["meets_paper"] = reversible["peak_x_lower"] >= reversible["paper_x_lower"]
        rows += [plain, reversible]
    return dict(rows=rows)


def print_paper(result: dict, settings: Settings, device: torch.device) -> None:
    print(
        f"\n{settings.size}x{settings.size} images, {settings.dtype}, {device}, {torch.get_num_threads()} "
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
