"""Exports a checkpoint's model to ONNX or torch.export's .pt2, and checks it against the model.

    python tools/export.py output/rev_mvit_xs model.onnx     # for onnxruntime
    python tools/export.py checkpoint_epoch_00060.pyth model.pt2   # for torch.export.load

CHECKPOINT is a file, a training run's OUTPUT_DIR (its best model, else its newest) or a
release name; the model is built from --cfg, else from the config stored in the checkpoint. OUT's suffix chooses
the format. The file holds the model with a dynamic batch dimension, taking normalised clips
(N, 3, T, H, W) and returning logits (N, classes), and, as one JSON document, what a classifier
needs besides: class names, mean and std, frames, sampling rate and frame rate, test crop size
and views, ensemble method, calibration temperature, source checkpoint and revvideo version
(ONNX: the model's metadata_props; .pt2: the extra file "revvideo").

Before it finishes, the file is read back (onnxruntime's CPU provider for ONNX) and its logits
on a random clip are compared with the checkpoint's model's. ONNX needs the deploy extra:
pip install 'revvideo[deploy]'. Exit status: 0 exported within tolerance; 2 a mistake in the
options or the checkpoint, a model that does not export, or logits beyond the tolerance (one
`error:` line; nothing is written); 130 interrupted by Ctrl-C (one `interrupted` line).
"""

import argparse
import sys

from revvideo.utils.cli import command_parser, run_interruptibly


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(__doc__)
    parser.add_argument(
        "checkpoint", metavar="CHECKPOINT", help="checkpoint file, training run folder or release"
    )
    parser.add_argument("output", metavar="OUT", help="the file to write: OUT.onnx or OUT.pt2")
    parser.add_argument("--cfg", help="YAML config of the model (default: the checkpoint's own)")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_interruptibly(lambda: _export(build_parser().parse_args(argv)))


def _export(args: argparse.Namespace) -> int:
    from revvideo.deploy import PARITY_TOLERANCE, export_checkpoint
    from revvideo.utils.errors import UserError

    try:
        report = export_checkpoint(args.checkpoint, args.output, args.cfg)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    meta = report.metadata
    clips, crops = meta.views
    print(f"wrote {report.path} in {report.seconds:.1f} s")
    print(
        f"{len(meta.class_names)} classes; clips of {meta.num_frames} frames every "
        f"{meta.sampling_rate} at {meta.target_fps} fps, {meta.crop_size} px crops; "
        f"{clips} x {crops} views ({meta.ensemble_method}); temperature "
        f"{'none' if meta.temperature is None else f'{meta.temperature:.3g}'}; from {meta.source}"
    )
    print(
        f"parity: largest logit difference {report.difference:.1e} "
        f"(tolerance {PARITY_TOLERANCE:.0e}) on a random clip"
    )
    return 0
