"""The model registry: `MODEL.MODEL_NAME` names a class with a `from_cfg(cfg)` constructor."""

from typing import Any

from fvcore.common.config import CfgNode
from fvcore.common.registry import Registry
from torch import nn

from revvideo.config.validate import validate_config
from revvideo.models.common import LayerPlan, plan_layers
from revvideo.utils.errors import ConfigError

MODEL_REGISTRY = Registry("MODEL")
MODEL_REGISTRY.__doc__ = "Video models, keyed by MODEL.MODEL_NAME."


def build_model(cfg: CfgNode) -> nn.Module:
    """The model `cfg` describes; it maps `(B, 3, T, H, W)` clips to `(B, NUM_CLASSES)` logits.

    The config is validated first (it may have been made in code, or read from a checkpoint);
    that builds the model on the meta device, so what its constructor rejects is a ConfigError.
    """
    validate_config(cfg)
    if cfg.MODEL.NUM_CLASSES == 0:
        raise ConfigError(
            "MODEL.NUM_CLASSES is 0: set the number of classes (0 means the dataset's, which "
            "only tools/run_net.py can read)"
        )
    return MODEL_REGISTRY.get(model_name(cfg)).from_cfg(cfg)


def model_name(cfg: CfgNode) -> str:
    """The registry key of the model `cfg` describes: MODEL.MODEL_NAME, where PySlowFast's
    spelling is accepted ("MViT" with MVIT.REV.ENABLE is "RevMViT")."""
    name = cfg.MODEL.MODEL_NAME
    return "RevMViT" if name == "MViT" and cfg.MVIT.REV.ENABLE else name


def mvit_arguments(cfg: CfgNode) -> dict[str, Any]:
    """Constructor arguments shared by MViT and RevMViT, from the MVIT, DATA and MODEL keys."""
    return dict(
        num_frames=cfg.DATA.NUM_FRAMES,
        crop_size=cfg.DATA.TRAIN_CROP_SIZE,
        in_chans=cfg.DATA.INPUT_CHANNEL_NUM[0],
        embed_dim=cfg.MVIT.EMBED_DIM,
        depth=cfg.MVIT.DEPTH,
        num_heads=cfg.MVIT.NUM_HEADS,
        mlp_ratio=cfg.MVIT.MLP_RATIO,
        qkv_bias=cfg.MVIT.QKV_BIAS,
        separate_qkv=cfg.MVIT.SEPARATE_QKV,
        drop_path_rate=cfg.MVIT.DROPPATH_RATE,
        dropout_rate=cfg.MVIT.DROPOUT_RATE,
        head_dropout_rate=cfg.MODEL.DROPOUT_RATE,
        patch_kernel=tuple(cfg.MVIT.PATCH_KERNEL),
        patch_stride=tuple(cfg.MVIT.PATCH_STRIDE),
        patch_padding=tuple(cfg.MVIT.PATCH_PADDING),
        patch_2d=cfg.MVIT.PATCH_2D,
        sep_pos_embed=cfg.MVIT.SEP_POS_EMBED,
        dim_mul=cfg.MVIT.DIM_MUL,
        head_mul=cfg.MVIT.HEAD_MUL,
        pool_q_stride=cfg.MVIT.POOL_Q_STRIDE,
        pool_kv_stride=cfg.MVIT.POOL_KV_STRIDE,
        pool_kv_stride_adaptive=cfg.MVIT.POOL_KV_STRIDE_ADAPTIVE,
        pool_kvq_kernel=cfg.MVIT.POOL_KVQ_KERNEL,
        pool_mode=cfg.MVIT.MODE,
    )


# The mvit_arguments that decide each layer's width, heads and pooling (plan_layers' own).
_PLAN_ARGUMENTS = (
    "depth",
    "embed_dim",
    "num_heads",
    "dim_mul",
    "head_mul",
    "pool_q_stride",
    "pool_kv_stride",
    "pool_kv_stride_adaptive",
    "pool_kvq_kernel",
    "drop_path_rate",
)


def layer_plans(cfg: CfgNode, *, width_change_in_attention: bool) -> list[LayerPlan]:
    """The per-layer widths, heads and pooling that `cfg` gives an MViT (see plan_layers)."""
    arguments = mvit_arguments(cfg)
    return plan_layers(
        **{argument: arguments[argument] for argument in _PLAN_ARGUMENTS},
        width_change_in_attention=width_change_in_attention,
    )
