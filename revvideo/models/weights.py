"""Pretrained weights for the model builders: a local checkpoint, or a named release.

`rev_mvit_b_16x4(weights="rev_mvit_b_16x4_k400")` downloads the release once into the torch
hub cache (`torch.hub.get_dir()/checkpoints`, moved with $TORCH_HOME) and loads it;
`weights="path/to/file.pyth"` loads a local file in any layout `revvideo.checkpoint` reads.
Offline, a release that is not cached yet is a one-line CheckpointError saying where to get it.

The releases are the Kinetics-400 checkpoints of PySlowFast's model zoo and torchvision's
`MViT_V1_B_Weights.KINETICS400_V1`; each names the builder it fits and the test protocol of
its reported top-1 (clip geometry and views), which `demo/classify.py` uses.
"""

from __future__ import annotations

import os
import urllib.error
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from fvcore.common.config import CfgNode
from torch import nn

from revvideo.checkpoint import load_checkpoint, read_checkpoint
from revvideo.config import get_cfg, load_config
from revvideo.utils.errors import CheckpointError, ConfigError

__all__ = [
    "RELEASES",
    "Release",
    "fetch_release",
    "find_release",
    "load_weights",
    "read_model_checkpoint",
    "stored_class_names",
    "stored_config",
]


@dataclass(frozen=True)
class Release:
    """A published Kinetics-400 checkpoint and how its reported accuracy was measured."""

    name: str
    builder: str  # the revvideo.models builder whose default architecture it fits
    url: str
    file_name: str  # its name in the hub cache
    source: str
    top1: float  # reported Kinetics-400 top-1, percent
    views: tuple[int, int]  # (temporal clips, spatial crops) behind `top1`
    # sha256 prefix the download must match; None when the publisher gives none.
    hash_prefix: str | None = None
    # Hosted where a script cannot fetch it (Google Drive asks a browser to confirm).
    browser_only: bool = False
    num_classes: int = 400
    num_frames: int = 16
    sampling_rate: int = 4
    target_fps: int = 30
    crop_size: int = 224
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)

    def class_names(self) -> list[str]:
        # Imported here: revvideo.data pulls in the whole data pipeline, which the models
        # (importing this module) do not need.
        from revvideo.data.kinetics import kinetics400_class_names

        return kinetics400_class_names()


RELEASES: dict[str, Release] = {
    release.name: release
    for release in (
        Release(
            name="rev_mvit_b_16x4_k400",
            builder="rev_mvit_b_16x4",
            url="https://dl.fbaipublicfiles.com/pyslowfast/rev/REV_MVIT_B_16x4.pyth",
            file_name="REV_MVIT_B_16x4.pyth",
            source="PySlowFast model zoo (Kinetics/REV_MVIT_B_16x4_CONV)",
            top1=78.4,
            views=(5, 1),
        ),
        Release(
            name="mvit_b_16x4_k400",
            builder="mvit_b_16x4",
            url="https://download.pytorch.org/models/mvit_v1_b-dbeb1030.pth",
            file_name="mvit_v1_b-dbeb1030.pth",
            source="torchvision MViT_V1_B_Weights.KINETICS400_V1",
            top1=78.477,
            views=(5, 1),
            hash_prefix="dbeb1030",
        ),
        Release(
            name="mvit_b_16x4_k400_pyslowfast",
            builder="mvit_b_16x4",
            url="https://drive.google.com/file/d/194gJinVejq6A1FmySNKQ8vAN5-FOY-QL/view",
            file_name="MVIT_B_16x4_CONV.pyth",
            source="PySlowFast model zoo (Kinetics/MVIT_B_16x4_CONV)",
            top1=78.4,
            views=(5, 1),
            browser_only=True,
        ),
    )
}


def find_release(name: str) -> Release | None:
    """The release called `name`, or None."""
    return RELEASES.get(name)


def fetch_release(release: Release, progress: bool = True) -> Path:
    """The release's file in the hub cache, downloaded first if it is not there yet."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / release.file_name
    if path.is_file():
        return path
    if release.browser_only:
        raise CheckpointError(
            f"{release.name} is on Google Drive, which scripts cannot download: open "
            f"{release.url} in a browser and pass weights=<path> (demo: --checkpoint <path>) or "
            f"save it as {path}"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Downloads into a temporary file next to `path` and renames it once complete (and
        # once its hash matches), so an interrupted download never looks cached.
        torch.hub.download_url_to_file(
            release.url, str(path), hash_prefix=release.hash_prefix, progress=progress
        )
    except (OSError, RuntimeError, ValueError) as err:
        reason = err.reason if isinstance(err, urllib.error.URLError) else err
        raise CheckpointError(
            f"cannot download {release.name} from {release.url}: {reason}; download it "
            f"elsewhere and pass weights=<path> (demo: --checkpoint <path>) or save it as {path}"
        ) from None
    return path


def load_weights(model: nn.Module, weights: str | os.PathLike | None, builder: str) -> nn.Module:
    """`model` (built by `builder`) with `weights` loaded: a release name or a checkpoint path.

    None leaves the model as it is. Raises CheckpointError (one line) for an unknown name, a
    release of another architecture or class count, a failed download or a file that does not
    fit the model.
    """
    if weights is None:
        return model
    release = find_release(weights) if isinstance(weights, str) else None
    if release is not None:
        if release.builder != builder:
            raise CheckpointError(
                f"weights {release.name} are for {release.builder}, not {builder}"
            )
        classes = model.head.projection.out_features
        if classes != release.num_classes:
            raise CheckpointError(
                f"weights {release.name} classify {release.num_classes} classes; build the "
                f"model with num_classes={release.num_classes} (not {classes}) and replace "
                "model.head.projection to fine-tune on other classes"
            )
        path = fetch_release(release)
    else:
        path = Path(weights)
        if isinstance(weights, str) and not path.exists():
            raise CheckpointError(
                f"weights {weights!r} is neither a file nor a release "
                f"({', '.join(sorted(RELEASES))})"
            )
    load_checkpoint(path, model)
    return model


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
        cfg = get_cfg()
        cfg.merge_from_other_cfg(CfgNode(tree))
    except (yaml.YAMLError, KeyError, ValueError, TypeError) as err:
        reason = str(err.args[0] if isinstance(err, KeyError) and err.args else err)
        raise ConfigError(
            f"the config stored in {source} is not a revvideo config "
            f"({reason.splitlines()[0]}); pass the YAML config that describes its model"
        ) from None
    return cfg


def read_model_checkpoint(
    path: Path, cfg_file: str | os.PathLike | None
) -> tuple[CfgNode, dict[str, Any]]:
    """The config of the model whose weights `path` holds, and the checkpoint, read once: the
    config is the YAML file `cfg_file` when one is given, else the revvideo config saved in the
    checkpoint. ConfigError when there is neither. Load the weights with `load_model_state`.
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
    return cfg, checkpoint


def stored_class_names(checkpoint: Mapping[str, Any], num_classes: int) -> list[str] | None:
    """The checkpoint's "class_names" entry (training saves it) when it names `num_classes`
    classes, else None."""
    names = checkpoint.get("class_names")
    if isinstance(names, list) and len(names) == num_classes:
        return [str(name) for name in names]
    return None
