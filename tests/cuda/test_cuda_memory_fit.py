"""TRAIN.BATCH_SIZE auto on a GPU: a micro-batch that fits a memory budget, and the
accumulation that makes up the global batch; MVIT.REV.STORED_LAYERS auto: the deepest layers
that fit beside a batch."""

import pytest
import torch

from revvideo.config import load_config
from revvideo.engine.memory_fit import (
    _training_step,
    resolve_auto_batch_size,
    resolve_auto_settings,
)
from revvideo.engine.optim import build_optimizer
from revvideo.engine.precision import MixedPrecision
from revvideo.models import build_model

pytestmark = pytest.mark.cuda

QUICK_START = "configs/synthetic/REV_MVIT_XS.yaml"


@pytest.fixture
def one_gib_budget():
    """This process may use 1 GiB of the GPU: a budget a big global batch cannot fit."""
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(2**30 / total, 0)
    yield
    torch.cuda.set_per_process_memory_fraction(1.0, 0)
    torch.cuda.empty_cache()


@pytest.fixture
def listed_videos(tmp_path):
    """A data folder whose train.csv lists 4096 videos (the plan reads only the list)."""
    lines = "".join(f"video_{index}.mp4 {index % 6}\n" for index in range(4096))
    (tmp_path / "train.csv").write_text(lines)
    return tmp_path


@pytest.mark.parametrize("mixed_precision", [False, True])
def test_auto_finds_a_micro_batch_that_fits_and_accumulates_to_the_global_batch(
    one_gib_budget, listed_videos, mixed_precision
):
    # The quick-start model on 64 px clips of 8 frames; 4096 videos never fit in 1 GiB.
    cfg = load_config(
        QUICK_START,
        [
            "TRAIN.BATCH_SIZE", "auto", "TRAIN.GLOBAL_BATCH_SIZE", "4096",
            "DATA.PATH_TO_DATA_DIR", str(listed_videos),
            "DATA.TRAIN_CROP_SIZE", "64", "DATA.TEST_CROP_SIZE", "64",
            "DATA.TRAIN_JITTER_SCALES", "[64, 80]",
            "TRAIN.MIXED_PRECISION", str(mixed_precision),
        ],
    )  # fmt: skip
    device = torch.device("cuda", 0)

    resolve_auto_batch_size(cfg, device, world_size=1)

    micro, accumulation = cfg.TRAIN.BATCH_SIZE, cfg.TRAIN.ACCUMULATION_STEPS
    assert 1 <= micro < 4096 and accumulation > 1
    assert 4096 <= micro * accumulation < 4096 + accumulation
    # The chosen micro-batch trains, repeatedly, inside the budget.
    _trains_inside_the_budget(cfg, device, micro)


def _trains_inside_the_budget(cfg, device, videos: int) -> None:
    torch.cuda.reset_peak_memory_stats(device)
    model = build_model(cfg).to(device).train()
    optimizer = build_optimizer(model, cfg)
    precision = MixedPrecision(cfg.TRAIN.MIXED_PRECISION, device)
    for _ in range(3):
        _training_step(cfg, device, model, optimizer, precision, videos)
    assert torch.cuda.max_memory_allocated(device) <= 2**30


@pytest.mark.parametrize("batch", ["1", "auto"])
def test_stored_layers_auto_stores_the_deepest_layers_that_fit_beside_the_batch(
    one_gib_budget, listed_videos, batch
):
    cfg = load_config(
        QUICK_START,
        [
            "TRAIN.BATCH_SIZE", batch, "TRAIN.GLOBAL_BATCH_SIZE", "64",
            "DATA.PATH_TO_DATA_DIR", str(listed_videos),
            "MVIT.REV.STORED_LAYERS", "auto",
            "DATA.TRAIN_CROP_SIZE", "64", "DATA.TEST_CROP_SIZE", "64",
            "DATA.TRAIN_JITTER_SCALES", "[64, 80]",
        ],
    )  # fmt: skip
    device = torch.device("cuda", 0)
    with torch.device("meta"):
        storable = build_model(cfg).rev_backbone.storable_layers()

    resolve_auto_settings(cfg, device, world_size=1)

    stored = cfg.MVIT.REV.STORED_LAYERS
    assert stored == sorted(storable[: len(stored)])  # the deepest ones
    if batch == "1":  # one small clip leaves room for every layer's activations
        assert len(stored) == len(storable)
    _trains_inside_the_budget(cfg, device, cfg.TRAIN.BATCH_SIZE)
