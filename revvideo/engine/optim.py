"""Optimizer with PySlowFast's parameter groups, and the per-step warmup + cosine schedule."""

import math

import torch
from fvcore.common.config import CfgNode
from torch import nn

from revvideo.utils.errors import ConfigError

OPTIMIZERS = ("adamw", "sgd")

# Parameters that are positions or a token rather than weights: never decayed when
# MVIT.ZERO_DECAY_POS_CLS is set.
_POSITION_AND_TOKEN_PREFIXES = ("pos_embed", "cls_token")


def parameter_groups(
    model: nn.Module, weight_decay: float, *, zero_wd_1d: bool, zero_wd_pos_cls: bool
) -> list[dict]:
    """[{"params": decayed, "weight_decay": weight_decay}, {"params": others, "weight_decay": 0}]
    without empty groups and without frozen parameters."""
    decayed, not_decayed = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_position = name.rsplit(".", 1)[-1].startswith(_POSITION_AND_TOKEN_PREFIXES)
        if (zero_wd_1d and param.ndim <= 1) or (zero_wd_pos_cls and is_position):
            not_decayed.append(param)
        else:
            decayed.append(param)
    groups = [
        {"params": decayed, "weight_decay": weight_decay},
        {"params": not_decayed, "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


def build_optimizer(model: nn.Module, cfg: CfgNode) -> torch.optim.Optimizer:
    """AdamW or SGD (SOLVER.OPTIMIZING_METHOD) over `parameter_groups`; the schedule sets the LR."""
    solver = cfg.SOLVER
    groups = parameter_groups(
        model,
        solver.WEIGHT_DECAY,
        zero_wd_1d=solver.ZERO_WD_1D_PARAM,
        zero_wd_pos_cls=cfg.MVIT.ZERO_DECAY_POS_CLS,
    )
    method = solver.OPTIMIZING_METHOD.lower()
    if method == "adamw":
        return torch.optim.AdamW(groups, lr=solver.BASE_LR, eps=1e-8)
    if method == "sgd":
        return torch.optim.SGD(
            groups, lr=solver.BASE_LR, momentum=solver.MOMENTUM, nesterov=solver.NESTEROV
        )
    raise ConfigError(
        f"SOLVER.OPTIMIZING_METHOD must be one of {', '.join(OPTIMIZERS)}, got {method!r}"
    )


class WarmupCosineSchedule:
    """Sets the learning rate of every parameter group before each optimizer step.

    The rate is a function of the optimizer step only (PySlowFast's schedule evaluated at the
    fractional epoch `step / steps_per_epoch`): linear from `start_lr` over `warmup_epochs`,
    then a half cosine down to `end_lr` at `max_epoch`. With `cosine_after_warmup` the cosine
    starts at `peak_lr` when the warmup ends; otherwise it spans all epochs and the warmup
    rises to its value at `warmup_epochs`. Only the step count is state, so a run resumed with
    a longer MAX_EPOCH follows the new schedule.
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
        solver = cfg.SOLVER
        if solver.LR_POLICY != "cosine":
            raise ConfigError(f"SOLVER.LR_POLICY must be cosine, got {solver.LR_POLICY!r}")
        if not 0 <= solver.WARMUP_EPOCHS <= solver.MAX_EPOCH:
            raise ConfigError(
                f"SOLVER.WARMUP_EPOCHS must be in [0, SOLVER.MAX_EPOCH], got {solver.WARMUP_EPOCHS}"
            )
        if solver.COSINE_END_LR > solver.BASE_LR:
            raise ConfigError(
                f"SOLVER.COSINE_END_LR {solver.COSINE_END_LR} is above SOLVER.BASE_LR "
                f"{solver.BASE_LR}"
            )
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
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr

    def state_dict(self) -> dict:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self._apply()


def lr_scale(cfg: CfgNode) -> float:
    """Global batch / SOLVER.BASE_LR_BATCH_SIZE (1 when that is 0): linear LR scaling."""
    reference = cfg.SOLVER.BASE_LR_BATCH_SIZE
    if reference < 0:
        raise ConfigError(f"SOLVER.BASE_LR_BATCH_SIZE must not be negative, got {reference}")
    if reference == 0:
        return 1.0
    return cfg.TRAIN.BATCH_SIZE * cfg.TRAIN.ACCUMULATION_STEPS / reference
