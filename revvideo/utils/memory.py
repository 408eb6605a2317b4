"""Memory accounting that works on the CPU as well as on CUDA.

`LiveTensorTracker` follows every tensor storage allocated while it is active and reports the
peak of their total size: the CPU counterpart of `torch.cuda.max_memory_allocated`.
`SavedTensorCounter` adds up the distinct storages autograd saves for backward.
"""

import weakref
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


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

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            id(t.untyped_storage())
            for t in tree_flatten((args, kwargs))[0]
            if isinstance(t, torch.Tensor)
        }
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
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
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
