"""Optimizer with PySlowFast's parameter groups, and the per-step warmup + cosine schedule."""

import math
import re

import torch
from fvcore.common.config import CfgNode
from torch import nn

# SOLVER.OPTIMIZING_METHOD (any case): the optimizer over the parameter groups.
OPTIMIZERS = {
    "adamw": lambda groups, solver: torch.optim.AdamW(groups, lr=solver.BASE_LR, eps=1e-8),
    "sgd": lambda groups, solver: torch.optim.SGD(
        groups, lr=solver.BASE_LR, momentum=solver.MOMENTUM, nesterov=solver.NESTEROV
    ),
}

# Parameters that are positions or a token rather than weights: never decayed when
# MVIT.ZERO_DECAY_POS_CLS is set.
_POSITION_AND_TOKEN_PREFIXES = ("pos_embed", "cls_token")
# Block i of MViT (`blocks.i`) and of the reversible models (`rev_backbone.layers.i`).
_BLOCK_INDEX = re.compile(r"(?:blocks|rev_backbone\.layers)\.(\d+)\.")
# What comes before the blocks: layer id 0.
_EMBEDDING_PREFIXES = ("patch_embed.", *_POSITION_AND_TOKEN_PREFIXES)
# The classification layer, which fine-tuning re-initialises (SOLVER.HEAD_LR_MULT).
_HEAD_PREFIX = "head.projection."


def layer_ids(model: nn.Module) -> dict[str, int]:
    """Layer id of every parameter name (frozen ones too, so freezing does not renumber), as in
    MViTv2/BEiT layer-wise LR decay: 0 for the patch embedding, position embeddings and class
    token, i + 1 for block i, L + 1 for what follows the L blocks (final norm, head)."""
    names = [name for name, _ in model.named_parameters()]
    blocks = {name: int(match[1]) for name in names if (match := _BLOCK_INDEX.match(name))}
    after_blocks = max(blocks.values(), default=-1) + 2
    ids = {}
    for name in names:
        if name in blocks:
            ids[name] = blocks[name] + 1
        elif name.startswith(_EMBEDDING_PREFIXES):
            ids[name] = 0
        else:
            ids[name] = after_blocks
    return ids


def parameter_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    zero_wd_1d: bool,
    zero_wd_pos_cls: bool,
    layer_decay: float = 1.0,
    head_lr_mult: float = 1.0,
) -> list[dict]:
    """Groups of trainable parameters that share a weight decay and a learning-rate multiplier
    `lr_mult` (read by the schedule): `layer_decay ** (L + 1 - layer id)` (see `layer_ids`),
    times `head_lr_mult` for the classification layer. Ordered by multiplier, decayed before
    not decayed, so with both factors at 1 they are PySlowFast's two groups
    [{"weight_decay": weight_decay}, {"weight_decay": 0}] (empty ones dropped) and optimizer
    states saved before the factors existed still load."""
    ids = layer_ids(model)
    # L + 1: the final norm and head keep the scheduled rate.
    top = max(ids.values())
    members: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_position = name.rsplit(".", 1)[-1].startswith(_POSITION_AND_TOKEN_PREFIXES)
        decayed = not ((zero_wd_1d and param.ndim <= 1) or (zero_wd_pos_cls and is_position))
        lr_mult = layer_decay ** (top - ids[name])
        if name.startswith(_HEAD_PREFIX):
            lr_mult *= head_lr_mult
        members.setdefault((lr_mult, decayed), []).append(param)
    return [
        {"params": params, "weight_decay": weight_decay if decayed else 0.0, "lr_mult": lr_mult}
        for (lr_mult, decayed), params in sorted(
            members.items(), key=lambda item: (item[0][0], not item[0][1])
        )
    ]


def build_optimizer(model: nn.Module, cfg: CfgNode) -> torch.optim.Optimizer:
    """AdamW or SGD (SOLVER.OPTIMIZING_METHOD) over `parameter_groups`; the schedule sets the LR.
    `cfg` is a validated config (see revvideo.config.validate)."""
    solver = cfg.SOLVER
    groups = parameter_groups(
        model,
        solver.WEIGHT_DECAY,
        zero_wd_1d=solver.ZERO_WD_1D_PARAM,
        zero_wd_pos_cls=cfg.MVIT.ZERO_DECAY_POS_CLS,
        layer_decay=solver.LAYER_DECAY,
        head_lr_mult=solver.HEAD_LR_MULT,
    )
    return OPTIMIZERS[solver.OPTIMIZING_METHOD.lower()](groups, solver)


class WarmupCosineSchedule:
    """Sets the learning rate of every parameter group before each optimizer step: the
    scheduled rate times the group's `lr_mult` (1 where the group has none: optimizers built
    without `parameter_groups`, optimizer states saved before multipliers existed).

    The rate is a function of the optimizer step only (PySlowFast's schedule evaluated at the
    fractional epoch `step / steps_per_epoch`): linear from `start_lr` over `warmup_epochs`,
    then a half cosine down to `end_lr` at `max_epoch`. With `cosine_after_warmup` the cosine
    starts at `peak_lr` when the warmup ends; otherwise it spans all epochs and the warmup
    rises to its value at `warmup_epochs`. Only the step count is state, so a run resumed with
    a longer MAX_EPOCH follows the new schedule; the multipliers travel with the optimizer's
    state (its groups), so a resumed run gets the same per-group rates.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        peak_lr: float,
        start_lr: float,
        end_lr: float,
        warmup_epochs: float,
        max_epoch: int,
        steps_per_epoch: int,
        cosine_after_warmup: bool,
    ) -> None:
        self.optimizer = optimizer
        self.peak_lr = peak_lr
        self.start_lr = start_lr
        self.end_lr = end_lr
        self.warmup_epochs = warmup_epochs
        self.max_epoch = max_epoch
        self.steps_per_epoch = steps_per_epoch
        self.cosine_after_warmup = cosine_after_warmup
        self.step_count = 0
        self._apply()

    @classmethod
    def from_cfg(
        cls, optimizer: torch.optim.Optimizer, cfg: CfgNode, steps_per_epoch: int
    ) -> "WarmupCosineSchedule":
        """The schedule of a validated config (see revvideo.config.validate)."""
        solver = cfg.SOLVER
        scale = lr_scale(cfg)
        return cls(
            optimizer,
            peak_lr=solver.BASE_LR * scale,
            start_lr=solver.WARMUP_START_LR * scale,
            end_lr=solver.COSINE_END_LR * scale,
            warmup_epochs=solver.WARMUP_EPOCHS,
            max_epoch=solver.MAX_EPOCH,
            steps_per_epoch=steps_per_epoch,
            cosine_after_warmup=solver.COSINE_AFTER_WARMUP,
        )

    def _cosine(self, epoch: float) -> float:
        offset = self.warmup_epochs if self.cosine_after_warmup else 0.0
        span = self.max_epoch - offset
        progress = min(max((epoch - offset) / span, 0.0), 1.0) if span > 0 else 1.0
        return self.end_lr + (self.peak_lr - self.end_lr) * (1 + math.cos(math.pi * progress)) / 2

    def lr_at(self, step: int) -> float:
        epoch = step / self.steps_per_epoch
        if epoch < self.warmup_epochs:
            target = self._cosine(self.warmup_epochs)
            return self.start_lr + (target - self.start_lr) * epoch / self.warmup_epochs
        return self._cosine(epoch)

    @property
    def lr(self) -> float:
        """The rate of the coming optimizer step."""
        return self.lr_at(self.step_count)

    def step(self) -> None:
        """Moves to the next optimizer step; call after `optimizer.step()`."""
        self.step_count += 1
        self._apply()

    def _apply(self) -> None:
        lr = self.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)

    def state_dict(self) -> dict:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self._apply()


def lr_scale(cfg: CfgNode) -> float:
    """Global batch / SOLVER.BASE_LR_BATCH_SIZE (1 when that is 0): linear LR scaling."""
    reference = cfg.SOLVER.BASE_LR_BATCH_SIZE
    if reference == 0:
        return 1.0
    return cfg.TRAIN.BATCH_SIZE * cfg.TRAIN.ACCUMULATION_STEPS / reference
