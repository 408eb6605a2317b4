"""Training and evaluation: what `tools/run_net.py --cfg file.yaml [KEY VALUE ...]` runs.

`run(cfg)` trains (TRAIN.ENABLE) with `Trainer` and then runs the multi-view test
(TEST.ENABLE, `multiview_test`), as one process or under torchrun (DDP). Everything lands in
OUTPUT_DIR:
  config.yaml            the config of a training run
  log.jsonl              one JSON object per logged step, per epoch and per test
  tensorboard/           the same numbers as tensorboard scalars
  curves.png             training loss, learning rate and validation top-1
  checkpoints/           checkpoint_epoch_NNNNN.pyth (see revvideo.checkpoint.training), resumed automatically
  test/<checkpoint>[-N]/ each multi-view test's config.yaml, test_results.json, predictions.csv,
                         confusion.png and reliability.png, in a new folder of its own (see evaluate.py)
"""

from revvideo.engine.evaluate import multiview_test, validate
from revvideo.engine.metrics import VideoScores, classification_metrics
from revvideo.engine.optim import WarmupCosineSchedule, build_optimizer, parameter_groups
from revvideo.engine.run import run
from revvideo.engine.train import NonFiniteLossError, Trainer, soft_target_cross_entropy

__all__ = [
    "NonFiniteLossError",
    "Trainer",
    "VideoScores",
    "WarmupCosineSchedule",
    "build_optimizer",
    "classification_metrics",
    "multiview_test",
    "parameter_groups",
    "run",
    "soft_target_cross_entropy",
    "validate",
]
