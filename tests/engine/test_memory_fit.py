"""TRAIN.BATCH_SIZE auto: the plan that makes up the recipe's batch from what fits;
MVIT.REV.STORED_LAYERS auto: the deepest layers that fit beside the batch, searched on the CPU
under a simulated memory budget (tests/cuda/test_cuda_memory_fit.py searches a GPU)."""

import itertools
import logging
import math

import pytest
import torch
from simulated_memory import SimulatedMemoryBudget

from revvideo.config import ConfigError
from revvideo.engine import memory_fit, run
from revvideo.engine.memory_fit import _most_stored_layers, plan_batches, resolve_auto_stored_layers
from revvideo.utils.errors import UserError
from revvideo.utils.memory import fits_in_memory

from .helpers import tiny_cfg

# More training videos than any of these steps holds.
LARGE_TRAINING_SET = 10**6


@pytest.mark.parametrize(
    ("global_batch", "world_size", "fits", "plan"),
    [
        (64, 1, 64, (64, 1)),  # everything fits: no accumulation
        (64, 1, 100, (64, 1)),  # never more than the recipe's batch
        (64, 1, 20, (16, 4)),  # 4 steps of 16, not 20 + 20 + 20 + 4
        (64, 2, 20, (16, 2)),  # 32 per process: 2 steps of 16 each
        (2048, 8, 23, (22, 12)),  # 256 per process: 12 steps of 22 (264 >= 256)
        (10, 4, 1, (1, 3)),  # 3 per process (12 >= 10), one at a time
    ],
)
def test_the_fewest_accumulation_steps_reach_the_global_batch(global_batch, world_size, fits, plan):
    per_process, accumulation = plan_batches(global_batch, world_size, fits, LARGE_TRAINING_SET)
    assert (per_process, accumulation) == plan
    assert per_process <= fits
    effective = per_process * world_size * accumulation
    # The recipe's batch, or the least above it that the processes can share evenly.
    assert global_batch <= effective < global_batch + world_size * accumulation


@pytest.mark.parametrize(
    ("global_batch", "world_size", "fits", "training_videos", "plan"),
    [
        (64, 1, 64, 40, (40, 1)),  # the whole training set in one step
        (64, 1, 8, 50, (7, 7)),  # 7 x 8 = 56 > 50 would leave 6 full batches: 7 x 7
        (64, 1, 10, 66, (9, 7)),  # 7 x 10 = 70 > 66: 7 x 9 = 63, just under the recipe's
        (64, 2, 8, 50, (6, 4)),  # 25 per process: 4 x 6, not 4 x 7 = 28
    ],
)
def test_a_training_set_smaller_than_the_step_bounds_it(
    global_batch, world_size, fits, training_videos, plan
):
    assert plan_batches(global_batch, world_size, fits, training_videos) == plan


def test_every_plan_fits_the_gpu_and_an_epoch_holds_an_optimizer_step():
    for global_batch, world_size, fits, training_videos in itertools.product(
        (1, 7, 64, 100), (1, 2, 3, 8), (1, 2, 5, 8, 64), (1, 9, 50, 66, 500)
    ):
        per_process, accumulation = plan_batches(global_batch, world_size, fits, training_videos)
        share = math.ceil(training_videos / world_size)  # each process's sampler, per epoch
        wanted = min(math.ceil(global_batch / world_size), share)
        assert 1 <= per_process <= fits
        assert accumulation == math.ceil(wanted / fits)  # no more steps than the GPU needs
        assert share // per_process >= accumulation  # the loader's full batches per epoch
        # Within an accumulation step's rounding of what is wanted.
        assert wanted - accumulation < per_process * accumulation < wanted + accumulation


def test_auto_with_a_training_set_smaller_than_the_global_batch_trains(
    tiny_dataset, tmp_path, monkeypatch, cpu_searches, caplog
):
    # 5 videos fit a step; the recipe's 64 would be 13 steps of 5, and the 12 training videos
    # hold 2 such batches an epoch: the plan is the whole set instead, 3 steps of 4.
    searched_limits = []

    def five_fit(cfg, device, limit):
        searched_limits.append(limit)
        return 5

    monkeypatch.setattr(memory_fit, "_largest_fitting_batch", five_fit)
    cfg = tiny_cfg(
        tiny_dataset, tmp_path / "out", SOLVER__MAX_EPOCH=1, TEST__ENABLE=False,
        TRAIN__BATCH_SIZE="auto", TRAIN__GLOBAL_BATCH_SIZE=64,
    )  # fmt: skip
    with caplog.at_level(logging.INFO):
        assert run(cfg) == 0
    assert searched_limits == [12]  # no try of more videos than a step can train
    assert (cfg.TRAIN.BATCH_SIZE, cfg.TRAIN.ACCUMULATION_STEPS) == (4, 3)
    assert "= 12 videos per optimizer step (target 64, training set 12)" in caplog.text
    assert "1 steps of 12 videos per epoch" in caplog.text


def test_a_batch_larger_than_the_training_set_is_logged_as_what_it_holds(
    tiny_dataset, tmp_path, caplog
):
    cfg = tiny_cfg(
        tiny_dataset, tmp_path / "out", SOLVER__MAX_EPOCH=1, TEST__ENABLE=False,
        TRAIN__BATCH_SIZE=1000,
    )  # fmt: skip
    with caplog.at_level(logging.INFO):
        assert run(cfg) == 0
    # 12 training videos: one step holds them all, not "1000 videos".
    assert "1 steps of 12 videos per epoch" in caplog.text


CPU = torch.device("cpu")


def _peaks_by_stored_count(cfg, monkeypatch, videos: int) -> tuple[int, dict[int, int]]:
    """(the count an unlimited search stores; the live bytes at the peak of its last training
    step with each number of stored layers, everything the search holds included)."""
    peaks: dict[int, int] = {}
    training_step = memory_fit._training_step

    def recording_step(cfg, device, model, *rest):
        budget.peak_bytes = budget.live_bytes
        training_step(cfg, device, model, *rest)
        peaks[len(model.rev_backbone.stored_layers)] = budget.peak_bytes

    with monkeypatch.context() as patch, SimulatedMemoryBudget(math.inf) as budget:
        patch.setattr(memory_fit, "_training_step", recording_step)
        count, _ = _most_stored_layers(cfg, CPU, videos)
    return count, peaks


@pytest.fixture
def cpu_searches(monkeypatch):
    """The searches of the GPU run on the CPU (under a SimulatedMemoryBudget)."""
    monkeypatch.setattr(memory_fit, "_require_cuda", lambda *_: None)


def test_stored_layers_auto_stores_the_deepest_layers_that_fit_beside_the_batch(
    tiny_dataset, tmp_path, monkeypatch, cpu_searches, caplog
):
    cfg = tiny_cfg(tiny_dataset, tmp_path, MVIT__REV__STORED_LAYERS="auto", TRAIN__BATCH_SIZE=8)
    # Without a limit every layer of the tiny model (transitions at 1 and 3) is stored.
    count, peaks = _peaks_by_stored_count(cfg, monkeypatch, videos=8)
    assert count == 4
    assert peaks[4] > 1.2 * peaks[0]  # storing costs memory the test can share out
    # A budget halfway between storing none (with the search's reserve) and storing all.
    torch.manual_seed(0)
    with SimulatedMemoryBudget((peaks[0] + peaks[4]) / 2), caplog.at_level(logging.INFO):
        resolve_auto_stored_layers(cfg, CPU, world_size=1)
    stored = cfg.MVIT.REV.STORED_LAYERS
    assert 0 < len(stored) < 4
    assert stored == [3, 2, 1, 0][len(stored) - 1 :: -1]  # the deepest ones
    assert f"{len(stored)} of the 4 recomputed layers keep their activations" in caplog.text


def test_a_batch_that_does_not_fit_even_without_stored_layers_is_one_error(
    tiny_dataset, tmp_path, monkeypatch, cpu_searches
):
    cfg = tiny_cfg(tiny_dataset, tmp_path, MVIT__REV__STORED_LAYERS="auto", TRAIN__BATCH_SIZE=8)
    _, peaks = _peaks_by_stored_count(cfg, monkeypatch, videos=8)
    with (
        SimulatedMemoryBudget(peaks[0] * 0.9),
        pytest.raises(UserError, match=r"TRAIN\.BATCH_SIZE 8 \(8 videos per GPU\) does not fit"),
    ):
        resolve_auto_stored_layers(cfg, CPU, world_size=1)
    assert cfg.MVIT.REV.STORED_LAYERS == "auto"


def test_stored_layers_auto_on_the_cpu_is_a_config_error(tiny_dataset, tmp_path):
    cfg = tiny_cfg(tiny_dataset, tmp_path, MVIT__REV__STORED_LAYERS="auto")
    with pytest.raises(ConfigError, match=r"MVIT\.REV\.STORED_LAYERS auto searches a CUDA GPU"):
        resolve_auto_stored_layers(cfg, CPU, world_size=1)


def test_a_list_of_stored_layers_is_kept(tiny_dataset, tmp_path):
    cfg = tiny_cfg(tiny_dataset, tmp_path, MVIT__REV__STORED_LAYERS=[3])
    resolve_auto_stored_layers(cfg, CPU, world_size=1)
    assert cfg.MVIT.REV.STORED_LAYERS == [3]


@pytest.mark.parametrize(("fewest", "stored"), [(1, [3]), (0, [])])
def test_every_process_stores_the_layers_the_most_constrained_one_holds(
    tiny_dataset, tmp_path, monkeypatch, cpu_searches, fewest, stored
):
    # Another process, with less memory free, holds `fewest` layers (all_reduce's minimum).
    monkeypatch.setattr(memory_fit, "all_reduce", lambda count, op: count.clamp(max=fewest))
    cfg = tiny_cfg(tiny_dataset, tmp_path, MVIT__REV__STORED_LAYERS="auto", TRAIN__BATCH_SIZE=4)
    resolve_auto_stored_layers(cfg, CPU, world_size=2)
    assert stored == cfg.MVIT.REV.STORED_LAYERS


def test_when_one_process_cannot_fit_the_batch_every_process_says_so(
    tiny_dataset, tmp_path, monkeypatch, cpu_searches
):
    monkeypatch.setattr(memory_fit, "all_reduce", lambda count, op: count.clamp(max=-1))
    cfg = tiny_cfg(tiny_dataset, tmp_path, MVIT__REV__STORED_LAYERS="auto", TRAIN__BATCH_SIZE=4)
    with pytest.raises(UserError, match=r"\(2 videos per GPU\) does not fit"):
        resolve_auto_stored_layers(cfg, CPU, world_size=2)


def test_a_try_that_runs_out_of_memory_in_the_update_leaves_the_next_one_whole(
    tiny_dataset, tmp_path, monkeypatch
):
    cfg = tiny_cfg(tiny_dataset, tmp_path)
    trial = memory_fit._TrialTraining(cfg, CPU)
    trained = [p for p in trial.model.parameters() if p.requires_grad]
    # The state every later step holds exists before any try.
    state_keys = {id(p): set(trial.optimizer.state[p]) for p in trained}
    assert len(state_keys) == len(trained) and all(state_keys.values())

    def out_of_memory(*_, **__):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated in the update)")

    with monkeypatch.context() as patch:
        patch.setattr(trial.optimizer, "step", out_of_memory)
        assert not fits_in_memory(lambda: trial.step(2), trial.recover)
    assert all(p.grad is None for p in trained)
    trial.step(2)
    assert {id(p): set(trial.optimizer.state[p]) for p in trained} == state_keys
