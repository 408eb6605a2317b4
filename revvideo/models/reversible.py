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

A backward alternates recomputes (`Recompute.recomputing`) and gradient computations
(`Recompute.backward`). On CUDA, `overlap_recompute` runs each recompute on a side stream, so it
overlaps the gradient computation of the step before it (PaReprop, Zhu et al. 2023); the
schedule is the same, and nothing waits for the device.
"""

from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from functools import cache

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


class _SerialSchedule:
    """Recomputes and gradient computations take turns on the current stream."""

    # Whether a layer's backward may overwrite a stream it owns: nothing else reads it later.
    writes_in_place = True

    def recomputing(
        self, inputs: Sequence[torch.Tensor], records_graph: bool
    ) -> AbstractContextManager[None]:
        """Where a recompute from `inputs` runs; keeps no reference to them (the caller frees
        what it no longer needs inside the recompute)."""
        return nullcontext()

    def returned(self, tensors: Sequence[torch.Tensor | None]) -> None:
        pass


@cache
def _side_streams(device: torch.device) -> tuple[torch.cuda.Stream, torch.cuda.Stream]:
    return torch.cuda.Stream(device), torch.cuda.Stream(device)


def _unchanged(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


class _OverlappedSchedule(_SerialSchedule):
    """Runs each recompute on a side stream, so that it overlaps the gradient computation of
    the step before it, which stays on the current stream.

    Autograd backpropagates a graph on the stream that recorded it, so recomputes alternate
    between two side streams: step k+1 is recomputed on one while step k is backpropagated on
    the other. Each recompute waits for the one before it (an event: recomputes depend only on
    recomputes); autograd makes a graph's stream wait for the gradient it is given and the
    current stream for the gradients it returns. A tensor one stream made and another uses is
    marked used by that stream (`record_stream`), so the caching allocator does not hand its
    memory out again too early. Nothing waits on the host. On the CPU there are no streams and
    the same schedule runs serially.
    """

    def __init__(self, device: torch.device) -> None:
        self._streams = _side_streams(device) if device.type == "cuda" else (None, None)
        # A side stream may still be backpropagating through a stream another one would write.
        self.writes_in_place = device.type != "cuda"
        # The side stream the next recorded graph goes to: not the one autograd may still be
        # backpropagating the last recorded graph on.
        self._next = 0
        self._recomputed: torch.cuda.Event | None = None

    def recomputing(
        self, inputs: Sequence[torch.Tensor], records_graph: bool
    ) -> AbstractContextManager[None]:
        stream = self._streams[self._next]
        if stream is not None:
            if self._recomputed is None:
                # The backward's first recompute: its inputs come from the forward.
                stream.wait_stream(torch.cuda.current_stream(stream.device))
            else:
                stream.wait_event(self._recomputed)
            for tensor in inputs:
                tensor.record_stream(stream)
        return self._on(stream, records_graph)

    @contextmanager
    def _on(self, stream: torch.cuda.Stream | None, records_graph: bool) -> Iterator[None]:
        # What the graph saves is used again when autograd backpropagates it on this stream.
        used_again = torch.autograd.graph.saved_tensors_hooks(self._marker(stream), _unchanged)
        with nullcontext() if stream is None else torch.cuda.stream(stream), used_again:
            yield
        if stream is not None:
            self._recomputed = stream.record_event()
        if records_graph:
            self._next = 1 - self._next

    @staticmethod
    def _marker(stream: torch.cuda.Stream | None) -> Callable[[torch.Tensor], torch.Tensor]:
        def mark_used(tensor: torch.Tensor) -> torch.Tensor:
            if stream is not None and tensor.is_cuda:
                tensor.record_stream(stream)
            # A saved output comes with its grad_fn, which would then hold it: a cycle.
            return tensor.detach()

        return mark_used

    def returned(self, tensors: Sequence[torch.Tensor | None]) -> None:
        """Marks gradients computed on a side stream as used by the current stream."""
        for tensor in tensors:
            if tensor is not None and tensor.is_cuda:
                tensor.record_stream(torch.cuda.current_stream(tensor.device))


class Recompute:
    """What a layer's `backward_pass` works with: `recomputing(step)` recomputes a step of the
    forward with the RNG state that forward saw, `inverting` computes what the inverse needs
    outside any graph, `backward` and `tokenwise` backpropagate through recomputed steps and
    accumulate the layer's parameter gradients. Whatever the schedule (serial, or overlapped on
    CUDA side streams), a `backward_pass` runs the same code."""

    def __init__(self, tape: RngTape, schedule: _SerialSchedule) -> None:
        self.tape = tape
        self.schedule = schedule
        self.grads: dict[int, torch.Tensor] = {}

    def recomputing(self, step: int | None, *inputs: torch.Tensor) -> AbstractContextManager[None]:
        """Where forward step `step` is recomputed from `inputs`, with the RNG state its forward
        saw (None: the step continues the random draws of the one recomputed before); `backward`
        then backpropagates through the graph it records."""
        context = self.schedule.recomputing(inputs, records_graph=True)
        if step is not None:
            self.tape.states[step].restore(self.tape.device)
        return context

    def inverting(self, *inputs: torch.Tensor) -> AbstractContextManager[None]:
        """Where what the inverse needs is computed from `inputs` outside any graph, drawing no
        random numbers (X1 = Y1 - F(X2)), alongside the recomputes."""
        return self.schedule.recomputing(inputs, records_graph=False)

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
        self.schedule.returned(grads)
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
        step: int,
        make_fn: Callable[[torch.Tensor], Callable[[torch.Tensor], torch.Tensor]],
        x: torch.Tensor,
        grad_out: torch.Tensor,
        chunk: int,
        params: Sequence[nn.Parameter],
        keep_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Recomputes forward step `step`, the token-wise `make_fn(x)(x)`, and backpropagates
        `grad_out` through it one chunk of tokens at a time, so only one chunk's activations
        exist. Returns the gradient of `x` and, if asked, `make_fn(x)(x)` (detached)."""
        grads, outputs = [], []
        fn = None
        for start in range(0, x.shape[1], chunk):
            tokens = slice(start, start + chunk)
            with self.recomputing(step if fn is None else None, x):
                if fn is None:
                    fn = make_fn(x)
                part = _leaf(x[:, tokens])
                out = fn(part)
            grads += self.backward(out, grad_out[:, tokens], [part], params)
            if keep_output:
                outputs.append(out.detach())
            del out
        if not keep_output:
            return _joined(grads), None
        with self.inverting(*outputs):
            output = _joined(outputs)
        return _joined(grads), output

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
        owns_outputs: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """From the outputs `(B, N, C)` and their gradients, the inputs (X2 = Y2 - G(Y1), then
        X1 = Y1 - F(X2)) and theirs: `x1, x2, grad_x1, grad_x2`. With `owns_outputs` (nothing
        else reads Y2 again) and a schedule that allows it, X2 takes Y2's memory, one
        full-resolution tensor less while F is recomputed and backpropagated."""
        grad_g, g = recompute.tokenwise(
            1, self._g, y1, grad_y2, self.chunk_tokens, _trainable(self.G), keep_output=True
        )
        grad_y1 = grad_y1 + grad_g
        del grad_g
        with recompute.recomputing(0, y2, g):
            x2 = y2.sub_(g) if owns_outputs and recompute.schedule.writes_in_place else y2 - g
            del g
            x2_leaf = _leaf(x2)
            f = self._f(x2_leaf, thw)
        (grad_f,) = recompute.backward(f, grad_y1, [x2_leaf], _trainable(self.F))
        with recompute.inverting(y1, f):
            x1 = y1 - f.detach()
        return x1, x2, grad_y1, grad_y2 + grad_f


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
        grad_h, _ = recompute.tokenwise(
            1, self._g, h, grad_out, self.chunk_tokens, g_params, keep_output=False
        )
        with recompute.recomputing(0, x1, x2):
            x1_leaf, x2_leaf = _leaf(x1), _leaf(x2)
            h, _ = self.attend(x1_leaf, x2_leaf, thw)
        params = _trainable(self, exclude=g_params)
        grad_x1, grad_x2 = recompute.backward(h, grad_h, [x1_leaf, x2_leaf], params)
        return grad_x1, grad_x2


class _Handoff:
    """Carries a layer's recovered input streams, which are its predecessor's outputs, from
    the backward of one layer to the backward of the layer before it, and the backward's
    schedule, which runs across the layers."""

    def __init__(self, schedule: _SerialSchedule) -> None:
        self.schedule = schedule
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
        yield Recompute(ctx.tape, ctx.handoff.schedule)


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
        hands_back: bool,
        *params: nn.Parameter,
    ) -> Streams:
        tape = _start_recording(ctx, block, thw, handoff, params, x1.device)
        y1, y2, _ = block(x1, x2, thw, tape)
        ctx.keeps_output, ctx.hands_back = keeps_output, hands_back
        if keeps_output:
            ctx.save_for_backward(y1, y2)
        return y1, y2

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y1: torch.Tensor, grad_y2: torch.Tensor):
        # Outputs handed back by the next layer's backward are this backward's alone; outputs
        # it kept are also the tensors the rest of the graph saw.
        y1, y2 = ctx.saved_tensors if ctx.keeps_output else ctx.handoff.take()
        with _replaying(ctx, y1.device) as recompute:
            x1, x2, grad_x1, grad_x2 = ctx.layer.backward_pass(
                y1, y2, grad_y1, grad_y2, ctx.thw, recompute, owns_outputs=not ctx.keeps_output
            )
        if ctx.hands_back:
            ctx.handoff.put(x1, x2)
        return grad_x1, grad_x2, None, None, None, None, None, *recompute.grads_of(ctx.params)


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
        hands_back: bool,
        *params: nn.Parameter,
    ) -> tuple[torch.Tensor, Thw]:
        tape = _start_recording(ctx, transition, thw, handoff, params, x1.device)
        h, out, thw_out = transition.forward_steps(x1, x2, thw, tape)
        ctx.save_for_backward(x1, x2, h)
        ctx.hands_back = hands_back
        return out, thw_out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor, _grad_thw: None):
        x1, x2, h = ctx.saved_tensors
        with _replaying(ctx, x1.device) as recompute:
            grad_x1, grad_x2 = ctx.layer.backward_pass(x1, x2, h, grad_out, ctx.thw, recompute)
        if ctx.hands_back:
            ctx.handoff.put(x1, x2)
        return grad_x1, grad_x2, None, None, None, None, *recompute.grads_of(ctx.params)


class ReversibleStack(nn.Module):
    """Runs `layers` (ReversibleBlocks and StageTransitions) on a single stream of tokens.

    `forward(x, thw)` takes `(B, N, C)` tokens on grid `thw` and returns the two output
    streams `(B, N', C')` each and their grid. In training with gradients enabled it uses the
    memory-saving custom backward (unless `custom_backward` is False; with
    `recompute_transitions` False, stage transitions run under ordinary autograd); in eval or
    under `torch.no_grad()` it runs a plain forward. `stored_layers` (indices into `layers`)
    run under ordinary autograd too: they keep their activations, so their backward skips the
    recompute (faster, more memory; a layer deep in the model keeps the least). With
    `overlap_recompute`, the custom backward on CUDA recomputes each step on a side stream
    while the step before it is backpropagated (the same gradients; serial on the CPU).
    """

    def __init__(
        self,
        layers: Sequence[ReversibleBlock | StageTransition],
        *,
        custom_backward: bool = True,
        recompute_transitions: bool = True,
        stored_layers: Collection[int] = (),
        overlap_recompute: bool = False,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.custom_backward = custom_backward
        self.recompute_transitions = recompute_transitions
        self.stored_layers = frozenset(stored_layers)
        self.overlap_recompute = overlap_recompute

    def _recomputable(self, index: int) -> bool:
        return isinstance(self.layers[index], ReversibleBlock) or self.recompute_transitions

    def _recomputed(self, index: int) -> bool:
        if not 0 <= index < len(self.layers) or index in self.stored_layers:
            return False
        return self._recomputable(index)

    def storable_layers(self) -> list[int]:
        """The layers the custom backward recomputes when none is stored, deepest first: a deeper
        layer keeps less memory for the recompute it saves (tokens pool faster than the width
        grows), so the first ones are the ones to store."""
        return [i for i in reversed(range(len(self.layers))) if self._recomputable(i)]

    def store_deepest(self, count: int) -> None:
        """Makes the first `count` of storable_layers() the stored layers (and only them)."""
        self.stored_layers = frozenset(self.storable_layers()[:count])

    def forward(self, x: torch.Tensor, thw: Thw) -> tuple[torch.Tensor, torch.Tensor, Thw]:
        x1 = x2 = _stream(x)
        custom = self.custom_backward and self.training and torch.is_grad_enabled()
        overlap = custom and self.overlap_recompute
        schedule = _OverlappedSchedule(x.device) if overlap else _SerialSchedule()
        handoff = _Handoff(schedule)
        for index, layer in enumerate(self.layers):
            # A recomputed layer's backward recovers its input streams, which the backward of
            # the layer before it takes when that one is a recomputed block (else it keeps them:
            # a stage transition keeps its inputs, and a stored layer its activations).
            hands_back = self._recomputed(index - 1) and isinstance(
                self.layers[index - 1], ReversibleBlock
            )
            if not (custom and self._recomputed(index)):
                x1, x2, thw = layer(x1, x2, thw)
            elif isinstance(layer, ReversibleBlock):
                keeps_output = not self._recomputed(index + 1)
                x1, x2 = _ReversibleBlockFunction.apply(
                    x1, x2, layer, thw, handoff, keeps_output, hands_back, *_trainable(layer)
                )
            else:
                x1, thw = _TransitionFunction.apply(
                    x1, x2, layer, thw, handoff, hands_back, *_trainable(layer)
                )
                x2 = x1
        return x1, x2, thw


# Compiled branches draw random numbers as eager ops do, not with inductor's own generator: a
# forward and its recompute may run different graphs (without and with gradients, or eager where
# Dynamo stops compiling), and only eager's draws are the same in all of them.
_BRANCH_COMPILE_OPTIONS = {"fallback_random": True}


def compile_branches(model: nn.Module) -> None:
    """Compiles with `torch.compile`, in place (parameter names stay), the F and G branches of
    the reversible blocks in `model` and the G of its stage transitions. Forward and recompute
    run the compiled branches, with the same masks and the same gradients as eager ones."""
    branches: list[nn.Module] = []
    for layer in model.modules():
        if isinstance(layer, ReversibleBlock):
            branches += [layer.F, layer.G]
        elif isinstance(layer, StageTransition):
            branches.append(layer.G)
    # Dynamo compiles a branch's forward once per width (parameter shapes are static), with and
    # without gradients, for whole token chunks and the last one; past its limit it runs eager.
    limit = 4 * len(branches)
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, limit)
    for branch in branches:
        branch.compile(options=_BRANCH_COMPILE_OPTIONS)
