"""Writes the synthetic motion dataset (see revvideo.data.synthetic) into a folder.

python tools/make_synthetic_dataset.py data/synthetic [--seed 0] [--classes up,down,...]

The quick start makes it on first use (DATA.GENERATE_SYNTHETIC); this command writes it anywhere,
with other classes or sizes. A synthetic dataset of other settings in the folder is replaced; a
folder holding anything else (a file of one's own beside a dataset included) is left as it is,
with an error. Exit status: 0 written; 2 a mistake in the options or an output it cannot write
(one `error:` line); 130 interrupted by Ctrl-C (one `interrupted` line; the next run replaces
what it left).
"""

import argparse
import sys
from collections.abc import Sequence

# Light (numpy and PyAV, no torch), so that --help answers at once.
from revvideo.data import synthetic
from revvideo.utils.cli import OneLineErrorParser, positive_int, run_interruptibly
from revvideo.utils.errors import DataError, UserError


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(description=synthetic.__doc__.splitlines()[0])
    parser.add_argument("output", help="folder to create (train.csv, val.csv, test.csv, videos/)")
    parser.add_argument(
        "--seed",
        type=_seed,
        default=0,
        help="the dataset is a function of the seed, 0 or more (default: %(default)s)",
    )
    parser.add_argument(
        "--classes",
        default=",".join(synthetic.DEFAULT_CLASSES),
        help=f"comma-separated motions, each once, out of: {', '.join(synthetic.MOTIONS)} "
        "(default: %(default)s)",
    )
    for split, count in synthetic.DEFAULT_VIDEOS_PER_CLASS.items():
        parser.add_argument(
            f"--{split}",
            type=positive_int,
            default=count,
            help=f"{split} videos per class, 1 or more (default: %(default)s)",
        )
    return parser


def _seed(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number, 0 or more, got {text!r}")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    return run_interruptibly(lambda: _make(build_parser().parse_args(argv)))


def _make(args: argparse.Namespace) -> int:
    classes = [name.strip() for name in args.classes.split(",") if name.strip()]
    try:
        unknown = sorted(set(classes) - set(synthetic.MOTIONS))
        if unknown or len(set(classes)) < len(classes) or len(classes) < 2:
            raise DataError(
                f"--classes needs at least two of {', '.join(synthetic.MOTIONS)}, each once; "
                f"got {','.join(classes)}"
            )
        counts = {split: getattr(args, split) for split in synthetic.DEFAULT_VIDEOS_PER_CLASS}
        synthetic.ensure_synthetic_dataset(args.output, args.seed, classes, counts)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # A read-only or full disk, an output inside a file.
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: cannot write {args.output} ({where}{err.strerror or err})", file=sys.stderr)
        return 2
    total = sum(counts.values()) * len(classes)
    print(f"{args.output}: {total} videos of {len(classes)} classes ({', '.join(classes)})")
    return 0
