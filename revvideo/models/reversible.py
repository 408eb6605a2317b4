"""Reversible layers and the stack whose backward recomputes their activations.

A `ReversibleBlock` maps two streams `(X1, X2)` to `(Y1, Y2)`; its backward inverts it:

    Y1 = X1 + F(X2)          X2 = Y2 - G(Y1)
    Y2 = X2 + G(Y1)          X1 = Y1 - F(X2)

F and G carry stochastic depth. A `StageTransition` fuses the streams, changes grid and width,
and is not invertible: it keeps its inputs and its attention output h, and recomputes the rest.

Contract: each layer owns its `forward`, its `forward_saving` (its outputs and what its backward
needs) and its `backward_pass` (from that and the outputs' gradients, its inputs and theirs).
`ReversibleStack` wraps each recomputed layer in an autograd Function whose backward replays the
forward's autocast state and its RNG state before each `Step` (the global generators are put
back after), and hands the recovered input to the layer before. All paths run a layer's steps
through the same methods: with one seed, the custom backward and ordinary autograd
(`custom_backward=False`) draw the same masks and give the same gradients. Levers: levers.py.
"""

from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from enum import IntEnum
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

from revvideo.models.common import Thw, drop_path_mask
from revvideo.models.levers import SerialSchedule, StoredLayers, schedule_for

# MLPs run over this many tokens at a time, so their 4x-wide hidden activation stays small.
DEFAULT_CHUNK_TOKENS = 4096

Streams = tuple[Tensor, Tensor]
TokenFn = Callable[[Tensor], Tensor]


class Step(IntEnum):
    """The steps of a layer's forward, each recomputed in backward with the RNG state it saw."""

    ATTENTION = 0  # a block's F, a stage transition's `attend`
    MLP = 1  # G, token chunk by token chunk


RngTape = dict[Step, tuple[Tensor, Tensor | None]]  # the CPU and CUDA RNG states before each step


def _stream(x: Tensor) -> Tensor:
    """A stream as the layers carry it: float32 under mixed precision (F and G run in low
    precision), so X2 = Y2 - G(Y1) recovers the input without losing 8 bits in every block."""
    low = torch.is_autocast_enabled(x.device.type) and x.dtype in (torch.float16, torch.bfloat16)
    return x.float() if low else x


def _drop_path(layer: nn.Module, like: Tensor) -> TokenFn:
    """Scales by the layer's stochastic-depth mask for tensors like `like`, drawn now."""
    mask = drop_path_mask(like, layer.drop_path_rate) if layer.training else None
    return lambda x: x if mask is None else x * mask


def _joined(parts: list[Tensor]) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def _tokenwise(fn: TokenFn, x: Tensor, chunk: int) -> Tensor:
    """`fn(x)` for a token-wise `fn`, computed `chunk` tokens at a time."""
    return fn(x) if x.shape[1] <= chunk else _joined([fn(part) for part in x.split(chunk, 1)])


def _trainable(module: nn.Module, exclude: Sequence[nn.Parameter] = ()) -> list[nn.Parameter]:
    excluded = {id(p) for p in exclude}
    return [p for p in module.parameters() if p.requires_grad and id(p) not in excluded]


def _leaf(x: Tensor) -> Tensor:
    return x.detach().requires_grad_(True)


def _record(tape: RngTape | None, step: Step, device: torch.device) -> None:
    if tape is not None:  # only the custom forward keeps a tape
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        tape[step] = (torch.get_rng_state(), cuda)


class Recompute:
    """What a `backward_pass` works with, whatever the schedule: `recomputing` a step with the RNG
    state its forward saw, `inverting` outside any graph, and `backward` and `mlp`, which
    backpropagate through recomputed steps and accumulate the layer's parameter gradients."""

    def __init__(self, tape: RngTape, device: torch.device, schedule: SerialSchedule) -> None:
        self.tape, self.device, self.schedule = tape, device, schedule
        self.grads: dict[int, Tensor] = {}

    def recomputing(self, step: Step | None, *inputs: Tensor) -> AbstractContextManager:
        """Where `step` is recomputed from `inputs` (None: it goes on with the random draws of
        the step recomputed before); `backward` then backpropagates through what it records."""
        context = self.schedule.recomputing(inputs, records_graph=True)
        if step is not None:
            cpu, cuda = self.tape[step]
            torch.set_rng_state(cpu)
            if cuda is not None:
                torch.cuda.set_rng_state(cuda, self.device)
        return context

    def inverting(self, *inputs: Tensor) -> AbstractContextManager:
        """Where the inverse is computed from `inputs`, outside any graph and drawing nothing."""
        return self.schedule.recomputing(inputs, records_graph=False)

    def backward(
        self, output: Tensor, grad: Tensor, inputs: Sequence[Tensor], params: Sequence[nn.Parameter]
    ) -> tuple[Tensor | None, ...]:
        """Backpropagates `grad` through `output`; returns the gradients of `inputs`."""
        grads = torch.autograd.grad(
            output, [*inputs, *params], grad, allow_unused=True, materialize_grads=False
        )
        self.schedule.returned(grads)
        for param, param_grad in zip(params, grads[len(inputs) :], strict=True):
            if param_grad is not None and id(param) in self.grads:
                self.grads[id(param)] += param_grad
            elif param_grad is not None:
                self.grads[id(param)] = param_grad
        return grads[: len(inputs)]

    def mlp(
        self, layer: nn.Module, x: Tensor, grad: Tensor, keep_output: bool
    ) -> tuple[Tensor, Tensor | None]:
        """Recomputes `layer`'s MLP step, `layer._g(x)(x)`, and backpropagates `grad` through it a
        chunk of tokens at a time (one chunk's activations at a time). Returns the gradient of `x`
        and, if asked, the step's output (detached; else None)."""
        grads, outputs, fn, params = [], [], None, _trainable(layer.G)
        for start in range(0, x.shape[1], layer.chunk_tokens):
            tokens = slice(start, start + layer.chunk_tokens)
            with self.recomputing(Step.MLP if fn is None else None, x):
                fn = fn or layer._g(x)
                part = _leaf(x[:, tokens])
                out = fn(part)
            grads += self.backward(out, grad[:, tokens], [part], params)
            if keep_output:
                outputs.append(out.detach())
            del out
        if not keep_output:
            return _joined(grads), None
        with self.inverting(*outputs):
            output = _joined(outputs)
        return _joined(grads), output

    def grads_of(self, params: Sequence[nn.Parameter]) -> list[Tensor | None]:
        return [self.grads.get(id(p)) for p in params]


class ReversibleBlock(nn.Module):
    """Two streams `(B, N, C)` to two on the same grid. Subclasses set `F` (`F(x, thw)`), `G`
    (token-wise: its output at token i depends only on its input at token i), `drop_path_rate`
    and `chunk_tokens` (G runs over that many tokens at a time). Random draws, in this order:
    F's own, F's drop-path mask, G's drop-path mask, G's own (token chunk by token chunk)."""

    BRANCHES = ("F", "G")  # what levers.compile_branches compiles
    F: nn.Module
    G: nn.Module
    drop_path_rate: float
    chunk_tokens: int

    def _f(self, x2: Tensor, thw: Thw) -> Tensor:
        f = self.F(x2, thw)
        return _drop_path(self, f)(f)

    def _g(self, y1: Tensor) -> TokenFn:
        """G with stochastic depth for any chunk of the tokens of `y1` (the mask is drawn now)."""
        scaled = _drop_path(self, y1)
        return lambda tokens: scaled(self.G(tokens))

    def forward(
        self, x1: Tensor, x2: Tensor, thw: Thw, tape: RngTape | None = None
    ) -> tuple[Tensor, Tensor, Thw]:
        _record(tape, Step.ATTENTION, x1.device)
        y1 = x1 + self._f(x2, thw)
        _record(tape, Step.MLP, x1.device)
        y2 = x2 + _tokenwise(self._g(y1), y1, self.chunk_tokens)
        return y1, y2, thw

    def forward_saving(self, x1: Tensor, x2: Tensor, thw: Thw, tape: RngTape):
        """Its output, which is all its backward needs (when no layer after hands it back)."""
        y1, y2, _ = self(x1, x2, thw, tape)
        return (y1, y2), (y1, y2)

    def backward_pass(
        self, y: Streams, grad_y: Streams, thw: Thw, recompute: Recompute, owns_y: bool
    ) -> tuple[Streams, Streams]:
        """From the outputs and their gradients, the inputs and theirs. With `owns_y` (nothing
        else reads Y2 again) and a schedule that allows it, X2 takes Y2's memory: one
        full-resolution tensor less while F is recomputed and backpropagated."""
        (y1, y2), (grad_y1, grad_y2) = y, grad_y
        grad_g, g = recompute.mlp(self, y1, grad_y2, keep_output=True)
        grad_y1 = grad_y1 + grad_g
        del grad_g
        with recompute.recomputing(Step.ATTENTION, y2, g):
            x2 = y2.sub_(g) if owns_y and recompute.schedule.writes_in_place else y2 - g
            del g
            x2_leaf = _leaf(x2)
            f = self._f(x2_leaf, thw)
        (grad_f,) = recompute.backward(f, grad_y1, [x2_leaf], _trainable(self.F))
        with recompute.inverting(y1, f):
            x1 = y1 - f.detach()
        return (x1, x2), (grad_y1, grad_y2 + grad_f)


class StageTransition(nn.Module):
    """Two streams `(B, N, C)` to one `(B, N', C')` on a new grid, given as both output streams:
    `h, thw_out = attend(x1, x2, thw)`, then `out = h + G(h)`, stochastic depth scaling all of
    `out`. Subclasses set `G` (token-wise), `drop_path_rate`, `chunk_tokens` and `attend`."""

    BRANCHES = ("G",)  # what levers.compile_branches compiles
    G: nn.Module
    drop_path_rate: float
    chunk_tokens: int

    def attend(self, x1: Tensor, x2: Tensor, thw: Thw) -> tuple[Tensor, Thw]:
        raise NotImplementedError

    def _g(self, h: Tensor) -> TokenFn:
        """`h + G(h)` with stochastic depth, as a stream, for any chunk of the tokens of `h`."""
        scaled = _drop_path(self, h)
        return lambda tokens: _stream(scaled(tokens + self.G(tokens)))

    def forward(self, x1: Tensor, x2: Tensor, thw: Thw) -> tuple[Tensor, Tensor, Thw]:
        (out, thw_out), _ = self.forward_saving(x1, x2, thw)
        return out, out, thw_out

    def forward_saving(self, x1: Tensor, x2: Tensor, thw: Thw, tape: RngTape | None = None):
        """`out` and its grid; then its inputs and h, which its backward needs."""
        _record(tape, Step.ATTENTION, x1.device)
        h, thw_out = self.attend(x1, x2, thw)
        _record(tape, Step.MLP, x1.device)
        return (_tokenwise(self._g(h), h, self.chunk_tokens), thw_out), (x1, x2, h)

    def backward_pass(
        self, saved: tuple[Tensor, ...], grads: tuple, thw: Thw, recompute: Recompute, owns: bool
    ) -> tuple[Streams, Streams]:
        """From the saved inputs and h and the gradient of `out`, the inputs and their gradients;
        one step's activations at a time: G from h chunk by chunk, then the attention."""
        x1, x2, h = saved
        grad_h, _ = recompute.mlp(self, h, grads[0], keep_output=False)
        with recompute.recomputing(Step.ATTENTION, x1, x2):
            x1_leaf, x2_leaf = _leaf(x1), _leaf(x2)
            h, _ = self.attend(x1_leaf, x2_leaf, thw)
        params = _trainable(self, exclude=_trainable(self.G))
        return (x1, x2), recompute.backward(h, grad_h, [x1_leaf, x2_leaf], params)


class _Handoff:
    """Carries a block's output streams from the backward of the layer after it, which recovers
    them as its input, to the block's own backward."""

    _streams: Streams | None = None

    def put(self, x1: Tensor, x2: Tensor) -> None:
        # Values only: their recompute's graph leads back to the autograd node holding this
        # handoff, and a backward stopped halfway (out of memory) would then leak the step.
        self._streams = (x1.detach(), x2.detach())

    def take(self) -> Streams:
        if self._streams is None:
            raise RuntimeError("a reversible stack recomputes: one backward per forward, in order")
        streams, self._streams = self._streams, None
        return streams


class _Links(NamedTuple):
    """How a recomputed layer's backward links to its neighbours': it takes its output from
    `output_from` (None: it saves what it needs) and puts its recovered input into `input_to`
    (None: the layer before keeps its own); `schedule` runs the whole backward."""

    schedule: SerialSchedule
    output_from: _Handoff | None
    input_to: _Handoff | None


@contextmanager
def _replaying(ctx: FunctionCtx, device: torch.device) -> Iterator[Recompute]:
    """Grad mode and the forward's autocast; the global RNG state is restored afterwards."""
    cuda_devices = [device] if device.type == "cuda" else []
    with (
        torch.random.fork_rng(devices=cuda_devices, device_type=device.type),
        torch.enable_grad(),
        torch.autocast(**ctx.autocast),
    ):
        yield Recompute(ctx.tape, device, ctx.links.schedule)


class _LayerFunction(torch.autograd.Function):
    """One layer under the custom backward. It takes the layer's trainable parameters as inputs
    and returns their gradients, so autograd accumulates them layer by layer as backward proceeds
    (DDP starts reducing the last layers' gradients while earlier layers still recompute)."""

    @staticmethod
    def forward(ctx, x1, x2, layer: nn.Module, thw: Thw, links: _Links, *params):
        ctx.layer, ctx.thw, ctx.links, ctx.params, ctx.tape = layer, thw, links, params, {}
        kind = x1.device.type
        ctx.autocast = dict(
            device_type=kind,
            enabled=torch.is_autocast_enabled(kind),
            dtype=torch.get_autocast_dtype(kind),
            cache_enabled=torch.is_autocast_cache_enabled(),
        )
        outputs, saved = layer.forward_saving(x1, x2, thw, ctx.tape)
        if links.output_from is None:
            ctx.save_for_backward(*saved)
        return outputs

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads: Tensor | None):
        links: _Links = ctx.links
        # Outputs handed back are this backward's alone; saved ones the rest of the graph saw.
        owned = links.output_from is not None
        saved = links.output_from.take() if owned else ctx.saved_tensors
        with _replaying(ctx, saved[0].device) as recompute:
            x, grad_x = ctx.layer.backward_pass(saved, grads, ctx.thw, recompute, owned)
        if links.input_to is not None:
            links.input_to.put(*x)
        return *grad_x, None, None, None, *recompute.grads_of(ctx.params)


class _ReversibleBlockFunction(_LayerFunction):
    """A block: saves nothing but, when no recomputed layer follows, its output `(y1, y2)`."""


class _TransitionFunction(_LayerFunction):
    """A stage transition: saves its inputs and h, recomputes the rest; returns `out`, grid."""


class ReversibleStack(StoredLayers, nn.Module):
    """Runs `layers` (ReversibleBlocks and StageTransitions) on a single stream of tokens.

    `forward(x, thw)` takes `(B, N, C)` tokens on grid `thw` and returns the two output streams
    and their grid. In training with gradients enabled it uses the custom backward (unless
    `custom_backward` is False; with `recompute_transitions` False, stage transitions run under
    ordinary autograd); in eval or under `torch.no_grad()` a plain forward. Levers (levers.py):
    `stored_layers` (indices) run under ordinary autograd; `overlap_recompute` overlaps recomputes
    with gradient computations on CUDA."""

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

    def recomputable(self, index: int) -> bool:
        return isinstance(self.layers[index], ReversibleBlock) or self.recompute_transitions

    def _links(self, device: torch.device) -> list[_Links | None]:
        """Per layer: None (ordinary autograd), or how its custom backward links to the others'."""
        count = len(self.layers)
        recomputed = [self.recomputable(i) and i not in self.stored_layers for i in range(count)]
        # The hand-back rule: a recomputed block followed by a recomputed layer saves no output,
        # that layer's backward hands it back (a transition or a stored layer keeps its inputs).
        handoffs = {
            i: _Handoff()
            for i in range(count - 1)
            if isinstance(self.layers[i], ReversibleBlock) and recomputed[i] and recomputed[i + 1]
        }
        schedule = schedule_for(device, overlap=self.overlap_recompute)
        return [
            _Links(schedule, handoffs.get(i), handoffs.get(i - 1)) if recomputed[i] else None
            for i in range(count)
        ]

    def forward(self, x: Tensor, thw: Thw) -> tuple[Tensor, Tensor, Thw]:
        x1 = x2 = _stream(x)
        custom = self.custom_backward and self.training and torch.is_grad_enabled()
        plan = self._links(x.device) if custom else [None] * len(self.layers)
        for layer, links in zip(self.layers, plan, strict=True):
            if links is None:
                x1, x2, thw = layer(x1, x2, thw)
            elif isinstance(layer, ReversibleBlock):
                params = _trainable(layer)
                x1, x2 = _ReversibleBlockFunction.apply(x1, x2, layer, thw, links, *params)
            else:
                x1, thw = _TransitionFunction.apply(x1, x2, layer, thw, links, *_trainable(layer))
                x2 = x1
        return x1, x2, thw
