"""A device memory budget on the CPU: the live tensor storages allocated inside
`with SimulatedMemoryBudget(capacity):` may not pass `capacity` bytes, or the op that passes it
raises the CUDA allocator's out-of-memory error, so GPU memory searches run without a GPU."""

import torch

from revvideo.utils.memory import LiveTensorTracker


class SimulatedMemoryBudget(LiveTensorTracker):
    def __init__(self, capacity: float) -> None:
        super().__init__()
        self.capacity = capacity

    def _allocated(self, keys: list[int], func) -> None:
        if self.live_bytes > self.capacity:
            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory (simulated: {self.live_bytes} bytes live, budget "
                f"{self.capacity:.0f})"
            )
