"""Checkpoint files: writing them atomically, reading every layout, fitting weights to a model.

Our files use PySlowFast's layout so that checkpoints move freely between the two code bases:
a dict whose `"model_state"` entry is the model's state dict, next to the model's config
(`"cfg"`, a YAML string), its ordered `"class_names"`, its `"provenance"` (source, epoch, step)
and whatever the training engine adds (`"optimizer_state"`, ...).

`load_checkpoint` also reads the layouts other tools write: a dict with `"model"` or
`"state_dict"`, a bare state dict, `module.`-prefixed names from (Distributed)DataParallel, and
torchvision's `mvit_v1_b` parameter names. Files are unpickled with `weights_only=True`, so a
checkpoint can never run code; every problem with a file is a one-line `CheckpointError`.
"""

import math
import os
import re
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from fvcore.common.config import CfgNode
from torch import nn

from revvideo.classes import ClassNames, match_head_rows, resolve_class_names
from revvideo.config import config_from_mapping, load_config
from revvideo.config.validate import model_name
from revvideo.utils.errors import CheckpointError, ConfigError
from revvideo.utils.files import WriteError, written_whole

__all__ = [
    "add_entries",
    "from_torchvision_mvit",
    "load_checkpoint",
    "load_fine_tuning_state",
    "load_model_state",
    "model_entries",
    "read_checkpoint",
    "read_model_checkpoint",
    "save_checkpoint",
    "stored_config",
]

StateDict = dict[str, torch.Tensor]

MODEL_STATE = "model_state"
# The classification layer, which fine-tuning on other classes replaces.
HEAD_PREFIX = "head.projection."
# Where other code bases keep the state dict inside a checkpoint dict, in order of preference.
_STATE_DICT_KEYS = (MODEL_STATE, "model", "state_dict")

# A name only torchvision's MViT state dicts have.
TORCHVISION_MVIT_KEY = "pos_encoding.class_token"
# torchvision's MViT names and ours (PySlowFast's). `{field}` stands for one dotted component;
# names in neither column (norm1, norm2, attn.qkv, norm) are the same in both.
_TORCHVISION_MVIT_NAMES = (
    ("conv_proj.{p}", "patch_embed.proj.{p}"),
    ("pos_encoding.class_token", "cls_token"),
    ("pos_encoding.class_pos", "pos_embed_class"),
    ("pos_encoding.spatial_pos", "pos_embed_spatial"),
    ("pos_encoding.temporal_pos", "pos_embed_temporal"),
    ("blocks.{i}.attn.project.0.{p}", "blocks.{i}.attn.proj.{p}"),
    ("blocks.{i}.attn.pool_{x}.pool.weight", "blocks.{i}.attn.pool_{x}.weight"),
    ("blocks.{i}.attn.pool_{x}.norm_act.0.{p}", "blocks.{i}.attn.norm_{x}.{p}"),
    ("blocks.{i}.mlp.0.{p}", "blocks.{i}.mlp.fc1.{p}"),
    ("blocks.{i}.mlp.3.{p}", "blocks.{i}.mlp.fc2.{p}"),
    ("blocks.{i}.project.{p}", "blocks.{i}.proj.{p}"),
    ("head.1.{p}", "head.projection.{p}"),
)
# torchvision drops the leading singleton dims of these tensors, which we keep as (1, N, C):
# its class token and class position are (C,), its spatial and temporal positions (N, C).
_TORCHVISION_RANKS = {
    "pos_encoding.class_token": 1,
    "pos_encoding.class_pos": 1,
    "pos_encoding.spatial_pos": 2,
    "pos_encoding.temporal_pos": 2,
}


def _name_pattern(template: str) -> re.Pattern[str]:
    parts = []
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field:
            parts.append(f"(?P<{field}>[^.]+)")
    return re.compile("".join(parts))


_FROM_TORCHVISION = [(_name_pattern(tv), ours) for tv, ours in _TORCHVISION_MVIT_NAMES]


def _rename(key: str, rules: list[tuple[re.Pattern[str], str]]) -> str:
    for pattern, target in rules:
        match = pattern.fullmatch(key)
        if match:
            return target.format(**match.groupdict())
    return key


def from_torchvision_mvit(state: Mapping[str, torch.Tensor]) -> StateDict:
    """A torchvision `MViT` (v1) state dict under our `MViT`'s names and shapes."""
    converted = {}
    for key, value in state.items():
        if key in _TORCHVISION_RANKS:
            value = value.reshape(1, -1, value.shape[-1])
        converted[_rename(key, _FROM_TORCHVISION)] = value
    return converted


def _unwrap(model: nn.Module) -> nn.Module:
    parallel = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    return model.module if isinstance(model, parallel) else model


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **extra: Any) -> None:
    """Writes `{"model_state": model.state_dict(), **extra}` to `path`, whole or not at all.

    `extra` holds plain data (tensors, numbers, strings, lists, dicts, state dicts) so that
    `weights_only` loading accepts it: store a config as `cfg.dump()`. A (Distributed)
    DataParallel wrapper is not saved. A crash or a full disk never leaves a partial
    checkpoint or destroys the previous one; a failed write is a CheckpointError that says why
    (for a full disk, the room the file needs).
    """
    if MODEL_STATE in extra:
        raise TypeError(f"{MODEL_STATE!r} is taken from `model`; pass it no other way")
    _write_checkpoint(Path(path), {MODEL_STATE: _unwrap(model).state_dict(), **extra})


def add_entries(path: str | os.PathLike, **entries: Any) -> None:
    """Rewrites the checkpoint at `path` (whole or not at all) with `entries` (plain data) added
    or replaced; its weights (in our layout, see read_checkpoint) and other entries are kept."""
    path = Path(path)
    _write_checkpoint(path, {**read_checkpoint(path), **entries})


def _write_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A Python file, not a path: torch's writer then raises from the OSError that names
        # the reason.
        with (
            written_whole(path, size=lambda: _saved_size(checkpoint)) as partial,
            open(partial, "wb") as file,
        ):
            torch.save(checkpoint, file)
    except WriteError as err:
        raise CheckpointError(str(err)) from err
    except OSError as err:
        raise CheckpointError(f"cannot write {path}: {err.strerror}") from err


class _ByteCounter:
    size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def _saved_size(checkpoint: dict[str, Any]) -> int:
    counter = _ByteCounter()
    torch.save(checkpoint, counter)
    return counter.size


def _unpickle(path: Path, map_location: str | torch.device | None) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err.strerror or err}") from err
    except Exception as err:
        # torch.load has no error type of its own: garbage, empty and truncated files raise
        # KeyError, EOFError, RuntimeError or UnpicklingError depending on where it gives up.
        # Only a pickle that names a global refused by weights_only holds Python objects; any
        # other weights_only failure is a file that is not a pickle at all.
        found = re.search(r"GLOBAL (\S+)", str(err))
        if "Weights only load failed" in str(err) and found:
            raise CheckpointError(
                f"{path} holds arbitrary Python objects ({found.group(1)}); refusing to unpickle "
                "it because that can run code (only tensors and plain data are loaded)"
            ) from err
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint, or it is corrupt or truncated"
        ) from err


def _is_state_dict(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and len(value) > 0
        and all(isinstance(key, str) for key in value)
        and all(isinstance(tensor, torch.Tensor) for tensor in value.values())
    )


def _split_model_state(path: Path, content: Any) -> tuple[Mapping[str, Any], dict[str, Any]]:
    """The state dict inside `content` and the entries next to it."""
    if not isinstance(content, Mapping):
        raise CheckpointError(f"{path} holds a {type(content).__name__}, not a checkpoint")
    for key in _STATE_DICT_KEYS:
        if isinstance(content.get(key), Mapping):
            return content[key], {k: v for k, v in content.items() if k != key}
    if _is_state_dict(content):
        return content, {}
    keys = ", ".join(map(str, list(content)[:5]))
    raise CheckpointError(
        f"{path} holds no model weights: a dict with keys [{keys}] but none of "
        f"{', '.join(_STATE_DICT_KEYS)}"
    )


def read_checkpoint(
    path: str | os.PathLike, *, map_location: str | torch.device | None = "cpu"
) -> dict[str, Any]:
    """The checkpoint at `path` in our layout, whatever layout it was written in.

    `"model_state"` holds the weights under our names (DataParallel prefixes removed,
    torchvision MViT names translated); the other entries are returned as they are.
    """
    path = Path(path)
    state, others = _split_model_state(path, _unpickle(path, map_location))
    if not _is_state_dict(state):
        raise CheckpointError(f"{path} holds a model state that is not a dict of tensors")
    if all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    if TORCHVISION_MVIT_KEY in state:
        state = from_torchvision_mvit(state)
    return {MODEL_STATE: dict(state), **others}


def _first(keys: list[str], count: int = 3) -> str:
    return ", ".join(keys[:count]) + (", ..." if len(keys) > count else "")


def _held_model(checkpoint: Mapping[str, Any], path: Path) -> str:
    """What model a checkpoint's stored config describes, for an error: "" where it has none."""
    try:
        cfg = stored_config(checkpoint, path)
    except ConfigError:
        return ""
    if cfg is None:
        return ""
    data, mvit = cfg.DATA, cfg.MVIT
    return (
        f"; it holds a {model_name(cfg)} of depth {mvit.DEPTH} and width {mvit.EMBED_DIM} "
        f"on {data.NUM_FRAMES}x{data.TRAIN_CROP_SIZE}x{data.TRAIN_CROP_SIZE} clips"
    )


def _check_fit(
    path: Path, state: StateDict, model: nn.Module, checkpoint: Mapping[str, Any]
) -> None:
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    problem = f"{path} does not fit {type(model).__name__}"
    if missing or unexpected:
        counts = []
        if missing:
            counts.append(f"{len(missing)} missing keys ({_first(missing)})")
        if unexpected:
            counts.append(f"{len(unexpected)} unexpected keys ({_first(unexpected)})")
        raise CheckpointError(f"{problem}: {'; '.join(counts)}{_held_model(checkpoint, path)}")
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            raise CheckpointError(
                f"{problem}: {key} has shape {list(state[key].shape)} in the checkpoint "
                f"but {list(tensor.shape)} in the model{_held_model(checkpoint, path)}"
            )


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    map_location: str | torch.device | None = "cpu",
) -> dict[str, Any]:
    """Loads the weights at `path` into `model` (strictly: every key, every shape).

    Reads our own and PySlowFast's checkpoints, the common `"model"` / `"state_dict"` layouts,
    bare state dicts and torchvision `mvit_v1_b` weights (see `read_checkpoint`). Returns the
    checkpoint's other entries (e.g. `"optimizer_state"`, `"epoch"`, `"cfg"`) for the caller
    to restore.
    """
    checkpoint = read_checkpoint(path, map_location=map_location)
    return load_model_state(model, checkpoint, path)


def load_model_state(
    model: nn.Module, checkpoint: Mapping[str, Any], path: str | os.PathLike
) -> dict[str, Any]:
    """Loads the weights of `checkpoint` (as `read_checkpoint(path)` returns it) into `model`,
    strictly; returns the checkpoint's other entries."""
    state = checkpoint[MODEL_STATE]
    model = _unwrap(model)
    _check_fit(Path(path), state, model, checkpoint)
    model.load_state_dict(state)
    return {key: value for key, value in checkpoint.items() if key != MODEL_STATE}


def model_entries(
    cfg: CfgNode, class_names: Sequence[str], *, source: str, epoch: int = 0, step: int = 0
) -> dict[str, Any]:
    """The entries that make a checkpoint a self-describing model: the config it was built
    with, its class names by output index, and where its weights came from (`source`: "scratch",
    the checkpoint it was fine-tuned or converted from, ...) after how many epochs and steps."""
    return {
        "cfg": cfg.dump(),
        "class_names": list(class_names),
        "provenance": {"source": str(source), "epoch": int(epoch), "step": int(step)},
    }


def stored_config(checkpoint: Mapping[str, Any], source: str | os.PathLike) -> CfgNode | None:
    """The revvideo config saved in a checkpoint's `"cfg"` entry (a YAML string), or None.

    Raises ConfigError when the entry is not a revvideo config (PySlowFast stores its own,
    with keys revvideo does not have).
    """
    text = checkpoint.get("cfg")
    if not text:
        return None
    try:
        tree = yaml.safe_load(text) if isinstance(text, str) else text
        if not isinstance(tree, Mapping):
            raise ValueError(f"a {type(tree).__name__}, not a mapping of keys")
        cfg = config_from_mapping(tree)
    except (yaml.YAMLError, KeyError, ValueError, TypeError) as err:
        reason = str(err.args[0] if isinstance(err, KeyError) and err.args else err)
        raise ConfigError(
            f"the config stored in {source} is not a revvideo config "
            f"({reason.splitlines()[0]}); pass the YAML config that describes its model"
        ) from None
    return cfg


def stored_temperature(checkpoint: Mapping[str, Any], path: str | os.PathLike) -> float | None:
    """The checkpoint's `"temperature"` entry (a positive finite number), or None; CheckpointError
    for another value."""
    value = checkpoint.get("temperature")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise CheckpointError(f"{path}: its temperature {value!r} is not a positive number")
    return float(value)


def head_classes(checkpoint: Mapping[str, Any]) -> int | None:
    """How many classes the weights of `checkpoint` (as read_checkpoint returns it) score."""
    weight = checkpoint[MODEL_STATE].get(HEAD_PREFIX + "weight")
    return int(weight.shape[0]) if weight is not None and weight.ndim == 2 else None


def read_model_checkpoint(
    path: str | os.PathLike, cfg_file: str | os.PathLike | None
) -> tuple[CfgNode, dict[str, Any]]:
    """The config of the model whose weights `path` holds, and the checkpoint, read once.

    The config is the YAML file `cfg_file` when one is given, else the revvideo config saved in
    the checkpoint; ConfigError when there is neither. When the config leaves MODEL.NUM_CLASSES
    to the data (0), the checkpoint's head decides it. Load the weights with `load_model_state`.
    """
    cfg = load_config(cfg_file) if cfg_file is not None else None
    checkpoint = read_checkpoint(path)
    if cfg is None:
        cfg = stored_config(checkpoint, path)
    if cfg is None:
        raise ConfigError(
            f"{path} holds no revvideo config; pass the YAML config that describes its model "
            "with --cfg"
        )
    if cfg.MODEL.NUM_CLASSES == 0:
        cfg.MODEL.NUM_CLASSES = head_classes(checkpoint) or 0
    return cfg, checkpoint


def _grid_side(tokens: int, path: Path, key: str) -> int:
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise CheckpointError(f"{path}: {key} holds {tokens} positions, not a square grid")
    return side


def _resized_position_embedding(
    value: torch.Tensor, target: torch.Tensor, key: str, model: nn.Module, path: Path
) -> torch.Tensor:
    """`value` (1, N, C) interpolated to the positions of `target` (1, N', C): a square
    spatial grid (bicubic), a temporal line (linear) or a joint T x H x W grid (trilinear,
    with the class position kept), as the model lays its tokens out."""
    if key == "pos_embed_temporal":
        line = value.transpose(1, 2)
        return F.interpolate(line, size=target.shape[1], mode="linear").transpose(1, 2)
    if key == "pos_embed_spatial":
        old, new = _grid_side(value.shape[1], path, key), _grid_side(target.shape[1], path, key)
        image = value.reshape(1, old, old, -1).permute(0, 3, 1, 2)
        image = F.interpolate(image, size=(new, new), mode="bicubic", align_corners=False)
        return image.flatten(2).transpose(1, 2)
    # One embedding per token of the model's grid, after the class position if it has one.
    t, h, w = model.grid
    class_positions = target.shape[1] - t * h * w
    tokens = value.shape[1] - class_positions
    # The checkpoint's grid: the same frames with another square crop, else the same crop
    # with another number of frames.
    if tokens % t == 0 and math.isqrt(tokens // t) ** 2 == tokens // t:
        old = (t, math.isqrt(tokens // t), math.isqrt(tokens // t))
    elif tokens % (h * w) == 0:
        old = (tokens // (h * w), h, w)
    else:
        raise CheckpointError(
            f"{path}: {key} holds {tokens} positions, which fit no {t} x S x S or T x {h} x {w} "
            "grid; fine-tune with the checkpoint's frame count or crop size"
        )
    volume = value[:, class_positions:].reshape(1, *old, -1).permute(0, 4, 1, 2, 3)
    volume = F.interpolate(volume, size=(t, h, w), mode="trilinear", align_corners=False)
    return torch.cat([value[:, :class_positions], volume.flatten(2).transpose(1, 2)], dim=1)


def _fit_head(
    state: StateDict,
    expected: StateDict,
    checkpoint: Mapping[str, Any],
    class_names: ClassNames | None,
) -> str:
    """Puts into `state` the classification head the model starts from (match_head_rows):
    the checkpoint's rows of the model's classes, in the model's order, and the model's own
    freshly initialised rows (in `expected`) for the others. Returns the notice ("" when the
    head loads as it is). A head that does not fit the model otherwise (another width) is left
    for _check_fit to name."""
    head = [key for key in expected if key.startswith(HEAD_PREFIX)]
    old = head_classes(checkpoint)
    fits = old is not None and all(
        key in state
        and state[key].ndim == expected[key].ndim
        and state[key].shape[0] == old
        and state[key].shape[1:] == expected[key].shape[1:]
        for key in head
    )
    if not head or not fits:
        return ""
    new = expected[HEAD_PREFIX + "weight"].shape[0]
    model = class_names or ClassNames([f"class_{i}" for i in range(new)], "unnamed")
    if len(model.names) != new:
        raise ValueError(f"{len(model.names)} class names for a head of {new} classes")
    match = match_head_rows(resolve_class_names(old, checkpoint=checkpoint), model)
    for key in head:
        fitted = expected[key].clone()
        for output, row in enumerate(match.rows or []):
            if row >= 0:
                fitted[output] = state[key][row]
        state[key] = fitted
    return match.notice


def load_fine_tuning_state(
    model: nn.Module,
    checkpoint: Mapping[str, Any],
    path: str | os.PathLike,
    class_names: ClassNames | None = None,
) -> list[str]:
    """Loads the weights of `checkpoint` into `model` for fine-tuning: every tensor that fits;
    the classification head's rows by class name; position embeddings interpolated to another
    frame count or crop size.

    `class_names` names the model's outputs (the dataset's classes, in its order); None when
    nothing names them. When both it and the checkpoint name their classes (see
    `resolve_class_names`), each class keeps the checkpoint's row for it, reordered into the
    model's order, a class new to the checkpoint keeps the row the model was initialised with,
    and the checkpoint's other rows are dropped; when either names none, rows go by position
    if the counts match, else the head is left as initialised (see `match_head_rows`).

    Returns what was re-initialised, re-ordered, matched by position or resized (empty when
    everything fitted as it was). Raises CheckpointError naming the first mismatches when the
    rest of the model does not fit.
    """
    path = Path(path)
    model = _unwrap(model)
    expected = model.state_dict()
    state = dict(checkpoint[MODEL_STATE])
    changes = []
    notice = _fit_head(state, expected, checkpoint, class_names)
    if notice:
        changes.append(notice)
    for key in sorted(expected):
        resize = key.startswith("pos_embed") and key in state
        if resize and state[key].shape != expected[key].shape:
            before = state[key].shape[1]
            state[key] = _resized_position_embedding(
                state[key].to(expected[key].dtype), expected[key], key, model, path
            )
            changes.append(f"resized {key} ({before} -> {expected[key].shape[1]} positions)")
    _check_fit(path, state, model, checkpoint)
    model.load_state_dict(state)
    return changes
