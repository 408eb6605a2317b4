"""Released checkpoints by name, and `weights=` for the model builders.

`rev_mvit_b_16x4(weights="rev_mvit_b_16x4_k400")` downloads the release once into the torch
hub cache (`torch.hub.get_dir()/checkpoints`, moved with $TORCH_HOME) and loads it;
`weights="path/to/file.pyth"` loads a local file in any layout `revvideo.checkpoint` reads.
Offline, a release that is not cached yet is a one-line CheckpointError saying where to get it.

The releases are the Kinetics-400 checkpoints of PySlowFast's model zoo and torchvision's
`MViT_V1_B_Weights.KINETICS400_V1`, and PySlowFast's ImageNet-1k image models (Rev-ViT-S/B,
Rev-MViT-B: one-frame inputs); each names the builder it fits and the test protocol of its
reported top-1 (input geometry and views), which `demo/classify.py` uses.
"""

from __future__ import annotations

import functools
import logging
import os
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from revvideo.checkpoint.files import load_checkpoint
from revvideo.checkpoint.training import BEST_MODEL, LAST_MODEL, model_path
from revvideo.classes import imagenet1k_class_names, resolve_class_names
from revvideo.utils.errors import CheckpointError

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGENET_1K",
    "KINETICS_400",
    "RELEASES",
    "Release",
    "checkpoint_file",
    "fetch_release",
    "find_release",
    "load_weights",
]


KINETICS_400 = "Kinetics-400"
IMAGENET_1K = "ImageNet-1k"


@dataclass(frozen=True)
class Release:
    """A published checkpoint and how its reported accuracy was measured."""

    name: str
    # The revvideo.models builder whose default architecture it fits (with `num_frames` frames).
    builder: str
    url: str
    file_name: str  # its name in the hub cache
    source: str
    top1: float  # reported top-1 on `dataset`'s validation set, percent
    views: tuple[int, int]  # (temporal clips, spatial crops) behind `top1`
    # sha256 prefix the download must match; None when the publisher gives none.
    hash_prefix: str | None = None
    # Hosted where a script cannot fetch it (Google Drive asks a browser to confirm).
    browser_only: bool = False
    dataset: str = KINETICS_400
    num_classes: int = 400
    num_frames: int = 16  # 1: an image model, which classifies still images
    sampling_rate: int = 4
    target_fps: int = 30
    crop_size: int = 224
    # Short side the input is resized to before the crops; None: `crop_size` (PySlowFast's
    # video test). PySlowFast's ImageNet test resizes to 256 (bicubic), then crops the centre.
    test_short_side: int | None = None
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)

    def class_names(self) -> list[str]:
        if self.dataset == IMAGENET_1K:
            return imagenet1k_class_names()
        return resolve_class_names(self.num_classes).names


def _pyslowfast_imagenet(
    name: str, builder: str, file_name: str, config: str, top1: float
) -> Release:
    """A release of PySlowFast's ImageNet model zoo (projects/rev/README.md): one 224 px
    centre crop of the short side resized to 256, ImageNet's mean and std."""
    return Release(
        name=name,
        builder=builder,
        url=f"https://dl.fbaipublicfiles.com/pyslowfast/rev/{file_name}",
        file_name=file_name,
        source=f"PySlowFast model zoo (ImageNet/{config})",
        top1=top1,
        views=(1, 1),
        dataset=IMAGENET_1K,
        num_classes=1000,
        num_frames=1,
        sampling_rate=1,
        test_short_side=256,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
    )


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
        _pyslowfast_imagenet("rev_vit_s_in1k", "rev_vit_s", "REV_VIT_S.pyth", "REV_VIT_S", 79.9),
        _pyslowfast_imagenet("rev_vit_b_in1k", "rev_vit_b", "REV_VIT_B.pyth", "REV_VIT_B", 81.8),
        # 82.9 in the model zoo, up from the paper's 82.5.
        _pyslowfast_imagenet(
            "rev_mvit_b_in1k",
            "rev_mvit_b_imagenet",
            "REV_MVIT_B.pyth",
            "REV_MVIT_B_16_CONV",
            82.9,
        ),
    )
}


def find_release(name: str) -> Release | None:
    """The release called `name`, or None."""
    return RELEASES.get(name)


def fetch_release(release: Release, progress: bool = True, option: str = "weights") -> Path:
    """The release's file in the hub cache, downloaded first if it is not there yet; where it
    cannot be, CheckpointError says how to give the file as `option` instead."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / release.file_name
    if path.is_file():
        return path
    given = "weights=<path>" if option == "weights" else f"{option} <path>"
    if release.browser_only:
        raise CheckpointError(
            f"{release.name} is on Google Drive, which scripts cannot download: open "
            f"{release.url} in a browser and pass {given} or save it as {path}"
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
            f"elsewhere and pass {given} or save it as {path}"
        ) from None
    return path


def checkpoint_file(source: str | os.PathLike, option: str = "weights") -> Path:
    """The file of `source`: a release name (downloaded once into the hub cache), a path, or a
    training run's OUTPUT_DIR, whose checkpoints/best.pyth (the best on validation), else
    checkpoints/last.pyth (the newest), it gives (logged once).

    CheckpointError naming `option` (the key or argument that gave it) when it is none of these.
    """
    release = find_release(source) if isinstance(source, str) else None
    if release is not None:
        return fetch_release(release, option=option)
    path = Path(source)
    if path.is_dir():
        return _run_model(path, option)
    if not path.exists():
        # A bare word may be a misspelt release name; anything else is a file path.
        if isinstance(source, str) and not path.suffix and path.name == source:
            raise CheckpointError(
                f"{option} {source!r} is neither a file nor a release "
                f"({', '.join(sorted(RELEASES))})"
            )
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


def _run_model(run: Path, option: str) -> Path:
    """The model of the training run in the folder `run` (see checkpoint_file)."""
    best, last = model_path(run, BEST_MODEL), model_path(run, LAST_MODEL)
    for path, which in ((best, "its best on validation"), (last, "its newest model")):
        if path.is_file():
            _report_run_model(option, run, path, which)
            return path
    raise CheckpointError(
        f"{option} {run} is a folder without {best.relative_to(run)} or "
        f"{last.relative_to(run)}: give a checkpoint file, or the OUTPUT_DIR of a training run"
    )


# Once for each file: a run resolves its checkpoint more than once (checks, then loading).
@functools.cache
def _report_run_model(option: str, run: Path, path: Path, which: str) -> None:
    logger.info("%s %s is a training run: using %s, %s", option, run, path, which)


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
                f"model with num_classes={release.num_classes} (not {classes}), or fine-tune "
                f"on other classes with TRAIN.CHECKPOINT_FILE_PATH {release.name}"
            )
    load_checkpoint(checkpoint_file(weights), model)
    return model
