"""Builds revvideo's CSVs (train.csv, val.csv, test.csv, classnames.json) for a folder of videos.

It reads three layouts, found by looking into --videos:

1. split folders, <videos>/<split>/<class>/<video> with split train, val or test:
     python tools/prepare_kinetics.py data/k400 --videos /downloads/k400
2. class folders, <videos>/<class>/<video> (e.g. my_videos/cooking/a.mp4): each class's videos
   are split here into train, val and test by --split fractions, seeded by --seed:
     python tools/prepare_kinetics.py data/mine --videos my_videos --split 0.7 0.15 0.15 --seed 0
   Training needs train and val videos of 2 classes or more: train and val take fractions
   above 0, a class of 2 videos gives one to train and one to val, and folders without videos
   are left out with a notice.
3. the official Kinetics annotation CSVs (label,youtube_id,time_start,time_end,split), matched
   against clips named <youtube_id>_<start:06d>_<end:06d>.<ext> or <youtube_id>.<ext>:
     python tools/prepare_kinetics.py data/k400 --videos /downloads/k400 \\
         --annotations train=kinetics400/train.csv val=kinetics400/validate.csv

Add --resize 320 --jobs 8 to re-encode to short side 320 into <output>/videos/<path under
--videos>.mp4 (failures, with the reason, in failed.txt). Each file records its source's path,
size and modification time and the short side: a later run reuses it only where all match, and
encodes the others again (so a killed run goes on where it stopped).
Class indices follow Kinetics-400's order when every class is a Kinetics-400 class, else the
sorted class names. Writes <output>/{train,val,test}.csv (one `path label` row per video; a
notice names a split left without videos), classnames.json, missing_<split>.txt and failed.txt,
removes those of an earlier run that this one leaves empty, and says which; then set
DATA.PATH_TO_DATA_DIR to <output>. It prints the videos of each class in each split, and one
warning per split naming its classes of fewer than two videos (DATA.CLASS_BALANCE trains
imbalanced classes alike). An output folder that holds lists already is refused unless
given --overwrite. A clip annotated more than once is listed once, in its last split of train, val,
test (so that no clip evaluated is trained on), with a notice.

Hidden files and folders (names starting with '.': .DS_Store, .git, macOS's ._a.mp4) are skipped
and counted. A video whose path holds a newline or control character would split its row, and
one whose name is not valid UTF-8 cannot be written in the lists: it is skipped and counted. A
class name that cannot be a folder name ('/', '..', a newline) or is not valid UTF-8 is an error. Inputs are
never written: the lists must not replace an annotation CSV, and with --resize <output>/videos
must lie outside --videos. Exit status: 0 done; 2 a user mistake (one `error:` line); 130
interrupted by Ctrl-C (one `interrupted` line; the lists are written only once all is done).
"""

import argparse
import os
import sys

# Light: the parser needs them. The data pipeline is imported once the arguments are read, so
# that --help and option mistakes answer at once.
from revvideo.classes import DEFAULT_SPLIT, SPLITS
from revvideo.utils.cli import command_parser, run_interruptibly
from revvideo.utils.errors import DataError, UserError


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(__doc__)
    parser.add_argument("output", help="folder for the CSVs (and the re-encoded videos)")
    parser.add_argument("--videos", required=True, help="folder of the videos (required)")
    parser.add_argument(
        "--annotations",
        nargs="+",
        metavar="SPLIT=CSV",
        help="official annotation CSVs per split (train, val or test) (default: none; the "
        "layout is read from the folders)",
    )
    parser.add_argument(
        "--split",
        nargs=3,
        type=float,
        metavar=("TRAIN", "VAL", "TEST"),
        help="fractions of each class's videos per split, for class folders only; train and "
        "val above 0 "
        f"(default: {' '.join(map(str, DEFAULT_SPLIT))})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="seed of the split of class folders: the same seed gives the same split (default: 0)",
    )
    parser.add_argument(
        "--kinetics400",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="force (or refuse) Kinetics-400 class indices (default: when all names are "
        "Kinetics-400 names)",
    )
    parser.add_argument(
        "--resize",
        type=int,
        metavar="SHORT_SIDE",
        help="re-encode to this short side, e.g. 320 (default: no re-encoding)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the lists already in the output folder, and remove those this dataset "
        "leaves empty (default: stop with an error naming them)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count(),
        help="re-encoding processes (default: the number of CPUs, %(default)s here)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    kept = (
        " (the videos re-encoded so far are kept: the same command goes on)" if args.resize else ""
    )
    return run_interruptibly(lambda: _prepare_and_report(args), f"interrupted{kept}")


def _prepare_and_report(args: argparse.Namespace) -> int:
    try:
        found, hidden, done = _prepare(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # An unreadable folder, a read-only or full output folder.
        print(f"error: {err.filename or args.output}: {err.strerror or err}", file=sys.stderr)
        return 2
    from revvideo.data.kinetics import class_count_lines, few_videos_warnings, videos_per_class

    for notice in found.notices:
        print(f"notice: {notice}")
    per_class = videos_per_class(found.videos, len(found.class_names))
    counts = ", ".join(f"{split} {sum(row)}" for split, row in per_class.items())
    skipped = f"; {hidden} hidden files and folders skipped (names starting with '.')"
    print(
        f"{args.output}: {counts} videos of {len(found.class_names)} classes"
        f"{skipped if hidden else ''}"
    )
    print("videos per class:")
    for line in class_count_lines(per_class, found.class_names):
        print(f"  {line}")
    for warning in few_videos_warnings(per_class, found.class_names):
        print(f"warning: {warning}")
    for split, rows in found.missing.items():
        print(f"{len(rows)} {split} clips not downloaded: {args.output}/missing_{split}.txt")
    for line in done:
        print(line)
    return 0


def _prepare(args):
    """Reads the layout of args.videos, re-encodes if asked, writes the lists; returns what
    was found, its `notices` extended with the failures to re-encode, how many hidden files
    and folders were skipped, and lines saying what was written and removed."""
    from revvideo.data.kinetics import (
        FAILED_FILE,
        REENCODED_DIR,
        check_outputs,
        count_hidden,
        folder_layout,
        reencode_all,
        videos_from_annotations,
        videos_from_class_folders,
        videos_from_folders,
        write_lists,
    )

    if args.resize is not None and args.resize < 2:
        raise UserError(f"--resize takes a short side in pixels, got {args.resize}")
    if args.jobs < 1:
        raise UserError(f"--jobs takes a number of processes, at least 1, got {args.jobs}")
    if not os.path.isdir(args.videos):
        raise DataError(f"--videos {args.videos} is not a folder")
    annotations = _annotation_files(args.annotations or ())
    layout = "annotations" if annotations else folder_layout(args.videos)
    if layout != "classes" and (args.split is not None or args.seed is not None):
        raise UserError(
            f"--split and --seed split class folders (<class>/<video>), but {args.videos} is "
            + ("read with --annotations" if annotations else "already split (<split>/<class>)")
        )
    if args.split is not None and not all(fraction > 0 for fraction in args.split[:2]):
        shown = " ".join(f"{fraction:g}" for fraction in args.split)
        raise UserError(
            f"--split {shown}: training (tools/run_net.py) needs train and val videos, so the "
            "train and val fractions must be above 0 (e.g. --split 0.7 0.15 0.15)"
        )
    check_outputs(args.output, args.videos, annotations.values(), bool(args.resize), args.overwrite)
    if annotations:
        found = videos_from_annotations(annotations, args.videos, args.kinetics400)
    elif layout == "splits":
        found = videos_from_folders(args.videos, args.kinetics400)
    else:
        found = videos_from_class_folders(
            args.videos,
            args.split or DEFAULT_SPLIT,
            args.seed or 0,
            args.kinetics400,
            min_classes=2,  # a classifier of one class has nothing to learn
        )
    failed, done = [], []
    if args.resize:
        reencoding = reencode_all(found.videos, args.videos, args.output, args.resize, args.jobs)
        found.videos, failed = reencoding.videos, reencoding.failed
        replaced = f" ({reencoding.replaced} replacing files of other sources or sizes)"
        done.append(
            f"{args.output}/{REENCODED_DIR}: {reencoding.encoded} videos re-encoded"
            f"{replaced if reencoding.replaced else ''}, {reencoding.reused} reused"
        )
    written, removed = write_lists(
        args.output, found.videos, found.class_names, found.missing, failed
    )
    done.append(f"{args.output}: wrote {', '.join(written)}")
    if removed:
        done[-1] += f"; removed {', '.join(removed)}, which this dataset leaves empty"
    if failed:
        path, reason = failed[0]
        found.notices.append(
            f"{len(failed)} videos failed to re-encode (the first: {path}: {reason}); all with "
            f"the reason in {args.output}/{FAILED_FILE}"
        )
    listed = {video.split for video in found.videos}
    if unlisted := [split for split in SPLITS if split not in listed]:
        found.notices.append(
            f"no {' or '.join(unlisted)} videos, so no "
            f"{', '.join(f'{args.output}/{split}.csv' for split in unlisted)}: training "
            "(tools/run_net.py) needs train.csv and val.csv, testing needs test.csv"
        )
    return found, count_hidden(args.videos), done


def _annotation_files(pairs):
    files = {}
    for pair in pairs:
        split, _, path = pair.partition("=")
        if split not in SPLITS or not path:
            raise DataError(f"--annotations takes SPLIT=CSV with SPLIT in {SPLITS}, got {pair!r}")
        if split in files:
            raise DataError(
                f"--annotations gives {split} twice ({files[split]}, {path}): give one CSV "
                "per split"
            )
        files[split] = path
    return files
