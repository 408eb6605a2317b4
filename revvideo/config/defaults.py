"""Every config key revvideo reads, with its default and meaning.

Names follow PySlowFast so its YAML files load here. Where both define a key the default is
PySlowFast's, so the same YAML builds the same model, except for MODEL.MODEL_NAME ("MViT", not
"SlowFast": MViT is the only family here), MODEL.NUM_CLASSES (0, not 400: the dataset's
classes) and DATA.INPUT_CHANNEL_NUM ([3], not [3, 3]: one pathway), and two that leave the model
alone: DATA.DECODING_BACKEND ("pyav", not "torchvision", which is read as "pyav") and OUTPUT_DIR
("output", not "."). `IGNORED_KEYS` lists only the keys PySlowFast's MViT and Rev configs set
that revvideo does not use (accepted with a warning); any other unknown key, PySlowFast's
included, is an error.
"""

from fvcore.common.config import CfgNode

_C = CfgNode()

# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
_C.MODEL = CfgNode()
# Registry key of the model class: "MViT" (PySlowFast's name, reversible when MVIT.REV.ENABLE)
# or "RevMViT".
_C.MODEL.MODEL_NAME = "MViT"
# Classes the model scores; 0: the training dataset's (its classnames.json or class folders),
# or the tested checkpoint's when only testing. A value that disagrees with a dataset that
# names its classes is an error.
_C.MODEL.NUM_CLASSES = 0
# Dropout before the classification layer.
_C.MODEL.DROPOUT_RATE = 0.5
# Compile the reversible blocks' F and G branches and the stage transitions' G with
# torch.compile for training (same masks and gradients as eager; other models are unchanged).
# Off until a GPU shows it pays for its compile time.
_C.MODEL.COMPILE = False

# ---------------------------------------------------------------------------------------------
# Data: where the videos are, how clips are cut from them, the model's input and test views
# ---------------------------------------------------------------------------------------------
_C.DATA = CfgNode()
# Frames per clip given to the model.
_C.DATA.NUM_FRAMES = 8
# Side of the square crop used for training; the model's position embeddings are sized for it.
_C.DATA.TRAIN_CROP_SIZE = 224
# Input channels per pathway (a list in PySlowFast): [3], the RGB frames of the one pathway.
_C.DATA.INPUT_CHANNEL_NUM = [3]
# Folder holding train.csv, val.csv and test.csv (lines `path label`, label a class index), or
# train/, val/ and test/ folders of `class_name/video` files (classes numbered in sorted order).
_C.DATA.PATH_TO_DATA_DIR = ""
# Separator between path and label in the CSVs; lines are split on its last occurrence, and " "
# also splits on tabs.
_C.DATA.PATH_LABEL_SEPARATOR = " "
# Prepended to relative video paths in the CSVs; when empty they are relative to the CSV's folder.
_C.DATA.PATH_PREFIX = ""
# Video decoder: "pyav" or "decord" ("torchvision", PySlowFast's name, is read as "pyav").
_C.DATA.DECODING_BACKEND = "pyav"
# A clip takes one frame every SAMPLING_RATE frames of the video resampled to TARGET_FPS, so it
# spans NUM_FRAMES * SAMPLING_RATE / TARGET_FPS seconds whatever the file's own frame rate.
_C.DATA.SAMPLING_RATE = 8
_C.DATA.TARGET_FPS = 30
# Training scale jitter: the short side is resized to a random size in [min, max] before a random
# TRAIN_CROP_SIZE crop. Unused when TRAIN_JITTER_SCALES_RELATIVE is set (a random resized crop
# does not depend on the frame's scale).
_C.DATA.TRAIN_JITTER_SCALES = [256, 320]
# Random resized crop (Inception style) for training: [min, max] fraction of the frame's area and
# [min, max] aspect ratio of the crop, which is then resized to TRAIN_CROP_SIZE. Empty: scale
# jitter and a plain random crop instead.
_C.DATA.TRAIN_JITTER_SCALES_RELATIVE = []
_C.DATA.TRAIN_JITTER_ASPECT_RELATIVE = []
# Validation and test: the short side is resized to TEST_CROP_SIZE and square crops of that size
# are taken (TEST.NUM_SPATIAL_CROPS of them along the long side).
_C.DATA.TEST_CROP_SIZE = 256
# Per-channel (RGB) mean and standard deviation of pixel values in [0, 1], for normalisation.
_C.DATA.MEAN = [0.45, 0.45, 0.45]
_C.DATA.STD = [0.225, 0.225, 0.225]
# Random horizontal flip of training clips.
_C.DATA.RANDOM_FLIP = True
# How the softmax scores of a video's views combine: "sum" or "max".
_C.DATA.ENSEMBLE_METHOD = "sum"
# Generate revvideo's synthetic motion dataset (revvideo.data.synthetic, always the same videos)
# into DATA.PATH_TO_DATA_DIR on first use.
_C.DATA.GENERATE_SYNTHETIC = False
# Imbalanced classes: "none", "sampler" (each class drawn equally often) or "loss" (weighted).
_C.DATA.CLASS_BALANCE = "none"

# ---------------------------------------------------------------------------------------------
# Multiscale Vision Transformer (MViT v1) and its reversible variants
# ---------------------------------------------------------------------------------------------
_C.MVIT = CfgNode()
# Layers; the width of the first ones (a multiple of NUM_HEADS) and their heads, which DIM_MUL
# and HEAD_MUL multiply further on.
_C.MVIT.DEPTH = 16
_C.MVIT.EMBED_DIM = 96
_C.MVIT.NUM_HEADS = 1
# Hidden width of each MLP, as a multiple of its layer's width.
_C.MVIT.MLP_RATIO = 4.0
# Biases in the q, k, v projections.
_C.MVIT.QKV_BIAS = True
# Stochastic depth, rising linearly from 0 at the first block to this value at the last.
_C.MVIT.DROPPATH_RATE = 0.1
# Dropout after the position embedding, in the attention projection and the MLPs, and (the
# reversible models) after the backbone.
_C.MVIT.DROPOUT_RATE = 0.0
# Patch embedding Conv3d (T, H, W); a temporal kernel and stride of 1 embed single images.
_C.MVIT.PATCH_KERNEL = [3, 7, 7]
_C.MVIT.PATCH_STRIDE = [2, 4, 4]
_C.MVIT.PATCH_PADDING = [2, 4, 4]
# A Conv2d patch embedding for images (PySlowFast's ImageNet models): PATCH_KERNEL, PATCH_STRIDE
# and PATCH_PADDING are then (H, W) and DATA.NUM_FRAMES is 1.
_C.MVIT.PATCH_2D = False
# Pooling operator for Q, K, V: "conv" (depthwise Conv3d + LayerNorm), "avg" or "max".
_C.MVIT.MODE = "conv"
# A class token, which the head reads (MViT only: False for the reversible models, which
# average the tokens).
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
# No weight decay on the position embeddings and the class token.
_C.MVIT.ZERO_DECAY_POS_CLS = True

_C.MVIT.REV = CfgNode()
# Build the reversible model (Rev-MViT, or Rev-ViT when there is no pooling).
_C.MVIT.REV.ENABLE = False
# How the two streams meet the head: "concat" (LayerNorm over 2C) or "avg" (over C).
_C.MVIT.REV.RESPATH_FUSE = "concat"
# Layers that are stage transitions (Q pooling, width change) instead of reversible blocks.
_C.MVIT.REV.BUFFER_LAYERS = []
# Residual path of a stage transition: "conv" (the block's own Q-pooling conv) or "max".
_C.MVIT.REV.RES_PATH = "conv"
# How the two streams are fused before a stage transition: "avg", "concat", or
# "concat_linear[_M[_P]]" (concatenated plus an MLP of them, hidden width M x, dropout P).
_C.MVIT.REV.PRE_Q_FUSION = "avg"
# Recompute activations in backward instead of storing them; False trains the same model with
# ordinary autograd (same masks, same gradients; for checking and debugging).
_C.MVIT.REV.CUSTOM_BACKWARD = True
# Stage transitions keep only their input and recompute the rest in backward.
_C.MVIT.REV.RECOMPUTE_TRANSITIONS = True
# Layers that keep their activations for backward instead of recomputing them: each one listed
# skips its share of the recompute (the fourth pass) for memory. Deep layers keep the least
# (tokens are pooled 4x per stage while the width doubles): e.g. [4, 5, ..., 13, 15], Rev-MViT-B's
# third and fourth stages, where a memory budget leaves room. "auto" (CUDA, training): before
# training, as many of the deepest layers as fit in what the batch leaves of the GPU's memory
# (revvideo.engine.memory_fit); the list chosen is saved with the run.
_C.MVIT.REV.STORED_LAYERS = []
# On CUDA, recompute each step of the custom backward on a side stream while the step before it
# is backpropagated (PaReprop): the same gradients, one more step's activations in memory.
# Off until a GPU shows it is faster.
_C.MVIT.REV.OVERLAP_RECOMPUTE = False


# ---------------------------------------------------------------------------------------------
# Data pipeline: augmentation, mixup and loaders
# ---------------------------------------------------------------------------------------------
_C.AUG = CfgNode()
# RandAugment (or colour jitter when AA_TYPE is empty) and random erasing on training clips.
_C.AUG.ENABLE = False
# Repeated augmentation: clips cut from each decoded training video, each augmented on its own;
# a batch holds TRAIN.BATCH_SIZE * NUM_SAMPLE clips.
_C.AUG.NUM_SAMPLE = 1
# Brightness, contrast and saturation jitter strength, used only when AA_TYPE is empty.
_C.AUG.COLOR_JITTER = 0.4
# RandAugment as "rand-m<magnitude>[-n<ops per clip>][-mstd<magnitude std>][-inc1]" (timm's
# notation; n defaults to 2); the same operations hit every frame of a clip. Empty: colour jitter.
_C.AUG.AA_TYPE = "rand-m9-mstd0.5-inc1"
# Resampling filter of the random resized crop: "bilinear" or "bicubic".
_C.AUG.INTERPOLATION = "bicubic"
# Probability of random erasing; the erased box is the same in every frame of a clip.
_C.AUG.RE_PROB = 0.25
# Random erasing fill: "pixel" (per-pixel normal noise) or "const" (zero, the mean colour).
_C.AUG.RE_MODE = "pixel"
# Random erasing draws 1 to RE_COUNT boxes, sharing the erased area between them.
_C.AUG.RE_COUNT = 1

_C.MIXUP = CfgNode()
# Mixup / CutMix on training batches (revvideo.data.SoftTargets, applied by the train loop).
_C.MIXUP.ENABLE = False
# Beta(ALPHA, ALPHA) mixup weight; 0 disables mixup.
_C.MIXUP.ALPHA = 0.8
# Beta(CUTMIX_ALPHA, CUTMIX_ALPHA) cutmix area; 0 disables cutmix.
_C.MIXUP.CUTMIX_ALPHA = 1.0
# Probability that a batch is mixed at all.
_C.MIXUP.PROB = 1.0
# Probability of cutmix rather than mixup when both are enabled.
_C.MIXUP.SWITCH_PROB = 0.5
# Label smoothing of the soft targets, also applied when mixup is disabled.
_C.MIXUP.LABEL_SMOOTH_VALUE = 0.1

_C.DATA_LOADER = CfgNode()
# Worker processes per loader (0 decodes in the main process: a decoder crash then ends it).
_C.DATA_LOADER.NUM_WORKERS = 8
# Pin batches in page-locked memory (only when CUDA is available).
_C.DATA_LOADER.PIN_MEMORY = True
# Let each decoder use several threads; worth it only with fewer workers than cores.
_C.DATA_LOADER.ENABLE_MULTI_THREAD_DECODE = False


# ---------------------------------------------------------------------------------------------
# Training and evaluation engine (revvideo.engine, tools/run_net.py)
# ---------------------------------------------------------------------------------------------
# Where the run writes its config, log.jsonl, tensorboard/, checkpoints/, plots and test results.
_C.OUTPUT_DIR = "output"
# Seed of process `rank` is RNG_SEED + rank; the initial weights come from RNG_SEED on every rank.
# A training video's clip and augmentation in an epoch come from (RNG_SEED, epoch, video).
_C.RNG_SEED = 1
# A progress line in log.jsonl (and tensorboard) every LOG_PERIOD optimizer steps.
_C.LOG_PERIOD = 10

_C.TRAIN = CfgNode()
# Videos per training batch over all processes (each rank loads BATCH_SIZE / world size), or
# "auto" (CUDA only): before training, the largest batch each GPU holds is searched for and
# ACCUMULATION_STEPS set so that a step sees GLOBAL_BATCH_SIZE videos
# (revvideo.engine.memory_fit).
_C.TRAIN.BATCH_SIZE = 64
# With BATCH_SIZE auto: the videos per optimizer step over all processes (the recipe's batch;
# a smaller training set is taken whole); 0 takes SOLVER.BASE_LR_BATCH_SIZE. Unused with a
# numeric BATCH_SIZE.
_C.TRAIN.GLOBAL_BATCH_SIZE = 0
# Train the model (and then test it if TEST.ENABLE); False only tests.
_C.TRAIN.ENABLE = True
# Validation top-1 (the val split, one centre clip per video) every EVAL_PERIOD epochs and after
# the last epoch.
_C.TRAIN.EVAL_PERIOD = 10
# A checkpoint in OUTPUT_DIR/checkpoints every CHECKPOINT_PERIOD epochs and after the last epoch.
_C.TRAIN.CHECKPOINT_PERIOD = 10
# Continue from the newest checkpoint in OUTPUT_DIR/checkpoints when there is one.
_C.TRAIN.AUTO_RESUME = True
# Weights to start training from (fine-tuning) when there is no checkpoint to resume: a file or
# a release name such as rev_mvit_b_16x4_k400. Every tensor that fits is loaded; a head for
# another number of classes is re-initialised and position embeddings are resized to the
# frame count and crop size. Epochs, optimizer and schedule start afresh.
_C.TRAIN.CHECKPOINT_FILE_PATH = ""
# Mixed precision: bf16 autocast on the CPU; on CUDA bf16 where the GPU supports it, otherwise
# fp16 with a gradient scaler.
_C.TRAIN.MIXED_PRECISION = False
# Batches whose gradients add up before each optimizer step: a step sees BATCH_SIZE x
# ACCUMULATION_STEPS videos. Batches left over at the end of an epoch are not used.
_C.TRAIN.ACCUMULATION_STEPS = 1

_C.TEST = CfgNode()
# Clips per validation/test batch over all processes; a batch holds whole videos (all views).
_C.TEST.BATCH_SIZE = 8
# Temporal clips per test video, evenly spread: the first starts at 0, the last ends at the end.
_C.TEST.NUM_ENSEMBLE_VIEWS = 10
# Spatial crops per clip, spread evenly along the long side from one end to the other: 1 is
# the centre crop, 3 both ends and the centre.
_C.TEST.NUM_SPATIAL_CROPS = 3
# Run the multi-view test after training (or alone when TRAIN.ENABLE is False).
_C.TEST.ENABLE = True
# Weights to test (a file or a release name such as rev_mvit_b_16x4_k400); empty: the model
# just trained, or else the newest checkpoint of OUTPUT_DIR.
_C.TEST.CHECKPOINT_FILE_PATH = ""
# The model's classes are matched to the test dataset's by name; when the two sets differ the
# test stops, unless this is True: then only the classes both know are scored (videos of other
# classes are listed as unscored).
_C.TEST.SHARED_CLASSES_ONLY = False

_C.SOLVER = CfgNode()
# "adamw" or "sgd" (with MOMENTUM and NESTEROV).
_C.SOLVER.OPTIMIZING_METHOD = "sgd"
# The cosine's starting rate: reached at the end of the warmup with COSINE_AFTER_WARMUP True,
# or at the first step without a warmup. With COSINE_AFTER_WARMUP False and a warmup, the cosine
# starts at epoch 0 and the warmup ends on its value at WARMUP_EPOCHS, between COSINE_END_LR
# and BASE_LR.
_C.SOLVER.BASE_LR = 0.1
# BASE_LR, WARMUP_START_LR and COSINE_END_LR are the rates for a global batch of this many
# videos and scale linearly with the actual one (TRAIN.BATCH_SIZE x TRAIN.ACCUMULATION_STEPS);
# 0 uses them as written.
_C.SOLVER.BASE_LR_BATCH_SIZE = 0
# Learning rate schedule (PySlowFast's key, which names several there): "cosine", the only one
# here, so nothing reads the key but validation, which accepts only "cosine". The rate is set
# every optimizer step: linear warmup, then cosine.
_C.SOLVER.LR_POLICY = "cosine"
# Learning rate at the end of the cosine.
_C.SOLVER.COSINE_END_LR = 0.0
# The cosine starts at the peak when the warmup ends (True), or spans all epochs with the
# warmup rising to its value at WARMUP_EPOCHS (False).
_C.SOLVER.COSINE_AFTER_WARMUP = False
# Linear warmup from WARMUP_START_LR over this many (possibly fractional) epochs.
_C.SOLVER.WARMUP_EPOCHS = 0.0
_C.SOLVER.WARMUP_START_LR = 0.01
# Epochs of training.
_C.SOLVER.MAX_EPOCH = 300
# Weight decay (decoupled for AdamW).
_C.SOLVER.WEIGHT_DECAY = 1e-4
# No weight decay on 1-D parameters (biases, norm scales).
_C.SOLVER.ZERO_WD_1D_PARAM = False
# Layer-wise learning-rate decay for fine-tuning (MViTv2, MAE, BEiT), in (0, 1]: the rate of a
# parameter is multiplied by LAYER_DECAY ** (L + 1 - layer), where the patch embedding, position
# embeddings and class token are layer 0, block i is layer i + 1 and the final norm and head are
# layer L + 1 (L blocks), so pretrained early layers move least. 1.0: every layer alike.
_C.SOLVER.LAYER_DECAY = 1.0
# Learning-rate multiplier for the classification layer (head.projection), on top of
# LAYER_DECAY: fine-tuning re-initialises it, so it learns from scratch next to a pretrained
# backbone (10 is usual). 1.0: no special treatment.
_C.SOLVER.HEAD_LR_MULT = 1.0
# SGD momentum and Nesterov (unused by AdamW).
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.NESTEROV = True
# Gradient clipping before each step: each value to [-CLIP_GRAD_VAL, CLIP_GRAD_VAL], then the
# global L2 norm to CLIP_GRAD_L2NORM; None: no clipping.
_C.SOLVER.CLIP_GRAD_VAL = None
_C.SOLVER.CLIP_GRAD_L2NORM = None


# PySlowFast keys that revvideo accepts in a YAML file but does not use, with the reason shown
# to the user. Anything else unknown is an error.
IGNORED_KEYS = {
    "MODEL.ARCH": "the architecture follows MODEL.MODEL_NAME and MVIT.REV.ENABLE",
    "MVIT.NORM": "revvideo's MViT always uses LayerNorm(eps=1e-6)",
    "MVIT.USE_ABS_POS": "MViT v1 always uses absolute position embeddings",
    "DATA.USE_OFFSET_SAMPLING": "test clips always span the whole video (PySlowFast's offset sampling)",
    "DATA.INV_UNIFORM_SAMPLE": "the training short side is drawn uniformly from TRAIN_JITTER_SCALES",
    "DATA.TRAIN_JITTER_MOTION_SHIFT": "the random resized crop is the same in every frame",
    "AUG.RE_SPLIT": "every repeated-augmentation clip is erased with probability AUG.RE_PROB",
    "NUM_GPUS": "torchrun starts one process per GPU (--nproc_per_node); one process uses the CPU",
    "NUM_SHARDS": "torchrun sets the number of nodes (--nnodes)",
    "SHARD_ID": "torchrun sets the node rank (--node_rank)",
    "DIST_BACKEND": "NCCL on CUDA, gloo on the CPU",
    "TRAIN.DATASET": "videos are listed in DATA.PATH_TO_DATA_DIR, whatever the dataset",
    "TEST.DATASET": "videos are listed in DATA.PATH_TO_DATA_DIR, whatever the dataset",
    "MODEL.LOSS_FUNC": "training always uses soft-target cross-entropy (mixup, label smoothing)",
    "SOLVER.BASE_LR_SCALE_NUM_SHARDS": "the learning rate follows the global batch "
    "(SOLVER.BASE_LR_BATCH_SIZE)",
    "BN": "revvideo's models have no batch norm",
    "LOG_MODEL_INFO": "the model's parameter count is always logged",
    "TENSORBOARD": "scalars always go to OUTPUT_DIR/tensorboard",
}
# PySlowFast's other sections (its other models, datasets and tools; BN and TENSORBOARD are
# ignored above). Setting one is an error like any unknown key, but no misspelling of a
# revvideo section: the error suggests no key of ours for it (DETECTION.ENABLE is not
# TEST.ENABLE).
PYSLOWFAST_SECTIONS = frozenset(
    {
        "AVA",
        "BENCHMARK",
        "CONTRASTIVE",
        "DEMO",
        "DETECTION",
        "MASK",
        "MULTIGRID",
        "NONLOCAL",
        "RESNET",
        "SLOWFAST",
        "VIS_MASK",
        "X3D",
    }
)


# The value of TRAIN.BATCH_SIZE and MVIT.REV.STORED_LAYERS that asks the engine to search the
# GPU's memory for it before training.
AUTO = "auto"
AUTO_KEYS = ("TRAIN.BATCH_SIZE", "MVIT.REV.STORED_LAYERS")


def get_cfg() -> CfgNode:
    """A fresh copy of the defaults."""
    return _C.clone()
