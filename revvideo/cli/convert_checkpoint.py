"""Converts PySlowFast and torchvision checkpoints to revvideo's, or revvideo's to PySlowFast's.

    python tools/convert_checkpoint.py REV_MVIT_B_16x4.pyth rev_mvit_b_16x4_k400.pyth \\
        --cfg configs/kinetics/REV_MVIT_B_16x4.yaml             # PySlowFast .pyth -> revvideo
    python tools/convert_checkpoint.py mvit_v1_b-dbeb1030.pth mvit_b_16x4_k400.pyth \\
        --cfg configs/kinetics/MVIT_B_16x4.yaml                 # torchvision mvit_v1_b -> revvideo
    python tools/convert_checkpoint.py output/run/checkpoints/checkpoint_epoch_00200.pyth \\
        run_pyslowfast.pyth --to pyslowfast                     # revvideo -> PySlowFast

SOURCE is a file (the layout is recognised) or a release name (revvideo.checkpoint.releases). The
model is built from --cfg, else from the config stored in SOURCE (revvideo checkpoints).

revvideo's layout: {"model_state", "cfg" (YAML), "class_names", "provenance" (source, epoch,
step), "epoch" if SOURCE has one}; PySlowFast's: {"model_state", "epoch" if SOURCE has one}.
Parameter names are PySlowFast's in both. Optimizer states are dropped: they depend on the
optimizer's parameter groups.

Before it finishes, the converted file is loaded into a fresh model and its logits on a random
clip are compared with the source's (for torchvision weights: torchvision's own MViT with the
original tensors). Exit status: 0 converted and equal; 1 the outputs differ (the file is
removed); 2 a mistake in the options, the config or the checkpoint (one `error:` line); 130
interrupted by Ctrl-C (one `interrupted` line).
"""

import argparse
import sys

from revvideo.utils.cli import command_parser, run_interruptibly

# The layouts it writes, as in revvideo.cli._conversion (not imported before the arguments
# are read, so that --help and option mistakes answer at once).
TARGETS = ("revvideo", "pyslowfast")


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(__doc__)
    parser.add_argument("source", help="checkpoint file or release name")
    parser.add_argument("output", help="where to write the converted checkpoint")
    parser.add_argument("--cfg", help="YAML config of the model (default: the source's own)")
    parser.add_argument(
        "--to", choices=TARGETS, default="revvideo", help="layout to write (default: revvideo)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_interruptibly(lambda: _convert(build_parser().parse_args(argv)))


def _convert(args: argparse.Namespace) -> int:
    from revvideo.cli._conversion import ConversionMismatch, convert
    from revvideo.utils.errors import UserError

    try:
        difference = convert(args.source, args.output, args.cfg, args.to)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1 if isinstance(err, ConversionMismatch) else 2
    print(
        f"wrote {args.output} ({args.to} layout); logits equal to the source's on a random clip "
        f"(largest relative difference {difference:.1e})"
    )
    return 0
