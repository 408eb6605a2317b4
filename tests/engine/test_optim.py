"""Parameter groups, the warmup + cosine schedule and learning-rate scaling."""

import itertools
import math

import pytest
import torch
from tiny_models import tiny_mvit, tiny_rev_mvit

from revvideo.config import get_cfg, validate_config
from revvideo.engine.optim import WarmupCosineSchedule, build_optimizer, layer_ids, lr_scale
from revvideo.engine.run import check_config
from revvideo.utils.errors import ConfigError


def _names_by_decay(model, optimizer):
    names = {id(param): name for name, param in model.named_parameters()}
    return {
        group["weight_decay"]: {names[id(param)] for param in group["params"]}
        for group in optimizer.param_groups
    }


@pytest.mark.parametrize("make_model", [tiny_rev_mvit, tiny_mvit])
def test_no_weight_decay_on_1d_parameters_and_position_embeddings(make_model):
    model = make_model()
    cfg = get_cfg()
    cfg.SOLVER.OPTIMIZING_METHOD = "adamw"
    cfg.SOLVER.WEIGHT_DECAY = 0.07
    cfg.SOLVER.ZERO_WD_1D_PARAM = True
    optimizer = build_optimizer(model, cfg)
    assert isinstance(optimizer, torch.optim.AdamW)
    groups = _names_by_decay(model, optimizer)
    parameters = dict(model.named_parameters())
    assert set(groups) == {0.07, 0.0}
    assert groups[0.07] | groups[0.0] == set(parameters)
    for name in groups[0.0]:
        assert parameters[name].ndim == 1 or name.startswith(("pos_embed", "cls_token"))
    assert all(parameters[name].ndim > 1 for name in groups[0.07])
    assert {"pos_embed_spatial", "pos_embed_temporal"} <= groups[0.0]
    if hasattr(model, "cls_token"):
        assert "cls_token" in groups[0.0]


def test_decay_switches_follow_pyslowfast_keys():
    model = tiny_rev_mvit()
    cfg = get_cfg()
    cfg.SOLVER.ZERO_WD_1D_PARAM = False
    cfg.MVIT.ZERO_DECAY_POS_CLS = False
    optimizer = build_optimizer(model, cfg)
    assert isinstance(optimizer, torch.optim.SGD)
    assert [group["weight_decay"] for group in optimizer.param_groups] == [cfg.SOLVER.WEIGHT_DECAY]


# The solver's settings are checked before a run builds an optimizer or a schedule from them.
def test_unknown_optimizer_is_a_config_error():
    cfg = get_cfg()
    cfg.SOLVER.OPTIMIZING_METHOD = "lamb"
    with pytest.raises(ConfigError, match=r"SOLVER\.OPTIMIZING_METHOD must be one of adamw, sgd"):
        check_config(cfg)


def _schedule_cfg(**solver):
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 1.0
    cfg.SOLVER.WARMUP_START_LR = 0.1
    cfg.SOLVER.COSINE_END_LR = 0.01
    cfg.SOLVER.WARMUP_EPOCHS = 2.0
    cfg.SOLVER.MAX_EPOCH = 10
    cfg.SOLVER.COSINE_AFTER_WARMUP = True
    for key, value in solver.items():
        cfg.SOLVER[key] = value
    return cfg


def _schedule(steps_per_epoch=10, **solver):
    optimizer = torch.optim.AdamW(tiny_rev_mvit().parameters())
    return optimizer, WarmupCosineSchedule.from_cfg(
        optimizer, _schedule_cfg(**solver), steps_per_epoch
    )


def test_warmup_then_cosine_per_step():
    optimizer, schedule = _schedule()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    # Linear warmup over 20 steps: half way is half way between start and peak.
    assert schedule.lr_at(10) == pytest.approx(0.55)
    assert schedule.lr_at(20) == pytest.approx(1.0)
    # The cosine spans epochs 2..10 (steps 20..100): its middle is the mean of peak and end.
    assert schedule.lr_at(60) == pytest.approx((1.0 + 0.01) / 2)
    assert schedule.lr_at(100) == pytest.approx(0.01)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        schedule.step()
    assert lrs == pytest.approx([schedule.lr_at(step) for step in range(100)])
    assert all(a < b for a, b in itertools.pairwise(lrs[:21]))
    assert all(a > b for a, b in itertools.pairwise(lrs[20:]))


def test_cosine_over_all_epochs_when_not_after_warmup():
    _, schedule = _schedule(COSINE_AFTER_WARMUP=False)
    peak_at_warmup_end = 0.01 + 0.99 * (1 + math.cos(math.pi * 2 / 10)) / 2
    assert schedule.lr_at(20) == pytest.approx(peak_at_warmup_end)
    assert schedule.lr_at(10) == pytest.approx((0.1 + peak_at_warmup_end) / 2)
    assert schedule.lr_at(100) == pytest.approx(0.01)


def test_schedule_state_is_the_step_count():
    _, schedule = _schedule()
    for _ in range(37):
        schedule.step()
    resumed_optimizer, resumed = _schedule(MAX_EPOCH=20)
    resumed.load_state_dict(schedule.state_dict())
    assert resumed.step_count == 37
    # A longer run resumed from the same step follows its own (longer) cosine.
    assert resumed_optimizer.param_groups[0]["lr"] == pytest.approx(resumed.lr_at(37))
    assert resumed.lr_at(37) > schedule.lr_at(37)


def test_learning_rate_scales_with_the_global_batch():
    cfg = get_cfg()
    assert lr_scale(cfg) == 1.0
    cfg.SOLVER.BASE_LR_BATCH_SIZE = 2048
    cfg.TRAIN.BATCH_SIZE = 64
    cfg.TRAIN.ACCUMULATION_STEPS = 4
    assert lr_scale(cfg) == pytest.approx(256 / 2048)
    cfg.SOLVER.BASE_LR = 1.6e-3
    cfg.SOLVER.WARMUP_START_LR = 1.6e-5
    cfg.SOLVER.COSINE_END_LR = 1.6e-5
    cfg.SOLVER.WARMUP_EPOCHS = 1.0
    cfg.SOLVER.MAX_EPOCH = 2
    cfg.SOLVER.COSINE_AFTER_WARMUP = True
    optimizer = torch.optim.AdamW(tiny_rev_mvit().parameters())
    schedule = WarmupCosineSchedule.from_cfg(optimizer, cfg, steps_per_epoch=4)
    assert schedule.lr_at(0) == pytest.approx(2e-6)
    assert schedule.lr_at(4) == pytest.approx(2e-4)


@pytest.mark.parametrize(
    ("solver", "message"),
    [
        ({"LR_POLICY": "steps_with_relative_lrs"}, r"SOLVER\.LR_POLICY"),
        ({"WARMUP_EPOCHS": 11.0}, r"SOLVER\.WARMUP_EPOCHS"),
        ({"COSINE_END_LR": 2.0}, r"SOLVER\.COSINE_END_LR"),
    ],
)
def test_schedule_config_mistakes(solver, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(_schedule_cfg(**solver))


@pytest.mark.parametrize("make_model", [tiny_rev_mvit, tiny_mvit])
def test_layer_ids_count_blocks_from_the_embedding_to_the_head(make_model):
    # Both tiny models have 5 blocks: ids 1..5, with the embedding below and the head above.
    model = make_model()
    ids = layer_ids(model)
    assert set(ids) == {name for name, _ in model.named_parameters()}
    blocks = "blocks" if make_model is tiny_mvit else "rev_backbone.layers"
    for name in ["patch_embed.proj.weight", "pos_embed_spatial", "pos_embed_temporal"]:
        assert ids[name] == 0
    if make_model is tiny_mvit:
        assert ids["cls_token"] == ids["pos_embed_class"] == 0
    assert {ids[name] for name in ids if name.startswith(f"{blocks}.0.")} == {1}
    assert {ids[name] for name in ids if name.startswith(f"{blocks}.4.")} == {5}
    assert ids["norm.weight"] == ids["head.projection.weight"] == ids["head.projection.bias"] == 6
    assert sorted(set(ids.values())) == list(range(7))


def _finetune_cfg(**solver):
    cfg = get_cfg()
    cfg.SOLVER.OPTIMIZING_METHOD = "adamw"
    cfg.SOLVER.BASE_LR = 1.0
    cfg.SOLVER.WARMUP_START_LR = 0.1
    cfg.SOLVER.COSINE_END_LR = 0.01
    cfg.SOLVER.WARMUP_EPOCHS = 1.0
    cfg.SOLVER.MAX_EPOCH = 4
    cfg.SOLVER.COSINE_AFTER_WARMUP = True
    cfg.SOLVER.WEIGHT_DECAY = 0.05
    cfg.SOLVER.ZERO_WD_1D_PARAM = True
    for key, value in solver.items():
        cfg.SOLVER[key] = value
    return cfg


@pytest.mark.parametrize("make_model", [tiny_rev_mvit, tiny_mvit])
def test_layer_decay_and_head_multiplier_set_each_parameters_rate(make_model):
    model = make_model()
    cfg = _finetune_cfg(LAYER_DECAY=0.75, HEAD_LR_MULT=10.0)
    optimizer = build_optimizer(model, cfg)
    schedule = WarmupCosineSchedule.from_cfg(optimizer, cfg, steps_per_epoch=5)
    for _ in range(3):
        schedule.step()
    ids = layer_ids(model)
    expected = {
        name: schedule.lr * 0.75 ** (6 - ids[name]) * (10 if name.startswith("head.proj") else 1)
        for name in ids
    }
    names = {id(param): name for name, param in model.named_parameters()}
    rates = {
        names[id(param)]: group["lr"]
        for group in optimizer.param_groups
        for param in group["params"]
    }
    assert rates == pytest.approx(expected)
    assert rates["patch_embed.proj.weight"] == pytest.approx(schedule.lr * 0.75**6)
    assert rates["norm.weight"] == pytest.approx(schedule.lr)
    assert rates["head.projection.weight"] == pytest.approx(10 * schedule.lr)
    # Weight decay is unchanged by the split: one group per (rate, decayed) pair, none empty.
    for group in optimizer.param_groups:
        assert group["params"]
        assert group["weight_decay"] in (0.05, 0.0)
        if group["weight_decay"]:
            assert all(param.ndim > 1 for param in group["params"])
    keys = [(group["lr_mult"], group["weight_decay"]) for group in optimizer.param_groups]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("make_model", [tiny_rev_mvit, tiny_mvit])
def test_factors_of_one_give_the_two_pyslowfast_groups(make_model):
    model = make_model()
    optimizer = build_optimizer(model, _finetune_cfg(LAYER_DECAY=1.0, HEAD_LR_MULT=1.0))
    parameters = list(model.named_parameters())
    not_decayed = [p for name, p in parameters if p.ndim <= 1 or name.startswith(("pos_", "cls_"))]
    decayed = [p for _, p in parameters if all(p is not q for q in not_decayed)]
    groups = [(group["params"], group["weight_decay"]) for group in optimizer.param_groups]
    assert groups == [(decayed, 0.05), (not_decayed, 0.0)]
    assert [group["lr_mult"] for group in optimizer.param_groups] == [1.0, 1.0]


def test_frozen_parameters_stay_out_of_the_groups_and_keep_the_layer_ids():
    model = tiny_rev_mvit()
    for name, param in model.named_parameters():
        param.requires_grad_(layer_ids(model)[name] > 0)
    optimizer = build_optimizer(model, _finetune_cfg(LAYER_DECAY=0.5))
    grouped = {id(param) for group in optimizer.param_groups for param in group["params"]}
    assert grouped == {id(param) for param in model.parameters() if param.requires_grad}
    # The first block is still layer 1 of 6 with the embedding frozen.
    assert min(group["lr_mult"] for group in optimizer.param_groups) == pytest.approx(0.5**5)


@pytest.mark.parametrize(
    ("solver", "message"),
    [
        ({"LAYER_DECAY": 0.0}, r"SOLVER\.LAYER_DECAY"),
        ({"LAYER_DECAY": 1.5}, r"SOLVER\.LAYER_DECAY"),
        ({"LAYER_DECAY": math.nan}, r"SOLVER\.LAYER_DECAY"),
        ({"HEAD_LR_MULT": 0.0}, r"SOLVER\.HEAD_LR_MULT"),
        ({"HEAD_LR_MULT": -10.0}, r"SOLVER\.HEAD_LR_MULT"),
        ({"HEAD_LR_MULT": math.inf}, r"SOLVER\.HEAD_LR_MULT"),
    ],
)
def test_finetuning_factor_mistakes(solver, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(_finetune_cfg(**solver))


def test_resumed_run_restores_the_per_group_rates():
    cfg = _finetune_cfg(LAYER_DECAY=0.75, HEAD_LR_MULT=10.0)
    model = tiny_rev_mvit()
    optimizer = build_optimizer(model, cfg)
    schedule = WarmupCosineSchedule.from_cfg(optimizer, cfg, steps_per_epoch=5)
    model(torch.randn(2, 3, 4, 32, 32)).sum().backward()
    optimizer.step()
    for _ in range(7):
        schedule.step()
    rates = [group["lr"] for group in optimizer.param_groups]
    assert len(set(rates)) > 2

    resumed_optimizer = build_optimizer(model, cfg)
    resumed = WarmupCosineSchedule.from_cfg(resumed_optimizer, cfg, steps_per_epoch=5)
    resumed_optimizer.load_state_dict(optimizer.state_dict())
    resumed.load_state_dict(schedule.state_dict())
    assert [group["lr"] for group in resumed_optimizer.param_groups] == pytest.approx(rates)
    resumed.step()
    schedule.step()
    assert [group["lr"] for group in resumed_optimizer.param_groups] == pytest.approx(
        [group["lr"] for group in optimizer.param_groups]
    )
