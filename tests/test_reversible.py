"""The reversible engine: exact gradients, replayed randomness and autocast, no stored
activations, plain forward in eval, DistributedDataParallel and torch.export."""

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from gradient_checks import (
    BUILDS,
    PRECISIONS,
    RANDOMNESS,
    assert_gradients_match,
    parametrize_builds,
    parametrize_precisions,
    relative_error,
    step,
)
from tiny_models import tiny_rev_mvit, tiny_rev_vit

from revvideo.config import load_config
from revvideo.models import build_model, levers, reversible
from revvideo.models.common import MultiScaleAttention
from revvideo.models.rev_mvit import RecomputedPoolingAttention
from revvideo.utils.memory import LiveTensorTracker, SavedTensorCounter


@parametrize_precisions
@parametrize_builds(
    BUILDS
    | {
        "rev-mvit-stored-blocks": lambda **kw: tiny_rev_mvit(stored_layers=(2, 4), **kw),
        "rev-mvit-stored-first-block-and-a-transition": lambda **kw: tiny_rev_mvit(
            stored_layers=(0, 3), **kw
        ),
        "rev-vit-stored-block": lambda **kw: tiny_rev_vit(stored_layers=(1,), **kw),
    }
)
def test_custom_backward_matches_autograd_with_randomness_on(build, dtype, tolerance):
    torch.manual_seed(0)
    model = build(**RANDOMNESS).to(dtype).train()
    clip = torch.randn(3, 3, 4, 32, 32, dtype=dtype)
    plain_out, plain_grads, plain_rng = step(model, clip, custom_backward=False)
    custom_out, custom_grads, custom_rng = step(model, clip, custom_backward=True)

    assert torch.equal(plain_out, custom_out), "the same seed must give the same masks"
    assert torch.equal(plain_rng, custom_rng), "the global RNG must end where autograd leaves it"
    assert_gradients_match(plain_grads, custom_grads, tolerance)


def test_randomness_is_really_on_in_the_gradient_test():
    torch.manual_seed(0)
    model = tiny_rev_mvit(**RANDOMNESS).double().train()
    clip = torch.randn(3, 3, 4, 32, 32, dtype=torch.float64)
    out_a, _, _ = step(model, clip, custom_backward=True, seed=1)
    out_b, _, _ = step(model, clip, custom_backward=True, seed=2)
    assert not torch.allclose(out_a, out_b)


def test_same_seed_same_run_and_no_reseeding():
    def run():
        torch.manual_seed(7)
        model = tiny_rev_mvit(**RANDOMNESS).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        clip = torch.randn(2, 3, 4, 32, 32)
        for _ in range(3):
            optimizer.zero_grad()
            model(clip).square().mean().backward()
            optimizer.step()
        return model.state_dict(), torch.rand(4)

    (weights_a, next_a), (weights_b, next_b) = run(), run()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert torch.equal(next_a, next_b)


def test_autocast_is_replayed_in_the_recompute():
    torch.manual_seed(0)
    model = tiny_rev_mvit(**RANDOMNESS).train()
    clip = torch.randn(2, 3, 4, 32, 32)
    recomputed_dtypes = []
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda mod, i, out: recomputed_dtypes.append(out.dtype))

    def grads(custom_backward: bool, autocast: bool):
        model.rev_backbone.custom_backward = custom_backward
        model.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(clip).float().square().sum()
        recomputed_dtypes.clear()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    plain_bf16 = grads(custom_backward=False, autocast=True)
    custom_bf16 = grads(custom_backward=True, autocast=True)
    assert recomputed_dtypes and set(recomputed_dtypes) == {torch.bfloat16}
    plain_fp32 = grads(custom_backward=False, autocast=False)
    bf16_effect = relative_error(plain_fp32, plain_bf16)
    replay_error = relative_error(plain_bf16, custom_bf16)
    # bf16 changes the gradients by about its precision (2^-8); the reversible backward, which
    # replays it on float32 streams, changes them by far less.
    assert bf16_effect > 1e-3
    assert replay_error < bf16_effect / 10


def _saved_bytes(model, clip) -> int:
    with SavedTensorCounter(exclude=list(model.parameters())) as counter:
        model(clip)
    return counter.bytes


def test_saved_activations_do_not_grow_with_depth():
    clip = torch.randn(2, 3, 4, 32, 32)
    shallow = tiny_rev_mvit(depth=5).train()
    deep_arguments = dict(
        depth=12,
        dim_mul=((1, 2.0), (3, 2.0)),
        head_mul=((1, 2.0), (3, 2.0)),
    )
    deep = tiny_rev_mvit(**deep_arguments).train()
    plain_deep = tiny_rev_mvit(custom_backward=False, **deep_arguments).train()
    assert _saved_bytes(deep, clip) == _saved_bytes(shallow, clip)
    assert _saved_bytes(plain_deep, clip) > 5 * _saved_bytes(deep, clip)


def test_stage_transitions_keep_only_their_inputs():
    clip = torch.randn(2, 3, 4, 32, 32)
    recomputed = tiny_rev_mvit().train()
    cached = tiny_rev_mvit(recompute_transitions=False).train()
    assert _saved_bytes(recomputed, clip) < _saved_bytes(cached, clip) / 2


def test_stored_layers_keep_their_activations_and_only_theirs():
    clip = torch.randn(2, 3, 4, 32, 32)
    saved = {
        stored: _saved_bytes(tiny_rev_mvit(stored_layers=stored).train(), clip)
        for stored in [(), (4,), (2, 4), (0, 1, 2, 3, 4)]
    }
    plain = _saved_bytes(tiny_rev_mvit(custom_backward=False).train(), clip)
    # Each stored layer adds what it keeps; storing all of them keeps what autograd keeps.
    assert saved[()] < saved[(4,)] < saved[(2, 4)] < saved[(0, 1, 2, 3, 4)]
    assert saved[(0, 1, 2, 3, 4)] == plain


def test_the_deepest_layers_are_stored_first():
    clip = torch.randn(2, 3, 4, 32, 32)
    model = tiny_rev_mvit().train()  # 5 layers, stage transitions at 1 and 3
    stack = model.rev_backbone
    assert stack.storable_layers() == [4, 3, 2, 1, 0]
    saved = []
    for count in range(6):
        stack.store_deepest(count)
        assert stack.stored_layers == {4, 3, 2, 1, 0} - set(range(5 - count))
        saved.append(_saved_bytes(model, clip))
    assert saved == sorted(set(saved))  # each one more keeps more
    # Transitions that keep their activations anyway are not offered.
    cached = tiny_rev_mvit(recompute_transitions=False).rev_backbone
    assert cached.storable_layers() == [4, 2, 0]


def test_a_block_recovers_x2_into_the_memory_of_y2_it_was_handed(monkeypatch):
    # Rev-ViT: blocks only, so the step's peak is in a block's backward, where X2 = Y2 - G(Y1)
    # either takes Y2's memory or a stream's worth more.
    clip = torch.randn(4, 3, 4, 32, 32)
    torch.manual_seed(0)
    model = tiny_rev_vit(depth=4).train()

    def step_peak() -> tuple[int, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same drop-path masks in both steps
        with LiveTensorTracker() as tracker:
            model(clip).square().sum().backward()
        return tracker.peak_bytes, {n: p.grad.clone() for n, p in model.named_parameters()}

    in_place, in_place_grads = step_peak()
    monkeypatch.setattr(levers.SerialSchedule, "writes_in_place", False)
    copied, copied_grads = step_peak()
    with torch.no_grad():
        tokens, _ = model.embed(clip)  # (B, N, C): one stream
    stream_bytes = tokens.numel() * tokens.element_size()
    assert copied - in_place >= stream_bytes
    assert all(torch.equal(in_place_grads[n], copied_grads[n]) for n in copied_grads)


def test_streams_are_handed_back_only_to_a_block_that_takes_them(monkeypatch):
    # Layers: block, transition, block, transition, block. A transition keeps its inputs, so
    # the blocks after the transitions keep what they recover to themselves (it would stay
    # alive through the transition's backward); each transition hands its inputs to the block
    # before it, which takes them.
    handed = []
    put = reversible._Handoff.put
    monkeypatch.setattr(
        reversible._Handoff,
        "put",
        lambda self, x1, x2: handed.append(x1.shape) or put(self, x1, x2),
    )
    model = tiny_rev_mvit().train()
    model(torch.randn(2, 3, 4, 32, 32)).sum().backward()
    stage_1, stage_2 = (2, 2 * 8 * 8, 16), (2, 2 * 4 * 4, 32)  # (B, N, C) before each transition
    assert handed == [stage_2, stage_1]


def _pooling_memory(model) -> list[str]:
    """How each layer's attention treats its pooled projections in backward."""
    modes = []
    for layer in model.rev_backbone.layers:
        attention = layer.F.attn
        if not isinstance(attention, RecomputedPoolingAttention):
            modes.append("kept")
        else:
            modes.append("recomputed by head" if attention.head_by_head else "recomputed")
    return modes


def _keep_pooling_whole(model) -> None:
    """The model as it was before the layers of its largest streams recomputed head by head:
    blocks keep their pooled projections, transitions recompute all heads at once."""
    for layer in model.rev_backbone.layers:
        attention = layer.F.attn
        if isinstance(layer, reversible.ReversibleBlock):
            attention.__class__ = MultiScaleAttention
        else:
            attention.head_by_head = False


def test_the_layers_of_the_largest_streams_recompute_their_pooling_head_by_head():
    # Layers: block, transition, block, transition, block. The first stage and the transition
    # ending it take the largest streams, so they set the peak; the other transitions recompute
    # all heads at once, the other blocks keep their (smaller) pooled projections.
    assert _pooling_memory(tiny_rev_mvit()) == [
        "recomputed by head",
        "recomputed by head",
        "kept",
        "recomputed",
        "kept",
    ]
    # Without transitions, every block is in the first stage.
    no_transitions = tiny_rev_mvit(
        depth=2, dim_mul=(), head_mul=(), pool_q_stride=(), transition_layers=()
    )
    assert _pooling_memory(no_transitions) == ["recomputed by head"] * 2
    # A first transition that widens without pooling Q makes the next stage's streams larger.
    widening_first = tiny_rev_mvit(pool_q_stride=((3, 1, 2, 2),))
    assert _pooling_memory(widening_first) == [
        "kept",
        "recomputed",
        "recomputed by head",
        "recomputed by head",
        "kept",
    ]


def _set_head_by_head(model, head_by_head: bool) -> None:
    for module in model.modules():
        if isinstance(module, RecomputedPoolingAttention):
            module.head_by_head = head_by_head


def _seeded_step(model, clip, seed: int) -> tuple[int, torch.Tensor, dict[str, torch.Tensor]]:
    """(the step's peak live bytes, the output, the gradients) of one forward and backward."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same dropout and drop-path masks in every step
    with LiveTensorTracker() as tracker:
        out = model(clip)
        out.square().sum().backward()
    return tracker.peak_bytes, out.detach(), {n: p.grad for n, p in model.named_parameters()}


def _assert_same_step(reference, other) -> None:
    (_, reference_out, reference_grads), (_, other_out, other_grads) = reference, other
    torch.testing.assert_close(other_out, reference_out, rtol=1e-12, atol=0)
    assert_gradients_match(reference_grads, other_grads, PRECISIONS["fp64"][1])


def test_recomputing_head_by_head_changes_the_peak_not_the_result():
    # 8x64 clips, so activations, not parameter gradients, decide the peak; the first
    # transition has 2 heads. With seed 2, every layer keeps a sample from drop path, so every
    # gradient is compared.
    clip = torch.randn(2, 3, 8, 64, 64, dtype=torch.float64)
    torch.manual_seed(0)
    model = tiny_rev_mvit(num_frames=8, crop_size=64, **RANDOMNESS).double().train()
    with torch.no_grad():
        tokens, _ = model.embed(clip)  # (B, N, C): one stream of the first stage
    stream_bytes = tokens.numel() * tokens.element_size()

    by_head = _seeded_step(model, clip, seed=2)
    model.rev_backbone.layers[1].F.attn.head_by_head = False
    transition_whole = _seeded_step(model, clip, seed=2)
    _keep_pooling_whole(model)
    whole = _seeded_step(model, clip, seed=2)
    # The first transition's full-resolution projections (two streams wide) and their gradients
    # are one head (a stream) each at a time; the first block does not keep its pooled K and V.
    assert transition_whole[0] - by_head[0] >= stream_bytes
    assert whole[0] - by_head[0] >= 2 * stream_bytes
    _assert_same_step(whole, by_head)
    _assert_same_step(whole, transition_whole)


@pytest.mark.parametrize(
    "options",
    [
        dict(num_heads=2, separate_qkv=True, qkv_bias=True),
        dict(res_path="max"),
        dict(pre_q_fusion="concat"),  # as wide as the transition's output: no residual projection
        dict(pool_mode="avg"),  # pooling without a norm
    ],
    ids=["two-heads-separate-qkv-bias", "max-residual", "concat-fusion", "avg-pooling"],
)
def test_head_by_head_is_the_same_attention_in_every_geometry(options):
    clip = torch.randn(2, 3, 4, 32, 32, dtype=torch.float64)
    torch.manual_seed(0)
    model = tiny_rev_mvit(**RANDOMNESS, **options).double().train()
    if "num_heads" in options:
        assert model.rev_backbone.layers[0].F.attn.num_heads == 2
    by_head = _seeded_step(model, clip, seed=2)
    _set_head_by_head(model, False)
    _assert_same_step(_seeded_step(model, clip, seed=2), by_head)


def _graph_node_names(tensor: torch.Tensor) -> set[str]:
    names, stack, seen = set(), [tensor.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


RECOMPUTING_NODES = {"_ReversibleBlockFunctionBackward", "_TransitionFunctionBackward"}


def test_eval_and_no_grad_use_the_plain_forward():
    model = tiny_rev_mvit()
    clip = torch.randn(2, 3, 4, 32, 32)
    assert _graph_node_names(model.train()(clip)) >= RECOMPUTING_NODES
    assert not RECOMPUTING_NODES & _graph_node_names(model.eval()(clip))
    with torch.no_grad():
        assert model.train()(clip).grad_fn is None


def test_torch_export_for_inference():
    torch.manual_seed(0)
    model = tiny_rev_mvit().eval()
    clip = torch.randn(2, 3, 4, 32, 32)
    exported = torch.export.export(model, (clip,))
    other = torch.randn(2, 3, 4, 32, 32)
    torch.testing.assert_close(exported.module()(other), model(other), rtol=1e-5, atol=1e-5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, clip, target, result_path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(tiny_rev_mvit(head_dropout_rate=0.0).train())
    shard = slice(rank * len(clip) // world_size, (rank + 1) * len(clip) // world_size)
    torch.nn.functional.cross_entropy(model(clip[shard]), target[shard]).backward()
    if rank == 0:
        torch.save({n: p.grad for n, p in model.module.named_parameters()}, result_path)
    # Leave together: gloo aborts a process whose peer has already closed the connection.
    dist.barrier()
    dist.destroy_process_group()


def test_distributed_data_parallel_matches_one_process_on_the_whole_batch(tmp_path):
    torch.manual_seed(1)
    clip, target = torch.randn(4, 3, 4, 32, 32), torch.randint(0, 7, (4,))
    torch.manual_seed(0)
    single = tiny_rev_mvit(head_dropout_rate=0.0).train()
    torch.nn.functional.cross_entropy(single(clip), target).backward()
    expected = {n: p.grad for n, p in single.named_parameters()}

    result_path = tmp_path / "grads.pt"
    mp.start_processes(
        _ddp_worker,
        args=(2, _free_port(), clip, target, result_path),
        nprocs=2,
        start_method="spawn",
    )
    distributed = torch.load(result_path)
    assert_gradients_match(expected, distributed, 1e-6)


def test_config_switches_reach_the_engine():
    config = Path(__file__).resolve().parents[1] / "configs" / "kinetics" / "REV_MVIT_B_16x4.yaml"
    overrides = ["MVIT.REV.CUSTOM_BACKWARD", "False", "MVIT.REV.RECOMPUTE_TRANSITIONS", "False"]
    model = build_model(load_config(config, overrides))
    assert model.rev_backbone.custom_backward is False
    assert model.rev_backbone.recompute_transitions is False
    assert model.rev_backbone.overlap_recompute is False
    overlapped = build_model(load_config(config, ["MVIT.REV.OVERLAP_RECOMPUTE", "True"]))
    assert overlapped.rev_backbone.overlap_recompute is True
    stored = build_model(load_config(config, ["MVIT.REV.STORED_LAYERS", "[4, 15]"]))
    assert stored.rev_backbone.stored_layers == {4, 15}
