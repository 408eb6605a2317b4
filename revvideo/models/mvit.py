"""Multiscale Vision Transformer v1 (MViT), Fan et al., ICCV 2021: the non-reversible baseline.

One stream; at a stage transition the attention pools Q and the previous block's MLP widens
the channels. Parameter names match PySlowFast's released MViT-B checkpoints.
"""

from typing import Any

import torch
from torch import nn

from revvideo.models.common import (
    ClassificationHead,
    LayerPlan,
    Mlp,
    MultiScaleAttention,
    MultiscaleTransformer,
    Thw,
    drop_path,
    init_weights,
    layer_norm,
    residual_max_pool,
)
from revvideo.models.low_memory import pool_channel_major

__all__ = ["MViT"]


class MultiScaleBlock(nn.Module):
    """Pre-norm attention and MLP blocks: `(B, N, dim_in)` on `thw` to `(B, N_q, dim_out)`."""

    def __init__(
        self, plan: LayerPlan, mlp_ratio: float, dropout: float, attention: dict[str, Any]
    ) -> None:
        super().__init__()
        dim, dim_out = plan.dim_in, plan.dim_out
        self.has_cls_token = attention["has_cls_token"]
        self.norm1 = layer_norm(dim)
        self.attn = MultiScaleAttention(dim, dim, **attention)
        self.norm2 = layer_norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dim_out, dropout)
        self.proj = nn.Linear(dim, dim_out) if dim != dim_out else None
        self.pool_skip = None
        if plan.stride_q and any(s > 1 for s in plan.stride_q):
            self.pool_skip = residual_max_pool(plan.stride_q)
        self.drop_path_rate = plan.drop_path

    def _pooled_skip(self, x: torch.Tensor, thw: Thw) -> torch.Tensor:
        """Max-pools the residual tokens to the Q-pooled grid; the class token bypasses."""
        tokens = x[:, 1:] if self.has_cls_token else x
        pooled = pool_channel_major(tokens.transpose(1, 2), self.pool_skip, thw, heads=1)
        return torch.cat([x[:, :1], pooled[:, 0]], dim=1) if self.has_cls_token else pooled[:, 0]

    def forward(self, x: torch.Tensor, thw: Thw) -> tuple[torch.Tensor, Thw]:
        attended, thw_out = self.attn(self.norm1(x), thw)
        if self.pool_skip is not None:
            x = self._pooled_skip(x, thw)
        x = x + drop_path(attended, self.drop_path_rate, self.training)
        normed = self.norm2(x)
        if self.proj is not None:
            x = self.proj(normed)
        return x + drop_path(self.mlp(normed), self.drop_path_rate, self.training), thw_out


class MViT(MultiscaleTransformer):
    """MViT v1: `(B, C, T, H, W)` clips to `(B, num_classes)` logits.

    The defaults build MViT-B 16x4 (36,610,672 parameters with 400 classes), the same network
    as torchvision's `mvit_v1_b`. With `cls_token` the head reads the class token, otherwise
    the mean of all tokens. `geometry`: the clip size, patch embedding and layer schedule
    (revvideo.models.common.Geometry's fields).
    """

    def __init__(
        self,
        num_classes: int = 400,
        *,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        separate_qkv: bool = False,
        cls_token: bool = True,
        drop_path_rate: float = 0.2,
        dropout_rate: float = 0.0,
        head_dropout_rate: float = 0.5,
        pool_mode: str = "conv",
        **geometry: Any,
    ) -> None:
        super().__init__(
            class_token=cls_token,
            width_change_in_attention=False,
            drop_path_rate=drop_path_rate,
            dropout_rate=dropout_rate,
            **geometry,
        )
        attention = dict(
            qkv_bias=qkv_bias,
            mode=pool_mode,
            has_cls_token=cls_token,
            separate_qkv=separate_qkv,
            proj_drop=dropout_rate,
        )
        self.blocks = nn.ModuleList(
            MultiScaleBlock(plan, mlp_ratio, dropout_rate, plan.attention_arguments(**attention))
            for plan in self.plans
        )
        self.norm = layer_norm(self.plans[-1].dim_out)
        self.head = ClassificationHead(self.plans[-1].dim_out, num_classes, head_dropout_rate)

        self.apply(init_weights)
        if cls_token:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Features `(B, C)` before the head: the class token, or the mean of all tokens."""
        x, thw = self.embed(x)
        for block in self.blocks:
            x, thw = block(x, thw)
        x = self.norm(x)
        return x[:, 0] if self.has_cls_token else x.mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, C, T, H, W)` clips (or `(B, C, H, W)` images) to `(B, num_classes)` logits."""
        return self.head(self.forward_features(x))
