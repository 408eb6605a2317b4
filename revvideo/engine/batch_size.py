"""`TRAIN.BATCH_SIZE auto`: the largest micro-batch a GPU holds, and the accumulation that
makes up the recipe's batch.

Before training, each process searches (revvideo.utils.memory.largest_batch: doubling, then
bisection, recovering from out-of-memory errors) for the largest number of videos whose whole
training step fits its GPU: the run's own model, clip size, precision and optimizer state, with
headroom for what the search does not see (allocator fragmentation, longer runs). The processes
agree on the smallest answer; then the fewest accumulation steps that reach the intended global
batch (TRAIN.GLOBAL_BATCH_SIZE, else SOLVER.BASE_LR_BATCH_SIZE) are chosen, and the micro-batch
is evened out over them. The learning rate follows the effective batch as for any other batch
(revvideo.engine.optim.lr_scale).
"""

import logging
import math

import torch
from fvcore.common.config import CfgNode

from revvideo.config import AUTO_BATCH_SIZE
from revvideo.engine.distributed import all_reduce
from revvideo.engine.optim import build_optimizer
from revvideo.engine.precision import MixedPrecision
from revvideo.engine.train import soft_target_cross_entropy
from revvideo.models import build_model
from revvideo.utils.errors import ConfigError, UserError
from revvideo.utils.memory import largest_batch

logger = logging.getLogger(__name__)

# Fraction of the largest batch that fitted given up, and the precision of the search (a
# fraction of that batch): each try is a whole training step at that size.
HEADROOM = 0.1
SEARCH_TOLERANCE = 1 / 16


def plan_batches(global_batch: int, world_size: int, fits: int) -> tuple[int, int]:
    """(videos per process per step, accumulation steps) whose product over `world_size`
    processes is the smallest multiple of them reaching `global_batch`, with at most `fits`
    videos per process per step and as few accumulation steps as that allows."""
    per_process = math.ceil(global_batch / world_size)
    accumulation = math.ceil(per_process / fits)
    return math.ceil(per_process / accumulation), accumulation


def _training_step(cfg: CfgNode, device: torch.device, model, optimizer, precision, size: int):
    """One training step of `size` videos (their AUG.NUM_SAMPLE clips each) on random clips."""
    clips = size * cfg.AUG.NUM_SAMPLE
    crop = cfg.DATA.TRAIN_CROP_SIZE
    video = torch.randn(clips, 3, cfg.DATA.NUM_FRAMES, crop, crop, device=device)
    target = torch.full((clips, cfg.MODEL.NUM_CLASSES), 1 / cfg.MODEL.NUM_CLASSES, device=device)
    with precision.autocast():
        logits = model(video)
    loss = soft_target_cross_entropy(logits, target)
    precision.scaler.scale(loss).backward()
    precision.scaler.step(optimizer)
    precision.scaler.update()
    optimizer.zero_grad(set_to_none=True)


def _largest_fitting_batch(cfg: CfgNode, device: torch.device, limit: int) -> int:
    """The largest number of videos (at most `limit`) whose training step fits `device`."""
    model = build_model(cfg).to(device).train()
    optimizer = build_optimizer(model, cfg)
    precision = MixedPrecision(cfg.TRAIN.MIXED_PRECISION, device)
    return largest_batch(
        lambda size: _training_step(cfg, device, model, optimizer, precision, size),
        limit=limit,
        tolerance=SEARCH_TOLERANCE,
        headroom=HEADROOM,
        on_out_of_memory=lambda: optimizer.zero_grad(set_to_none=True),
    )


def resolve_auto_batch_size(cfg: CfgNode, device: torch.device, world_size: int) -> None:
    """Replaces `TRAIN.BATCH_SIZE auto` in `cfg` by the global batch per step that fits, and
    sets TRAIN.ACCUMULATION_STEPS; nothing to do for a number. ConfigError on a CPU."""
    if cfg.TRAIN.BATCH_SIZE != AUTO_BATCH_SIZE:
        return
    if device.type != "cuda":
        raise ConfigError(
            f"TRAIN.BATCH_SIZE auto searches a CUDA GPU's memory, and this run is on the "
            f"{device.type}: set a number of videos"
        )
    global_batch = cfg.TRAIN.GLOBAL_BATCH_SIZE or cfg.SOLVER.BASE_LR_BATCH_SIZE
    if not global_batch:
        raise ConfigError(
            "TRAIN.BATCH_SIZE auto makes up TRAIN.GLOBAL_BATCH_SIZE videos per optimizer step "
            "(else SOLVER.BASE_LR_BATCH_SIZE): set one of them"
        )
    fits = _largest_fitting_batch(cfg, device, limit=math.ceil(global_batch / world_size))
    # The search's model and optimizer state are gone: their memory goes back for training.
    torch.cuda.empty_cache()
    # Every process trains the same micro-batch: the one that fits them all.
    fits = int(all_reduce(torch.tensor(fits, device=device), torch.distributed.ReduceOp.MIN))
    if fits == 0:
        raise UserError(
            f"not even one video of {cfg.DATA.NUM_FRAMES}x{cfg.DATA.TRAIN_CROP_SIZE}x"
            f"{cfg.DATA.TRAIN_CROP_SIZE} fits a training step on {device}: use smaller clips, "
            "TRAIN.MIXED_PRECISION True or a reversible model"
        )
    per_process, accumulation = plan_batches(global_batch, world_size, fits)
    cfg.TRAIN.BATCH_SIZE = per_process * world_size
    cfg.TRAIN.ACCUMULATION_STEPS = accumulation
    logger.info(
        "TRAIN.BATCH_SIZE auto: %d videos per GPU fit a training step (with %d %% headroom); "
        "training %d per GPU x %d processes x %d accumulation steps = %d videos per optimizer "
        "step (target %d)",
        fits,
        round(100 * HEADROOM),
        per_process,
        world_size,
        accumulation,
        per_process * world_size * accumulation,
        global_batch,
    )
