"""`validate_config(cfg)`: every value of a config checked before anything is built from it.

`load_config` calls it once the YAML files and the overrides are merged; `run`, `build_model`
and `build_dataset` call it again, for configs made in code. Each key is checked for its type,
then against its rule (a range, the names it may take, the shape of its list), then the keys
are checked against each other (the crops against the patch kernel, the warmup against the
epochs...). A mistake is a one-line ConfigError naming the key, so nothing reaches PyTorch, the
data pipeline or the optimizer that they would reject or quietly misread. What needs the data
(a batch larger than the training set, a class count that disagrees with the dataset's) is the
engine's to check once it has read the dataset.

The rules of a model's structure (the layers the MVIT keys name against the depth, the widths
against the heads, which layers must be stage transitions...) are the model's own: the
validator builds the model on the meta device (no weights) and reports the ValueError its
constructor raises, which names the config keys. Likewise the names a key may take come from
the modules that use them. Those are imported when first needed, not at the top: they import
torch, and through revvideo.checkpoint this package.
"""

import difflib
import functools
import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple, TypeVar

from fvcore.common.config import CfgNode

from revvideo.config.defaults import AUTO, AUTO_KEYS, PYSLOWFAST_SECTIONS, get_cfg
from revvideo.utils.errors import ConfigError

__all__ = ["check_type", "config_items", "unknown_key_error", "validate_config"]


class Rule(NamedTuple):
    """`test(value)` is True for a legal value; `expected` says what a legal value is."""

    test: Callable[[Any], bool]
    expected: str


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def _one_of(choices: Any) -> Rule:
    return Rule(lambda value: value in choices, f"must be one of {', '.join(map(str, choices))}")


def _sizes(minimum: int) -> Callable[[Any], bool]:
    return lambda value: all(_is_int(v) and v >= minimum for v in value)


def _range_pair(upper: float = math.inf, kind: Callable[[Any], bool] = _is_number) -> Callable:
    """[min, max] with 0 < min <= max <= upper."""
    return lambda value: (
        len(value) == 2 and all(map(kind, value)) and 0 < value[0] <= value[1] <= upper
    )


def _layer_entries(width: int, values: Callable[[list], bool]) -> Callable[[Any], bool]:
    """Lists of `width` numbers: a layer index, then values that satisfy `values`."""
    return lambda value: all(
        _is_list(entry)
        and len(entry) == width
        and _is_int(entry[0])
        and entry[0] >= 0
        and values(entry[1:])
        for entry in value
    )


# A key whose type is all there is to check (a switch, a path checked where it is used).
TYPE_ONLY = Rule(lambda value: True, "")
POSITIVE = Rule(lambda value: value > 0, "must be positive")
NON_NEGATIVE = Rule(lambda value: value >= 0, "must not be negative")
PROBABILITY = Rule(lambda value: 0 <= value <= 1, "must be a probability")
# Fractions that must stay below 1: dropout and drop-path rates (1 drops everything, and drop
# path then divides by zero), label smoothing (1 makes every target uniform), momentum (1 never
# forgets a gradient, so the steps grow without bound).
RATE = Rule(lambda value: 0 <= value < 1, "must be in [0, 1)")
NOT_EMPTY = Rule(bool, "must not be empty")
# The patch embedding's kernel, stride and padding (how many values each: PatchEmbed's rule).
PATCH_SIZES = Rule(_sizes(1), "must be a list of integers >= 1")
PATCH_PADDING = Rule(_sizes(0), "must be a list of integers >= 0")
# A pooling kernel or stride.
POOL_SIZES = Rule(
    lambda value: value is None or (_is_list(value) and len(value) == 3 and _sizes(1)(value)),
    "must be null or [t, h, w], integers >= 1",
)
MULTIPLIERS = Rule(
    _layer_entries(2, lambda rest: _is_number(rest[0]) and rest[0] > 0),
    "must be a list of [layer, multiplier] with multiplier > 0",
)
STRIDES = Rule(
    _layer_entries(4, lambda rest: all(_is_int(v) and v >= 1 for v in rest)),
    "must be a list of [layer, s_t, s_h, s_w], strides >= 1",
)
RGB = Rule(
    lambda value: len(value) == 3 and all(map(_is_number, value)), "must hold 3 values (RGB)"
)
LAYER_INDICES = Rule(
    lambda value: all(_is_int(v) and v >= 0 for v in value), "must be a list of layer indices"
)
CLIP = Rule(
    lambda value: value is None or (_is_number(value) and value > 0),
    "must be null or a positive number",
)


@functools.cache
def _rules() -> dict[str, Rule]:
    """The rule of every key of `get_cfg()`."""
    import torch

    from revvideo.data.build import BACKEND_ALIASES
    from revvideo.data.decoding import BACKENDS
    from revvideo.data.transforms import ERASE_MODES, INTERPOLATIONS, parse_rand_augment
    from revvideo.engine.metrics import ENSEMBLE_METHODS
    from revvideo.engine.optim import OPTIMIZERS
    from revvideo.models.common import POOL_MODES
    from revvideo.models.rev_mvit import FINAL_FUSIONS, RESIDUAL_PATHS, StreamFusion

    def rand_augment(value: str) -> bool:
        parse_rand_augment(value)  # a ConfigError naming AUG.AA_TYPE and the notation
        return True

    def stream_fusion(value: str) -> bool:
        try:
            with torch.device("meta"):  # the model's reading of the mode, without weights
                StreamFusion(value, 1)
        except ValueError:
            return False
        return True

    return {
        "MODEL.MODEL_NAME": NOT_EMPTY,  # and a registered model: see _check_model
        # 0: the dataset's number of classes (resolved by the engine).
        "MODEL.NUM_CLASSES": NON_NEGATIVE,
        "MODEL.DROPOUT_RATE": RATE,
        "MODEL.COMPILE": TYPE_ONLY,
        "DATA.NUM_FRAMES": POSITIVE,
        "DATA.TRAIN_CROP_SIZE": POSITIVE,
        "DATA.INPUT_CHANNEL_NUM": Rule(
            lambda value: list(value) == [3],
            "must be [3]: the data pipeline decodes RGB frames for one pathway",
        ),
        "DATA.PATH_TO_DATA_DIR": TYPE_ONLY,  # empty: the engine says what to put there
        "DATA.PATH_LABEL_SEPARATOR": NOT_EMPTY,
        "DATA.PATH_PREFIX": TYPE_ONLY,
        "DATA.DECODING_BACKEND": _one_of((*BACKENDS, *BACKEND_ALIASES)),
        "DATA.SAMPLING_RATE": POSITIVE,
        "DATA.TARGET_FPS": POSITIVE,
        "DATA.TRAIN_JITTER_SCALES": Rule(
            _range_pair(kind=_is_int), "must be [min, max] with 0 < min <= max"
        ),
        "DATA.TRAIN_JITTER_SCALES_RELATIVE": Rule(
            lambda value: not value or _range_pair(upper=1.0)(value),
            "must be [] or [min, max] with 0 < min <= max <= 1 (fractions of the frame's area)",
        ),
        "DATA.TRAIN_JITTER_ASPECT_RELATIVE": Rule(
            lambda value: not value or _range_pair()(value),
            "must be [] or [min, max] with 0 < min <= max",
        ),
        "DATA.TEST_CROP_SIZE": POSITIVE,
        "DATA.MEAN": RGB,
        "DATA.STD": Rule(
            lambda value: RGB.test(value) and min(value) > 0, "must hold 3 positive values (RGB)"
        ),
        "DATA.RANDOM_FLIP": TYPE_ONLY,
        "DATA.ENSEMBLE_METHOD": _one_of(ENSEMBLE_METHODS),
        "DATA.GENERATE_SYNTHETIC": TYPE_ONLY,
        "MVIT.DEPTH": POSITIVE,
        "MVIT.EMBED_DIM": POSITIVE,
        "MVIT.NUM_HEADS": POSITIVE,
        "MVIT.MLP_RATIO": POSITIVE,
        "MVIT.QKV_BIAS": TYPE_ONLY,
        "MVIT.DROPPATH_RATE": RATE,
        "MVIT.DROPOUT_RATE": RATE,
        "MVIT.PATCH_KERNEL": PATCH_SIZES,
        "MVIT.PATCH_STRIDE": PATCH_SIZES,
        "MVIT.PATCH_PADDING": PATCH_PADDING,
        "MVIT.PATCH_2D": TYPE_ONLY,
        "MVIT.MODE": _one_of(POOL_MODES),
        "MVIT.CLS_EMBED_ON": TYPE_ONLY,
        "MVIT.SEP_POS_EMBED": TYPE_ONLY,
        "MVIT.DIM_MUL": MULTIPLIERS,
        "MVIT.HEAD_MUL": MULTIPLIERS,
        "MVIT.POOL_KVQ_KERNEL": POOL_SIZES,
        "MVIT.POOL_Q_STRIDE": STRIDES,
        "MVIT.POOL_KV_STRIDE": STRIDES,
        "MVIT.POOL_KV_STRIDE_ADAPTIVE": POOL_SIZES,
        "MVIT.SEPARATE_QKV": TYPE_ONLY,
        "MVIT.ZERO_DECAY_POS_CLS": TYPE_ONLY,
        "MVIT.REV.ENABLE": TYPE_ONLY,
        "MVIT.REV.RESPATH_FUSE": _one_of(FINAL_FUSIONS),
        "MVIT.REV.BUFFER_LAYERS": LAYER_INDICES,
        "MVIT.REV.STORED_LAYERS": Rule(
            lambda value: value == AUTO or LAYER_INDICES.test(value),
            f"{LAYER_INDICES.expected} or auto",
        ),
        "MVIT.REV.RES_PATH": _one_of(RESIDUAL_PATHS),
        "MVIT.REV.PRE_Q_FUSION": Rule(stream_fusion, f"must be {StreamFusion.MODES}"),
        "MVIT.REV.CUSTOM_BACKWARD": TYPE_ONLY,
        "MVIT.REV.RECOMPUTE_TRANSITIONS": TYPE_ONLY,
        "MVIT.REV.OVERLAP_RECOMPUTE": TYPE_ONLY,
        "AUG.ENABLE": TYPE_ONLY,
        "AUG.NUM_SAMPLE": POSITIVE,
        "AUG.COLOR_JITTER": NON_NEGATIVE,
        "AUG.AA_TYPE": Rule(rand_augment, ""),
        "AUG.INTERPOLATION": _one_of(INTERPOLATIONS),
        "AUG.RE_PROB": PROBABILITY,
        "AUG.RE_MODE": _one_of(ERASE_MODES),
        "AUG.RE_COUNT": POSITIVE,
        "MIXUP.ENABLE": TYPE_ONLY,
        "MIXUP.ALPHA": NON_NEGATIVE,
        "MIXUP.CUTMIX_ALPHA": NON_NEGATIVE,
        "MIXUP.PROB": PROBABILITY,
        "MIXUP.SWITCH_PROB": PROBABILITY,
        "MIXUP.LABEL_SMOOTH_VALUE": RATE,
        "DATA_LOADER.NUM_WORKERS": NON_NEGATIVE,
        "DATA_LOADER.PIN_MEMORY": TYPE_ONLY,
        "DATA_LOADER.ENABLE_MULTI_THREAD_DECODE": TYPE_ONLY,
        "TRAIN.ENABLE": TYPE_ONLY,
        "TRAIN.BATCH_SIZE": Rule(
            lambda value: value == AUTO or value > 0, "must be positive or auto"
        ),
        "TRAIN.GLOBAL_BATCH_SIZE": NON_NEGATIVE,
        "TRAIN.EVAL_PERIOD": POSITIVE,
        "TRAIN.CHECKPOINT_PERIOD": POSITIVE,
        "TRAIN.AUTO_RESUME": TYPE_ONLY,
        "TRAIN.CHECKPOINT_FILE_PATH": TYPE_ONLY,
        "TRAIN.MIXED_PRECISION": TYPE_ONLY,
        "TRAIN.ACCUMULATION_STEPS": POSITIVE,
        "TEST.ENABLE": TYPE_ONLY,
        "TEST.BATCH_SIZE": POSITIVE,
        "TEST.NUM_ENSEMBLE_VIEWS": POSITIVE,
        "TEST.NUM_SPATIAL_CROPS": POSITIVE,
        "TEST.CHECKPOINT_FILE_PATH": TYPE_ONLY,
        "TEST.SHARED_CLASSES_ONLY": TYPE_ONLY,
        "SOLVER.OPTIMIZING_METHOD": Rule(
            lambda value: value.lower() in OPTIMIZERS, f"must be one of {', '.join(OPTIMIZERS)}"
        ),
        "SOLVER.BASE_LR": POSITIVE,
        "SOLVER.BASE_LR_BATCH_SIZE": NON_NEGATIVE,
        "SOLVER.LR_POLICY": _one_of(("cosine",)),
        "SOLVER.COSINE_END_LR": NON_NEGATIVE,
        "SOLVER.COSINE_AFTER_WARMUP": TYPE_ONLY,
        "SOLVER.WARMUP_EPOCHS": NON_NEGATIVE,
        "SOLVER.WARMUP_START_LR": NON_NEGATIVE,
        "SOLVER.MAX_EPOCH": POSITIVE,
        "SOLVER.WEIGHT_DECAY": NON_NEGATIVE,
        "SOLVER.ZERO_WD_1D_PARAM": TYPE_ONLY,
        "SOLVER.LAYER_DECAY": Rule(lambda value: 0 < value <= 1, "must be in (0, 1]"),
        "SOLVER.HEAD_LR_MULT": POSITIVE,
        "SOLVER.MOMENTUM": RATE,
        "SOLVER.NESTEROV": TYPE_ONLY,
        "SOLVER.CLIP_GRAD_VAL": CLIP,
        "SOLVER.CLIP_GRAD_L2NORM": CLIP,
        "OUTPUT_DIR": NOT_EMPTY,
        # [0, 2**32): what numpy's np.random.seed takes, as PySlowFast passes RNG_SEED to it
        # unchanged. The seeds derived from it (RNG_SEED + rank + 1000 x step) may pass 2**32:
        # seed_everything (revvideo.engine.train) gives numpy their remainder modulo 2**32, and
        # random and torch.manual_seed (64 bits) take them whole.
        "RNG_SEED": Rule(lambda value: 0 <= value < 2**32, "must be in [0, 2**32)"),
        "LOG_PERIOD": POSITIVE,
    }


def config_items(node: CfgNode, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf of `node`, in order."""
    for name, value in node.items():
        if isinstance(value, CfgNode):
            yield from config_items(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", value


@functools.cache
def _defaults() -> dict[str, Any]:
    """The default of every key (read only)."""
    return dict(config_items(get_cfg()))


def unknown_key_error(key: str, source: str = "", value: Any = None) -> ConfigError:
    """The error for a key revvideo does not have (`value`: what it was given), suggesting the
    closest one. An unknown section is named by its first key, SOLVR.MAX_EPOCH rather than
    SOLVR, so that a misspelt section finds the key meant; one of PySlowFast's sections that
    revvideo does not have is no misspelling and gets no suggestion. Within one of our
    sections, only its own keys are suggested."""
    where = f" in {source}" if source else ""
    section = key.split(".")[0]
    if section in PYSLOWFAST_SECTIONS:
        return ConfigError(f"unknown config key {key}{where}")
    while isinstance(value, Mapping) and value:
        name, value = next(iter(value.items()))
        key = f"{key}.{name}"
    known = list(_defaults())
    if "." in key and any(name.startswith(f"{section}.") for name in known):
        known = [name for name in known if name.startswith(f"{section}.")]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    return ConfigError(f"unknown config key {key}{where}{hint}")


def check_type(key: str, value: Any, source: str = "") -> None:
    """ConfigError unless `value` has the type of the key's default: an int is a float, any
    list or tuple a list, and a float must be finite. Keys whose default is None take several
    types (their rule checks them), but not a section."""
    default = _defaults()[key]
    where = f" in {source}" if source else ""
    if isinstance(value, dict):
        raise ConfigError(f"config key {key}{where} takes a value, not a section: got {value!r}")
    if default is None or (isinstance(default, float) and _is_int(value)):
        return
    if key in AUTO_KEYS and value == AUTO:
        return
    if not (type(value) is type(default) or (_is_list(default) and _is_list(value))):
        raise ConfigError(
            f"config key {key}{where} must be {type(default).__name__} (like {default!r}), "
            f"got {value!r}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key {key}{where} must be a finite number, got {value!r}")


def validate_config(cfg: CfgNode, world_size: int = 1) -> None:
    """ConfigError (one line, naming the key) for the first value of `cfg` that revvideo cannot
    run with; `world_size`: the processes a run shares TRAIN.BATCH_SIZE between."""
    rules = _rules()
    for key, value in config_items(cfg):
        if key not in _defaults():
            raise unknown_key_error(key)
        check_type(key, value)
        # A key added to the defaults without a rule still has its type checked (and
        # tests/test_config_values.py asks for its rule).
        rule = rules.get(key, TYPE_ONLY)
        if not rule.test(value):
            raise ConfigError(f"{key} {rule.expected}, got {value!r}")
    _check_model(cfg)
    _check_data(cfg)
    _check_solver(cfg)
    _check_engine(cfg, world_size)


# PyTorch counts a tensor's elements in 64 bits: a layer's weights (width x width) must fit.
_MAX_WIDTH = 2**31
_PATCH_KEYS = ("MVIT.PATCH_KERNEL", "MVIT.PATCH_STRIDE", "MVIT.PATCH_PADDING")
_CROP_KEYS = ("DATA.TRAIN_CROP_SIZE", "DATA.TEST_CROP_SIZE")

Built = TypeVar("Built")


def _get(cfg: CfgNode, key: str) -> Any:
    return functools.reduce(lambda node, name: node[name], key.split("."), cfg)


def _ask_model(build: Callable[[], Built]) -> Built:
    """`build()` on the meta device, without weights; the ValueError a model raises for
    arguments that do not fit together (its message names their config keys) as a ConfigError."""
    import torch

    try:
        with torch.device("meta"), warnings.catch_warnings():
            # MODEL.NUM_CLASSES 0 (the dataset's, set by the engine) makes an empty head.
            warnings.filterwarnings("ignore", "Initializing zero-element tensors")
            return build()
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _check_model(cfg: CfgNode) -> None:
    """The model exists, fits in PyTorch and builds (its constructor checks how its arguments
    fit together), for the clips the data pipeline makes."""
    from revvideo.models import MODEL_REGISTRY, RevMViT
    from revvideo.models.build import layer_plans, model_name
    from revvideo.models.common import PatchEmbed

    name = model_name(cfg)
    if name not in MODEL_REGISTRY:
        known = ", ".join(sorted(known for known, _ in MODEL_REGISTRY))
        raise ConfigError(f"unknown MODEL.MODEL_NAME {name!r}; known models: {known}")
    model_class = MODEL_REGISTRY.get(name)
    mvit = cfg.MVIT
    # The layers' sizes first: the model itself is only built once they fit in PyTorch.
    try:
        plans = _ask_model(
            lambda: layer_plans(cfg, width_change_in_attention=model_class is RevMViT)
        )
    except OverflowError:
        raise ConfigError(
            "MVIT.DIM_MUL and MVIT.HEAD_MUL make a width or a number of heads larger than any "
            "number"
        ) from None
    for index, plan in enumerate(plans):
        widest = max(plan.dim_in, plan.dim_out) * max(1.0, mvit.MLP_RATIO)
        if widest >= _MAX_WIDTH:
            raise ConfigError(
                f"layer {index} would be {widest:.3g} channels wide, more than PyTorch can hold: "
                "lower MVIT.EMBED_DIM, MVIT.DIM_MUL or MVIT.MLP_RATIO"
            )
        if min(plan.dim_in, plan.dim_out) * mvit.MLP_RATIO < 1:
            raise ConfigError(f"MVIT.MLP_RATIO {mvit.MLP_RATIO} leaves layer {index}'s MLP empty")

    def patch_grids() -> dict[str, tuple[int, int, int]]:
        """The token grid of each crop size's clips, from the model's patch embedding."""
        patch_embed = PatchEmbed(
            3, mvit.EMBED_DIM, *(_get(cfg, key) for key in _PATCH_KEYS), conv_2d=mvit.PATCH_2D
        )
        return {key: patch_embed.grid(cfg.DATA.NUM_FRAMES, _get(cfg, key)) for key in _CROP_KEYS}

    # Before the model: it would make position embeddings for an empty grid.
    patch = f"MVIT.PATCH_KERNEL {mvit.PATCH_KERNEL} (with MVIT.PATCH_PADDING {mvit.PATCH_PADDING})"
    for key, (frames, height, width) in _ask_model(patch_grids).items():
        if frames < 1:
            raise ConfigError(f"DATA.NUM_FRAMES {cfg.DATA.NUM_FRAMES} is fewer than {patch} spans")
        if min(height, width) < 1:
            raise ConfigError(f"{key} {_get(cfg, key)} is smaller than {patch}")
    _ask_model(lambda: model_class.from_cfg(cfg))
    if mvit.REV.STORED_LAYERS == AUTO and not (model_class is RevMViT and mvit.REV.CUSTOM_BACKWARD):
        raise ConfigError(
            "MVIT.REV.STORED_LAYERS auto chooses the layers a reversible model keeps instead of "
            "recomputing: it needs MODEL.MODEL_NAME RevMViT (or MViT with MVIT.REV.ENABLE True) "
            "and MVIT.REV.CUSTOM_BACKWARD True"
        )


def _check_data(cfg: CfgNode) -> None:
    data = cfg.DATA
    if bool(data.TRAIN_JITTER_SCALES_RELATIVE) != bool(data.TRAIN_JITTER_ASPECT_RELATIVE):
        raise ConfigError(
            "DATA.TRAIN_JITTER_SCALES_RELATIVE and DATA.TRAIN_JITTER_ASPECT_RELATIVE must be "
            "set together (random resized crop) or both left empty"
        )
    if not data.TRAIN_JITTER_SCALES_RELATIVE and data.TRAIN_JITTER_SCALES[0] < data.TRAIN_CROP_SIZE:
        raise ConfigError(
            f"DATA.TRAIN_JITTER_SCALES {data.TRAIN_JITTER_SCALES} must not be smaller than "
            f"DATA.TRAIN_CROP_SIZE {data.TRAIN_CROP_SIZE}"
        )


def _check_solver(cfg: CfgNode) -> None:
    solver = cfg.SOLVER
    if solver.WARMUP_EPOCHS > solver.MAX_EPOCH:
        raise ConfigError(
            f"SOLVER.WARMUP_EPOCHS must be in [0, SOLVER.MAX_EPOCH {solver.MAX_EPOCH}], got "
            f"{solver.WARMUP_EPOCHS}"
        )
    if solver.COSINE_END_LR > solver.BASE_LR:
        raise ConfigError(
            f"SOLVER.COSINE_END_LR {solver.COSINE_END_LR} is above SOLVER.BASE_LR {solver.BASE_LR}"
        )
    if solver.OPTIMIZING_METHOD.lower() == "sgd" and solver.NESTEROV and not solver.MOMENTUM:
        raise ConfigError("SOLVER.NESTEROV needs a SOLVER.MOMENTUM above 0 (or NESTEROV False)")


def _check_engine(cfg: CfgNode, world_size: int) -> None:
    if not (cfg.TRAIN.ENABLE or cfg.TEST.ENABLE):
        raise ConfigError("TRAIN.ENABLE and TEST.ENABLE are both False: nothing to do")
    if cfg.TRAIN.ENABLE and cfg.TRAIN.BATCH_SIZE != AUTO and cfg.TRAIN.BATCH_SIZE % world_size:
        raise ConfigError(
            f"TRAIN.BATCH_SIZE {cfg.TRAIN.BATCH_SIZE} is the batch over all {world_size} "
            "processes and must be a multiple of their number"
        )
