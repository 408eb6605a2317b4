"""Memory accounting that works on the CPU as well as on CUDA.

`LiveTensorTracker` follows every tensor storage allocated while it is active and reports the
peak of their total size: the CPU counterpart of `torch.cuda.max_memory_allocated`.
`SavedTensorCounter` adds up the distinct storages autograd saves for backward.
`largest_batch` finds the largest batch a step fits in device memory, recovering from each
out-of-memory error on the way; `largest_beside_reserve` the largest setting of another kind.
"""

import gc
import logging
import math
import weakref
from collections.abc import Callable
from functools import partial

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

logger = logging.getLogger(__name__)


def _storage_bytes(tensor: torch.Tensor) -> tuple[object, int]:
    storage = tensor.untyped_storage()
    return storage, storage.nbytes()


class LiveTensorTracker(TorchDispatchMode):
    """Peak bytes of the tensor storages allocated inside `with LiveTensorTracker() as t:`.

    An op's output counts as a new allocation unless it shares storage with one of the op's
    inputs (views and in-place ops). Storages are released from the count when Python frees
    them, so the figure is what an exact caching-free allocator would hold.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live_bytes = 0
        self.peak_bytes = 0
        self._tracked: dict[int, int] = {}

    def _release(self, key: int) -> None:
        self.live_bytes -= self._tracked.pop(key, 0)

    def _allocated(self, keys: list[int], func) -> None:
        """Called once per op with the keys of the storages it allocated (for subclasses)."""

    def _new_peak(self) -> None:
        """Called when the live total reaches a new peak (for subclasses)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            id(t.untyped_storage())
            for t in tree_flatten((args, kwargs))[0]
            if isinstance(t, torch.Tensor)
        }
        new = []
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
                continue
            storage, nbytes = _storage_bytes(tensor)
            key = id(storage)
            if key in inputs or key in self._tracked:
                continue
            self._tracked[key] = nbytes
            weakref.finalize(storage, self._release, key)
            self.live_bytes += nbytes
            new.append(key)
        if new:
            self._allocated(new, func)
            if self.live_bytes > self.peak_bytes:
                self.peak_bytes = self.live_bytes
                self._new_peak()
        return out


class SavedTensorCounter:
    """Bytes of the distinct storages autograd saves for backward inside the context,
    leaving out `exclude` (e.g. the parameters, which exist whatever is saved)."""

    def __init__(self, exclude: list[torch.Tensor] = ()) -> None:
        self._excluded = {id(t.untyped_storage()) for t in exclude}
        self._seen: dict[int, int] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda x: x)

    @property
    def bytes(self) -> int:
        return sum(self._seen.values())

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage, nbytes = _storage_bytes(tensor)
        if id(storage) not in self._excluded:
            self._seen[id(storage)] = nbytes
        return tensor

    def __enter__(self) -> "SavedTensorCounter":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)


def peak_bytes(step: Callable[[], object], device: torch.device) -> int:
    """Peak bytes allocated while `step()` runs (CUDA allocator statistics, or live tensors)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    with LiveTensorTracker() as tracker:
        step()
    return tracker.peak_bytes


# How cuDNN and cuBLAS fail when their workspace does not fit, as a RuntimeError instead of the
# allocator's OutOfMemoryError (near the limit a convolution's output may fit, its workspace not).
_LIBRARY_OUT_OF_MEMORY = (
    "unable to find an engine to execute this computation",
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUBLAS_STATUS_ALLOC_FAILED",
)


def fits_in_memory(
    step: Callable[[], object], on_out_of_memory: Callable[[], None] | None = None
) -> bool:
    """Runs `step()`; False if it ran out of CUDA memory (the allocator's error, or cuDNN's or
    cuBLAS's for their workspaces), after calling `on_out_of_memory()` (to free what the caller
    keeps between steps, e.g. gradients) and handing the failed step's memory back."""
    try:
        step()
    except torch.cuda.OutOfMemoryError:
        pass
    except RuntimeError as error:
        if not any(message in str(error) for message in _LIBRARY_OUT_OF_MEMORY):
            raise
        # The same words can mean an unsupported shape: the log keeps the library's message.
        logger.warning("counted as out of memory: %s", str(error).splitlines()[0])
    else:
        return True
    # After the except block, whose traceback kept the failed step's tensors alive.
    if on_out_of_memory is not None:
        on_out_of_memory()
    gc.collect()
    torch.cuda.empty_cache()
    return False


def largest_batch(
    step: Callable[[int], object],
    *,
    limit: int | None = None,
    tolerance: float = 0.0,
    headroom: float = 0.0,
    on_out_of_memory: Callable[[], None] | None = None,
) -> int:
    """The largest batch size (at most `limit`) for which `step(batch_size)` fits in memory; 0
    when 1 does not. Doubles from 1 until a size fails, then bisects until the sizes that fit and
    fail are within `tolerance` x the one that fits (0: exact). `headroom`: the fraction of the
    result given up, for what the tries did not see (fragmentation over many steps).
    `on_out_of_memory`: see fits_in_memory."""
    fits, fails = 0, None
    while fails is None or fails - fits > max(1, int(tolerance * fits)):
        if fails is None:
            size = max(1, 2 * fits) if limit is None else min(max(1, 2 * fits), limit)
            if size == fits:  # the limit itself fits
                break
        else:
            size = (fits + fails) // 2
        if fits_in_memory(partial(step, size), on_out_of_memory):
            fits = size
        else:
            fails = size
    return max(1, math.floor(fits * (1 - headroom))) if fits else 0


def largest_beside_reserve(
    step: Callable[[int], object],
    device: torch.device,
    *,
    limit: int,
    reserve: float,
    on_out_of_memory: Callable[[], None] | None = None,
) -> int:
    """The largest n <= `limit` for which `step(n)` fits in memory beside a held block of
    `reserve` x the peak of `step(0)`: headroom for a setting whose memory does not grow in
    proportion to it. `step(0)` must fit; 0 when `step(1)` does not."""
    held = torch.empty(
        int(reserve * peak_bytes(partial(step, 0), device)), dtype=torch.uint8, device=device
    )
    found = largest_batch(step, limit=limit, on_out_of_memory=on_out_of_memory)
    del held  # before the caller hands memory back
    return found
