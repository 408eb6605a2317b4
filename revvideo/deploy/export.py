"""A checkpoint's model as one file that runs without revvideo: ONNX (`.onnx`, for onnxruntime)
or torch.export's archive (`.pt2`), with a dynamic batch dimension and the metadata a
classifier needs stored inside (revvideo.deploy.exported.ExportMetadata).

The file is read back as read_exported reads it, and its logits on a random clip are compared
with the checkpoint's model's; a file whose logits differ by more than PARITY_TOLERANCE is not
kept."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from fvcore.common.config import CfgNode
from torch import nn

import revvideo
from revvideo.checkpoint import checkpoint_file
from revvideo.deploy.exported import (
    METADATA_KEY,
    SUFFIXES,
    ExportMetadata,
    deploy_module,
    read_exported,
)
from revvideo.models import load_trained
from revvideo.utils.errors import UserError, first_line
from revvideo.utils.files import written_whole

# Largest absolute logit difference between the file and the checkpoint's model that passes.
PARITY_TOLERANCE = 1e-3
# Clips in the traced example and in the parity check: above 1, so the batch stays dynamic.
PARITY_BATCH = 2
SEED = 0


class ExportError(UserError):
    """A model that does not export, or an export whose logits differ from the model's."""


@dataclass(frozen=True)
class ExportReport:
    path: Path
    metadata: ExportMetadata
    difference: float  # largest absolute logit difference from the checkpoint's model
    seconds: float  # reading, exporting, writing and checking


def export_checkpoint(
    checkpoint: str | os.PathLike,
    destination: str | os.PathLike,
    cfg_file: str | os.PathLike | None = None,
) -> ExportReport:
    """Exports the model in `checkpoint` (a file, a run folder or a release, see
    revvideo.checkpoint.checkpoint_file; built from `cfg_file`, else from the config it stores)
    to `destination`, whose suffix (.onnx or .pt2) chooses the format, and checks its parity.

    Raises UserError (one line) for every unusable input, ExportError for a model that does not
    export or whose export differs; `destination` is then left as it was.
    """
    destination = Path(destination)
    if destination.suffix not in SUFFIXES:
        raise ExportError(f"{destination}: the exported file's name must end in .onnx or .pt2")
    start = time.perf_counter()
    path = checkpoint_file(checkpoint, "CHECKPOINT")
    trained = load_trained(path, cfg_file)
    model, cfg = trained.model, trained.cfg
    metadata = _metadata(cfg, trained.class_names, trained.temperature, str(path))
    data = cfg.DATA
    shape = (PARITY_BATCH, 3, data.NUM_FRAMES, data.TEST_CROP_SIZE, data.TEST_CROP_SIZE)
    generator = torch.Generator().manual_seed(SEED)
    example, clip = (torch.randn(shape, generator=generator) for _ in range(2))
    if destination.suffix == ".onnx":
        # Checked first: the exporter's own ImportError would read as a model that cannot export.
        for name in ("onnxscript", "onnxruntime"):
            deploy_module(name, "ONNX export")
    program = _exported_program(model, example, path)
    with written_whole(destination) as partial:
        if destination.suffix == ".onnx":
            _save_onnx(program, metadata, partial, path)
        else:
            torch.export.save(program, partial, extra_files={METADATA_KEY: metadata.to_json()})
        difference = _largest_difference(model, partial, clip)
        if not difference <= PARITY_TOLERANCE:  # NaN fails too
            raise ExportError(
                f"the exported model's logits differ from {path}'s by {difference:.2e} "
                f"(tolerance {PARITY_TOLERANCE:.0e}) on a random clip; {destination} not written"
            )
    return ExportReport(destination, metadata, difference, time.perf_counter() - start)


def _metadata(
    cfg: CfgNode, names: list[str], temperature: float | None, source: str
) -> ExportMetadata:
    data = cfg.DATA
    return ExportMetadata(
        class_names=names,
        mean=list(data.MEAN),
        std=list(data.STD),
        num_frames=data.NUM_FRAMES,
        sampling_rate=data.SAMPLING_RATE,
        target_fps=data.TARGET_FPS,
        crop_size=data.TEST_CROP_SIZE,
        views=(cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS),
        ensemble_method=data.ENSEMBLE_METHOD,
        temperature=temperature,
        source=source,
        version=revvideo.__version__,
    )


def _exported_program(
    model: nn.Module, example: torch.Tensor, source: Path
) -> torch.export.ExportedProgram:
    """`model` traced on `example` (B, 3, T, H, W) with B left dynamic."""
    batch = torch.export.Dim("batch", min=1)
    try:
        return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    except Exception as err:  # torch.export fails in many types, all meaning the same here
        raise ExportError(f"the model of {source} does not export: {first_line(err)}") from None


def _save_onnx(
    program: torch.export.ExportedProgram, metadata: ExportMetadata, path: Path, source: Path
) -> None:
    try:
        onnx_program = torch.onnx.export(
            program, input_names=["clips"], output_names=["logits"], dynamo=True, verbose=False
        )
    except Exception as err:  # the ONNX translation's failures have no common type either
        raise ExportError(
            f"the model of {source} does not export to ONNX: {first_line(err)}"
        ) from None
    onnx_program.model.metadata_props[METADATA_KEY] = metadata.to_json()
    # One self-contained file (no external weights beside it), so that it is written whole.
    onnx_program.save(path, external_data=False)


@torch.inference_mode()
def _largest_difference(model: nn.Module, path: Path, clip: torch.Tensor) -> float:
    """Largest absolute difference of `model`'s logits and those of the file at `path`, read as
    read_exported reads it, on `clip` (B, 3, T, H, W)."""
    exported = read_exported(path, torch.device("cpu"))
    return (exported.model(clip).float() - model(clip).float()).abs().max().item()
