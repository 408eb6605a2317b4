"""Converts PySlowFast and torchvision checkpoints to revvideo's, or revvideo's to PySlowFast's.

    python tools/convert_checkpoint.py REV_MVIT_B_16x4.pyth rev_mvit_b_16x4_k400.pyth \\
        --cfg configs/kinetics/REV_MVIT_B_16x4.yaml             # PySlowFast .pyth -> revvideo
    python tools/convert_checkpoint.py mvit_v1_b-dbeb1030.pth mvit_b_16x4_k400.pyth \\
        --cfg configs/kinetics/MVIT_B_16x4.yaml                 # torchvision mvit_v1_b -> revvideo
    python tools/convert_checkpoint.py output/run/checkpoints/checkpoint_epoch_00200.pyth \\
        run_pyslowfast.pyth --to pyslowfast                     # revvideo -> PySlowFast

SOURCE is a file (the layout is recognised) or a release name (revvideo.models.weights). The
model is built from --cfg, else from the config stored in SOURCE (revvideo checkpoints).

revvideo's layout: {"model_state", "cfg" (YAML), "class_names", "epoch" if SOURCE has one};
PySlowFast's: {"model_state", "epoch" if SOURCE has one}. Parameter names are PySlowFast's in
both. Optimizer states are dropped: they depend on the optimizer's parameter groups.

Before it finishes, the converted file is loaded into a fresh model and its logits on a random
clip are compared with the source's (for torchvision weights: torchvision's own MViT with the
original tensors). Exit status: 0 converted and equal; 1 the outputs differ (the file is
removed); 2 a mistake in the options, the config or the checkpoint (one `error:` line).
"""

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import torch
from fvcore.common.config import CfgNode
from torch import nn
from torchvision.models.video import mvit as torchvision_mvit

from revvideo.checkpoint import (
    TORCHVISION_MVIT_KEY,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
)
from revvideo.engine.evaluate import class_names
from revvideo.models import build_model
from revvideo.models.build import mvit_arguments
from revvideo.models.common import plan_layers
from revvideo.models.weights import (
    fetch_release,
    find_release,
    read_model_checkpoint,
    stored_class_names,
)
from revvideo.utils.errors import UserError

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
    arguments = mvit_arguments(cfg)
    plans = plan_layers(
        **{
            key: arguments[key]
            for key in (
                "depth",
                "embed_dim",
                "num_heads",
                "dim_mul",
                "head_mul",
                "pool_q_stride",
                "pool_kv_stride",
                "pool_kv_stride_adaptive",
                "pool_kvq_kernel",
                "drop_path_rate",
            )
        },
        width_change_in_attention=False,
    )
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


def convert(source: str, output: str | os.PathLike, cfg_file: str | None, target: str) -> float:
    """Writes `source` in the `target` layout to `output`; returns the largest difference
    between the logits of the written weights and of the source on a random clip, relative to
    the largest source logit (at least 1)."""
    release = find_release(source)
    path = fetch_release(release) if release is not None else Path(source)
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

    entries = {"epoch": others["epoch"]} if "epoch" in others else {}
    if target == "revvideo":
        names = stored_class_names(others, cfg.MODEL.NUM_CLASSES) or class_names(cfg)
        entries |= {"cfg": cfg.dump(), "class_names": names}
    save_checkpoint(output, model, **entries)

    converted = build_model(cfg)
    load_checkpoint(output, converted)
    difference = (random_clip_logits(converted, cfg) - expected).abs().max().item()
    return difference / max(1.0, expected.abs().max().item())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", help="checkpoint file or release name")
    parser.add_argument("output", help="where to write the converted checkpoint")
    parser.add_argument("--cfg", help="YAML config of the model (default: the source's)")
    parser.add_argument("--to", choices=TARGETS, default="revvideo", help="layout to write")
    args = parser.parse_args(argv)
    try:
        difference = convert(args.source, args.output, args.cfg, args.to)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if difference > TOLERANCE:
        Path(args.output).unlink()
        print(
            f"error: the converted model's logits differ from the source's by {difference:.2e} "
            f"(relative; at most {TOLERANCE:.0e} expected); {args.output} removed",
            file=sys.stderr,
        )
        return 1
    print(
        f"wrote {args.output} ({args.to} layout); logits equal to the source's on a random clip "
        f"(largest relative difference {difference:.1e})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
