"""The memory tricks of the pooling attention, in one place, so that the blocks read plainly.

- `recompute_in_backward`: keep a step's inputs, not its insides; recompute it in backward.
- `recompute_by_head`: the same, one attention head at a time, so that only one head's
  full-resolution projection and its gradient exist at once.
- `channel_major_linear` and `pool_channel_major`: project and pool tokens in the `(B, C, N)`
  layout pooling takes, without transposing a full-resolution tensor.

Tokens are `(B, N, C)`; `thw` is the `(T, H, W)` grid they lie on.
"""

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def recompute_in_backward(fn: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
    """`fn(*args)`; with gradients enabled, autograd keeps only `args` and recomputes `fn` when
    backward needs it (for steps whose output is small but whose insides are large)."""
    return checkpoint(fn, *args, use_reentrant=False) if torch.is_grad_enabled() else fn(*args)


def recompute_by_head(
    fn: Callable[..., torch.Tensor], *args: Any, num_heads: int | None, dim: int
) -> torch.Tensor:
    """`fn(*args, heads)` recomputed in backward: for all heads at once (`heads` None) when
    `num_heads` is None or 1, else for each head in turn (`heads` a one-head range), joined
    along `dim`."""
    if num_heads is None or num_heads == 1:
        return recompute_in_backward(fn, *args, None)
    parts = [recompute_in_backward(fn, *args, range(head, head + 1)) for head in range(num_heads)]
    return torch.cat(parts, dim=dim)


def channel_major_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """`F.linear(x, weight, bias)` of tokens `(B, N, C_in)`, computed channel-major as
    `(B, C_out, N)`."""
    weights, tokens = weight.expand(x.shape[0], -1, -1), x.transpose(1, 2)
    if bias is None:
        return torch.bmm(weights, tokens)
    return torch.baddbmm(bias[:, None], weights, tokens)


def pool_channel_major(
    y: torch.Tensor, pool: nn.Module, thw: tuple[int, int, int], heads: int
) -> torch.Tensor:
    """Pools channel-major tokens `(B, heads * C, T * H * W)` over their grid, each head
    separately; returns `(B, heads, N_pooled, C)`. A contiguous input pools without a copy
    (on the CPU a channels-last Conv3d is ~9x slower, and wrong for bf16 weight gradients)."""
    batch, channels = y.shape[0], y.shape[1] // heads
    volume = pool(y.reshape(batch * heads, channels, *thw))
    return volume.flatten(2).unflatten(0, (batch, heads)).transpose(2, 3)
