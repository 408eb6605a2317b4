"""`validate_config(cfg)`: the schema's rules, checked before anything is built from a config.

Each key is checked for its type, then against its rule (a range, the shape of its list), then
the keys that need no other module are checked against each other (the jitter scales against
the crop, the warmup against the epochs...). A mistake is a one-line ConfigError naming the key.
The rules that belong to a module live there: the names a key may take and the model's
structure are checked by the data pipeline, the engine and `revvideo.models.build_model`.
"""

import difflib
import functools
import math
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any, NamedTuple

from fvcore.common.config import CfgNode

from revvideo.config.defaults import AUTO, AUTO_KEYS, PYSLOWFAST_SECTIONS, get_cfg
from revvideo.utils.errors import ConfigError

__all__ = [
    "check_choice",
    "check_type",
    "config_items",
    "config_value",
    "model_name",
    "unknown_key_error",
    "validate_config",
]


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
    """The rule of every key of `get_cfg()`; a key whose names are another module's is only
    checked here for being set."""

    return {
        "MODEL.MODEL_NAME": NOT_EMPTY,  # a model build_model knows
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
        "DATA.DECODING_BACKEND": NOT_EMPTY,  # a decoder the data pipeline has
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
        "DATA.ENSEMBLE_METHOD": NOT_EMPTY,  # a method the engine has
        "DATA.GENERATE_SYNTHETIC": TYPE_ONLY,
        "DATA.CLASS_BALANCE": _one_of(("none", "sampler", "loss")),
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
        "MVIT.MODE": NOT_EMPTY,  # the model checks the names it takes
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
        "MVIT.REV.RESPATH_FUSE": NOT_EMPTY,
        "MVIT.REV.BUFFER_LAYERS": LAYER_INDICES,
        "MVIT.REV.STORED_LAYERS": Rule(
            lambda value: value == AUTO or LAYER_INDICES.test(value),
            f"{LAYER_INDICES.expected} or auto",
        ),
        "MVIT.REV.RES_PATH": NOT_EMPTY,
        "MVIT.REV.PRE_Q_FUSION": NOT_EMPTY,
        "MVIT.REV.CUSTOM_BACKWARD": TYPE_ONLY,
        "MVIT.REV.RECOMPUTE_TRANSITIONS": TYPE_ONLY,
        "MVIT.REV.OVERLAP_RECOMPUTE": TYPE_ONLY,
        "AUG.ENABLE": TYPE_ONLY,
        "AUG.NUM_SAMPLE": POSITIVE,
        "AUG.COLOR_JITTER": NON_NEGATIVE,
        "AUG.AA_TYPE": TYPE_ONLY,  # the data pipeline parses it
        "AUG.INTERPOLATION": NOT_EMPTY,
        "AUG.RE_PROB": PROBABILITY,
        "AUG.RE_MODE": NOT_EMPTY,
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
        "SOLVER.OPTIMIZING_METHOD": NOT_EMPTY,  # an optimizer the engine has
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


def config_value(cfg: CfgNode, key: str) -> Any:
    """The value of dotted `key` (a section for a section's key) in `cfg`."""
    return functools.reduce(lambda node, name: node[name], key.split("."), cfg)


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


def check_choice(key: str, value: Any, choices: Collection[str]) -> None:
    """ConfigError unless `value` is one of `choices`: the rule of a key whose names belong to
    the module that uses it."""
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {value!r}")


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
    _check_data(cfg)
    _check_solver(cfg)
    _check_engine(cfg, world_size)


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


def model_name(cfg: CfgNode) -> str:
    """MODEL.MODEL_NAME, where PySlowFast's spelling is accepted ("MViT" with MVIT.REV.ENABLE is
    "RevMViT")."""
    name = cfg.MODEL.MODEL_NAME
    return "RevMViT" if name == "MViT" and cfg.MVIT.REV.ENABLE else name


def _check_engine(cfg: CfgNode, world_size: int) -> None:
    rev = cfg.MVIT.REV
    if rev.STORED_LAYERS == AUTO and not (model_name(cfg) == "RevMViT" and rev.CUSTOM_BACKWARD):
        raise ConfigError(
            "MVIT.REV.STORED_LAYERS auto chooses the layers a reversible model keeps instead of "
            "recomputing: it needs MODEL.MODEL_NAME RevMViT (or MViT with MVIT.REV.ENABLE True) "
            "and MVIT.REV.CUSTOM_BACKWARD True"
        )
    if not (cfg.TRAIN.ENABLE or cfg.TEST.ENABLE):
        raise ConfigError("TRAIN.ENABLE and TEST.ENABLE are both False: nothing to do")
    if cfg.TRAIN.ENABLE and cfg.TRAIN.BATCH_SIZE != AUTO and cfg.TRAIN.BATCH_SIZE % world_size:
        raise ConfigError(
            f"TRAIN.BATCH_SIZE {cfg.TRAIN.BATCH_SIZE} is the batch over all {world_size} "
            "processes and must be a multiple of their number"
        )
