"""Every config key revvideo reads, with its default and meaning.

Names follow PySlowFast so its YAML files load here; where both define a key, the default is
PySlowFast's, so the same YAML builds the same model. Keys PySlowFast has and revvideo does not
use are listed in `IGNORED_KEYS` (accepted with a warning); any other unknown key is an error.
"""

from fvcore.common.config import CfgNode

_C = CfgNode()

# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
_C.MODEL = CfgNode()
# Registry key of the model class: "MViT" (PySlowFast's name; reversible when MVIT.REV.ENABLE).
_C.MODEL.MODEL_NAME = "MViT"
_C.MODEL.NUM_CLASSES = 400
# Dropout before the classification layer.
_C.MODEL.DROPOUT_RATE = 0.5

# ---------------------------------------------------------------------------------------------
# Input geometry (the data pipeline adds its own keys to this node)
# ---------------------------------------------------------------------------------------------
_C.DATA = CfgNode()
# Frames per clip given to the model.
_C.DATA.NUM_FRAMES = 8
# Side of the square crop used for training; the model's position embeddings are sized for it.
_C.DATA.TRAIN_CROP_SIZE = 224
# Input channels per pathway (PySlowFast keeps a list; revvideo models have one pathway).
_C.DATA.INPUT_CHANNEL_NUM = [3]

# ---------------------------------------------------------------------------------------------
# Multiscale Vision Transformer (MViT v1) and its reversible variants
# ---------------------------------------------------------------------------------------------
_C.MVIT = CfgNode()
_C.MVIT.DEPTH = 16
_C.MVIT.EMBED_DIM = 96
_C.MVIT.NUM_HEADS = 1
_C.MVIT.MLP_RATIO = 4.0
_C.MVIT.QKV_BIAS = True
# Stochastic depth, rising linearly from 0 at the first block to this value at the last.
_C.MVIT.DROPPATH_RATE = 0.1
# Dropout after the position embedding, the attention projection and the backbone.
_C.MVIT.DROPOUT_RATE = 0.0
# Patch embedding Conv3d (T, H, W); a temporal kernel and stride of 1 embed single images.
_C.MVIT.PATCH_KERNEL = [3, 7, 7]
_C.MVIT.PATCH_STRIDE = [2, 4, 4]
_C.MVIT.PATCH_PADDING = [2, 4, 4]
# Pooling operator for Q, K, V: "conv" (depthwise Conv3d + LayerNorm), "avg" or "max".
_C.MVIT.MODE = "conv"
# A class token (non-reversible MViT only; the reversible models pool by averaging).
_C.MVIT.CLS_EMBED_ON = True
# Separate spatial and temporal absolute position embeddings instead of one per token.
_C.MVIT.SEP_POS_EMBED = False
# [[layer, multiplier], ...]: channel width and number of heads multiply at these layers.
_C.MVIT.DIM_MUL = []
_C.MVIT.HEAD_MUL = []
# Pooling kernel for Q, K and V; None derives it from the stride (stride + 1 where stride > 1).
_C.MVIT.POOL_KVQ_KERNEL = None
# [[layer, s_t, s_h, s_w], ...]: Q pooling strides (the stage transitions).
_C.MVIT.POOL_Q_STRIDE = []
# [[layer, s_t, s_h, s_w], ...]: K/V pooling strides; ignored when POOL_KV_STRIDE_ADAPTIVE is set.
_C.MVIT.POOL_KV_STRIDE = []
# K/V stride of the first layer, divided by each Q stride met, so K/V keep a constant size.
_C.MVIT.POOL_KV_STRIDE_ADAPTIVE = None
# Three Linear layers (q, k, v) instead of one fused qkv Linear.
_C.MVIT.SEPARATE_QKV = False

_C.MVIT.REV = CfgNode()
# Build the reversible model (Rev-MViT, or Rev-ViT when there is no pooling).
_C.MVIT.REV.ENABLE = False
# How the two streams meet the head: "concat" (LayerNorm over 2C) or "avg"/"add"/"max"/"min".
_C.MVIT.REV.RESPATH_FUSE = "concat"
# Layers that are stage transitions (Q pooling, width change) instead of reversible blocks.
_C.MVIT.REV.BUFFER_LAYERS = []
# Residual path of a stage transition: "conv" (the block's own Q-pooling conv) or "max".
_C.MVIT.REV.RES_PATH = "conv"
# How the two streams are fused before a stage transition: "avg" or "concat".
_C.MVIT.REV.PRE_Q_FUSION = "avg"
# Recompute activations in backward instead of storing them; False trains the same model with
# ordinary autograd (same masks, same gradients; for checking and debugging).
_C.MVIT.REV.CUSTOM_BACKWARD = True
# Stage transitions keep only their input and recompute the rest in backward.
_C.MVIT.REV.RECOMPUTE_TRANSITIONS = True


# PySlowFast keys that revvideo accepts in a YAML file but does not use, with the reason shown
# to the user. Anything else unknown is an error.
IGNORED_KEYS = {
    "MODEL.ARCH": "the architecture follows MODEL.MODEL_NAME and MVIT.REV.ENABLE",
    "MVIT.NORM": "revvideo's MViT always uses LayerNorm(eps=1e-6)",
    "MVIT.USE_ABS_POS": "MViT v1 always uses absolute position embeddings",
}


def get_cfg() -> CfgNode:
    """A fresh copy of the defaults."""
    return _C.clone()
