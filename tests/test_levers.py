"""The reversible engine's throughput levers on the CPU: the overlapped recompute schedule
(which runs serially here, through the same code as on CUDA), compiled F and G branches
(MODEL.COMPILE, applied by the trainer), and no host synchronisation in a training step. Each
keeps the custom backward exact."""

import pytest
import torch
from engine.helpers import tiny_cfg
from gradient_checks import (
    RANDOMNESS,
    assert_gradients_match,
    parametrize_builds,
    parametrize_precisions,
    relative_error,
    step,
)
from tiny_models import tiny_rev_mvit, tiny_rev_vit
from torch.utils._python_dispatch import TorchDispatchMode

from revvideo.data.synthetic import generate_synthetic_dataset
from revvideo.engine.train import Trainer
from revvideo.models import build_model
from revvideo.models.levers import compile_branches
from revvideo.models.reversible import StageTransition
from revvideo.utils.memory import LiveTensorTracker


@parametrize_precisions
@parametrize_builds()
def test_overlapped_schedule_matches_autograd_with_randomness_on(build, dtype, tolerance):
    torch.manual_seed(0)
    model = build(**RANDOMNESS).to(dtype).train()
    clip = torch.randn(3, 3, 4, 32, 32, dtype=dtype)
    plain_out, plain_grads, plain_rng = step(model, clip, custom_backward=False)
    _, serial_grads, _ = step(model, clip, custom_backward=True)
    overlap_out, overlap_grads, overlap_rng = step(model, clip, True, overlap=True)

    assert torch.equal(plain_out, overlap_out), "the same seed must give the same masks"
    assert torch.equal(plain_rng, overlap_rng), "the global RNG must end where autograd leaves it"
    assert_gradients_match(plain_grads, overlap_grads, tolerance)
    # Without streams the overlapped schedule runs the serial one's operations, in its order.
    assert all(torch.equal(serial_grads[name], overlap_grads[name]) for name in serial_grads)


def test_overlapped_schedule_replays_autocast():
    torch.manual_seed(0)
    model = tiny_rev_mvit(**RANDOMNESS).train()
    clip = torch.randn(2, 3, 4, 32, 32)

    def grads(overlap: bool) -> torch.Tensor:
        model.rev_backbone.overlap_recompute = overlap
        model.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(clip).float().square().sum()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    assert torch.equal(grads(overlap=False), grads(overlap=True))


@pytest.mark.parametrize("build", [tiny_rev_mvit, tiny_rev_vit], ids=["rev-mvit", "rev-vit"])
def test_overlapped_schedule_holds_no_more_memory_without_streams(build):
    # On CUDA it holds one more step's activations (the next step's recompute runs while this
    # one is backpropagated: tests/cuda/test_levers_cuda.py); its bookkeeping adds nothing.
    torch.manual_seed(0)
    model = build(**RANDOMNESS).train()
    clip = torch.randn(3, 3, 4, 32, 32)

    def backward_peak(overlap: bool) -> int:
        model.rev_backbone.overlap_recompute = overlap
        model.zero_grad(set_to_none=True)
        loss = model(clip).square().sum()
        with LiveTensorTracker() as tracker:
            loss.backward()
        return tracker.peak_bytes

    assert backward_peak(overlap=True) == backward_peak(overlap=False)


# Operations whose result the host must read (a scalar, or a size that depends on the data):
# on a GPU each waits for the device to finish everything queued before it.
HOST_SYNCHRONISING_OPS = {
    "aten::_local_scalar_dense",  # .item(), bool(), int(), float() of a tensor
    "aten::is_nonzero",
    "aten::nonzero",
    "aten::equal",
    "aten::masked_select",
    "aten::repeat_interleave.Tensor",
    "aten::_unique2",
}


class _OpRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.name())
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("overlap", [False, True], ids=["serial", "overlapped"])
@pytest.mark.parametrize("build", [tiny_rev_mvit, tiny_rev_vit], ids=["rev-mvit", "rev-vit"])
def test_a_training_step_reads_nothing_back_from_the_device(build, overlap):
    torch.manual_seed(0)
    model = build(**RANDOMNESS).train()
    model.rev_backbone.overlap_recompute = overlap
    clip = torch.randn(2, 3, 4, 32, 32)
    with _OpRecorder() as recorder:
        model(clip).square().sum().backward()
    assert "aten::native_layer_norm_backward" in recorder.names, "the backward was not seen"
    assert not recorder.names & HOST_SYNCHRONISING_OPS


@pytest.mark.slow
@pytest.mark.parametrize(
    ("build", "dtype", "tolerance"),
    [
        (lambda **kw: tiny_rev_vit(depth=2, **kw), torch.float64, 1e-10),
        (tiny_rev_mvit, torch.float32, 1e-5),
    ],
    ids=["rev-vit-fp64", "rev-mvit-fp32"],
)
def test_compiled_branches_keep_the_masks_and_the_gradients(build, dtype, tolerance):
    torch.manual_seed(0)
    model = build(**RANDOMNESS).to(dtype).train()
    clip = torch.randn(3, 3, 4, 32, 32, dtype=dtype)
    names = list(model.state_dict())
    eager_out, _, eager_rng = step(model, clip, custom_backward=False)
    compile_branches(model)
    graphs_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    plain_out, plain_grads, plain_rng = step(model, clip, custom_backward=False)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > graphs_before
    custom_out, custom_grads, custom_rng = step(model, clip, custom_backward=True)
    other_seed_out, _, _ = step(model, clip, custom_backward=True, seed=124)

    # Compiled branches draw eager's random numbers, so the forward and its recompute draw the
    # same masks even when they run different graphs; other masks change the output by far more
    # than compiled kernels' rounding does.
    assert relative_error(eager_out, plain_out) <= tolerance
    assert relative_error(plain_out, custom_out) <= tolerance
    assert relative_error(plain_out, other_seed_out) > 1e-2
    assert torch.equal(eager_rng, plain_rng) and torch.equal(plain_rng, custom_rng)
    assert_gradients_match(plain_grads, custom_grads, tolerance)
    assert list(model.state_dict()) == names, "compiling must keep the parameters' names"


@pytest.mark.parametrize("compile_model", [False, True], ids=["eager", "compiled"])
def test_model_compile_compiles_the_branches_of_the_trained_model(tmp_path, compile_model):
    data, output_dir = tmp_path / "data", tmp_path / "out"
    classes = ("up", "down", "still")  # the tiny config's 3 classes
    generate_synthetic_dataset(
        str(data), seed=0, classes=classes, videos_per_class={"train": 1, "val": 1, "test": 1}
    )
    output_dir.mkdir()
    cfg = tiny_cfg(data, output_dir, MODEL__COMPILE=compile_model)
    layers = Trainer(cfg, torch.device("cpu"), build_model(cfg)).model.rev_backbone.layers
    branches = [layer.G for layer in layers]
    branches += [layer.F for layer in layers if not isinstance(layer, StageTransition)]
    # nn.Module.compile wraps the module's call in place (nothing is compiled before a call).
    compiled = [branch._compiled_call_impl is not None for branch in branches]
    assert compiled == [compile_model] * len(branches)
