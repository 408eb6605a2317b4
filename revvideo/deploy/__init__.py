"""Deployment: a checkpoint's model exported to ONNX or torch.export's `.pt2` with its metadata
inside and its parity checked (export), and such a file read back as a model (exported).

ONNX needs the deploy extra (`pip install 'revvideo[deploy]'`: onnx, onnxruntime, onnxscript),
imported only where used."""

from revvideo.deploy.export import PARITY_TOLERANCE, ExportError, ExportReport, export_checkpoint
from revvideo.deploy.exported import Exported, ExportMetadata, read_exported

__all__ = [
    "PARITY_TOLERANCE",
    "ExportError",
    "ExportMetadata",
    "ExportReport",
    "Exported",
    "export_checkpoint",
    "read_exported",
]
