"""Reversible Vision Transformer (Rev-ViT), Mangalam et al., CVPR 2022.

An isotropic ViT (no pooling, constant width) made of reversible blocks: the same engine and
the same `RevMViT` class with every pooling and width change turned off. Video clips are cut
into 2x16x16 tubelets; a single image (`num_frames=1`) into 16x16 patches.
"""

import os
from typing import Any

from revvideo.checkpoint.releases import load_weights
from revvideo.models.rev_mvit import RevMViT

__all__ = ["rev_vit_b", "rev_vit_s"]


def _rev_vit(
    num_classes: int, preset: dict[str, Any], num_frames: int, crop_size: int, **kwargs: Any
) -> RevMViT:
    tubelet = (1 if num_frames == 1 else 2, 16, 16)
    arguments: dict[str, Any] = dict(
        num_frames=num_frames,
        crop_size=crop_size,
        depth=12,
        qkv_bias=True,
        separate_qkv=True,
        patch_kernel=tubelet,
        patch_stride=tubelet,
        patch_padding=(0, 0, 0),
        sep_pos_embed=num_frames > 1,
        dim_mul=(),
        head_mul=(),
        pool_q_stride=(),
        pool_kv_stride=(),
        pool_kv_stride_adaptive=None,
        pool_kvq_kernel=None,
        transition_layers=(),
    )
    return RevMViT(num_classes, **(arguments | preset | kwargs))


def rev_vit_s(
    num_classes: int = 400,
    *,
    num_frames: int = 16,
    crop_size: int = 224,
    weights: str | os.PathLike | None = None,
    **kwargs: Any,
) -> RevMViT:
    """Rev-ViT-S: width 384, 6 heads, 12 reversible blocks. `num_frames=1` for images;
    `kwargs` override any `RevMViT` argument; `weights`: a checkpoint path."""
    preset = dict(embed_dim=384, num_heads=6, drop_path_rate=0.1)
    model = _rev_vit(num_classes, preset, num_frames, crop_size, **kwargs)
    return load_weights(model, weights, "rev_vit_s")


def rev_vit_b(
    num_classes: int = 400,
    *,
    num_frames: int = 16,
    crop_size: int = 224,
    weights: str | os.PathLike | None = None,
    **kwargs: Any,
) -> RevMViT:
    """Rev-ViT-B: width 768, 12 heads, 12 reversible blocks. `num_frames=1` for images;
    `kwargs` override any `RevMViT` argument; `weights`: a checkpoint path."""
    preset = dict(embed_dim=768, num_heads=12, drop_path_rate=0.2)
    model = _rev_vit(num_classes, preset, num_frames, crop_size, **kwargs)
    return load_weights(model, weights, "rev_vit_b")
