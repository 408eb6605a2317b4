"""The reversible engine's throughput levers on CUDA: the overlapped recompute (PaReprop) keeps
the gradients exact, runs the recomputes on side streams, replays bf16 autocast and holds at
most one more layer's activations; no training step waits for the device; compiled branches
keep the masks and the gradients."""

import itertools

import pytest
import torch
from gradient_checks import (
    RANDOMNESS,
    assert_gradients_match,
    parametrize_builds,
    parametrize_precisions,
    relative_error,
    step,
)
from tiny_models import tiny_rev_mvit, tiny_rev_vit

from revvideo.models.levers import compile_branches
from revvideo.models.reversible import ReversibleBlock
from revvideo.utils.memory import SavedTensorCounter

pytestmark = pytest.mark.cuda

DEVICE = torch.device("cuda")


@pytest.mark.usefixtures("ieee_float32")
@parametrize_precisions
@parametrize_builds()
def test_overlapped_backward_matches_autograd_on_cuda(build, dtype, tolerance):
    torch.manual_seed(0)
    model = build(**RANDOMNESS).to(DEVICE, dtype).train()
    # 8 clips, as in test_cuda_reversible.py: with 3, some branch's drop path drops every clip.
    clip = torch.randn(8, 3, 4, 32, 32, dtype=dtype, device=DEVICE)
    plain_out, plain_grads, plain_rng = step(model, clip, custom_backward=False)
    _, serial_grads, _ = step(model, clip, custom_backward=True)
    overlap_out, overlap_grads, overlap_rng = step(model, clip, True, overlap=True)
    other_seed_out, _, _ = step(model, clip, True, overlap=True, seed=124)

    assert relative_error(plain_out, overlap_out) <= tolerance
    assert relative_error(plain_out, other_seed_out) > 1e-2
    assert torch.equal(plain_rng, overlap_rng), "generators must end where autograd's do"
    assert_gradients_match(plain_grads, overlap_grads, tolerance)
    assert_gradients_match(serial_grads, overlap_grads, tolerance)


def _recompute_streams(model, clip, overlap: bool) -> list[torch.cuda.Stream]:
    """The stream current in each recompute of a block's F or G (one per G token chunk), in
    order: F and G run with gradients only there."""
    streams = []

    def record(module, inputs, output):
        if torch.is_grad_enabled():
            streams.append(torch.cuda.current_stream(DEVICE))

    hooks = [
        branch.register_forward_hook(record)
        for layer in model.rev_backbone.layers
        if isinstance(layer, ReversibleBlock)
        for branch in (layer.F, layer.G)
    ]
    step(model, clip, custom_backward=True, overlap=overlap)
    for hook in hooks:
        hook.remove()
    return streams


def test_recomputes_alternate_between_two_side_streams():
    torch.manual_seed(0)
    # Token chunks of 20 of the 32 tokens: G is recomputed in two steps.
    model = tiny_rev_vit(**RANDOMNESS).to(DEVICE).train()
    clip = torch.randn(8, 3, 4, 32, 32, device=DEVICE)
    current = torch.cuda.current_stream(DEVICE)
    assert set(_recompute_streams(model, clip, overlap=False)) == {current}
    overlapped = _recompute_streams(model, clip, overlap=True)
    assert len(overlapped) == 3 * len(model.rev_backbone.layers)
    assert current not in overlapped and len(set(overlapped)) == 2
    # Each step is recomputed on the other stream than the step before, which autograd
    # backpropagates meanwhile on the stream that recorded it.
    assert all(a != b for a, b in itertools.pairwise(overlapped))


def test_bf16_autocast_is_replayed_in_the_overlapped_recompute():
    torch.manual_seed(0)
    model = tiny_rev_mvit(**RANDOMNESS).to(DEVICE).train()
    clip = torch.randn(8, 3, 4, 32, 32, device=DEVICE)

    def grads(custom_backward: bool, overlap: bool, autocast: bool) -> torch.Tensor:
        model.rev_backbone.custom_backward = custom_backward
        model.rev_backbone.overlap_recompute = overlap
        model.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=autocast):
            loss = model(clip).float().square().sum()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    plain_bf16 = grads(custom_backward=False, overlap=False, autocast=True)
    overlap_bf16 = grads(custom_backward=True, overlap=True, autocast=True)
    plain_fp32 = grads(custom_backward=False, overlap=False, autocast=False)
    assert torch.isfinite(overlap_bf16).all()
    bf16_effect = relative_error(plain_fp32, plain_bf16)
    assert bf16_effect > 1e-3
    assert relative_error(plain_bf16, overlap_bf16) < bf16_effect / 10


def test_overlap_holds_at_most_one_more_layer_of_activations():
    # Large enough that a layer's activations (about 190 MiB here) dwarf the allocator's
    # rounding and the side streams' cuBLAS workspaces.
    size = dict(num_frames=8, crop_size=128, embed_dim=96, num_heads=2, chunk_tokens=4096)
    clip = torch.randn(32, 3, 8, 128, 128, device=DEVICE)

    def saved_bytes(depth: int) -> int:
        model = tiny_rev_vit(depth=depth, custom_backward=False, **size).to(DEVICE).train()
        with SavedTensorCounter(exclude=list(model.parameters())) as counter:
            model(clip)
        return counter.bytes

    one_layer = (saved_bytes(4) - saved_bytes(2)) // 2
    torch.manual_seed(0)
    model = tiny_rev_vit(depth=4, **size).to(DEVICE).train()

    def peaks(overlap: bool) -> tuple[int, int]:
        model.rev_backbone.overlap_recompute = overlap
        model(clip).square().sum().backward()  # warm-up: streams, workspaces
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize(DEVICE)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(DEVICE)
        model(clip).square().sum().backward()
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize(DEVICE)
        return torch.cuda.max_memory_allocated(DEVICE), torch.cuda.max_memory_reserved(DEVICE)

    peaks(overlap=True)  # the side streams' cuBLAS workspaces then count in both
    serial_allocated, serial_reserved = peaks(overlap=False)
    overlap_allocated, overlap_reserved = peaks(overlap=True)
    assert overlap_allocated - serial_allocated <= one_layer
    assert overlap_reserved - serial_reserved <= one_layer, (
        f"{(overlap_reserved - serial_reserved) / 2**20:.0f} MiB more reserved, "
        f"one layer: {one_layer / 2**20:.0f} MiB"
    )


@pytest.mark.parametrize("overlap", [False, True], ids=["serial", "overlapped"])
@pytest.mark.parametrize("build", [tiny_rev_mvit, tiny_rev_vit], ids=["rev-mvit", "rev-vit"])
def test_a_training_step_never_waits_for_the_device(build, overlap):
    torch.manual_seed(0)
    model = build(**RANDOMNESS).to(DEVICE).train()
    model.rev_backbone.overlap_recompute = overlap
    clip = torch.randn(8, 3, 4, 32, 32, device=DEVICE)
    model(clip).square().sum().backward()  # warm-up: lazy initialisation may synchronise
    torch.cuda.set_sync_debug_mode("error")
    try:
        model(clip).square().sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.slow
@pytest.mark.usefixtures("ieee_float32")
def test_compiled_branches_keep_the_masks_and_the_gradients_on_cuda():
    torch.manual_seed(0)
    model = tiny_rev_mvit(**RANDOMNESS).to(DEVICE).train()
    clip = torch.randn(8, 3, 4, 32, 32, device=DEVICE)
    eager_out, _, eager_rng = step(model, clip, custom_backward=False)
    compile_branches(model)
    plain_out, plain_grads, plain_rng = step(model, clip, custom_backward=False)
    custom_out, custom_grads, custom_rng = step(model, clip, custom_backward=True)
    other_seed_out, _, _ = step(model, clip, custom_backward=True, seed=124)

    assert relative_error(eager_out, plain_out) <= 1e-5, "compiled branches drew other masks"
    assert relative_error(plain_out, custom_out) <= 1e-5
    assert relative_error(plain_out, other_seed_out) > 1e-2
    assert torch.equal(eager_rng, plain_rng)
    assert torch.equal(plain_rng, custom_rng)
    assert_gradients_match(plain_grads, custom_grads, 1e-5)
