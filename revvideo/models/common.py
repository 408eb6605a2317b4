"""Building blocks shared by MViT, Rev-MViT and Rev-ViT: patch embedding, position embeddings,
pooling attention, MLP, stochastic depth, the classification head, the layer schedule and
`MultiscaleTransformer`, the stem and schedule both models are built on.

Tokens are `(B, N, C)` tensors; `thw` is the `(T, H, W)` grid the N tokens (after an optional
class token) are laid out on, in row-major order. Errors are ValueErrors naming the models'
own arguments.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from revvideo.models.low_memory import channel_major_linear, pool_channel_major

Thw = tuple[int, int, int]

LAYER_NORM_EPS = 1e-6


def layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=LAYER_NORM_EPS)


def drop_path_mask(x: torch.Tensor, rate: float) -> torch.Tensor | None:
    """Per-sample stochastic-depth multiplier of shape `(B, 1, ..., 1)`, or None for no drop.

    Kept samples are scaled by `1 / (1 - rate)`; one random draw per sample.
    """
    if rate <= 0.0:
        return None
    keep = 1.0 - rate
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    return torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep).div_(keep)


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    mask = drop_path_mask(x, rate) if training else None
    return x if mask is None else x * mask


class PatchEmbed(nn.Module):
    """Patchifier to tokens. A Conv3d over clips `(B, C_in, T, H, W)` (an image `(B, C_in, H, W)`
    is a one-frame clip); with `conv_2d` (PySlowFast's PATCH_2D, its ImageNet models) a Conv2d
    with `(H, W)` kernel, stride and padding over images `(B, C_in, H, W)` or one-frame clips
    `(B, C_in, 1, H, W)`."""

    def __init__(
        self,
        in_chans: int,
        embed_dim: int,
        kernel: Sequence[int],
        stride: Sequence[int],
        padding: Sequence[int],
        *,
        conv_2d: bool = False,
    ) -> None:
        super().__init__()
        dims = 2 if conv_2d else 3
        layout = "(H, W) with patch_2d" if conv_2d else "(T, H, W)"
        for name, sizes in (("kernel", kernel), ("stride", stride), ("padding", padding)):
            if len(sizes) != dims:
                raise ValueError(f"patch_{name} must be {layout}, got {list(sizes)}")
        conv = nn.Conv2d if conv_2d else nn.Conv3d
        self.proj = conv(in_chans, embed_dim, tuple(kernel), tuple(stride), tuple(padding))
        # A 2-D patchifier is a 3-D one that is one frame deep.
        self.geometry = (
            ((1, *kernel), (1, *stride), (0, *padding)) if conv_2d else (kernel, stride, padding)
        )

    def grid(self, num_frames: int, crop_size: int) -> Thw:
        """Token grid `(T', H', W')` of `num_frames` frames of `crop_size` x `crop_size` pixels."""
        if isinstance(self.proj, nn.Conv2d) and num_frames != 1:
            raise ValueError(
                f"a 2-D patch embedding (patch_2d) embeds single images: set num_frames to 1, "
                f"not {num_frames}"
            )
        return patch_grid((num_frames, crop_size, crop_size), *self.geometry)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Thw]:
        """Returns tokens `(B, T' * H' * W', embed_dim)` and their grid `(T', H', W')`."""
        if isinstance(self.proj, nn.Conv2d):
            if x.ndim == 5:
                if x.shape[2] != 1:
                    raise ValueError(
                        f"this image model takes images (B, C, H, W) or one-frame clips "
                        f"(B, C, 1, H, W), not clips of {x.shape[2]} frames"
                    )
                x = x.squeeze(2)
            x = self.proj(x).unsqueeze(2)
        else:
            x = self.proj(x.unsqueeze(2) if x.ndim == 4 else x)
        thw = (x.shape[2], x.shape[3], x.shape[4])
        return x.flatten(2).transpose(1, 2), thw


def patch_grid(
    input_thw: Sequence[int], kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int]
) -> Thw:
    """Token grid that `PatchEmbed` (or any 3-D convolution or pooling with these settings)
    produces for an input of `input_thw` frames x pixels."""
    t, h, w = (
        (n + 2 * p - k) // s + 1
        for n, k, s, p in zip(input_thw, kernel, stride, padding, strict=True)
    )
    return t, h, w


def add_position_embeddings(
    model: nn.Module, grid: Thw, dim: int, *, separable: bool, class_token: bool
) -> None:
    """Registers learned absolute position embeddings on `model` under PySlowFast's names:
    `pos_embed_spatial (1, H*W, C)` + `pos_embed_temporal (1, T, C)` (+ `pos_embed_class`), or
    one `pos_embed (1, [1 +] T*H*W, C)`."""
    t, h, w = grid
    if separable:
        model.pos_embed_spatial = nn.Parameter(torch.zeros(1, h * w, dim))
        model.pos_embed_temporal = nn.Parameter(torch.zeros(1, t, dim))
        if class_token:
            model.pos_embed_class = nn.Parameter(torch.zeros(1, 1, dim))
    else:
        model.pos_embed = nn.Parameter(torch.zeros(1, int(class_token) + t * h * w, dim))
    for name, param in model.named_parameters(recurse=False):
        if name.startswith("pos_embed"):
            nn.init.trunc_normal_(param, std=0.02)


def position_embedding(model: nn.Module, grid: Thw, thw: Thw, class_token: bool) -> torch.Tensor:
    """`(1, [1 +] T*H*W, C)` embedding for tokens on `thw`, resized trilinearly from the
    training grid when they differ."""
    if hasattr(model, "pos_embed"):
        pos = model.pos_embed
        class_pos, pos = (pos[:, :1], pos[:, 1:]) if class_token else (None, pos)
    else:
        t, h, w = grid
        pos = model.pos_embed_spatial.repeat(1, t, 1) + model.pos_embed_temporal.repeat_interleave(
            h * w, dim=1
        )
        class_pos = model.pos_embed_class if class_token else None
    if tuple(thw) != tuple(grid):
        volume = pos.reshape(1, *grid, pos.shape[-1]).permute(0, 4, 1, 2, 3)
        volume = F.interpolate(volume, size=tuple(thw), mode="trilinear", align_corners=False)
        pos = volume.flatten(2).transpose(1, 2)
    return pos if class_pos is None else torch.cat([class_pos, pos], dim=1)


def pooled_grid(thw: Thw, pool: nn.Module | None) -> Thw:
    """Token grid after `pool` (a Conv3d or a 3-D pooling layer, or None for no pooling)."""
    if pool is None:
        return thw
    kernel, stride, padding = (
        (v,) * 3 if isinstance(v, int) else tuple(v)
        for v in (pool.kernel_size, pool.stride, pool.padding)
    )
    return patch_grid(thw, kernel, stride, padding)


class ZeroPaddedAvgPool3d(nn.AvgPool3d):
    """AvgPool3d that pads explicitly (same result, zeros counted), because PyTorch's rejects
    inputs smaller than the kernel even when the padding makes them large enough."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = [p for p in reversed(self.padding) for _ in range(2)]
        return F.avg_pool3d(F.pad(x, pad), self.kernel_size, self.stride)


# How Q, K and V are pooled: a depthwise Conv3d and a LayerNorm, or plain pooling.
POOL_MODES = ("conv", "avg", "max")


def _pooling_layer(mode: str, channels: int, kernel: Sequence[int], stride: Sequence[int]):
    padding = tuple(k // 2 for k in kernel)
    if mode == "conv":
        conv = nn.Conv3d(
            channels, channels, tuple(kernel), tuple(stride), padding, groups=channels, bias=False
        )
        return conv, layer_norm(channels)
    if mode == "avg":
        return ZeroPaddedAvgPool3d(tuple(kernel), tuple(stride), padding), None
    if mode == "max":
        return nn.MaxPool3d(tuple(kernel), tuple(stride), padding), None
    raise ValueError(f"pool_mode must be one of {', '.join(POOL_MODES)}, got {mode!r}")


def _pools(kernel: Sequence[int], stride: Sequence[int]) -> bool:
    return bool(kernel) and (math.prod(kernel) > 1 or math.prod(stride) > 1)


class MultiScaleAttention(nn.Module):
    """Pooling attention (MViT): Q, K and V are pooled over the token grid before attending.

    Maps `(B, N, dim)` tokens on grid `thw` to `(B, N_q, dim_out)` tokens on the Q-pooled grid.
    Each of q, k, v is projected and pooled in turn, so at most one full-resolution projection
    is alive at a time; attention runs in `scaled_dot_product_attention`. `dim_out` must be a
    multiple of `num_heads`: plan_layers checks that for every layer of the models.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        *,
        qkv_bias: bool,
        kernel_q: Sequence[int] = (),
        stride_q: Sequence[int] = (),
        kernel_kv: Sequence[int] = (),
        stride_kv: Sequence[int] = (),
        mode: str = "conv",
        has_cls_token: bool = False,
        separate_qkv: bool = False,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dim_out = dim_out
        self.has_cls_token = has_cls_token
        self.separate_qkv = separate_qkv
        self.head_dim = head_dim = dim_out // num_heads
        if separate_qkv:
            self.q = nn.Linear(dim, dim_out, bias=qkv_bias)
            self.k = nn.Linear(dim, dim_out, bias=qkv_bias)
            self.v = nn.Linear(dim, dim_out, bias=qkv_bias)
        else:
            self.qkv = nn.Linear(dim, 3 * dim_out, bias=qkv_bias)
        self.proj = nn.Linear(dim_out, dim_out)
        self.proj_drop = nn.Dropout(proj_drop)
        self.pool_q = self.norm_q = self.pool_k = self.norm_k = self.pool_v = self.norm_v = None
        if _pools(kernel_q, stride_q):
            self.pool_q, self.norm_q = _pooling_layer(mode, head_dim, kernel_q, stride_q)
        if _pools(kernel_kv, stride_kv):
            self.pool_k, self.norm_k = _pooling_layer(mode, head_dim, kernel_kv, stride_kv)
            self.pool_v, self.norm_v = _pooling_layer(mode, head_dim, kernel_kv, stride_kv)

    def _projection_parameters(
        self, index: int, heads: range | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weight and bias of q (0), k (1) or v (2): all heads' rows, or those of `heads` (a
        range of consecutive heads, step 1)."""
        if self.separate_qkv:
            linear = (self.q, self.k, self.v)[index]
            weight, bias = linear.weight, linear.bias
        else:
            rows = slice(index * self.dim_out, (index + 1) * self.dim_out)
            weight, bias = self.qkv.weight[rows], self.qkv.bias
            bias = None if bias is None else bias[rows]
        if heads is None:
            return weight, bias
        rows = slice(heads.start * self.head_dim, heads.stop * self.head_dim)
        return weight[rows], None if bias is None else bias[rows]

    def _pooling(self, index: int) -> tuple[nn.Module | None, nn.Module | None]:
        return (
            (self.pool_q, self.norm_q),
            (self.pool_k, self.norm_k),
            (self.pool_v, self.norm_v),
        )[index]

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, N, heads * head_dim)` to `(B, heads, N, head_dim)`."""
        return x.unflatten(-1, (-1, self.head_dim)).transpose(1, 2)

    def project_and_pool(
        self, x: torch.Tensor, index: int, thw: Thw, heads: range | None = None
    ) -> torch.Tensor:
        """q (0), k (1) or v (2) of all heads, or of `heads` only (consecutive heads, step 1),
        pooled and normalised: `(B, heads, N_pooled, head_dim)`."""
        pool, norm = self._pooling(index)
        weight, bias = self._projection_parameters(index, heads)
        if pool is None:
            return self._heads(F.linear(x, weight, bias))
        tokens = x[:, 1:] if self.has_cls_token else x
        projected = channel_major_linear(tokens, weight, bias)
        head_count = self.num_heads if heads is None else len(heads)
        pooled = pool_channel_major(projected, pool, thw, head_count)
        if self.has_cls_token:
            cls_token = self._heads(F.linear(x[:, :1], weight, bias))
            pooled = torch.cat([cls_token, pooled], dim=2)
        return pooled if norm is None else norm(pooled)

    def pool_like_q(self, y: torch.Tensor, thw: Thw, heads: int) -> torch.Tensor:
        """Pools channel-major tokens of `heads` heads, `(B, heads * head_dim, N)`, with Q's
        pooling layer and norm (a residual path); returns tokens `(B, N_pooled, heads *
        head_dim)`."""
        pooled = pool_channel_major(y, self.pool_q, thw, heads)
        if self.norm_q is not None:
            pooled = self.norm_q(pooled)
        return pooled.transpose(1, 2).flatten(2)

    def forward(self, x: torch.Tensor, thw: Thw) -> tuple[torch.Tensor, Thw]:
        q, k, v = (self.project_and_pool(x, index, thw) for index in range(3))
        out = F.scaled_dot_product_attention(q, k, v)
        out = self.proj(out.transpose(1, 2).flatten(2))
        return self.proj_drop(out), pooled_grid(thw, self.pool_q)


class Mlp(nn.Module):
    """Token-wise two-layer perceptron with GELU: `(..., in_dim)` to `(..., out_dim)`."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, out_dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class ClassificationHead(nn.Module):
    """Dropout then a Linear layer: `(B, dim)` features to `(B, num_classes)` logits."""

    def __init__(self, dim: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.dropout(x))


def init_weights(module: nn.Module) -> None:
    """PySlowFast's MViT initialisation, which its training recipe was tuned with."""
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.Conv3d)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.constant_(module.bias, 0.02)
    elif isinstance(module, nn.LayerNorm):
        nn.init.constant_(module.weight, 1.0)
        nn.init.constant_(module.bias, 0.02)


def round_width(width: float, multiplier: float, divisor: int = 1) -> int:
    """`width * multiplier` rounded to a multiple of `divisor` (PySlowFast's rule)."""
    width = width * multiplier
    rounded = max(divisor, int(width + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * width:
        rounded += divisor
    return int(rounded)


@dataclass(frozen=True)
class LayerPlan:
    """Geometry of one MViT layer: widths, heads, pooling and stochastic depth."""

    dim_in: int
    dim_out: int
    num_heads: int
    kernel_q: tuple[int, ...]
    stride_q: tuple[int, ...]
    kernel_kv: tuple[int, ...]
    stride_kv: tuple[int, ...]
    drop_path: float

    def attention_arguments(self, **options: Any) -> dict[str, Any]:
        """MultiScaleAttention's keyword arguments for this layer: its heads and pooling, and
        `options` (those every layer shares)."""
        return dict(
            num_heads=self.num_heads,
            kernel_q=self.kernel_q,
            stride_q=self.stride_q,
            kernel_kv=self.kernel_kv,
            stride_kv=self.stride_kv,
            **options,
        )


def check_layer_index(layer: int, depth: int, argument: str) -> int:
    """`layer`, if a model of `depth` layers has it; ValueError naming `argument` otherwise."""
    if not 0 <= int(layer) < depth:
        raise ValueError(
            f"{argument} names layer {int(layer)}, but the model has layers 0 to {depth - 1} "
            f"(depth {depth})"
        )
    return int(layer)


def _per_layer(depth: int, pairs: Sequence[Sequence[float]], argument: str) -> list[float]:
    """Multipliers for layers 0..depth (one past the last, which is always 1)."""
    values = [1.0] * (depth + 1)
    for layer, value in pairs:
        values[check_layer_index(layer, depth, argument)] = value
    return values


def _per_layer_strides(
    depth: int, entries: Sequence[Sequence[int]], argument: str
) -> list[tuple[int, ...]]:
    """Strides of layers 0..depth-1 from `[layer, s_t, s_h, s_w]` entries; () where none."""
    strides: list[tuple[int, ...]] = [()] * depth
    for layer, *stride in entries:
        strides[check_layer_index(layer, depth, argument)] = tuple(stride)
    return strides


def default_pool_kernel(stride: Sequence[int]) -> tuple[int, ...]:
    """PySlowFast's pooling kernel for a stride: one more than the stride where it pools, so
    that neighbouring windows overlap; 1 where it does not."""
    return tuple(s + 1 if s > 1 else s for s in stride)


def residual_max_pool(stride: Sequence[int]) -> nn.MaxPool3d:
    """Max pooling that takes residual tokens to the grid a Q pooling with `stride` gives."""
    kernel = default_pool_kernel(stride)
    return nn.MaxPool3d(kernel, tuple(stride), tuple(k // 2 for k in kernel))


def _pool_kernel(kernel: Sequence[int] | None, stride: Sequence[int]) -> tuple[int, ...]:
    return tuple(kernel) if kernel is not None else default_pool_kernel(stride)


@dataclass(frozen=True)
class Geometry:
    """The clip size, patch embedding and layer schedule of an MViT, in PySlowFast's terms;
    the defaults are MViT-B 16x4's, which Rev-MViT-B shares.

    `dim_mul` and `head_mul` list `[layer, multiplier]`; `pool_q_stride` and `pool_kv_stride`
    list `[layer, s_t, s_h, s_w]`; `pool_kv_stride_adaptive` gives layer 0's K/V stride, divided
    by each Q stride after it; `pool_kvq_kernel` None takes `default_pool_kernel`.
    """

    num_frames: int = 16
    crop_size: int = 224
    in_chans: int = 3
    embed_dim: int = 96
    depth: int = 16
    num_heads: int = 1
    patch_kernel: Sequence[int] = (3, 7, 7)
    patch_stride: Sequence[int] = (2, 4, 4)
    patch_padding: Sequence[int] = (1, 3, 3)
    patch_2d: bool = False
    sep_pos_embed: bool = True
    dim_mul: Sequence[Sequence[float]] = ((1, 2.0), (3, 2.0), (14, 2.0))
    head_mul: Sequence[Sequence[float]] = ((1, 2.0), (3, 2.0), (14, 2.0))
    pool_q_stride: Sequence[Sequence[int]] = ((1, 1, 2, 2), (3, 1, 2, 2), (14, 1, 2, 2))
    pool_kv_stride: Sequence[Sequence[int]] = ()
    pool_kv_stride_adaptive: Sequence[int] | None = (1, 8, 8)
    pool_kvq_kernel: Sequence[int] | None = (3, 3, 3)


def plan_layers(
    geometry: Geometry, drop_path_rate: float, *, width_change_in_attention: bool
) -> list[LayerPlan]:
    """Per-layer widths, heads, pooling and stochastic depth of `geometry`.

    `width_change_in_attention` places the width change of layer i inside its attention (the
    reversible models); otherwise layer i-1's MLP widens the stream (MViT v1). ValueError for
    a layer the schedule names that the model does not have, and for an attention whose width
    is not a multiple of its heads.
    """
    g = geometry
    depth, num_heads = g.depth, g.num_heads
    for argument in ("depth", "embed_dim", "num_heads"):
        if getattr(g, argument) < 1:
            raise ValueError(f"{argument} must be positive, got {getattr(g, argument)}")
    if g.embed_dim % num_heads:
        raise ValueError(f"embed_dim {g.embed_dim} must be a multiple of num_heads {num_heads}")
    dim_muls = _per_layer(depth, g.dim_mul, "dim_mul")
    head_muls = _per_layer(depth, g.head_mul, "head_mul")
    strides_q = _per_layer_strides(depth, g.pool_q_stride, "pool_q_stride")
    # Checked even when the adaptive strides replace them, so a wrong layer is never ignored.
    strides_kv = _per_layer_strides(depth, g.pool_kv_stride, "pool_kv_stride")
    if g.pool_kv_stride_adaptive is not None:
        stride_kv = tuple(g.pool_kv_stride_adaptive)
        for layer in range(depth):
            if strides_q[layer]:
                stride_kv = tuple(
                    max(s // q, 1) for s, q in zip(stride_kv, strides_q[layer], strict=True)
                )
            strides_kv[layer] = stride_kv

    # On the CPU even under a `torch.device("meta")` context, so models build without weights.
    drop_paths = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
    plans = []
    dim, heads = g.embed_dim, num_heads
    for i in range(depth):
        heads = round_width(heads, head_muls[i])
        if width_change_in_attention:
            dim = round_width(dim, dim_muls[i - 1] if i > 0 else 1.0, divisor=heads)
            dim_out = round_width(dim, dim_muls[i], divisor=round_width(heads, head_muls[i + 1]))
        else:
            dim_out = round_width(
                dim, dim_muls[i + 1], divisor=round_width(heads, head_muls[i + 1])
            )
        attention_width = dim_out if width_change_in_attention else dim
        if attention_width % heads:
            raise ValueError(
                f"layer {i}'s attention is {attention_width} channels wide, not a multiple of its "
                f"{heads} heads: change dim_mul, head_mul or num_heads"
            )
        kernel = g.pool_kvq_kernel
        plans.append(
            LayerPlan(
                dim_in=dim,
                dim_out=dim_out,
                num_heads=heads,
                kernel_q=_pool_kernel(kernel, strides_q[i]) if strides_q[i] else (),
                stride_q=strides_q[i],
                kernel_kv=_pool_kernel(kernel, strides_kv[i]) if strides_kv[i] else (),
                stride_kv=strides_kv[i],
                drop_path=drop_paths[i],
            )
        )
        if not width_change_in_attention:
            dim = dim_out
    return plans


class MultiscaleTransformer(nn.Module):
    """The stem and layer schedule MViT and RevMViT share. `embed` turns clips into tokens with
    position embeddings; `plans` holds each layer's geometry (see plan_layers), from which the
    subclass builds its layers.

    `geometry`: Geometry's fields (its defaults where not given). `class_token` adds a learned
    class token before the patch tokens. Parameters keep PySlowFast's names
    (`patch_embed.proj`, `cls_token`, `pos_embed*`).
    """

    def __init__(
        self,
        *,
        class_token: bool,
        width_change_in_attention: bool,
        drop_path_rate: float,
        dropout_rate: float,
        **geometry: Any,
    ) -> None:
        super().__init__()
        g = Geometry(**geometry)
        self.has_cls_token = class_token
        self.patch_embed = PatchEmbed(
            g.in_chans,
            g.embed_dim,
            g.patch_kernel,
            g.patch_stride,
            g.patch_padding,
            conv_2d=g.patch_2d,
        )
        self.grid = self.patch_embed.grid(g.num_frames, g.crop_size)
        if min(self.grid) < 1:
            raise ValueError(
                f"num_frames {g.num_frames} or crop_size {g.crop_size} is smaller than "
                f"patch_kernel {list(g.patch_kernel)} spans"
            )
        if class_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, g.embed_dim))
        add_position_embeddings(
            self, self.grid, g.embed_dim, separable=g.sep_pos_embed, class_token=class_token
        )
        self.pos_drop = nn.Dropout(dropout_rate)
        self.plans = plan_layers(
            g, drop_path_rate, width_change_in_attention=width_change_in_attention
        )

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, Thw]:
        """Clips `(B, C, T, H, W)` (or images `(B, C, H, W)`) to tokens
        `(B, [1 +] T' * H' * W', embed_dim)` with their position embeddings (the class token
        first, if any), and the patch grid `(T', H', W')`."""
        x, thw = self.patch_embed(x)
        if self.has_cls_token:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.pos_drop(x + position_embedding(self, self.grid, thw, self.has_cls_token)), thw
