"""The reversible engine: a stack of two-stream blocks whose backward recomputes activations.

A `ReversibleBlock` maps two streams `(X1, X2)` to

    Y1 = X1 + F(X2)          X2 = Y2 - G(Y1)      (inverse, computed in backward)
    Y2 = X2 + G(Y1)          X1 = Y1 - F(X2)

with stochastic depth applied to the F and G branches. A `StageTransition` fuses the two
streams into one, changes resolution and width, and is not invertible: it keeps only its input
and recomputes the rest in backward. Between them, only the stack's output and the inputs of
its stage transitions stay in memory, whatever the depth.

This module is the one place that knows about the custom backward, about replaying randomness
(the exact CPU/CUDA RNG state of each step of the forward is restored for its recompute, then
the global generators are put back) and about replaying autocast. Ordinary autograd through the
same steps (`custom_backward=False`) draws the same random numbers in the same order, so with
the same seed both give the same masks and the same gradients.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

from revvideo.models.common import Thw, drop_path_mask

# MLPs run over this many tokens at a time, so their 4x-wide hidden activation stays small.
DEFAULT_CHUNK_TOKENS = 4096


class ReversibleBlock(nn.Module):
    """Base of two-stream blocks. Subclasses set `F` (called `F(x, thw)`, returns `(B, N, C)`),
    `G` (token-wise: `G(x)` at token i depends only on `x` at token i) and `drop_path_rate`."""

    F: nn.Module
    G: nn.Module
    drop_path_rate: float


class StageTransition(nn.Module):
    """Base of non-invertible blocks between reversible runs: `out = h + G(h)` with
    `h, thw_out = attend(x1, x2, thw)`; stochastic depth scales the whole output."""

    G: nn.Module
    drop_path_rate: float

    def attend(self, x1: torch.Tensor, x2: torch.Tensor, thw: Thw) -> tuple[torch.Tensor, Thw]:
        raise NotImplementedError


def recompute_in_backward(fn: Callable[..., torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
    """`fn(*args)`; with gradients enabled, autograd keeps only `args` and recomputes `fn` when
    backward needs it (for steps whose output is small but whose insides are large)."""
    if not torch.is_grad_enabled():
        return fn(*args)
    return checkpoint(fn, *args, use_reentrant=False)


def _tokenwise(fn: nn.Module, x: torch.Tensor, chunk: int) -> torch.Tensor:
    """`fn(x)` for a token-wise `fn`, computed `chunk` tokens at a time."""
    if x.shape[1] <= chunk:
        return fn(x)
    return torch.cat([fn(part) for part in x.split(chunk, dim=1)], dim=1)


def _scaled(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x * mask


@dataclass
class _RngState:
    cpu: torch.Tensor
    cuda: torch.Tensor | None

    @classmethod
    def capture(cls, device: torch.device) -> "_RngState":
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return cls(torch.get_rng_state(), cuda)

    def restore(self, device: torch.device) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, device)


# The plain path, the custom forward and the recompute in backward all go through the functions
# below, so every path draws the same random numbers in the same order: F's own randomness, F's
# drop-path mask, G's drop-path mask, G's own randomness (token chunk by token chunk).


def _f_step(block: ReversibleBlock, x2: torch.Tensor, thw: Thw, training: bool) -> torch.Tensor:
    """The F branch with stochastic depth."""
    f = block.F(x2, thw)
    return _scaled(f, drop_path_mask(f, block.drop_path_rate) if training else None)


def _g_mask(layer: nn.Module, like: torch.Tensor, training: bool) -> torch.Tensor | None:
    return drop_path_mask(like, layer.drop_path_rate) if training else None


def _stream(x: torch.Tensor) -> torch.Tensor:
    """A stream as the blocks carry it. Under mixed precision streams stay float32 (the F and G
    branches run in low precision): X2 = Y2 - G(Y1) then recovers a block's input to float32
    precision instead of losing 8 bits in every block."""
    if torch.is_autocast_enabled(x.device.type) and x.dtype in (torch.float16, torch.bfloat16):
        return x.float()
    return x


def _transition_out(h: torch.Tensor, g: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return _stream(_scaled(h + g, mask))


def _layer_forward(layer, x1, x2, thw, training, chunk, device=None):
    """One layer on the two streams. With `device`, also returns what its recompute needs: the
    RNG states before its F (or attention) step and before its G step, and for a stage
    transition its two inputs and the attention output h (small: already pooled)."""
    before_f = _RngState.capture(device) if device else None
    if isinstance(layer, ReversibleBlock):
        x1 = x1 + _f_step(layer, x2, thw, training)
        before_g = _RngState.capture(device) if device else None
        mask = _g_mask(layer, x1, training)
        x2 = x2 + _scaled(_tokenwise(layer.G, x1, chunk), mask)
        return x1, x2, thw, (before_f, before_g, [])
    h, thw_out = layer.attend(x1, x2, thw)
    before_g = _RngState.capture(device) if device else None
    mask = _g_mask(layer, h, training)
    out = _transition_out(h, _tokenwise(layer.G, h, chunk), mask)
    return out, out, thw_out, (before_f, before_g, [x1, x2, h])


def plain_forward(
    layers: Sequence[nn.Module],
    x1: torch.Tensor,
    x2: torch.Tensor,
    thw: Thw,
    training: bool,
    chunk: int,
) -> tuple[torch.Tensor, torch.Tensor, Thw]:
    """Runs the layers with ordinary autograd; returns the two output streams and their grid."""
    for layer in layers:
        x1, x2, thw, _ = _layer_forward(layer, x1, x2, thw, training, chunk)
    return x1, x2, thw


class _Handoff:
    """Carries a layer's recovered input streams, which are its predecessor's outputs, from
    the backward of one layer to the backward of the layer before it."""

    def __init__(self) -> None:
        self._streams: tuple[torch.Tensor, torch.Tensor] | None = None

    def put(self, x1: torch.Tensor, x2: torch.Tensor) -> None:
        # Values only: recovered streams carry the graph of their recomputation, which leads
        # back to the autograd node holding this handoff; if backward stopped halfway (out of
        # memory), that cycle through C++ nodes would keep the whole step's graph alive.
        self._streams = (x1.detach(), x2.detach())

    def take(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._streams is None:
            raise RuntimeError(
                "backward ran twice through a reversible stack, or out of order; "
                "recomputation needs one backward per forward"
            )
        streams, self._streams = self._streams, None
        return streams


@dataclass
class _Step:
    """What one layer's backward needs besides tensors: its input grid, the RNG states before
    its two steps, the autocast state, and where its output streams will come from."""

    layer: nn.Module
    thw: Thw
    training: bool
    chunk: int
    keeps_output: bool
    handoff: _Handoff
    thw_out: Thw | None = None
    rng: tuple[_RngState, _RngState] | None = None
    autocast: tuple[str, bool, torch.dtype, bool] | None = None

    def record_forward(self, device: torch.device) -> None:
        self.autocast = (
            device.type,
            torch.is_autocast_enabled(device.type),
            torch.get_autocast_dtype(device.type),
            torch.is_autocast_cache_enabled(),
        )

    @contextmanager
    def replay(self, device: torch.device) -> Iterator[None]:
        """Grad mode and the forward's autocast; the global RNG state is restored afterwards."""
        device_type, enabled, dtype, cache_enabled = self.autocast
        cuda_devices = [device] if device.type == "cuda" else []
        with (
            torch.random.fork_rng(devices=cuda_devices, device_type=device.type),
            torch.enable_grad(),
            torch.autocast(device_type, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled),
        ):
            yield


def _trainable(module: nn.Module, exclude: Sequence[nn.Parameter] = ()) -> list[nn.Parameter]:
    excluded = {id(p) for p in exclude}
    return [p for p in module.parameters() if p.requires_grad and id(p) not in excluded]


class _GradSink:
    """Accumulates the parameter gradients of one layer's recomputed steps."""

    def __init__(self) -> None:
        self.grads: dict[int, torch.Tensor] = {}

    def backward(
        self,
        output: torch.Tensor,
        grad_output: torch.Tensor,
        inputs: Sequence[torch.Tensor],
        params: Sequence[nn.Parameter],
    ) -> tuple[torch.Tensor | None, ...]:
        """Backpropagates `grad_output` through `output`; returns the gradients of `inputs`."""
        grads = torch.autograd.grad(
            output, [*inputs, *params], grad_output, allow_unused=True, materialize_grads=False
        )
        for param, grad in zip(params, grads[len(inputs) :], strict=True):
            if grad is None:
                continue
            if id(param) in self.grads:
                self.grads[id(param)] += grad
            else:
                self.grads[id(param)] = grad
        return grads[: len(inputs)]

    def of(self, params: Sequence[nn.Parameter]) -> list[torch.Tensor | None]:
        return [self.grads.get(id(p)) for p in params]


def _leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().requires_grad_(True)


# One autograd Function per layer: each takes the layer's trainable parameters as inputs and
# returns their gradients, so autograd accumulates them layer by layer as backward proceeds
# (DDP starts reducing the last layers' gradients while earlier layers still recompute).


def _forward_recorded(ctx, step: _Step, params, x1: torch.Tensor, x2: torch.Tensor):
    """Runs the step's layer, recording on `step` and `ctx` what its backward needs."""
    step.record_forward(x1.device)
    y1, y2, step.thw_out, (before_f, before_g, kept) = _layer_forward(
        step.layer, x1, x2, step.thw, step.training, step.chunk, x1.device
    )
    step.rng = (before_f, before_g)
    ctx.step, ctx.params = step, params
    return y1, y2, kept


class _ReversibleBlockFunction(torch.autograd.Function):
    """A reversible block that stores nothing: its backward recovers the input from the
    output, which it keeps only when no recomputed layer follows to hand it back."""

    @staticmethod
    def forward(ctx, x1: torch.Tensor, x2: torch.Tensor, step: _Step, *params: nn.Parameter):
        y1, y2, _ = _forward_recorded(ctx, step, params, x1, x2)
        if step.keeps_output:
            ctx.save_for_backward(y1, y2)
        return y1, y2

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y1: torch.Tensor, grad_y2: torch.Tensor):
        step: _Step = ctx.step
        y1, y2 = ctx.saved_tensors if step.keeps_output else step.handoff.take()
        sink = _GradSink()
        with step.replay(y1.device):
            x1, x2, grad_x1, grad_x2 = _invert_block(step, y1, y2, grad_y1, grad_y2, sink)
        step.handoff.put(x1, x2)
        return grad_x1, grad_x2, None, *sink.of(ctx.params)


class _TransitionFunction(torch.autograd.Function):
    """A stage transition that stores its two inputs and its (pooled) attention output h, and
    recomputes the rest in backward."""

    @staticmethod
    def forward(ctx, x1: torch.Tensor, x2: torch.Tensor, step: _Step, *params: nn.Parameter):
        out, _, kept = _forward_recorded(ctx, step, params, x1, x2)
        ctx.save_for_backward(*kept)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        step: _Step = ctx.step
        x1, x2, h = ctx.saved_tensors
        sink = _GradSink()
        with step.replay(x1.device):
            grad_x1, grad_x2 = _recompute_transition(step, x1, x2, h, grad_out, sink)
        step.handoff.put(x1, x2)
        return grad_x1, grad_x2, None, *sink.of(ctx.params)


def _chunked_backward(fn, x, grad_out, chunk: int, sink: _GradSink, params, keep_output: bool):
    """Backpropagates `grad_out` through a token-wise `fn(x)` one chunk of tokens at a time, so
    only one chunk's activations exist. Returns the gradient of `x` and, if asked, `fn(x)`."""
    grads, outputs = [], []
    for start in range(0, x.shape[1], chunk):
        tokens = slice(start, start + chunk)
        part = _leaf(x[:, tokens])
        out = fn(part)
        grads += sink.backward(out, grad_out[:, tokens], [part], params)
        if keep_output:
            outputs.append(out.detach())
        del out
    return _joined(grads), _joined(outputs) if keep_output else None


def _joined(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def _invert_block(step: _Step, y1, y2, grad_y1, grad_y2, sink: _GradSink):
    """Recovers a block's input from its output and backpropagates through the block."""
    block, device = step.layer, y1.device
    before_f, before_g = step.rng
    before_g.restore(device)
    mask = _g_mask(block, y1, step.training)
    grad_g, g = _chunked_backward(
        lambda tokens: _scaled(block.G(tokens), mask),
        y1,
        grad_y2,
        step.chunk,
        sink,
        _trainable(block.G),
        keep_output=True,
    )
    x2 = y2 - g
    grad_y1 = grad_y1 + grad_g
    del g, grad_g
    before_f.restore(device)
    x2_leaf = _leaf(x2)
    f = _f_step(block, x2_leaf, step.thw, step.training)
    (grad_x2,) = sink.backward(f, grad_y1, [x2_leaf], _trainable(block.F))
    x1 = y1 - f.detach()
    return x1, x2, grad_y1, grad_y2 + grad_x2


def _recompute_transition(step: _Step, x1, x2, h, grad_out, sink: _GradSink):
    """Backpropagates through a stage transition in two steps, so only one step's activations
    exist at a time: the G part from the saved h, one token chunk at a time, then the
    attention part recomputed from the saved inputs. Returns the gradients of both inputs."""
    layer, device = step.layer, x1.device
    before_f, before_g = step.rng
    g_params = _trainable(layer.G)
    before_g.restore(device)
    mask = _g_mask(layer, h, step.training)
    grad_h, _ = _chunked_backward(
        lambda tokens: _transition_out(tokens, layer.G(tokens), mask),
        h,
        grad_out,
        step.chunk,
        sink,
        g_params,
        keep_output=False,
    )
    before_f.restore(device)
    x1_leaf, x2_leaf = _leaf(x1), _leaf(x2)
    h, _ = layer.attend(x1_leaf, x2_leaf, step.thw)
    params = _trainable(layer, exclude=g_params)
    grad_x1, grad_x2 = sink.backward(h, grad_h, [x1_leaf, x2_leaf], params)
    return grad_x1, grad_x2


class ReversibleStack(nn.Module):
    """Runs `layers` (ReversibleBlocks and StageTransitions) on a single stream of tokens.

    `forward(x, thw)` takes `(B, N, C)` tokens on grid `thw` and returns the two output
    streams `(B, N', C')` each and their grid. In training with gradients enabled it uses the
    memory-saving custom backward (unless `custom_backward` is False); in eval or under
    `torch.no_grad()` it runs a plain forward.
    """

    def __init__(
        self,
        layers: Sequence[nn.Module],
        *,
        custom_backward: bool = True,
        recompute_transitions: bool = True,
        chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.custom_backward = custom_backward
        self.recompute_transitions = recompute_transitions
        self.chunk_tokens = chunk_tokens

    def _recomputed(self, index: int) -> bool:
        if index >= len(self.layers):
            return False
        return isinstance(self.layers[index], ReversibleBlock) or self.recompute_transitions

    def forward(self, x: torch.Tensor, thw: Thw) -> tuple[torch.Tensor, torch.Tensor, Thw]:
        x = _stream(x)
        if not (self.custom_backward and self.training and torch.is_grad_enabled()):
            return plain_forward(self.layers, x, x, thw, self.training, self.chunk_tokens)
        handoff = _Handoff()
        x1 = x2 = x
        for index, layer in enumerate(self.layers):
            if not self._recomputed(index):
                x1, x2, thw = plain_forward([layer], x1, x2, thw, self.training, self.chunk_tokens)
                continue
            step = _Step(
                layer,
                thw,
                self.training,
                self.chunk_tokens,
                keeps_output=not self._recomputed(index + 1),
                handoff=handoff,
            )
            params = _trainable(layer)
            if isinstance(layer, ReversibleBlock):
                x1, x2 = _ReversibleBlockFunction.apply(x1, x2, step, *params)
            else:
                x1 = x2 = _TransitionFunction.apply(x1, x2, step, *params)
            thw = step.thw_out
        return x1, x2, thw
