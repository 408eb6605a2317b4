"""Reversible Multiscale Vision Transformer (Rev-MViT), Mangalam et al., CVPR 2022.

Reversible blocks keep two streams of constant width; at the stage transitions the streams
are fused, Q pooling lowers the resolution and the attention widens the channels. Parameter
names match PySlowFast's released checkpoints (`rev_backbone.layers.N.F/G...`).
"""

import math
import re
from collections.abc import Callable, Sequence
from fractions import Fraction
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
    check_layer_index,
    init_weights,
    layer_norm,
    residual_max_pool,
)
from revvideo.models.low_memory import (
    channel_major_linear,
    pool_channel_major,
    recompute_by_head,
    recompute_in_backward,
)
from revvideo.models.reversible import (
    DEFAULT_CHUNK_TOKENS,
    ReversibleBlock,
    ReversibleStack,
    StageTransition,
)

__all__ = ["FINAL_FUSIONS", "RESIDUAL_PATHS", "RevMViT", "StreamFusion"]

# The StreamFusion modes the streams may be fused with before the head.
FINAL_FUSIONS = ("concat", "avg")
# How a stage transition takes its residual to the pooled grid: with the attention's Q
# pooling, or by max pooling.
RESIDUAL_PATHS = ("conv", "max")


class RecomputedPoolingAttention(MultiScaleAttention):
    """Pooling attention that keeps none of the full-resolution projections it pools for
    backward: each pooled q, k, v is recomputed from the attention's input when backward needs
    it. With `head_by_head`, one head at a time, so a single head's full-resolution projection
    and its gradient exist (more, smaller operations)."""

    def __init__(self, *args: Any, head_by_head: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_by_head = head_by_head

    def recomputed(self, fn: Callable[..., torch.Tensor], *args: Any, dim: int) -> torch.Tensor:
        """`fn(*args, heads)` recomputed in backward, head by head with `head_by_head`."""
        heads = self.num_heads if self.head_by_head else None
        return recompute_by_head(fn, *args, num_heads=heads, dim=dim)

    def project_and_pool(
        self, x: torch.Tensor, index: int, thw: Thw, heads: range | None = None
    ) -> torch.Tensor:
        pool, _ = self._pooling(index)
        project = super().project_and_pool
        if pool is None:
            return project(x, index, thw, heads)
        if heads is not None:
            return recompute_in_backward(project, x, index, thw, heads)
        return self.recomputed(project, x, index, thw, dim=1)


class AttentionSubBlock(nn.Module):
    """F: LayerNorm then pooling attention, `(B, N, dim)` to `(B, N_q, dim_out)`.

    With `recompute_pooling`, pooled projections are recomputed in backward instead of stored,
    with `head_by_head` one head at a time (RecomputedPoolingAttention).
    """

    def __init__(
        self,
        dim: int,
        dim_out: int,
        attention: dict[str, Any],
        recompute_pooling: bool,
        head_by_head: bool = False,
    ) -> None:
        super().__init__()
        self.norm = layer_norm(dim)
        if recompute_pooling:
            self.attn = RecomputedPoolingAttention(
                dim, dim_out, head_by_head=head_by_head, **attention
            )
        else:
            self.attn = MultiScaleAttention(dim, dim_out, **attention)

    def forward(self, x: torch.Tensor, thw: Thw) -> torch.Tensor:
        return self.attn(self.norm(x), thw)[0]


class MlpSubBlock(nn.Module):
    """G: LayerNorm then MLP, token-wise, `(B, N, dim)` to `(B, N, dim)`."""

    def __init__(self, dim: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm = layer_norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dim, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(x))


class RevMViTBlock(ReversibleBlock):
    """`Y1 = X1 + F(X2)`, `Y2 = X2 + G(Y1)` at constant width and resolution. With
    `largest_streams` (see RevMViT), F's pooled projections are recomputed in backward, head by
    head."""

    def __init__(
        self,
        plan: LayerPlan,
        mlp_ratio: float,
        dropout: float,
        attention: dict,
        chunk_tokens: int,
        largest_streams: bool,
    ) -> None:
        super().__init__()
        self.F = AttentionSubBlock(
            plan.dim_in, plan.dim_in, attention, largest_streams, head_by_head=largest_streams
        )
        self.G = MlpSubBlock(plan.dim_in, mlp_ratio, dropout)
        self.drop_path_rate = plan.drop_path
        self.chunk_tokens = chunk_tokens


class StreamFusion(nn.Module):
    """Fuses the two streams `(B, N, dim)` into one (PySlowFast's TwoStreamFusion, same names).

    "avg" averages them (width `dim`); "concat" concatenates them (width `2 * dim`);
    "concat_linear[_M[_P]]" concatenates them and adds an MLP of the result, `x + MLP(x)`, with
    hidden width `M * 2 * dim` (M defaults to 1) and dropout P (default 0).
    """

    MODES = "'avg', 'concat' or 'concat_linear[_<hidden multiplier>[_<dropout>]]'"
    _LINEAR = re.compile(r"concat_linear(?:_(\d+(?:\.\d*)?)(?:_(\d*\.?\d+))?)?")

    @classmethod
    def accepts(cls, mode: str) -> bool:
        return mode in ("avg", "concat") or cls._LINEAR.fullmatch(mode) is not None

    def __init__(self, mode: str, dim: int) -> None:
        super().__init__()
        if not self.accepts(mode):
            raise ValueError(f"mode must be {self.MODES}, got {mode!r}")
        linear = self._LINEAR.fullmatch(mode)
        self.mode = mode
        self.out_dim = dim if mode == "avg" else 2 * dim
        self.fuse_fn = None
        if linear is not None:
            hidden = int(self.out_dim * float(linear[1] or 1))
            self.fuse_fn = Mlp(self.out_dim, hidden, self.out_dim, float(linear[2] or 0))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        if self.mode == "avg":
            return (x1 + x2) / 2
        x = torch.cat([x1, x2], dim=-1)
        return x if self.fuse_fn is None else x + self.fuse_fn(x)


class RevMViTTransition(StageTransition):
    """Fuses the streams, Q-pools them and widens `dim_in` to `dim_out` inside the attention;
    the residual is projected to `dim_out` and pooled by the same Q pooling (or max pooling).
    Both recompute their pooled full-resolution projections in backward; with
    `largest_streams` (see RevMViT), one head at a time."""

    def __init__(
        self,
        plan: LayerPlan,
        mlp_ratio: float,
        dropout: float,
        attention: dict,
        *,
        pre_q_fusion: str,
        res_path: str,
        chunk_tokens: int,
        largest_streams: bool,
    ) -> None:
        super().__init__()
        self.pre_q_fuse = StreamFusion(pre_q_fusion, plan.dim_in)
        dim = self.pre_q_fuse.out_dim
        self.F = AttentionSubBlock(
            dim, plan.dim_out, attention, recompute_pooling=True, head_by_head=largest_streams
        )
        self.G = MlpSubBlock(plan.dim_out, mlp_ratio, dropout)
        self.res_proj = nn.Linear(dim, plan.dim_out) if dim != plan.dim_out else None
        self.pool_skip = None
        if res_path == "max" and plan.stride_q:
            self.pool_skip = residual_max_pool(plan.stride_q)
        elif self.F.attn.pool_q is None and plan.stride_q:
            raise ValueError(
                "res_path 'conv' pools the residual with the Q pooling, but a stage transition's "
                "Q stride and kernel are all 1 (pool_q_stride, pool_kvq_kernel): use 'max'"
            )
        self.drop_path_rate = plan.drop_path
        self.chunk_tokens = chunk_tokens

    def _residual(self, x: torch.Tensor, thw: Thw) -> torch.Tensor:
        """The residual of `x` on the output grid, `(B, N', dim_out)`. Pooled, it is recomputed
        in backward (head by head like the attention: one head's channels at a time)."""
        if self.pool_skip is None and self.F.attn.pool_q is None:
            return x if self.res_proj is None else self.res_proj(x)
        return self.F.attn.recomputed(self._pooled_residual, x, thw, dim=-1)

    def _pooled_residual(self, x: torch.Tensor, thw: Thw, heads: range | None) -> torch.Tensor:
        """The pooled residual, `(B, N', dim_out)`, or only the output channels of `heads`."""
        attention = self.F.attn
        weight = bias = None
        if self.res_proj is not None:
            weight, bias = self.res_proj.weight, self.res_proj.bias
        if heads is not None:  # the projection's rows of `heads`, or without one x's channels
            channels = slice(heads.start * attention.head_dim, heads.stop * attention.head_dim)
            if weight is None:
                x = x[..., channels]
            else:
                weight, bias = weight[channels], None if bias is None else bias[channels]
        projected = x.transpose(1, 2) if weight is None else channel_major_linear(x, weight, bias)
        if self.pool_skip is not None:
            return pool_channel_major(projected, self.pool_skip, thw, heads=1).squeeze(1)
        head_count = attention.num_heads if heads is None else len(heads)
        return attention.pool_like_q(projected, thw, head_count)

    def attend(self, x1: torch.Tensor, x2: torch.Tensor, thw: Thw) -> tuple[torch.Tensor, Thw]:
        fuse = self.pre_q_fuse
        # A fusion MLP's hidden layer is wide and at full resolution: recomputed, not kept.
        x = fuse(x1, x2) if fuse.fuse_fn is None else recompute_in_backward(fuse, x1, x2)
        # The residual first, so its full-resolution projection is freed before attention starts.
        residual = self._residual(x, thw)
        out, thw = self.F.attn(self.F.norm(x), thw)
        return residual + out, thw


def _input_stream_sizes(plans: Sequence[LayerPlan]) -> list[Fraction]:
    """The size of each layer's input stream, in channels per token of the first layer's grid
    (a layer that pools Q by a stride of s leaves 1/s of the tokens to the layers after it)."""
    sizes, pooling = [], 1
    for plan in plans:
        sizes.append(Fraction(plan.dim_in, pooling))
        pooling *= math.prod(plan.stride_q)
    return sizes


class RevMViT(MultiscaleTransformer):
    """Reversible MViT: `(B, C, T, H, W)` clips to `(B, num_classes)` logits.

    The defaults build Rev-MViT-B 16x4 (34,963,120 parameters with 400 classes). Layers listed
    in `transition_layers` are stage transitions; every other layer is a reversible block,
    so only the transitions may pool Q or change the width. `pre_q_fusion` and `respath_fuse`
    are `StreamFusion` modes (the final fusion: one of FINAL_FUSIONS); `res_path`: one of
    RESIDUAL_PATHS. `geometry`: the clip size, patch embedding and layer schedule
    (revvideo.models.common.Geometry's fields); `patch_2d` embeds images with a Conv2d
    (`num_frames=1`, 2-D patch kernel, stride and padding).
    """

    def __init__(
        self,
        num_classes: int = 400,
        *,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        separate_qkv: bool = False,
        drop_path_rate: float = 0.05,
        dropout_rate: float = 0.0,
        head_dropout_rate: float = 0.5,
        pool_mode: str = "conv",
        transition_layers: Sequence[int] = (1, 3, 14),
        res_path: str = "conv",
        pre_q_fusion: str = "avg",
        respath_fuse: str = "concat",
        custom_backward: bool = True,
        recompute_transitions: bool = True,
        stored_layers: Sequence[int] = (),
        overlap_recompute: bool = False,
        chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
        **geometry: Any,
    ) -> None:
        for argument, value, choices in (
            ("respath_fuse", respath_fuse, FINAL_FUSIONS),
            ("res_path", res_path, RESIDUAL_PATHS),
        ):
            if value not in choices:
                raise ValueError(f"{argument} must be one of {', '.join(choices)}, got {value!r}")
        if not StreamFusion.accepts(pre_q_fusion):
            raise ValueError(f"pre_q_fusion must be {StreamFusion.MODES}, got {pre_q_fusion!r}")
        super().__init__(
            class_token=False,
            width_change_in_attention=True,
            drop_path_rate=drop_path_rate,
            dropout_rate=dropout_rate,
            **geometry,
        )
        for layer in transition_layers:
            check_layer_index(layer, len(self.plans), "transition_layers")
        for layer in stored_layers:
            check_layer_index(layer, len(self.plans), "stored_layers")
        attention = dict(
            qkv_bias=qkv_bias, mode=pool_mode, separate_qkv=separate_qkv, proj_drop=dropout_rate
        )
        layers = []
        # The layers that take the model's largest streams (Rev-MViT-B's first block and the
        # transition after it) set the training peak: there the pooled projections, each as
        # large as a stream, are recomputed in backward head by head instead of kept. Elsewhere
        # that would cost time and lower no peak.
        stream_sizes = _input_stream_sizes(self.plans)
        largest = max(stream_sizes)
        for index, plan in enumerate(self.plans):
            layer_attention = plan.attention_arguments(**attention)
            largest_streams = stream_sizes[index] == largest
            if index in transition_layers:
                layers.append(
                    RevMViTTransition(
                        plan,
                        mlp_ratio,
                        dropout_rate,
                        layer_attention,
                        pre_q_fusion=pre_q_fusion,
                        res_path=res_path,
                        chunk_tokens=chunk_tokens,
                        largest_streams=largest_streams,
                    )
                )
            elif plan.stride_q or plan.dim_in != plan.dim_out:
                raise ValueError(
                    f"layer {index} pools Q or changes the width, so it must be a stage "
                    "transition: list it in transition_layers"
                )
            else:
                layers.append(
                    RevMViTBlock(
                        plan,
                        mlp_ratio,
                        dropout_rate,
                        layer_attention,
                        chunk_tokens,
                        largest_streams=largest_streams,
                    )
                )
        self.rev_backbone = ReversibleStack(
            layers,
            custom_backward=custom_backward,
            recompute_transitions=recompute_transitions,
            stored_layers=stored_layers,
            overlap_recompute=overlap_recompute,
        )
        self.backbone_drop = nn.Dropout(dropout_rate)
        self.fuse = StreamFusion(respath_fuse, self.plans[-1].dim_out)
        self.norm = layer_norm(self.fuse.out_dim)
        self.head = ClassificationHead(
            self.norm.normalized_shape[0], num_classes, head_dropout_rate
        )

        self.apply(init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features `(B, 2 * C)` (or `(B, C)` with avg fusion) before the head."""
        x, thw = self.embed(x)
        x1, x2, _ = self.rev_backbone(x, thw)
        return self.norm(self.backbone_drop(self.fuse(x1, x2))).mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, C, T, H, W)` clips (or `(B, C, H, W)` images) to `(B, num_classes)` logits."""
        return self.head(self.forward_features(x))
