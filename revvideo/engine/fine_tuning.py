"""A checkpoint that stores its config brings its model: fine-tuning or testing it takes the
architecture and the input geometry from it, and the config file carries only the recipe."""

import logging
from collections.abc import Collection

from fvcore.common.config import CfgNode

from revvideo.checkpoint import checkpoint_file, read_checkpoint, stored_config
from revvideo.config.validate import config_value, model_name
from revvideo.utils.errors import ConfigError

logger = logging.getLogger(__name__)

# What describes a model and the clips it was trained on. Regularisation (drop rates) and the
# reversible engine's levers are the recipe's.
MODEL_KEYS = (
    "MODEL.MODEL_NAME",
    "DATA.NUM_FRAMES",
    "DATA.SAMPLING_RATE",
    "DATA.TARGET_FPS",
    "DATA.TRAIN_CROP_SIZE",
    "DATA.TEST_CROP_SIZE",
    "DATA.TRAIN_JITTER_SCALES",
    "DATA.MEAN",
    "DATA.STD",
    "DATA.INPUT_CHANNEL_NUM",
    "MVIT.DEPTH",
    "MVIT.EMBED_DIM",
    "MVIT.NUM_HEADS",
    "MVIT.MLP_RATIO",
    "MVIT.QKV_BIAS",
    "MVIT.SEPARATE_QKV",
    "MVIT.PATCH_KERNEL",
    "MVIT.PATCH_STRIDE",
    "MVIT.PATCH_PADDING",
    "MVIT.PATCH_2D",
    "MVIT.MODE",
    "MVIT.CLS_EMBED_ON",
    "MVIT.SEP_POS_EMBED",
    "MVIT.DIM_MUL",
    "MVIT.HEAD_MUL",
    "MVIT.POOL_KVQ_KERNEL",
    "MVIT.POOL_Q_STRIDE",
    "MVIT.POOL_KV_STRIDE",
    "MVIT.POOL_KV_STRIDE_ADAPTIVE",
    "MVIT.REV.ENABLE",
    "MVIT.REV.RESPATH_FUSE",
    "MVIT.REV.BUFFER_LAYERS",
    "MVIT.REV.RES_PATH",
    "MVIT.REV.PRE_Q_FUSION",
)


def adopt_checkpoint_model(cfg: CfgNode, explicit: Collection[str]) -> None:
    """Sets in `cfg` the MODEL_KEYS of the config stored in the checkpoint that `cfg` fine-tunes
    (TRAIN.CHECKPOINT_FILE_PATH) or tests (TEST.CHECKPOINT_FILE_PATH, without training), but
    the keys in `explicit` (those the command line sets), and MODEL.NUM_CLASSES to 0: the
    dataset's when training, the checkpoint's when testing. Logs one line saying so. Nothing
    changes where the checkpoint stores no revvideo config (a PySlowFast release: the config
    file describes its model)."""
    section = "TRAIN" if cfg.TRAIN.ENABLE else "TEST"
    source, key = cfg[section].CHECKPOINT_FILE_PATH, f"{section}.CHECKPOINT_FILE_PATH"
    if not source:
        return
    path = checkpoint_file(source, key)
    try:
        stored = stored_config(read_checkpoint(path), path)
    except ConfigError:
        return  # PySlowFast's own config: its keys are not ours
    if stored is None:
        return
    taken = 0
    for model_key in MODEL_KEYS:
        section, name = model_key.rsplit(".", 1)
        value = config_value(stored, model_key)
        if model_key not in explicit and config_value(cfg, model_key) != value:
            config_value(cfg, section)[name] = value
            taken += 1
    if "MODEL.NUM_CLASSES" not in explicit:
        cfg.MODEL.NUM_CLASSES = 0
    kept = [model_key for model_key in MODEL_KEYS if model_key in explicit]
    crop = cfg.DATA.TRAIN_CROP_SIZE
    logger.info(
        "model from %s: %s of depth %d on %dx%dx%d clips (%d model keys taken from it%s)",
        path,
        model_name(cfg),
        cfg.MVIT.DEPTH,
        cfg.DATA.NUM_FRAMES,
        crop,
        crop,
        taken,
        f"; set on the command line: {', '.join(kept)}" if kept else "",
    )
