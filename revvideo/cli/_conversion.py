"""Converting checkpoints between layouts, checked on logits (the convert_checkpoint command).

PySlowFast `.pyth` and torchvision `mvit_v1_b` weights become revvideo checkpoints (config,
class names and provenance added); revvideo checkpoints become PySlowFast's layout. Parameter
names are PySlowFast's in both. Optimizer states are dropped: they depend on the optimizer's
parameter groups. The converted file is loaded into a fresh model and its logits on a random
clip are compared with the source's (for torchvision weights: torchvision's own MViT with the
original tensors).
"""

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from fvcore.common.config import CfgNode
from torch import nn
from torchvision.models.video import mvit as torchvision_mvit

from revvideo.checkpoint.files import (
    TORCHVISION_MVIT_KEY,
    load_checkpoint,
    load_model_state,
    model_entries,
    read_model_checkpoint,
    save_checkpoint,
)
from revvideo.checkpoint.releases import checkpoint_file
from revvideo.classes import resolve_class_names
from revvideo.models import MViT, build_model
from revvideo.models.build import layer_plans, model_arguments
from revvideo.utils.errors import CheckpointError, UserError

TARGETS = ("revvideo", "pyslowfast")
# Largest logit difference accepted, relative to the largest logit (at least 1): float32
# rounding differs between implementations, a wrong tensor changes logits far more.
TOLERANCE = 1e-4


def torchvision_state(path: Path) -> Mapping[str, torch.Tensor] | None:
    """The file's tensors under their own names when it is a torchvision MViT state dict."""
    try:
        # Memory-mapped: only the names are read until a tensor is used.
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return None  # Not a plain state dict file; read_checkpoint says what it is.
    return content if isinstance(content, Mapping) and TORCHVISION_MVIT_KEY in content else None


def torchvision_twin(cfg: CfgNode) -> nn.Module:
    """torchvision's MViT (v1) with the architecture that `cfg` gives revvideo's MViT."""
    _, arguments = model_arguments(cfg)
    plans = layer_plans(cfg, MViT)
    blocks = [
        torchvision_mvit.MSBlockConfig(
            num_heads=plan.num_heads,
            input_channels=plan.dim_in,
            output_channels=plan.dim_out,
            kernel_q=list(plan.kernel_q),
            kernel_kv=list(plan.kernel_kv),
            stride_q=list(plan.stride_q),
            stride_kv=list(plan.stride_kv),
        )
        for plan in plans
    ]
    return torchvision_mvit.MViT(
        spatial_size=(arguments["crop_size"], arguments["crop_size"]),
        temporal_size=arguments["num_frames"],
        block_setting=blocks,
        residual_pool=False,
        residual_with_cls_embed=False,
        rel_pos_embed=False,
        proj_after_attn=False,
        num_classes=cfg.MODEL.NUM_CLASSES,
        patch_embed_kernel=arguments["patch_kernel"],
        patch_embed_stride=arguments["patch_stride"],
        patch_embed_padding=arguments["patch_padding"],
    )


def random_clip_logits(model: nn.Module, cfg: CfgNode) -> torch.Tensor:
    """`model`'s logits on the same random clip every time, of the size `cfg` trains on."""
    size = cfg.DATA.TRAIN_CROP_SIZE
    clip = torch.randn(
        1, 3, cfg.DATA.NUM_FRAMES, size, size, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        return model.eval()(clip)


class ConversionMismatch(UserError):
    """The converted weights do not reproduce the source's logits (the output was removed)."""


def convert(source: str, output: str | os.PathLike, cfg_file: str | None, target: str) -> float:
    """Writes `source` in the `target` layout to `output`; returns the largest difference
    between the logits of the written weights and of the source on a random clip, relative to
    the largest source logit (at least 1).

    Raises ConversionMismatch, after removing `output`, when that difference exceeds
    TOLERANCE; UserError (one line) for unusable sources, configs and outputs.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    path = checkpoint_file(source, "the source")
    output = Path(output)
    if output.resolve() == path.resolve():
        raise UserError(f"the output {output} is the source; name another file")
    cfg, checkpoint = read_model_checkpoint(path, cfg_file)
    model = build_model(cfg)
    others = load_model_state(model, checkpoint, path)
    original = torchvision_state(path)
    if original is not None:
        reference = torchvision_twin(cfg)
        reference.load_state_dict(original)
    else:
        reference = model
    # Taken before anything is written, so the comparison sees the source as it was read.
    expected = random_clip_logits(reference, cfg)

    if not torch.isfinite(expected).all():
        raise CheckpointError(f"{source} gives non-finite logits: its weights are broken")
    epoch = others.get("epoch", 0)
    entries = {"epoch": epoch} if "epoch" in others else {}
    if target == "revvideo":
        names = resolve_class_names(
            cfg.MODEL.NUM_CLASSES, checkpoint=others, data_dir=cfg.DATA.PATH_TO_DATA_DIR
        ).names
        provenance = others.get("provenance") or {}
        entries |= model_entries(
            cfg,
            names,
            source=provenance.get("source") or f"converted from {source}",
            epoch=epoch,
            step=provenance.get("step", 0),
        )
    save_checkpoint(output, model, **entries)

    converted = build_model(cfg)
    load_checkpoint(output, converted)
    actual = random_clip_logits(converted, cfg)
    difference = (actual - expected).abs().max().item() / max(1.0, expected.abs().max().item())
    if not difference <= TOLERANCE:  # NaN included
        output.unlink()
        raise ConversionMismatch(
            f"the converted model's logits differ from the source's by {difference:.2e} "
            f"(relative; at most {TOLERANCE:.0e} expected); {output} removed"
        )
    return difference
