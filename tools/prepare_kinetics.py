"""Builds revvideo's CSVs for a Kinetics-style dataset, optionally re-encoding the videos.

From a folder tree (<videos>/<split>/<class>/<video>):
    python tools/prepare_kinetics.py data/k400 --videos /downloads/k400
From the official annotation CSVs (label,youtube_id,time_start,time_end,split), matched against
downloaded clips named <youtube_id>_<start:06d>_<end:06d>.<ext> or <youtube_id>.<ext>:
    python tools/prepare_kinetics.py data/k400 --videos /downloads/k400 \\
        --annotations train=kinetics400/train.csv val=kinetics400/validate.csv
Add --resize 320 --jobs 8 to re-encode to short side 320 (resumable; failures in failed.txt).
Class indices follow Kinetics-400's order when every class is a Kinetics-400 class.
Writes <out>/{train,val,test}.csv, classnames.json, missing_<split>.txt and failed.txt; then set
DATA.PATH_TO_DATA_DIR to <out>.
"""

import argparse
import os
import sys
from collections import Counter

from revvideo.data.kinetics import (
    reencode_all,
    videos_from_annotations,
    videos_from_folders,
    write_lists,
)
from revvideo.data.paths import SPLITS
from revvideo.utils.errors import DataError, UserError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="folder for the CSVs (and re-encoded videos)")
    parser.add_argument("--videos", required=True, help="folder of downloaded videos")
    parser.add_argument(
        "--annotations",
        nargs="+",
        metavar="SPLIT=CSV",
        help="official annotation CSVs per split (train, val or test)",
    )
    parser.add_argument(
        "--kinetics400",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="force (or refuse) Kinetics-400 class indices; default: when all names match",
    )
    parser.add_argument("--resize", type=int, metavar="SHORT_SIDE", help="re-encode, e.g. 320")
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="re-encoding processes")
    args = parser.parse_args(argv)
    try:
        if not os.path.isdir(args.videos):
            raise DataError(f"--videos {args.videos} is not a folder")
        missing = {}
        if args.annotations:
            videos, names, missing = videos_from_annotations(
                _annotation_files(args.annotations), args.videos, args.kinetics400
            )
        else:
            videos, names = videos_from_folders(args.videos, args.kinetics400)
        failed = []
        if args.resize:
            videos, failed = reencode_all(videos, args.output, names, args.resize, args.jobs)
        write_lists(args.output, videos, names, missing, failed)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    per_split = Counter(video.split for video in videos)
    counts = ", ".join(f"{split} {per_split[split]}" for split in SPLITS if per_split[split])
    print(f"{args.output}: {counts} videos of {len(names)} classes")
    for split, rows in missing.items():
        print(f"{len(rows)} {split} clips not downloaded: {args.output}/missing_{split}.txt")
    if failed:
        print(f"{len(failed)} videos failed to re-encode: {args.output}/failed.txt")
    return 0


def _annotation_files(pairs):
    files = {}
    for pair in pairs:
        split, _, path = pair.partition("=")
        if split not in SPLITS or not path:
            raise DataError(f"--annotations takes SPLIT=CSV with SPLIT in {SPLITS}, got {pair!r}")
        files[split] = path
    return files


if __name__ == "__main__":
    sys.exit(main())
