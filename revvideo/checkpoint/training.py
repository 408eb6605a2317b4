"""Training checkpoints: names, finding the newest, and saving/restoring the whole training state.

`OUTPUT_DIR/checkpoints/checkpoint_epoch_NNNNN.pyth` holds the state after NNNNN complete epochs
(PySlowFast's naming). A run stopped by a signal in the middle of an epoch writes
`checkpoint_epoch_NNNNN_step_SSSSSS.pyth`: NNNNN complete epochs plus SSSSSS optimizer steps of
the next. Beside them, `last.pyth` (the newest model) and `best.pyth` (the best on validation)
name a run's model without its epochs: model checkpoints (no training state), never resumed
from. Files are written by `revvideo.checkpoint.save_checkpoint` (temporary file, fsync,
rename), so a checkpoint is either complete or absent.
"""

import random
import re
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from fvcore.common.config import CfgNode
from torch import nn

from revvideo.checkpoint.files import load_checkpoint, model_entries, save_checkpoint
from revvideo.utils.errors import CheckpointError

CHECKPOINT_DIR = "checkpoints"
LAST_MODEL = "last.pyth"
BEST_MODEL = "best.pyth"
_NAME = re.compile(r"checkpoint_epoch_(\d{5})(?:_step_(\d{6}))?\.pyth")
TRAINING_STATE_KEYS = ("optimizer_state", "scheduler_state", "scaler_state", "epoch", "rng_states")


class Stateful(Protocol):
    """What a checkpoint saves of a schedule: its state as plain data."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def checkpoint_path(output_dir: str | Path, epochs_done: int, steps_done: int = 0) -> Path:
    """Where the state after `epochs_done` epochs and `steps_done` steps of the next one goes."""
    name = f"checkpoint_epoch_{epochs_done:05d}"
    if steps_done:
        name += f"_step_{steps_done:06d}"
    return Path(output_dir) / CHECKPOINT_DIR / f"{name}.pyth"


def model_path(output_dir: str | Path, name: str) -> Path:
    """Where the run's model called `name` (LAST_MODEL, BEST_MODEL) goes."""
    return Path(output_dir) / CHECKPOINT_DIR / name


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """The run's epoch and mid-epoch checkpoints (the points it resumes from), oldest first."""
    folder = Path(output_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _NAME.fullmatch(path.name)
        if match:
            found.append(((int(match.group(1)), int(match.group(2) or 0)), path))
    return [path for _, path in sorted(found)]


def remove_partial_checkpoints(output_dir: str | Path) -> int:
    """Deletes the partial files a killed writer left in the run's checkpoint folder (only call
    this while holding the run's OUTPUT_DIR, when no writer can be at work); returns how many."""
    folder = Path(output_dir) / CHECKPOINT_DIR
    partial = list(folder.glob(".*.pyth.*.tmp.pyth")) if folder.is_dir() else []
    for path in partial:
        path.unlink(missing_ok=True)
    return len(partial)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def remove_mid_epoch_checkpoints(output_dir: str | Path, before: Path) -> None:
    """Deletes mid-epoch checkpoints older than `before`: an epoch checkpoint supersedes them."""
    for path in list_checkpoints(output_dir):
        if path == before:
            break
        if "_step_" in path.name:
            path.unlink(missing_ok=True)


def rng_state() -> dict[str, Any]:
    """This process's Python, NumPy, torch CPU and CUDA generator states, as plain data."""
    version, mt_state, gauss = random.getstate()
    kind, keys, position, has_gauss, cached_gauss = np.random.get_state()
    state = {
        "python": [version, list(mt_state), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        # This process's GPU only: a resuming machine may have fewer.
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    kind, keys, position, has_gauss, cached_gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_training_state(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: Stateful,
    scaler: torch.amp.GradScaler,
    *,
    epochs_done: int,
    steps_done: int,
    steps_per_epoch: int,
    rng_states: list[dict[str, Any]],
    cfg: CfgNode,
    class_names: list[str],
    source: str,
    optimizer_steps: int,
    **entries: Any,
) -> None:
    """Everything a resumed run needs to continue as if never stopped, and what makes the file
    a self-describing model (config, class names, provenance: `source` the run started from,
    after `optimizer_steps` steps), with `entries` (plain data) beside them. `rng_states` has
    one entry per process (rank order); `steps_per_epoch` lets a resumed run check that its
    epochs have the same steps."""
    save_checkpoint(
        path,
        model,
        optimizer_state=optimizer.state_dict(),
        scheduler_state=schedule.state_dict(),
        scaler_state=scaler.state_dict(),
        epoch=epochs_done,
        epoch_step=steps_done,
        steps_per_epoch=steps_per_epoch,
        rng_states=rng_states,
        **model_entries(cfg, class_names, source=source, epoch=epochs_done, step=optimizer_steps),
        **entries,
    )


def save_model(
    path: Path,
    model: nn.Module,
    *,
    cfg: CfgNode,
    class_names: list[str],
    source: str,
    epochs_done: int,
    optimizer_steps: int,
    **entries: Any,
) -> None:
    """A model checkpoint (weights, config, class names, provenance and `entries`), without the
    training state: what `last.pyth` and `best.pyth` hold."""
    save_checkpoint(
        path,
        model,
        **model_entries(cfg, class_names, source=source, epoch=epochs_done, step=optimizer_steps),
        **entries,
    )


def load_training_state(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: Stateful,
    scaler: torch.amp.GradScaler,
) -> dict[str, Any]:
    """Restores model, optimizer, schedule and scaler from `path`; returns the other entries
    (epoch, epoch_step, rng_states, ...). Raises CheckpointError for unusable files."""
    extra = load_checkpoint(path, model)
    missing = [key for key in TRAINING_STATE_KEYS if key not in extra]
    if missing:
        raise CheckpointError(
            f"{path} holds weights but no training state ({', '.join(missing)}); to start "
            "from its weights, give it as TRAIN.CHECKPOINT_FILE_PATH in a new OUTPUT_DIR"
        )
    try:
        optimizer.load_state_dict(extra.pop("optimizer_state"))
    except ValueError as err:
        raise CheckpointError(
            f"{path}: its optimizer state does not fit this config ({err}); did the solver "
            "settings change? Use a new OUTPUT_DIR"
        ) from None
    schedule.load_state_dict(extra.pop("scheduler_state"))
    scaler_state = extra.pop("scaler_state")
    # A scaler saved disabled (no fp16) has no state; an fp16 run resumed from it starts afresh.
    if scaler_state:
        scaler.load_state_dict(scaler_state)
    return extra
