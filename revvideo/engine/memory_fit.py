"""Settings searched for on the GPU before training: `TRAIN.BATCH_SIZE auto` (the largest
micro-batch a GPU holds, and the accumulation that makes up the recipe's batch) and
`MVIT.REV.STORED_LAYERS auto` (the deepest layers a reversible model can keep beside it).

Each process tries whole training steps of the run's own model, clip size, precision and
optimizer state (revvideo.utils.memory: doubling, then bisection, recovering from out-of-memory
errors), keeping headroom for what the tries do not see (allocator fragmentation, longer runs);
the processes agree on the smallest answer.

The batch: the largest number of videos that fits; then the fewest accumulation steps that reach
the intended global batch (TRAIN.GLOBAL_BATCH_SIZE, else SOLVER.BASE_LR_BATCH_SIZE), with the
micro-batch evened out over them, and no more than the training set holds in an epoch. The
learning rate follows the effective batch as for any other batch (revvideo.engine.optim.lr_scale).

The stored layers, at the micro-batch chosen (searched or set): as many of the model's
recomputed layers, deepest first (RevMViT.rev_backbone.storable_layers), as fit in what the batch
leaves; each one stored skips its recompute in backward. Storing never changes the batch: where
memory limits the batch, nothing is left to store.
"""

import logging
import math

import torch
from fvcore.common.config import CfgNode

from revvideo.config import AUTO
from revvideo.data.build import split_videos
from revvideo.engine.distributed import all_reduce
from revvideo.engine.optim import build_optimizer
from revvideo.engine.precision import MixedPrecision
from revvideo.engine.train import soft_target_cross_entropy
from revvideo.models import build_model
from revvideo.utils.errors import ConfigError, UserError
from revvideo.utils.memory import fits_in_memory, largest_batch, largest_beside_reserve

logger = logging.getLogger(__name__)

# Headroom: the fraction of the largest batch that fitted given up, and the fraction of what a
# training step allocates (above the weights and optimizer state) held back while layers to store
# are searched. Tolerance: the precision of the batch
# search (a fraction of that batch), since each try is a whole training step.
HEADROOM = 0.1
SEARCH_TOLERANCE = 1 / 16


def plan_batches(
    global_batch: int, world_size: int, fits: int, training_videos: int
) -> tuple[int, int]:
    """(videos per process per step, accumulation steps) for optimizer steps of `global_batch`
    videos over `world_size` processes, with at most `fits` videos per process per step and as
    few accumulation steps as that allows: the smallest even share reaching `global_batch`.

    An epoch must hold an optimizer step: each process's share of the `training_videos`, in full
    batches (the loader drops a last partial one), bounds the step; a global batch beyond the
    training set becomes the whole set."""
    share = math.ceil(training_videos / world_size)
    wanted = min(math.ceil(global_batch / world_size), share)
    accumulation = math.ceil(wanted / fits)
    per_process = math.ceil(wanted / accumulation)
    if share // per_process < accumulation:
        per_process = wanted // accumulation
    return per_process, accumulation


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


class _TrialTraining:
    """The run's model, optimizer and precision, for training steps that try sizes.

    The optimizer's state, which every step but the first holds, is made before any try: an
    out-of-memory error inside a first update would leave it half made. A failed try leaves no
    gradients and a fresh gradient scaler (one that failed inside its step would skip the next
    try's unscaling)."""

    def __init__(self, cfg: CfgNode, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.model = build_model(cfg).to(device).train()
        self.optimizer = build_optimizer(self.model, cfg)
        self.precision = MixedPrecision(cfg.TRAIN.MIXED_PRECISION, device)
        for param in self.model.parameters():
            if param.requires_grad:
                param.grad = torch.zeros_like(param)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    @classmethod
    def fitting(cls, cfg: CfgNode, device: torch.device) -> "_TrialTraining | None":
        """A trial training, or None where the model and its optimizer state alone do not fit."""
        made = []
        return made[0] if fits_in_memory(lambda: made.append(cls(cfg, device))) else None

    def step(self, size: int) -> None:
        _training_step(self.cfg, self.device, self.model, self.optimizer, self.precision, size)

    def recover(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        scaler = self.precision.scaler
        self.precision.scaler = torch.amp.GradScaler(self.device.type, enabled=scaler.is_enabled())


def _largest_fitting_batch(cfg: CfgNode, device: torch.device, limit: int) -> int:
    """The largest number of videos (at most `limit`) whose training step fits `device`."""
    trial = _TrialTraining.fitting(cfg, device)
    if trial is None:
        return 0
    return largest_batch(
        trial.step,
        limit=limit,
        tolerance=SEARCH_TOLERANCE,
        headroom=HEADROOM,
        on_out_of_memory=trial.recover,
    )


def _fewest(found: int, device: torch.device) -> int:
    """The smallest of the processes' search results, once the search's model and optimizer
    state are gone and their memory is handed back for training."""
    torch.cuda.empty_cache()
    return int(all_reduce(torch.tensor(found, device=device), torch.distributed.ReduceOp.MIN))


def _require_cuda(key: str, device: torch.device, instead: str) -> None:
    if device.type != "cuda":
        raise ConfigError(
            f"{key} auto searches a CUDA GPU's memory, and this run is on the {device.type}: "
            f"{instead}"
        )


def resolve_auto_batch_size(cfg: CfgNode, device: torch.device, world_size: int) -> None:
    """Replaces `TRAIN.BATCH_SIZE auto` in `cfg` by the global batch per step that fits, and
    sets TRAIN.ACCUMULATION_STEPS; nothing to do for a number. ConfigError on a CPU."""
    if cfg.TRAIN.BATCH_SIZE != AUTO:
        return
    _require_cuda("TRAIN.BATCH_SIZE", device, "set a number of videos")
    global_batch = cfg.TRAIN.GLOBAL_BATCH_SIZE or cfg.SOLVER.BASE_LR_BATCH_SIZE
    if not global_batch:
        raise ConfigError(
            "TRAIN.BATCH_SIZE auto makes up TRAIN.GLOBAL_BATCH_SIZE videos per optimizer step "
            "(else SOLVER.BASE_LR_BATCH_SIZE): set one of them"
        )
    training_videos = len(split_videos(cfg, "train")[0])
    # No step trains more videos than a process's share of the training set.
    limit = math.ceil(min(global_batch, training_videos) / world_size)
    fits = _largest_fitting_batch(cfg, device, limit)
    # Every process trains the same micro-batch: the one that fits them all.
    fits = _fewest(fits, device)
    if fits == 0:
        raise UserError(
            f"not even one video of {cfg.DATA.NUM_FRAMES}x{cfg.DATA.TRAIN_CROP_SIZE}x"
            f"{cfg.DATA.TRAIN_CROP_SIZE} fits a training step on {device}: use smaller clips, "
            "TRAIN.MIXED_PRECISION True or a reversible model"
        )
    per_process, accumulation = plan_batches(global_batch, world_size, fits, training_videos)
    cfg.TRAIN.BATCH_SIZE = per_process * world_size
    cfg.TRAIN.ACCUMULATION_STEPS = accumulation
    logger.info(
        "TRAIN.BATCH_SIZE auto: %d videos per GPU fit a training step (with %d %% headroom); "
        "training %d per GPU x %d processes x %d accumulation steps = %d videos per optimizer "
        "step (target %d, training set %d)",
        fits,
        round(100 * HEADROOM),
        per_process,
        world_size,
        accumulation,
        per_process * world_size * accumulation,
        global_batch,
        training_videos,
    )


def _most_stored_layers(
    cfg: CfgNode, device: torch.device, videos: int
) -> tuple[int | None, list[int]]:
    """(how many of the storable layers, deepest first, fit beside `videos` per training step,
    None if the step does not fit even with none stored; the storable layers in that order)."""
    trial = _TrialTraining.fitting(cfg, device)
    if trial is None:
        return None, []
    stack = trial.model.rev_backbone
    storable = stack.storable_layers()

    def step(count: int) -> None:
        stack.store_deepest(count)
        trial.step(videos)

    if not fits_in_memory(lambda: step(0), trial.recover):
        return None, storable
    count = largest_beside_reserve(
        step, device, limit=len(storable), reserve=HEADROOM, on_out_of_memory=trial.recover
    )
    return count, storable


def resolve_auto_stored_layers(cfg: CfgNode, device: torch.device, world_size: int) -> None:
    """Replaces `MVIT.REV.STORED_LAYERS auto` in `cfg` by the deepest layers that fit beside
    the micro-batch (TRAIN.BATCH_SIZE, a number by now); nothing to do for a list. ConfigError
    on a CPU; UserError if the batch does not fit at all."""
    if cfg.MVIT.REV.STORED_LAYERS != AUTO:
        return
    _require_cuda("MVIT.REV.STORED_LAYERS", device, "list the layers to store, or none")
    videos = cfg.TRAIN.BATCH_SIZE // world_size
    count, storable = _most_stored_layers(cfg, device, videos)
    # Every process stores the same layers, the fewest any of them holds (-1: one holds none).
    count = _fewest(-1 if count is None else count, device)
    if count < 0:
        raise UserError(
            f"TRAIN.BATCH_SIZE {cfg.TRAIN.BATCH_SIZE} ({videos} videos per GPU) does not fit a "
            f"training step on {device} even with no layer stored: lower it"
        )
    cfg.MVIT.REV.STORED_LAYERS = sorted(storable[:count])
    logger.info(
        "MVIT.REV.STORED_LAYERS auto: %d of the %d recomputed layers keep their activations "
        "beside %d videos per GPU (%d %% of the step's own allocations held back): %s",
        count,
        len(storable),
        videos,
        round(100 * HEADROOM),
        cfg.MVIT.REV.STORED_LAYERS,
    )


def resolve_auto_settings(cfg: CfgNode, device: torch.device, world_size: int) -> None:
    """The batch first (searched with no layer stored), then the layers stored beside it."""
    resolve_auto_batch_size(cfg, device, world_size)
    resolve_auto_stored_layers(cfg, device, world_size)
