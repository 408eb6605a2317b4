"""Reading an exported model (revvideo.deploy.export) back: an `nn.Module` on onnxruntime
(`.onnx`) or torch.export's unpacked program (`.pt2`), and the metadata stored in the file."""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn
from torch.export.passes import move_to_device_pass

from revvideo.utils.errors import CheckpointError, UserError, first_line

SUFFIXES = (".onnx", ".pt2")
# The metadata's key in the file: ONNX's metadata_props, the pt2 archive's extra_files.
METADATA_KEY = "revvideo"
EXTRA = "pip install 'revvideo[deploy]'"


@dataclass(frozen=True)
class ExportMetadata:
    """What a classifier needs besides the network: the names of its outputs, the input it
    expects ((N, 3, num_frames, crop_size, crop_size) clips normalised by mean and std, frames
    `sampling_rate` apart at `target_fps`), its test views and calibration."""

    class_names: list[str]
    mean: list[float]
    std: list[float]
    num_frames: int
    sampling_rate: int
    target_fps: int
    crop_size: int  # the test crop's side
    views: tuple[int, int]  # (temporal clips, spatial crops)
    ensemble_method: str
    temperature: float | None  # divides the logits before the softmax; None: none fitted
    source: str  # the checkpoint the model was exported from
    version: str  # revvideo's, at export

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str, path: Path) -> ExportMetadata:
        """CheckpointError naming `path` when `text` is not the JSON object `to_json` writes."""
        try:
            values = json.loads(text)
        except json.JSONDecodeError:
            values = None
        if not isinstance(values, dict):
            raise CheckpointError(f"{path}: its revvideo metadata is not a JSON object")
        missing = [f.name for f in fields(cls) if f.name not in values]
        if missing:
            raise CheckpointError(f"{path}: its revvideo metadata lacks {', '.join(missing)}")
        known = {f.name: values[f.name] for f in fields(cls)}
        return cls(**known | {"views": tuple(values["views"])})


@dataclass
class Exported:
    """An exported model, ready to classify: `model` maps normalised float clips
    (N, 3, T, H, W) on a device to logits (N, classes) on the same device."""

    model: nn.Module
    metadata: ExportMetadata


def deploy_module(name: str, purpose: str) -> ModuleType:
    """The module `name` of the deploy extra; UserError (one line) saying how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise UserError(f"{purpose} needs the deploy extra: {EXTRA}") from None


class OnnxRuntimeModel(nn.Module):
    """An onnxruntime session as a module: (N, 3, T, H, W) float clips -> (N, classes) logits,
    on the clips' device (onnxruntime computes on its own provider)."""

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        array = clips.detach().float().cpu().numpy()
        (logits,) = self.session.run(None, {self.input_name: array})
        return torch.from_numpy(logits).to(clips.device)


def read_exported(path: str | os.PathLike, device: torch.device) -> Exported:
    """The model exported to `path` (.onnx or .pt2), running on `device`, and its metadata.

    ONNX runs on onnxruntime: its CUDA provider for a CUDA device where installed, else its CPU
    one. CheckpointError (one line, naming the file) for a file that is not a revvideo export.
    """
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise CheckpointError(f"{path}: an exported model ends in {' or '.join(SUFFIXES)}")
    if not path.is_file():
        raise CheckpointError(f"exported model {path} does not exist")
    read = _read_onnx if path.suffix == ".onnx" else _read_pt2
    return read(path, torch.device(device))


def _read_onnx(path: Path, device: torch.device) -> Exported:
    ort = deploy_module("onnxruntime", "running an ONNX model")
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    # As many threads as PyTorch is told to use, so that both share the CPU alike.
    options.intra_op_num_threads = torch.get_num_threads()
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as err:  # onnxruntime's own exception types, one per failure
        raise CheckpointError(f"{path} is not an ONNX model: {first_line(err)}") from None
    text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if text is None:
        raise CheckpointError(f"{path}: an ONNX model without revvideo's metadata")
    return Exported(OnnxRuntimeModel(session), ExportMetadata.from_json(text, path))


def _read_pt2(path: Path, device: torch.device) -> Exported:
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a torch.export archive")
    extra = {METADATA_KEY: ""}
    try:
        with _export_logs_quiet():
            program = torch.export.load(path, extra_files=extra)
    except Exception:  # torch.export.load's errors have no common type, and refer to its logs
        raise CheckpointError(f"{path} is not a torch.export archive") from None
    if not extra[METADATA_KEY]:
        raise CheckpointError(f"{path}: a torch.export archive without revvideo's metadata")
    metadata = ExportMetadata.from_json(extra[METADATA_KEY], path)
    if device.type != "cpu":
        program = move_to_device_pass(program, device)
    return Exported(program.module(), metadata)


@contextlib.contextmanager
def _export_logs_quiet() -> Iterator[None]:
    """Within, torch.export logs no warnings: a file it cannot load is logged with a traceback
    before the error that read_exported turns into one line."""
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
