"""`build_model(cfg)`: the one place that maps config keys to the models' arguments, and the
models' errors, which name their arguments, to messages that name config keys."""

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fvcore.common.config import CfgNode
from torch import nn

from revvideo.checkpoint import (
    load_model_state,
    read_model_checkpoint,
    stored_config,
    stored_temperature,
)
from revvideo.classes import resolve_class_names
from revvideo.config import AUTO, validate_config
from revvideo.config.validate import config_value, model_name
from revvideo.models.common import Geometry, LayerPlan, patch_grid, plan_layers
from revvideo.models.mvit import MViT
from revvideo.models.rev_mvit import RevMViT
from revvideo.utils.errors import CheckpointError, ConfigError

MODELS: dict[str, type[nn.Module]] = {"MViT": MViT, "RevMViT": RevMViT}

# Each model argument and the config key that gives it.
_SHARED = {
    "num_classes": "MODEL.NUM_CLASSES",
    "num_frames": "DATA.NUM_FRAMES",
    "crop_size": "DATA.TRAIN_CROP_SIZE",
    "in_chans": "DATA.INPUT_CHANNEL_NUM",
    "embed_dim": "MVIT.EMBED_DIM",
    "depth": "MVIT.DEPTH",
    "num_heads": "MVIT.NUM_HEADS",
    "mlp_ratio": "MVIT.MLP_RATIO",
    "qkv_bias": "MVIT.QKV_BIAS",
    "separate_qkv": "MVIT.SEPARATE_QKV",
    "drop_path_rate": "MVIT.DROPPATH_RATE",
    "dropout_rate": "MVIT.DROPOUT_RATE",
    "head_dropout_rate": "MODEL.DROPOUT_RATE",
    "patch_kernel": "MVIT.PATCH_KERNEL",
    "patch_stride": "MVIT.PATCH_STRIDE",
    "patch_padding": "MVIT.PATCH_PADDING",
    "patch_2d": "MVIT.PATCH_2D",
    "sep_pos_embed": "MVIT.SEP_POS_EMBED",
    "dim_mul": "MVIT.DIM_MUL",
    "head_mul": "MVIT.HEAD_MUL",
    "pool_q_stride": "MVIT.POOL_Q_STRIDE",
    "pool_kv_stride": "MVIT.POOL_KV_STRIDE",
    "pool_kv_stride_adaptive": "MVIT.POOL_KV_STRIDE_ADAPTIVE",
    "pool_kvq_kernel": "MVIT.POOL_KVQ_KERNEL",
    "pool_mode": "MVIT.MODE",
}
_KEYS: dict[type[nn.Module], dict[str, str]] = {
    MViT: _SHARED | {"cls_token": "MVIT.CLS_EMBED_ON"},
    RevMViT: _SHARED
    | {
        "transition_layers": "MVIT.REV.BUFFER_LAYERS",
        "res_path": "MVIT.REV.RES_PATH",
        "pre_q_fusion": "MVIT.REV.PRE_Q_FUSION",
        "respath_fuse": "MVIT.REV.RESPATH_FUSE",
        "custom_backward": "MVIT.REV.CUSTOM_BACKWARD",
        "recompute_transitions": "MVIT.REV.RECOMPUTE_TRANSITIONS",
        "stored_layers": "MVIT.REV.STORED_LAYERS",
        "overlap_recompute": "MVIT.REV.OVERLAP_RECOMPUTE",
    },
}
_CONFIG_KEY = _KEYS[MViT] | _KEYS[RevMViT]
_ARGUMENT = re.compile(r"\b(" + "|".join(_CONFIG_KEY) + r")\b")

# PyTorch counts a tensor's elements in 64 bits: a layer's weights (width x width) must fit.
_MAX_WIDTH = 2**31


def _value(argument: str, value: Any) -> Any:
    if argument == "in_chans":
        return value[0]
    if argument == "stored_layers" and value == AUTO:
        return ()  # the engine chooses them once it has searched the GPU (engine.memory_fit)
    return tuple(value) if isinstance(value, list) else value


def in_config_terms(message: str) -> str:
    """A model's error message with each argument name replaced by its config key."""
    return _ARGUMENT.sub(lambda found: _CONFIG_KEY[found[1]], message)


def model_arguments(cfg: CfgNode) -> tuple[type[nn.Module], dict[str, Any]]:
    """The class `cfg` names and its constructor arguments."""
    name = model_name(cfg)
    if name not in MODELS:
        raise ConfigError(f"unknown MODEL.MODEL_NAME {name!r}; known models: {', '.join(MODELS)}")
    model_class = MODELS[name]
    return model_class, {
        argument: _value(argument, config_value(cfg, key))
        for argument, key in _KEYS[model_class].items()
    }


def layer_plans(cfg: CfgNode, model_class: type[nn.Module]) -> list[LayerPlan]:
    """The per-layer geometry `cfg` gives a `model_class` (see plan_layers)."""
    _, arguments = model_arguments(cfg)
    geometry = Geometry(**{name: arguments[name] for name in Geometry.__dataclass_fields__})
    return plan_layers(
        geometry, arguments["drop_path_rate"], width_change_in_attention=model_class is RevMViT
    )


def build_model(cfg: CfgNode) -> nn.Module:
    """The model `cfg` describes; it maps `(B, 3, T, H, W)` clips to `(B, NUM_CLASSES)` logits.
    ConfigError (one line, naming config keys) for a config it cannot build."""
    validate_config(cfg)
    if cfg.MODEL.NUM_CLASSES == 0:
        raise ConfigError(
            "MODEL.NUM_CLASSES is 0: set the number of classes (0 means the dataset's, which "
            "only tools/run_net.py can read)"
        )
    model_class, arguments = model_arguments(cfg)
    _check(cfg, model_class)
    try:
        return model_class(**arguments)
    except ValueError as err:
        raise ConfigError(in_config_terms(str(err))) from None


def _check(cfg: CfgNode, model_class: type[nn.Module]) -> None:
    """What a model's constructor cannot say in its own terms: keys it has no argument for, and
    sizes too large to allocate or too small for the clips the data pipeline makes."""
    mvit = cfg.MVIT
    if model_class is RevMViT and mvit.CLS_EMBED_ON:
        raise ConfigError(
            "MVIT.CLS_EMBED_ON must be False: reversible models have no class token (they "
            "average the tokens; PySlowFast's own asserts the same, though its Kinetics "
            "REV_MVIT_B_16x4_CONV.yaml sets True)"
        )
    try:
        plans = layer_plans(cfg, model_class)
    except OverflowError:
        raise ConfigError(
            "MVIT.DIM_MUL and MVIT.HEAD_MUL make a width or a number of heads larger than any "
            "number"
        ) from None
    except ValueError as err:
        raise ConfigError(in_config_terms(str(err))) from None
    for index, plan in enumerate(plans):
        widest = max(plan.dim_in, plan.dim_out) * max(1.0, mvit.MLP_RATIO)
        if widest >= _MAX_WIDTH:
            raise ConfigError(
                f"layer {index} would be {widest:.3g} channels wide, more than PyTorch can hold: "
                "lower MVIT.EMBED_DIM, MVIT.DIM_MUL or MVIT.MLP_RATIO"
            )
        if min(plan.dim_in, plan.dim_out) * mvit.MLP_RATIO < 1:
            raise ConfigError(f"MVIT.MLP_RATIO {mvit.MLP_RATIO} leaves layer {index}'s MLP empty")
    _check_crops(cfg)


def _check_crops(cfg: CfgNode) -> None:
    """The training and test crops and the frames must each make at least one patch."""
    mvit = cfg.MVIT
    sizes = [
        list(config_value(cfg, f"MVIT.PATCH_{name}")) for name in ("KERNEL", "STRIDE", "PADDING")
    ]
    if mvit.PATCH_2D:
        sizes = [[first, *size] for first, size in zip((1, 1, 0), sizes, strict=True)]
    if any(len(size) != 3 for size in sizes):
        return  # the patch embedding names the wrong layout when the model is built
    patch = f"MVIT.PATCH_KERNEL {mvit.PATCH_KERNEL} (with MVIT.PATCH_PADDING {mvit.PATCH_PADDING})"
    for key in ("DATA.TRAIN_CROP_SIZE", "DATA.TEST_CROP_SIZE"):
        crop = config_value(cfg, key)
        frames, height, width = patch_grid((cfg.DATA.NUM_FRAMES, crop, crop), *sizes)
        if frames < 1:
            raise ConfigError(f"DATA.NUM_FRAMES {cfg.DATA.NUM_FRAMES} is fewer than {patch} spans")
        if min(height, width) < 1:
            raise ConfigError(f"{key} {crop} is smaller than {patch}")


@dataclass
class TrainedModel:
    """A checkpoint's model, in eval mode, with the config it was built from, its class names
    and its calibration temperature (None: it stores none)."""

    model: nn.Module
    cfg: CfgNode
    class_names: list[str]
    temperature: float | None


def load_trained(path: Path, cfg_file: str | os.PathLike | None = None) -> TrainedModel:
    """The model in the checkpoint file `path`, built from `cfg_file`, else from the config the
    checkpoint stores; its class names (see revvideo.classes.resolve_class_names: the
    checkpoint's, else the config's dataset's, else Kinetics-400's for 400 classes). Raises
    UserError (one line) for a checkpoint or config that cannot be used."""
    cfg, content = read_model_checkpoint(path, cfg_file)
    model = build_model(cfg)
    try:
        others = load_model_state(model, content, path)
    except CheckpointError as err:
        if cfg_file is not None and _carries_config(content, path):
            raise CheckpointError(
                f"{err}; the checkpoint carries its own config: drop --cfg {cfg_file}"
            ) from None
        raise
    names = resolve_class_names(
        cfg.MODEL.NUM_CLASSES, checkpoint=others, data_dir=cfg.DATA.PATH_TO_DATA_DIR
    ).names
    return TrainedModel(model.eval(), cfg, names, stored_temperature(others, path))


def _carries_config(checkpoint: dict, path: Path) -> bool:
    try:
        return stored_config(checkpoint, path) is not None
    except ConfigError:
        return False
