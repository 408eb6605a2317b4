"""TRAIN.BATCH_SIZE auto: the plan that makes up the recipe's batch from what fits."""

import logging

import pytest

from revvideo.engine import run
from revvideo.engine.batch_size import plan_batches

from .helpers import tiny_cfg


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
    per_process, accumulation = plan_batches(global_batch, world_size, fits)
    assert (per_process, accumulation) == plan
    assert per_process <= fits
    effective = per_process * world_size * accumulation
    # The recipe's batch, or the least above it that the processes can share evenly.
    assert global_batch <= effective < global_batch + world_size * accumulation


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
