"""Soft targets for a training batch: label smoothing, and Mixup / CutMix when enabled."""

from __future__ import annotations

import torch
from fvcore.common.config import CfgNode

from revvideo.data.pytorchvideo_transforms import CutMix, convert_to_one_hot
from revvideo.data.pytorchvideo_transforms import MixUp as _PytorchvideoMixUp


class SoftTargets:
    """`video, soft_target = soft_targets(video, label)` on a device batch.

    video: float (B, C, T, H, W), mixed in place; label: int64 (B,); soft_target: float32
    (B, num_classes), rows summing to 1. Each batch is mixed with probability `prob`, by cutmix
    with probability `switch_prob` (when both are enabled) and otherwise by mixup, pairing clip
    i with clip B - 1 - i (pytorchvideo's MixUp / CutMix). Unmixed batches, single-clip batches
    and disabled mixing still get label-smoothed soft targets. The settings are those of the
    MIXUP keys, checked where configs are validated (revvideo.config.validate).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        enabled: bool = True,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.1,
    ) -> None:
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.prob = prob if enabled else 0.0
        self.switch_prob = switch_prob
        # An alpha of 0 disables that kind of mixing (Beta(0, 0) is undefined).
        self.mixup = (
            _PytorchvideoMixUp(mixup_alpha, label_smoothing, num_classes) if mixup_alpha else None
        )
        self.cutmix = CutMix(cutmix_alpha, label_smoothing, num_classes) if cutmix_alpha else None

    @classmethod
    def from_cfg(cls, cfg: CfgNode) -> SoftTargets:
        mix = cfg.MIXUP
        return cls(
            cfg.MODEL.NUM_CLASSES,
            enabled=mix.ENABLE,
            mixup_alpha=mix.ALPHA,
            cutmix_alpha=mix.CUTMIX_ALPHA,
            prob=mix.PROB,
            switch_prob=mix.SWITCH_PROB,
            label_smoothing=mix.LABEL_SMOOTH_VALUE,
        )

    def __call__(
        self, video: torch.Tensor, label: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        can_mix = len(video) > 1 and (self.mixup is not None or self.cutmix is not None)
        if can_mix and torch.rand(()) < self.prob:
            use_cutmix = self.cutmix is not None and (
                self.mixup is None or torch.rand(()) < self.switch_prob
            )
            video, soft_target = (self.cutmix if use_cutmix else self.mixup)(video, label)
            return video, soft_target.float()
        soft_target = convert_to_one_hot(label, self.num_classes, self.label_smoothing)
        return video, soft_target.float()
