"""Config values: every key fed bad values through the checks a run makes before it starts (the
loader's, the run's and the model build's), and the cases users met.

Each bad value is either refused with one ConfigError line naming the key, or accepted; what
was accepted then builds the model, its optimizer, schedule, mixup and training augmentation,
and takes a training step and a test forward pass, so a value the loader lets through does not
fail later in PyTorch.
"""

from pathlib import Path

import pytest
import torch

from revvideo.config import ConfigError, get_cfg, load_config, validate_config
from revvideo.config.validate import _rules, config_items
from revvideo.data import SoftTargets, build_dataset
from revvideo.data.build import _train_augmentation
from revvideo.engine.optim import WarmupCosineSchedule, build_optimizer
from revvideo.engine.run import check_config
from revvideo.engine.train import soft_target_cross_entropy
from revvideo.models import build_model

ROOT = Path(__file__).resolve().parents[1]
QUICK_START = ROOT / "configs" / "synthetic" / "REV_MVIT_XS.yaml"

# A Rev-MViT of 2 layers (a reversible block, then a stage transition) on 2-frame 16 px clips,
# with every augmentation on, so that each key is read by what the test builds.
TINY = {
    "MODEL.NUM_CLASSES": "3",
    "DATA.NUM_FRAMES": "2",
    "DATA.TRAIN_CROP_SIZE": "16",
    "DATA.TEST_CROP_SIZE": "16",
    "DATA.TRAIN_JITTER_SCALES": "[16, 20]",
    "MVIT.CLS_EMBED_ON": "False",
    "MVIT.DEPTH": "2",
    "MVIT.EMBED_DIM": "16",
    "MVIT.PATCH_PADDING": "[1, 3, 3]",
    "MVIT.DIM_MUL": "[[1, 2.0]]",
    "MVIT.HEAD_MUL": "[[1, 2.0]]",
    "MVIT.POOL_Q_STRIDE": "[[1, 1, 2, 2]]",
    "MVIT.POOL_KV_STRIDE_ADAPTIVE": "[1, 2, 2]",
    "MVIT.POOL_KVQ_KERNEL": "[3, 3, 3]",
    "MVIT.REV.ENABLE": "True",
    "MVIT.REV.BUFFER_LAYERS": "[1]",
    "AUG.ENABLE": "True",
    "MIXUP.ENABLE": "True",
    "SOLVER.WARMUP_EPOCHS": "1.0",
    "SOLVER.MAX_EPOCH": "2",
}
TINY_OPTS = [item for pair in TINY.items() for item in pair]

# Bad values, as they would be typed on the command line (parsed as YAML): a wrong type, a
# negative, zero, NaN, empty (a string, null, a list), and lists holding those.
BAD_VALUES = ["x", "-1", "0", ".nan", "''", "null", "[]", "[-1]", "[0]", "[.nan]", "[x]", "{A: 1}"]

KEYS = [key for key, _ in config_items(get_cfg())]


def test_every_key_has_a_rule():
    assert set(_rules()) == set(KEYS)


def checked(cfg_file, opts):
    """The config a run starts with: loaded, checked, and its model built (the model's check)."""
    cfg = load_config(cfg_file, opts)
    check_config(cfg)
    classes = cfg.MODEL.NUM_CLASSES
    cfg.MODEL.NUM_CLASSES = classes or 3  # 0: the engine sets it from the dataset
    with torch.device("meta"):
        build_model(cfg)
    cfg.MODEL.NUM_CLASSES = classes
    return cfg


def exercise(cfg):
    """What training and testing build from `cfg`, and one step of each."""
    if cfg.MODEL.NUM_CLASSES == 0:
        cfg.MODEL.NUM_CLASSES = 3  # the engine sets it from the dataset
    torch.manual_seed(0)
    model = build_model(cfg)
    optimizer = build_optimizer(model, cfg)
    schedule = WarmupCosineSchedule.from_cfg(optimizer, cfg, steps_per_epoch=2)
    augment = _train_augmentation(cfg)
    frames = torch.randint(0, 256, (cfg.DATA.NUM_FRAMES, 3, 24, 32), dtype=torch.uint8)
    video = torch.stack([augment(frames), augment(frames)])
    video, target = SoftTargets.from_cfg(cfg)(video, torch.tensor([0, 1]))
    loss = soft_target_cross_entropy(model(video), target)
    loss.backward()
    optimizer.step()
    schedule.step()
    assert torch.isfinite(loss)
    size = cfg.DATA.TEST_CROP_SIZE
    with torch.no_grad():
        logits = model.eval()(torch.randn(1, 3, cfg.DATA.NUM_FRAMES, size, size))
    assert logits.shape == (1, cfg.MODEL.NUM_CLASSES) and torch.isfinite(logits).all()


def test_tiny_config_trains():
    exercise(checked(None, TINY_OPTS))


@pytest.mark.parametrize("key", KEYS)
def test_bad_values_are_one_line_config_errors_or_work(key):
    accepted = []
    for text in BAD_VALUES:
        try:
            cfg = checked(None, [*TINY_OPTS, key, text])
        except ConfigError as err:
            message = str(err)
            assert "\n" not in message and key in message, (text, message)
        else:
            accepted.append(text)
            exercise(cfg)
    # Only keys whose bad values include a legal one (0, an empty path, no clipping...) get here.
    assert len(accepted) < len(BAD_VALUES)


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (["MVIT.EMBED_DIM", "-8"], r"^MVIT\.EMBED_DIM must be positive, got -8$"),
        (["SOLVER.BASE_LR", ".nan"], r"SOLVER\.BASE_LR in the command line must be a finite"),
        (["DATA_LOADER.NUM_WORKERS", "-1"], r"^DATA_LOADER\.NUM_WORKERS must not be negative"),
        (["MVIT.NUM_HEADS", "0"], r"^MVIT\.NUM_HEADS must be positive, got 0$"),
        (
            ["MVIT.NUM_HEADS", "3"],
            r"^MVIT\.EMBED_DIM 32 must be a multiple of MVIT\.NUM_HEADS 3$",
        ),
        (
            [
                *("DATA.TRAIN_CROP_SIZE", "4", "DATA.TRAIN_JITTER_SCALES", "[4, 8]"),
                *("MVIT.PATCH_PADDING", "[1, 1, 1]"),
            ],
            r"DATA\.TRAIN_CROP_SIZE 4 is smaller than MVIT\.PATCH_KERNEL \[3, 7, 7\]",
        ),
        (["DATA.TEST_CROP_SIZE", "0"], r"^DATA\.TEST_CROP_SIZE must be positive"),
        (
            ["MVIT.DEPTH", "3"],
            r"^MVIT\.DIM_MUL names layer 3, but the model has layers 0 to 2 \(MVIT\.DEPTH 3\)$",
        ),
        (
            ["MVIT.POOL_KV_STRIDE", "[[9, 1, 2, 2]]"],
            r"^MVIT\.POOL_KV_STRIDE names layer 9, .* \(MVIT\.DEPTH 5\)$",
        ),
        (["MVIT.REV.BUFFER_LAYERS", "[1, 5]"], r"^MVIT\.REV\.BUFFER_LAYERS names layer 5"),
        (
            ["MVIT.REV.BUFFER_LAYERS", "[1]"],
            r"layer 3 pools Q .* list it in MVIT\.REV\.BUFFER_LAYERS$",
        ),
        (
            ["MVIT.REV.ENABLE", "False", "MVIT.HEAD_MUL", "[[0, 3.0]]"],
            r"^layer 0's attention is 32 channels wide, not a multiple of its 3 heads: .*"
            r"MVIT\.HEAD_MUL",
        ),
        (
            ["MVIT.PATCH_STRIDE", "[4, 4]"],
            r"^MVIT\.PATCH_STRIDE must be \(T, H, W\), got \[4, 4\]$",
        ),
        (
            ["MVIT.PATCH_2D", "True"],
            r"^MVIT\.PATCH_KERNEL must be \(H, W\) with MVIT\.PATCH_2D, got \[3, 7, 7\]$",
        ),
        (
            [
                *("MVIT.PATCH_2D", "True", "MVIT.PATCH_KERNEL", "[7, 7]"),
                *("MVIT.PATCH_STRIDE", "[4, 4]", "MVIT.PATCH_PADDING", "[3, 3]"),
            ],
            r"\(MVIT\.PATCH_2D\) embeds single images: set DATA\.NUM_FRAMES to 1, not 8$",
        ),
        (
            [
                *("MVIT.POOL_Q_STRIDE", "[[1, 1, 1, 1], [3, 1, 1, 1]]"),
                *("MVIT.POOL_KVQ_KERNEL", "[1, 1, 1]"),
            ],
            r"^MVIT\.REV\.RES_PATH 'conv' pools the residual with the Q pooling",
        ),
        (["MVIT.MODE", "mean"], r"MVIT\.MODE must be one of conv, avg, max, got 'mean'"),
        (["MVIT.REV.RESPATH_FUSE", "add"], r"MVIT\.REV\.RESPATH_FUSE must be one of concat, avg"),
        (["MVIT.REV.RES_PATH", "avg"], r"MVIT\.REV\.RES_PATH must be one of conv, max"),
        (["MVIT.REV.PRE_Q_FUSION", "sum"], r"MVIT\.REV\.PRE_Q_FUSION must be 'avg', 'concat'"),
        (["MVIT.CLS_EMBED_ON", "True"], r"MVIT\.CLS_EMBED_ON must be False"),
        (["MVIT.MLP_RATIO", "0.01"], r"MVIT\.MLP_RATIO 0\.01 leaves layer 0's MLP empty"),
        (["MVIT.MLP_RATIO", "1.0e+308"], r"layer 0 would be inf channels wide"),
        (["MVIT.DIM_MUL", "[[1, 1.0e+308]]"], r"MVIT\.DIM_MUL and MVIT\.HEAD_MUL make a width"),
        (["MVIT.DEPTH", "null"], r"MVIT\.DEPTH in the command line must be int .*got None"),
        (["MODEL.NUM_CLASSES", "-1"], r"MODEL\.NUM_CLASSES must not be negative"),
        (
            ["SOLVER.OPTIMIZING_METHOD", "sgd", "SOLVER.MOMENTUM", "0.0"],
            r"SOLVER\.NESTEROV needs a SOLVER\.MOMENTUM above 0",
        ),
        (["SOLVER.WEIGHT_DECAY", "-0.1"], r"SOLVER\.WEIGHT_DECAY must not be negative"),
        (["SOLVER.CLIP_GRAD_L2NORM", "0"], r"SOLVER\.CLIP_GRAD_L2NORM must be null or a positive"),
        (["TRAIN.ENABLE", "False", "TEST.ENABLE", "False"], r"nothing to do"),
    ],
)
def test_mistakes_users_made_are_named_before_a_run_starts(opts, message):
    with pytest.raises(ConfigError, match=message) as info:
        checked(QUICK_START, opts)
    assert "\n" not in str(info.value)


def test_a_batch_must_split_over_the_processes():
    cfg = load_config(QUICK_START)
    validate_config(cfg, world_size=4)
    with pytest.raises(ConfigError, match=r"TRAIN\.BATCH_SIZE 16 .* all 3 processes"):
        validate_config(cfg, world_size=3)


def test_configs_made_in_code_are_validated_where_they_are_used():
    cfg = get_cfg()
    cfg.MODEL.NUM_CLASSES = 3
    cfg.MVIT.NUM_HEADS = 0
    with pytest.raises(ConfigError, match=r"MVIT\.NUM_HEADS must be positive"):
        build_model(cfg)
    cfg = get_cfg()
    cfg.DATA_LOADER.NUM_WORKERS = -1
    with pytest.raises(ConfigError, match=r"DATA_LOADER\.NUM_WORKERS must not be negative"):
        build_dataset(cfg, "train")
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = "0.1"
    with pytest.raises(ConfigError, match=r"config key SOLVER\.BASE_LR must be float"):
        validate_config(cfg)
    cfg = get_cfg()
    cfg.MVIT.DEPHT = 4
    with pytest.raises(ConfigError, match=r"unknown config key MVIT\.DEPHT; did you mean"):
        validate_config(cfg)
