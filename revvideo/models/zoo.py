"""The typed builders: each architecture's published geometry, with `weights=` to load a
checkpoint file or a released checkpoint by name (revvideo.checkpoint.releases).

Rev-ViT is the same `RevMViT` class with every pooling and width change turned off: video clips
are cut into 2x16x16 tubelets, a single image (`num_frames=1`) into 16x16 patches by a Conv2d,
the layout of PySlowFast's ImageNet models, so their released weights load.
"""

import os
from collections.abc import Callable
from typing import Any

from revvideo.checkpoint.releases import find_release, load_weights
from revvideo.models.mvit import MViT
from revvideo.models.rev_mvit import RevMViT

__all__ = [
    "mvit_b_16x4",
    "rev_mvit_b_16x4",
    "rev_mvit_b_imagenet",
    "rev_vit_b",
    "rev_vit_l",
    "rev_vit_s",
]


def mvit_b_16x4(
    num_classes: int = 400, *, weights: str | os.PathLike | None = None, **kwargs: Any
) -> MViT:
    """MViT-B for 16 frames (sampling rate 4) at 224 px, PySlowFast's and torchvision's
    `mvit_v1_b` architecture (78.4 % top-1 on Kinetics-400). `kwargs` override any argument.
    `weights`: a checkpoint path or a release name (see revvideo.checkpoint.releases, e.g.
    "mvit_b_16x4_k400")."""
    return load_weights(MViT(num_classes, **kwargs), weights, "mvit_b_16x4")


def rev_mvit_b_16x4(
    num_classes: int = 400, *, weights: str | os.PathLike | None = None, **kwargs: Any
) -> RevMViT:
    """Rev-MViT-B for 16 frames (sampling rate 4) at 224 px: 78.4 % top-1 on Kinetics-400
    in the paper. `kwargs` override any `RevMViT` argument. `weights`: a checkpoint path or a
    release name (see revvideo.checkpoint.releases, e.g. "rev_mvit_b_16x4_k400")."""
    return load_weights(RevMViT(num_classes, **kwargs), weights, "rev_mvit_b_16x4")


def rev_mvit_b_imagenet(
    num_classes: int = 1000, *, weights: str | os.PathLike | None = None, **kwargs: Any
) -> RevMViT:
    """Rev-MViT-B for 224 px images, PySlowFast's ImageNet/REV_MVIT_B_16_CONV: 82.9 % top-1 on
    ImageNet-1k. Takes `(B, 3, H, W)` images or one-frame clips `(B, 3, 1, H, W)`. `kwargs`
    override any `RevMViT` argument. `weights`: a checkpoint path or a release name (e.g.
    "rev_mvit_b_in1k")."""
    preset: dict[str, Any] = dict(
        num_frames=1,
        patch_2d=True,
        patch_kernel=(7, 7),
        patch_stride=(4, 4),
        patch_padding=(3, 3),
        sep_pos_embed=False,
        qkv_bias=True,
        separate_qkv=True,
        drop_path_rate=0.1,
        head_dropout_rate=0.0,
        pool_kvq_kernel=(1, 3, 3),
        pool_kv_stride_adaptive=(1, 4, 4),
        pre_q_fusion="concat_linear_2",
    )
    return load_weights(RevMViT(num_classes, **(preset | kwargs)), weights, "rev_mvit_b_imagenet")


# Without a release to follow: Kinetics-style clips and classes.
DEFAULT_FRAMES = 16
DEFAULT_CLASSES = 400


def _from_release(value: int | None, weights: str | os.PathLike | None, field: str, default: int):
    """`value`; if None, the `field` of the release `weights` names (the ImageNet releases: 1
    frame, 1000 classes), else `default`."""
    if value is not None:
        return value
    release = find_release(weights) if isinstance(weights, str) else None
    return default if release is None else getattr(release, field)


def _rev_vit(
    builder: str,
    preset: dict[str, Any],
    num_classes: int | None,
    num_frames: int | None,
    crop_size: int,
    weights: str | os.PathLike | None,
    kwargs: dict[str, Any],
) -> RevMViT:
    num_classes = _from_release(num_classes, weights, "num_classes", DEFAULT_CLASSES)
    num_frames = _from_release(num_frames, weights, "num_frames", DEFAULT_FRAMES)
    if num_frames == 1:
        patches: dict[str, Any] = dict(
            patch_2d=True,
            patch_kernel=(16, 16),
            patch_stride=(16, 16),
            patch_padding=(0, 0),
            sep_pos_embed=False,
        )
    else:
        patches = dict(
            patch_kernel=(2, 16, 16),
            patch_stride=(2, 16, 16),
            patch_padding=(0, 0, 0),
            sep_pos_embed=True,
        )
    arguments: dict[str, Any] = dict(
        patches,
        num_frames=num_frames,
        crop_size=crop_size,
        depth=12,
        qkv_bias=True,
        separate_qkv=True,
        dim_mul=(),
        head_mul=(),
        pool_q_stride=(),
        pool_kv_stride=(),
        pool_kv_stride_adaptive=None,
        pool_kvq_kernel=None,
        transition_layers=(),
    )
    model = RevMViT(num_classes, **(arguments | preset | kwargs))
    return load_weights(model, weights, builder)


def _rev_vit_builder(name: str, summary: str, **preset: Any) -> Callable[..., RevMViT]:
    """A Rev-ViT builder of width, heads and depth `preset`, documented by `summary`."""

    def builder(
        num_classes: int | None = None,
        *,
        num_frames: int | None = None,
        crop_size: int = 224,
        weights: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> RevMViT:
        return _rev_vit(name, preset, num_classes, num_frames, crop_size, weights, kwargs)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"""{summary}

    `num_frames=1` builds the image model; None (frames, classes) takes those of the release
    `weights` names, else 16 frames and 400 classes. `kwargs` override any `RevMViT` argument;
    `weights`: a checkpoint path or a release name."""
    return builder


rev_vit_s = _rev_vit_builder(
    "rev_vit_s",
    "Rev-ViT-S: width 384, 6 heads, 12 reversible blocks (22.4 M parameters for images); "
    '79.9 % top-1 on ImageNet-1k with the release "rev_vit_s_in1k".',
    embed_dim=384,
    num_heads=6,
    drop_path_rate=0.1,
)
rev_vit_b = _rev_vit_builder(
    "rev_vit_b",
    "Rev-ViT-B: width 768, 12 heads, 12 reversible blocks (87.3 M parameters for images); "
    '81.8 % top-1 on ImageNet-1k with the release "rev_vit_b_in1k".',
    embed_dim=768,
    num_heads=12,
    drop_path_rate=0.2,
)
rev_vit_l = _rev_vit_builder(
    "rev_vit_l",
    "Rev-ViT-L: width 1024, 16 heads, 24 reversible blocks (ViT-L's geometry; 305.4 M "
    "parameters for images). No weights are released; PySlowFast has no config for it, so the "
    "drop-path rate (0.5) is the usual one for a ViT-L trained from scratch, not the paper's.",
    embed_dim=1024,
    num_heads=16,
    depth=24,
    drop_path_rate=0.5,
)
