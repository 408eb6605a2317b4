"""The reversible engine on CUDA: exact gradients with dropout and drop path on (the CUDA
generator replayed in the recompute), and mixed-precision training steps."""

import pytest
import torch
import torch.nn.functional as F
from gradient_checks import (
    RANDOMNESS,
    assert_gradients_match,
    parametrize_builds,
    parametrize_precisions,
    relative_error,
    step,
)
from tiny_models import tiny_rev_mvit

pytestmark = pytest.mark.cuda

DEVICE = torch.device("cuda")


@pytest.mark.usefixtures("ieee_float32")
@parametrize_precisions
@parametrize_builds()
def test_custom_backward_matches_autograd_on_cuda_with_randomness_on(build, dtype, tolerance):
    torch.manual_seed(0)
    model = build(**RANDOMNESS).to(DEVICE, dtype).train()
    # 8 clips, not the CPU test's 3: a branch whose drop path drops every clip gets no gradient
    # at all (0.3^3 per branch, and CUDA's float32 draws for seed 123 do that to one).
    clip = torch.randn(8, 3, 4, 32, 32, dtype=dtype, device=DEVICE)
    plain_out, plain_grads, plain_rng = step(model, clip, custom_backward=False)
    custom_out, custom_grads, custom_rng = step(model, clip, custom_backward=True)
    other_seed_out, _, _ = step(model, clip, custom_backward=True, seed=124)

    # Other masks change the output by far more than rounding: the same seed gave the same ones
    # (CUDA kernels may round a forward with and without autograd differently, hence no equal).
    assert relative_error(plain_out, custom_out) <= tolerance
    assert relative_error(plain_out, other_seed_out) > 1e-2
    assert torch.equal(plain_rng, custom_rng), "generators must end where autograd's do"
    assert_gradients_match(plain_grads, custom_grads, tolerance)


def test_bf16_autocast_is_replayed_in_the_recompute_on_cuda():
    torch.manual_seed(0)
    model = tiny_rev_mvit(**RANDOMNESS).to(DEVICE).train()
    clip = torch.randn(2, 3, 4, 32, 32, device=DEVICE)

    def grads(custom_backward: bool, autocast: bool) -> torch.Tensor:
        model.rev_backbone.custom_backward = custom_backward
        model.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=autocast):
            loss = model(clip).float().square().sum()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    plain_bf16 = grads(custom_backward=False, autocast=True)
    custom_bf16 = grads(custom_backward=True, autocast=True)
    plain_fp32 = grads(custom_backward=False, autocast=False)
    # bf16 moves the gradients by about its precision (2^-8); replaying it in the recompute on
    # float32 streams moves them by far less.
    bf16_effect = relative_error(plain_fp32, plain_bf16)
    assert bf16_effect > 1e-3
    assert relative_error(plain_bf16, custom_bf16) < bf16_effect / 10


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16-scaler"])
def test_mixed_precision_training_steps_lower_the_loss(dtype):
    torch.manual_seed(0)
    model = tiny_rev_mvit(num_classes=4).to(DEVICE).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    # fp16 overflows where bf16 does not: its loss is scaled, and steps with inf gradients
    # are skipped while the scale comes down.
    scaler = torch.amp.GradScaler(DEVICE.type, enabled=dtype == torch.float16)
    clip = torch.randn(8, 3, 4, 32, 32, device=DEVICE)
    labels = torch.arange(8, device=DEVICE) % 4
    losses, skipped = [], 0
    for _ in range(12):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(DEVICE.type, dtype=dtype):
            loss = F.cross_entropy(model(clip), labels)
        scaler.scale(loss).backward()
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        skipped += scaler.get_scale() < scale
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert skipped <= 6, f"{skipped} of 12 steps skipped"
    # On the CPU, 10 such steps take the loss from 1.43 to 0.53 (bf16 and fp16 alike).
    assert losses[-1] < 0.75 * losses[0], losses
    assert all(torch.isfinite(p).all() for p in model.parameters())
