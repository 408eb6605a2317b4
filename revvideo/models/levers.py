"""Throughput levers of the reversible stack (revvideo.models.reversible): each buys step time
with memory or setup time, and leaves the gradients exact.

- Overlapped recompute (PaReprop, Zhu et al. 2023; `ReversibleStack(overlap_recompute=True)`):
  on CUDA the backward recomputes each step on a side stream while the step before it is
  backpropagated (`schedule_for`). The same schedule, serial, on the CPU.
- Compiled branches (`compile_branches`): the F and G branches run under torch.compile.
- Stored layers (`StoredLayers`, mixed into ReversibleStack): the chosen layers run under
  ordinary autograd, keep their activations and skip the recompute.

This module knows no layer class (reversible.py imports it, not the other way round): a layer
names its branches in `BRANCHES`, a stack says which of its layers are `recomputable`.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import cache

import torch
from torch import nn


class SerialSchedule:
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
        """Called with the gradients each backpropagation through a recompute returns."""


@cache
def _side_streams(device: torch.device) -> tuple[torch.cuda.Stream, torch.cuda.Stream]:
    return torch.cuda.Stream(device), torch.cuda.Stream(device)


def _unchanged(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


class OverlappedSchedule(SerialSchedule):
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


def schedule_for(device: torch.device, overlap: bool) -> SerialSchedule:
    """The schedule of one backward through a stack on `device` (a fresh one per forward)."""
    return OverlappedSchedule(device) if overlap else SerialSchedule()


# Compiled branches draw random numbers as eager ops do, not with inductor's own generator: a
# forward and its recompute may run different graphs (without and with gradients, or eager where
# Dynamo stops compiling), and only eager's draws are the same in all of them.
_BRANCH_COMPILE_OPTIONS = {"fallback_random": True}


def compile_branches(model: nn.Module) -> None:
    """Compiles with `torch.compile`, in place (parameter names stay), the branches of the
    reversible layers in `model` (the sub-modules each names in `BRANCHES`: a block's F and G, a
    stage transition's G). Forward and recompute run them compiled, with the same masks and the
    same gradients as eager ones."""
    branches = [
        getattr(layer, name) for layer in model.modules() for name in getattr(layer, "BRANCHES", ())
    ]
    # Dynamo compiles a branch's forward once per width (parameter shapes are static), with and
    # without gradients, for whole token chunks and the last one; past its limit it runs eager.
    limit = 4 * len(branches)
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, limit)
    for branch in branches:
        branch.compile(options=_BRANCH_COMPILE_OPTIONS)


class StoredLayers:
    """The stored-layers lever of a stack of `layers`: the layers in `stored_layers` (indices)
    run under ordinary autograd, so they keep their activations and their backward skips the
    recompute (faster, more memory; a layer deep in the model keeps the least)."""

    layers: Sequence[nn.Module]
    stored_layers: frozenset[int]

    def recomputable(self, index: int) -> bool:
        """Whether the custom backward recomputes layer `index` when it is not stored."""
        raise NotImplementedError

    def storable_layers(self) -> list[int]:
        """The layers the custom backward recomputes when none is stored, deepest first: a deeper
        layer keeps less memory for the recompute it saves (tokens pool faster than the width
        grows), so the first ones are the ones to store."""
        return [i for i in reversed(range(len(self.layers))) if self.recomputable(i)]

    def store_deepest(self, count: int) -> None:
        """Makes the first `count` of storable_layers() the stored layers (and only them)."""
        self.stored_layers = frozenset(self.storable_layers()[:count])
