"""Tiny versions of the models for fast tests: 4 frames, three stages, a few layers."""

from typing import Any

from revvideo.models import mvit_b_16x4, rev_mvit_b_16x4, rev_vit_s

TINY_GEOMETRY = dict(num_frames=4, crop_size=32)

TINY_MVIT = dict(
    TINY_GEOMETRY,
    embed_dim=16,
    depth=5,
    num_heads=1,
    dim_mul=((1, 2.0), (3, 2.0)),
    head_mul=((1, 2.0), (3, 2.0)),
    pool_q_stride=((1, 1, 2, 2), (3, 1, 2, 2)),
    pool_kv_stride_adaptive=(1, 4, 4),
)


def tiny_rev_mvit(num_classes: int = 7, **kwargs: Any):
    """Rev-MViT with stage transitions at layers 1 and 3; token chunks smaller than a stage so
    the chunked MLP path runs."""
    return rev_mvit_b_16x4(
        num_classes, **(TINY_MVIT | dict(transition_layers=(1, 3), chunk_tokens=48) | kwargs)
    )


def tiny_mvit(num_classes: int = 7, **kwargs: Any):
    return mvit_b_16x4(num_classes, **(TINY_MVIT | kwargs))


def tiny_rev_vit(num_classes: int = 7, **kwargs: Any):
    return rev_vit_s(
        num_classes,
        **(
            dict(
                TINY_GEOMETRY,
                embed_dim=24,
                num_heads=2,
                depth=3,
                patch_kernel=(2, 8, 8),
                patch_stride=(2, 8, 8),
                chunk_tokens=20,
            )
            | kwargs
        ),
    )
