"""The searches of revvideo.utils.memory, with steps that run out of memory above a capacity
(the CUDA allocator's error, raised on the CPU), so they run without a GPU."""

import weakref

import pytest
import torch
from simulated_memory import SimulatedMemoryBudget
from tiny_models import tiny_rev_mvit

from revvideo.utils.memory import fits_in_memory, largest_batch, largest_beside_reserve


class FakeStep:
    """A training step that holds `batch_size` 1 KiB buffers and fails above `capacity`."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.tried: list[int] = []
        self.recoveries = 0
        self.held: list[weakref.ref] = []

    def __call__(self, batch_size: int) -> None:
        self.tried.append(batch_size)
        activations = torch.empty(batch_size, 256)
        self.held.append(weakref.ref(activations))
        if batch_size > self.capacity:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def recover(self) -> None:
        self.recoveries += 1


@pytest.mark.parametrize("capacity", [1, 2, 3, 7, 64, 100, 1000])
def test_the_exact_search_finds_the_capacity(capacity):
    step = FakeStep(capacity)
    assert largest_batch(step, on_out_of_memory=step.recover) == capacity
    failures = [size for size in step.tried if size > capacity]
    assert step.recoveries == len(failures) > 0
    # Doubling, then bisection: about two tries per power of two.
    assert len(step.tried) <= 2 * capacity.bit_length() + 1


def test_nothing_fits():
    step = FakeStep(0)
    assert largest_batch(step) == 0
    assert step.tried == [1]


def test_tolerance_stops_the_bisection_early_and_never_overshoots():
    exact, coarse = FakeStep(100), FakeStep(100)
    assert largest_batch(exact) == 100
    found = largest_batch(coarse, tolerance=1 / 8)
    assert 100 * (1 - 1 / 8) <= found <= 100
    assert len(coarse.tried) < len(exact.tried)


def test_limit_caps_the_search():
    step = FakeStep(1000)
    assert largest_batch(step, limit=48) == 48
    assert max(step.tried) == 48
    assert largest_batch(FakeStep(20), limit=48) == 20


def test_headroom_gives_up_a_fraction_but_keeps_one():
    assert largest_batch(FakeStep(64), headroom=0.25) == 48
    assert largest_batch(FakeStep(1), headroom=0.5) == 1


def test_a_failed_step_is_released_before_the_recovery_runs():
    step = FakeStep(0)
    alive_at_recovery = []
    assert not fits_in_memory(
        lambda: step(4), lambda: alive_at_recovery.append(step.held[-1]() is not None)
    )
    # The traceback that kept the failed step's frame (and its tensor) is gone by then.
    assert alive_at_recovery == [False]


def test_other_errors_are_not_taken_for_running_out_of_memory():
    def broken():
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        fits_in_memory(broken)


@pytest.mark.parametrize(
    "message",
    [
        "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
        "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
        "GET was unable to find an engine to execute this computation",
    ],
)
def test_a_library_that_cannot_allocate_its_workspace_ran_out_of_memory(message):
    def needs_a_workspace():
        raise RuntimeError(message)

    released = []
    assert not fits_in_memory(needs_a_workspace, lambda: released.append(True))
    assert released == [True]


KIB = 1024


def _holds(count: int) -> None:
    """A step whose peak is 100 KiB plus 10 KiB per unit of `count`."""
    torch.empty((100 + 10 * count) * KIB, dtype=torch.uint8)


@pytest.mark.parametrize(
    ("capacity_kib", "reserve", "limit", "found"),
    [
        (300, 0.0, 40, 20),  # 100 + 10 x 20 KiB
        (300, 0.5, 40, 15),  # 50 KiB held: 50 + 100 + 10 x 15
        (300, 0.5, 12, 12),  # the limit fits
        (155, 0.5, 40, 0),  # not even one unit beside the reserve
    ],
)
def test_the_reserve_search_finds_what_fits_beside_a_share_of_the_first_steps_peak(
    capacity_kib, reserve, limit, found
):
    with SimulatedMemoryBudget(capacity_kib * KIB) as budget:
        assert (
            largest_beside_reserve(_holds, torch.device("cpu"), limit=limit, reserve=reserve)
            == found
        )
    assert budget.live_bytes == 0  # the reserve is handed back


def _fails_once_in_the_backward(model) -> None:
    """Makes the next backward of `model` run out of memory where a real one does: in the
    recompute of a stage transition, which projects and pools at full resolution (the custom
    backward's largest allocations). Gradients are on in that recompute only."""
    armed = [True]

    def runs_out_of_memory(module, args):
        if armed and torch.is_grad_enabled():
            armed.pop()
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    model.rev_backbone.layers[1].F.attn.pool_k.register_forward_pre_hook(runs_out_of_memory)


# The overlapped schedule (MVIT.REV.OVERLAP_RECOMPUTE) carries state from one layer's backward to
# the next: a backward it stopped halfway must leave no trace either.
OVERLAP = pytest.mark.parametrize("overlap", [False, True], ids=["serial", "overlapped"])


@OVERLAP
def test_a_rev_mvit_step_after_one_that_ran_out_of_memory_in_the_backward_is_exact(overlap):
    torch.manual_seed(0)
    model = tiny_rev_mvit(drop_path_rate=0.0, head_dropout_rate=0.0).train()
    model.rev_backbone.overlap_recompute = overlap
    clip = torch.randn(2, 3, 4, 32, 32)

    def gradients() -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        model(clip).square().sum().backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    expected = gradients()
    _fails_once_in_the_backward(model)
    assert not fits_in_memory(gradients, lambda: model.zero_grad(set_to_none=True))
    after = gradients()
    assert all(torch.equal(after[name], expected[name]) for name in expected)


@OVERLAP
def test_a_rev_mvit_step_that_ran_out_of_memory_in_the_backward_leaves_nothing_behind(overlap):
    # Otherwise each failed try of a batch search keeps its activations and every later try
    # fails too: on an H200 every Rev-MViT-B step after the first such error ran out of memory.
    torch.manual_seed(0)
    model = tiny_rev_mvit(drop_path_rate=0.0, head_dropout_rate=0.0).train()
    model.rev_backbone.overlap_recompute = overlap
    clips = []

    def step() -> None:
        clip = torch.randn(2, 3, 4, 32, 32)
        clips.append(weakref.ref(clip))
        model(clip).square().sum().backward()

    _fails_once_in_the_backward(model)
    assert not fits_in_memory(step, lambda: model.zero_grad(set_to_none=True))
    assert clips[0]() is None, "the failed step's graph (which keeps its clip) is still alive"
