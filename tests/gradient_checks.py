"""What the exact-gradient tests share (tests/test_reversible.py, tests/test_levers.py,
tests/test_imagenet_models.py and their CUDA counterparts in tests/cuda): dropout and drop path
on, one seeded forward + backward that reports the output, the gradients and where the random
generators end, and relative errors of gradients against a reference."""

import pytest
import torch
from tiny_models import tiny_rev_mvit, tiny_rev_vit

# Adding the same vector to every key leaves softmax attention unchanged, so the true gradient
# of a bias added to all keys (K's projection bias, the bias of the norm after K pooling) is
# exactly zero and both sides hold only rounding noise.
ZERO_GRADIENT_SUFFIXES = ("attn.k.bias", "attn.norm_k.bias")

RANDOMNESS = dict(drop_path_rate=0.3, dropout_rate=0.2, head_dropout_rate=0.0)

# The models every exactness test covers: Rev-MViT (transitions recomputed, or under ordinary
# autograd) and Rev-ViT.
BUILDS = {
    "rev-mvit": tiny_rev_mvit,
    "rev-mvit-cached-transitions": lambda **kw: tiny_rev_mvit(recompute_transitions=False, **kw),
    "rev-vit": tiny_rev_vit,
}
# The largest relative error of any gradient against autograd's, per precision.
PRECISIONS = {"fp64": (torch.float64, 1e-10), "fp32": (torch.float32, 1e-5)}


def parametrize_builds(builds: dict = BUILDS):
    """`@pytest.mark.parametrize("build", ...)` over `builds`, named by their keys."""
    return pytest.mark.parametrize("build", list(builds.values()), ids=list(builds))


parametrize_precisions = pytest.mark.parametrize(
    ("dtype", "tolerance"), list(PRECISIONS.values()), ids=list(PRECISIONS)
)


def rng_state(device: torch.device) -> torch.Tensor:
    """The CPU generator's state, followed by the CUDA generator's of `device` if it is a GPU:
    one tensor, so one `torch.equal` compares all the generators a step draws from."""
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return torch.cat(states)


def step(model, clip, custom_backward: bool, overlap: bool = False, seed: int = 123):
    """Output, gradients and the generators' state (`rng_state`) after one forward + backward
    from `torch.manual_seed(seed)`, which seeds the CUDA generators too."""
    model.rev_backbone.custom_backward = custom_backward
    model.rev_backbone.overlap_recompute = overlap
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    out = model(clip)
    out.square().sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return out.detach(), grads, rng_state(clip.device)


def relative_error(reference: torch.Tensor, other: torch.Tensor) -> float:
    return ((reference - other).norm() / reference.norm()).item()


def relative_errors(reference: dict, other: dict) -> dict:
    """Each gradient's relative error, but for the zero-gradient biases'."""
    return {
        name: relative_error(reference[name], other[name])
        for name in reference
        if not name.endswith(ZERO_GRADIENT_SUFFIXES)
    }


def assert_gradients_match(reference: dict, other: dict, tolerance: float) -> None:
    errors = relative_errors(reference, other)
    # `not error <= tolerance`: a NaN fails too.
    failing = {name: error for name, error in errors.items() if not error <= tolerance}
    assert not failing, failing
    # Every other parameter got a gradient, so the comparison covers the whole network.
    assert not [name for name in errors if not other[name].any()]
