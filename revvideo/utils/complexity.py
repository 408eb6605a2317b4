"""Parameter and FLOP counts (fvcore), with attention counted as its two matrix products
and `baddbmm` (a projection computed channel-major) as a matrix product."""

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

with warnings.catch_warnings():
    # fvcore.nn scripts a loss function at import time, which torch 2.14 reports as deprecated.
    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape


def _attention_flops(inputs: list[Any], outputs: list[Any]) -> int:
    """q @ k^T and attn @ v, one FLOP per multiply-add as fvcore counts matmul."""
    q_shape, k_shape, v_shape = (get_shape(value) for value in inputs[:3])
    queries, keys = q_shape[-2], k_shape[-2]
    batch_heads = math.prod(q_shape[:-2])
    return batch_heads * queries * keys * (q_shape[-1] + v_shape[-1])


def _baddbmm_flops(inputs: list[Any], outputs: list[Any]) -> int:
    """bias + batch1 @ batch2: the product's multiply-adds, as fvcore counts bmm."""
    (batch, rows, inner), (_, _, columns) = (get_shape(value) for value in inputs[1:3])
    return batch * rows * inner * columns


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_gflops(model: nn.Module, input_shape: Sequence[int]) -> float:
    """fvcore's GFLOPs for one forward pass of `model` in eval mode on a zero input."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        clip = torch.zeros(*input_shape, device=device)
        analysis = FlopCountAnalysis(model, clip)
        analysis.set_op_handle("aten::scaled_dot_product_attention", _attention_flops)
        analysis.set_op_handle("aten::baddbmm", _baddbmm_flops)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return analysis.total() / 1e9
    finally:
        model.train(was_training)
