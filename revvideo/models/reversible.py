"""The reversible engine: a stack of two-stream blocks whose backward recomputes activations.

A `ReversibleBlock` maps two streams `(X1, X2)` to

    Y1 = X1 + F(X2)          X2 = Y2 - G(Y1)      (inverse, computed in backward)
    Y2 = X2 + G(Y1)          X1 = Y1 - F(X2)

with stochastic depth applied to the F and G branches. A `StageTransition` fuses the two
streams into one, changes resolution and width, and is not invertible: it keeps only its input
and its attention output h, and recomputes the rest in backward. Between them, only the
stack's output and what the stage transitions keep stay in memory, whatever the depth.

Each layer owns its `forward` and its `backward_pass` (the step back through it: recover or
reload its input, backpropagate through it). `ReversibleStack` only orchestrates: it wraps each
layer in one autograd Function whose backward replays the forward's autocast state, hands the
layer a `Recompute` (which restores the forward's RNG states and collects the parameter
gradients) and passes the recovered input on to the layer before.

This module is the one place that knows about the custom backward, about replaying randomness
(the exact CPU/CUDA RNG state before each step of the forward is restored for its recompute,
then the global generators are put back) and about replaying autocast. Ordinary autograd
through the same `forward` (`custom_backward=False`) draws the same random numbers in the same
order, so with the same seed both give the same masks and the same gradients.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.autograd.function import FunctionCtx, once_differentiable
from torch.utils.checkpoint import checkpoint

from revvideo.models.common import Thw, drop_path_mask

# MLPs run over this many tokens at a time, so their 4x-wide hidden activation stays small.
DEFAULT_CHUNK_TOKENS = 4096

Streams = tuple[torch.Tensor, torch.Tensor]


def recompute_in_backward(fn: Callable[..., torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
    """`fn(*args)`; with gradients enabled, autograd keeps only `args` and recomputes `fn` when
    backward needs it (for steps whose output is small but whose insides are large)."""
    if not torch.is_grad_enabled():
        return fn(*args)
    return checkpoint(fn, *args, use_reentrant=False)


def _stream(x: torch.Tensor) -> torch.Tensor:
    """A stream as the layers carry it. Under mixed precision streams stay float32 (the F and G
    branches run in low precision): X2 = Y2 - G(Y1) then recovers a block's input to float32
    precision instead of losing 8 bits in every block."""
    if torch.is_autocast_enabled(x.device.type) and x.dtype in (torch.float16, torch.bfloat16):
        return x.float()
    return x


def _scaled(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x * mask


def _tokenwise(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk: int
) -> torch.Tensor:
    """`fn(x)` for a token-wise `fn`, computed `chunk` tokens at a time."""
    if x.shape[1] <= chunk:
        return fn(x)
    return torch.cat([fn(part) for part in x.split(chunk, dim=1)], dim=1)


def _trainable(module: nn.Module, exclude: Sequence[nn.Parameter] = ()) -> list[nn.Parameter]:
    excluded = {id(p) for p in exclude}
    return [p for p in module.parameters() if p.requires_grad and id(p) not in excluded]


def _leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().requires_grad_(True)


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


class RngTape:
    """The RNG states a layer's custom forward saw before each of its steps (step 0: F or the
    attention, step 1: G), for the recompute of that step in backward."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.states: list[_RngState] = []

    def record(self) -> None:
        self.states.append(_RngState.capture(self.device))


def _record(tape: RngTape | None) -> None:
    if tape is not None:
        tape.record()


class Recompute:
    """What a layer's `backward_pass` works with: `restore(step)` puts back the RNG state its
    forward saw before that step, `backward` and `tokenwise` backpropagate through recomputed
    steps and accumulate the layer's parameter gradients."""

    def __init__(self, tape: RngTape) -> None:
        self.tape = tape
        self.grads: dict[int, torch.Tensor] = {}

    def restore(self, step: int) -> None:
        self.tape.states[step].restore(self.tape.device)

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

    def tokenwise(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        x: torch.Tensor,
        grad_out: torch.Tensor,
        chunk: int,
        params: Sequence[nn.Parameter],
        keep_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Backpropagates `grad_out` through a token-wise `fn(x)` one chunk of tokens at a time,
        so only one chunk's activations exist. Returns the gradient of `x` and, if asked,
        `fn(x)` (detached)."""
        grads, outputs = [], []
        for start in range(0, x.shape[1], chunk):
            tokens = slice(start, start + chunk)
            part = _leaf(x[:, tokens])
            out = fn(part)
            grads += self.backward(out, grad_out[:, tokens], [part], params)
            if keep_output:
                outputs.append(out.detach())
            del out
        return _joined(grads), _joined(outputs) if keep_output else None

    def grads_of(self, params: Sequence[nn.Parameter]) -> list[torch.Tensor | None]:
        return [self.grads.get(id(p)) for p in params]


def _joined(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def _drop_path(
    layer: "ReversibleBlock | StageTransition", like: torch.Tensor
) -> torch.Tensor | None:
    """The layer's stochastic-depth mask for a tensor like `like` (None when not training)."""
    return drop_path_mask(like, layer.drop_path_rate) if layer.training else None


# Every path runs a layer's steps through the methods below (the plain forward, the custom
# forward and the recompute in backward), so all draw the same random numbers in the same
# order: F's own randomness, F's drop-path mask, G's drop-path mask, G's own randomness
# (token chunk by token chunk).


class ReversibleBlock(nn.Module):
    """Base of two-stream blocks, `(X1, X2)` to `(Y1, Y2)` at constant width and grid.
    Subclasses set `F` (`F(x, thw)`, `(B, N, C)` to `(B, N, C)`), `G` (token-wise: `G(x)` at
    token i depends only on `x` at token i), `drop_path_rate` and `chunk_tokens` (G runs over
    that many tokens at a time)."""

    F: nn.Module
    G: nn.Module
    drop_path_rate: float
    chunk_tokens: int

    def _f(self, x2: torch.Tensor, thw: Thw) -> torch.Tensor:
        """F(X2) with stochastic depth, `(B, N, C)`."""
        f = self.F(x2, thw)
        return _scaled(f, _drop_path(self, f))

    def _g(self, y1: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """G with stochastic depth, for any chunk of the tokens of `y1` (the mask is drawn now,
        one per sample of `y1`)."""
        mask = _drop_path(self, y1)
        return lambda tokens: _scaled(self.G(tokens), mask)

    def forward(
        self, x1: torch.Tensor, x2: torch.Tensor, thw: Thw, tape: RngTape | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, Thw]:
        """Streams `(B, N, C)` on grid `thw` to streams `(B, N, C)` on the same grid; `tape`
        (custom forward only) records the RNG state before each step."""
        _record(tape)
        y1 = x1 + self._f(x2, thw)
        _record(tape)
        y2 = x2 + _tokenwise(self._g(y1), y1, self.chunk_tokens)
        return y1, y2, thw

    def backward_pass(
        self,
        y1: torch.Tensor,
        y2: torch.Tensor,
        grad_y1: torch.Tensor,
        grad_y2: torch.Tensor,
        thw: Thw,
        recompute: Recompute,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """From the outputs `(B, N, C)` and their gradients, the inputs (X2 = Y2 - G(Y1), then
        X1 = Y1 - F(X2)) and theirs: `x1, x2, grad_x1, grad_x2`."""
        recompute.restore(1)
        grad_g, g = recompute.tokenwise(
            self._g(y1), y1, grad_y2, self.chunk_tokens, _trainable(self.G), keep_output=True
        )
        x2 = y2 - g
        grad_y1 = grad_y1 + grad_g
        del g, grad_g
        recompute.restore(0)
        x2_leaf = _leaf(x2)
        f = self._f(x2_leaf, thw)
        (grad_f,) = recompute.backward(f, grad_y1, [x2_leaf], _trainable(self.F))
        return y1 - f.detach(), x2, grad_y1, grad_y2 + grad_f


class StageTransition(nn.Module):
    """Base of the non-invertible layers between reversible runs: `h, thw_out = attend(x1, x2,
    thw)`, then `out = h + G(h)`, stochastic depth scaling the whole output; both output
    streams are `out`. Subclasses set `G` (token-wise), `drop_path_rate`, `chunk_tokens` and
    `attend`."""

    G: nn.Module
    drop_path_rate: float
    chunk_tokens: int

    def attend(self, x1: torch.Tensor, x2: torch.Tensor, thw: Thw) -> tuple[torch.Tensor, Thw]:
        """Streams `(B, N, C)` on grid `thw` to h `(B, N', C')` on grid `thw_out`."""
        raise NotImplementedError

    def _g(self, h: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """`h + G(h)` with stochastic depth, as a stream, for any chunk of the tokens of `h`."""
        mask = _drop_path(self, h)
        return lambda tokens: _stream(_scaled(tokens + self.G(tokens), mask))

    def forward_steps(
        self, x1: torch.Tensor, x2: torch.Tensor, thw: Thw, tape: RngTape | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, Thw]:
        """The forward's two steps, returning also the attention output h (what the custom
        backward keeps): `(h, out, thw_out)`; `tape` (custom forward only) records the RNG
        state before each step."""
        _record(tape)
        h, thw_out = self.attend(x1, x2, thw)
        _record(tape)
        return h, _tokenwise(self._g(h), h, self.chunk_tokens), thw_out

    def forward(
        self, x1: torch.Tensor, x2: torch.Tensor, thw: Thw
    ) -> tuple[torch.Tensor, torch.Tensor, Thw]:
        """Streams `(B, N, C)` on grid `thw` to streams `(B, N', C')` on grid `thw_out`."""
        _, out, thw_out = self.forward_steps(x1, x2, thw)
        return out, out, thw_out

    def backward_pass(
        self,
        x1: torch.Tensor,
        x2: torch.Tensor,
        h: torch.Tensor,
        grad_out: torch.Tensor,
        thw: Thw,
        recompute: Recompute,
    ) -> Streams:
        """From the saved inputs `(B, N, C)`, h `(B, N', C')` and the gradient of `out`, the
        gradients of the inputs. Two steps, so only one step's activations exist at a time: G
        from the saved h, one token chunk at a time, then the attention from the inputs."""
        g_params = _trainable(self.G)
        recompute.restore(1)
        grad_h, _ = recompute.tokenwise(
            self._g(h), h, grad_out, self.chunk_tokens, g_params, keep_output=False
        )
        recompute.restore(0)
        x1_leaf, x2_leaf = _leaf(x1), _leaf(x2)
        h, _ = self.attend(x1_leaf, x2_leaf, thw)
        params = _trainable(self, exclude=g_params)
        grad_x1, grad_x2 = recompute.backward(h, grad_h, [x1_leaf, x2_leaf], params)
        return grad_x1, grad_x2


class _Handoff:
    """Carries a layer's recovered input streams, which are its predecessor's outputs, from
    the backward of one layer to the backward of the layer before it."""

    def __init__(self) -> None:
        self._streams: Streams | None = None

    def put(self, x1: torch.Tensor, x2: torch.Tensor) -> None:
        # Values only: recovered streams carry the graph of their recomputation, which leads
        # back to the autograd node holding this handoff; if backward stopped halfway (out of
        # memory), that cycle through C++ nodes would keep the whole step's graph alive.
        self._streams = (x1.detach(), x2.detach())

    def take(self) -> Streams:
        if self._streams is None:
            raise RuntimeError(
                "backward ran twice through a reversible stack, or out of order; "
                "recomputation needs one backward per forward"
            )
        streams, self._streams = self._streams, None
        return streams


@dataclass(frozen=True)
class _Autocast:
    """The autocast state of a forward, to replay in its recompute."""

    device_type: str
    enabled: bool
    dtype: torch.dtype
    cache_enabled: bool

    @classmethod
    def capture(cls, device: torch.device) -> "_Autocast":
        kind = device.type
        return cls(
            kind,
            torch.is_autocast_enabled(kind),
            torch.get_autocast_dtype(kind),
            torch.is_autocast_cache_enabled(),
        )


# One autograd Function per layer: each takes the layer's trainable parameters as inputs and
# returns their gradients, so autograd accumulates them layer by layer as backward proceeds
# (DDP starts reducing the last layers' gradients while earlier layers still recompute).


def _start_recording(
    ctx: FunctionCtx,
    layer: "ReversibleBlock | StageTransition",
    thw: Thw,
    handoff: _Handoff,
    params: tuple[nn.Parameter, ...],
    device: torch.device,
) -> RngTape:
    """Stores on `ctx` what the layer's backward needs; returns the tape for its forward."""
    ctx.layer, ctx.thw, ctx.handoff, ctx.params = layer, thw, handoff, params
    ctx.autocast = _Autocast.capture(device)
    ctx.tape = RngTape(device)
    return ctx.tape


@contextmanager
def _replaying(ctx: FunctionCtx, device: torch.device) -> Iterator[Recompute]:
    """Grad mode and the forward's autocast; the global RNG state is restored afterwards."""
    autocast: _Autocast = ctx.autocast
    cuda_devices = [device] if device.type == "cuda" else []
    with (
        torch.random.fork_rng(devices=cuda_devices, device_type=device.type),
        torch.enable_grad(),
        torch.autocast(
            autocast.device_type,
            dtype=autocast.dtype,
            enabled=autocast.enabled,
            cache_enabled=autocast.cache_enabled,
        ),
    ):
        yield Recompute(ctx.tape)


class _ReversibleBlockFunction(torch.autograd.Function):
    """A reversible block that stores nothing: its backward recovers the input from the
    output, which it keeps only when no recomputed layer follows to hand it back."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x1: torch.Tensor,
        x2: torch.Tensor,
        block: ReversibleBlock,
        thw: Thw,
        handoff: _Handoff,
        keeps_output: bool,
        *params: nn.Parameter,
    ) -> Streams:
        tape = _start_recording(ctx, block, thw, handoff, params, x1.device)
        y1, y2, _ = block(x1, x2, thw, tape)
        ctx.keeps_output = keeps_output
        if keeps_output:
            ctx.save_for_backward(y1, y2)
        return y1, y2

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y1: torch.Tensor, grad_y2: torch.Tensor):
        y1, y2 = ctx.saved_tensors if ctx.keeps_output else ctx.handoff.take()
        with _replaying(ctx, y1.device) as recompute:
            x1, x2, grad_x1, grad_x2 = ctx.layer.backward_pass(
                y1, y2, grad_y1, grad_y2, ctx.thw, recompute
            )
        ctx.handoff.put(x1, x2)
        return grad_x1, grad_x2, None, None, None, None, *recompute.grads_of(ctx.params)


class _TransitionFunction(torch.autograd.Function):
    """A stage transition that stores its two inputs and its (pooled) attention output h, and
    recomputes the rest in backward. Returns `out` and its grid."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x1: torch.Tensor,
        x2: torch.Tensor,
        transition: StageTransition,
        thw: Thw,
        handoff: _Handoff,
        *params: nn.Parameter,
    ) -> tuple[torch.Tensor, Thw]:
        tape = _start_recording(ctx, transition, thw, handoff, params, x1.device)
        h, out, thw_out = transition.forward_steps(x1, x2, thw, tape)
        ctx.save_for_backward(x1, x2, h)
        return out, thw_out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor, _grad_thw: None):
        x1, x2, h = ctx.saved_tensors
        with _replaying(ctx, x1.device) as recompute:
            grad_x1, grad_x2 = ctx.layer.backward_pass(x1, x2, h, grad_out, ctx.thw, recompute)
        ctx.handoff.put(x1, x2)
        return grad_x1, grad_x2, None, None, None, *recompute.grads_of(ctx.params)


class ReversibleStack(nn.Module):
    """Runs `layers` (ReversibleBlocks and StageTransitions) on a single stream of tokens.

    `forward(x, thw)` takes `(B, N, C)` tokens on grid `thw` and returns the two output
    streams `(B, N', C')` each and their grid. In training with gradients enabled it uses the
    memory-saving custom backward (unless `custom_backward` is False; with
    `recompute_transitions` False, stage transitions run under ordinary autograd); in eval or
    under `torch.no_grad()` it runs a plain forward.
    """

    def __init__(
        self,
        layers: Sequence[ReversibleBlock | StageTransition],
        *,
        custom_backward: bool = True,
        recompute_transitions: bool = True,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.custom_backward = custom_backward
        self.recompute_transitions = recompute_transitions

    def _recomputed(self, index: int) -> bool:
        if index >= len(self.layers):
            return False
        return isinstance(self.layers[index], ReversibleBlock) or self.recompute_transitions

    def forward(self, x: torch.Tensor, thw: Thw) -> tuple[torch.Tensor, torch.Tensor, Thw]:
        x1 = x2 = _stream(x)
        custom = self.custom_backward and self.training and torch.is_grad_enabled()
        handoff = _Handoff()
        for index, layer in enumerate(self.layers):
            if not (custom and self._recomputed(index)):
                x1, x2, thw = layer(x1, x2, thw)
            elif isinstance(layer, ReversibleBlock):
                keeps_output = not self._recomputed(index + 1)
                x1, x2 = _ReversibleBlockFunction.apply(
                    x1, x2, layer, thw, handoff, keeps_output, *_trainable(layer)
                )
            else:
                x1, thw = _TransitionFunction.apply(x1, x2, layer, thw, handoff, *_trainable(layer))
                x2 = x1
        return x1, x2, thw
