"""Preparing Kinetics-style datasets: our CSVs from folders or official annotations, re-encoding.

Used by tools/prepare_kinetics.py, which reads three layouts:
- split folders `<videos>/<split>/<class>/<video>` (videos_from_folders);
- class folders `<videos>/<class>/<video>`, split here per class (videos_from_class_folders);
- official Kinetics annotation CSVs (videos_from_annotations): a header and the columns
  label,youtube_id,time_start,time_end,split; downloaders name the clips
  `<youtube_id>_<start:06d>_<end:06d>.<ext>` or `<youtube_id>.<ext>`, often inside label folders.

Paths built from data stay inside the output folder: class names that are folder names are
checked (check_class_name), and video paths that cannot be one `path label` row of a UTF-8 list
are skipped. Hidden files and folders (".DS_Store", ".git", macOS's "._a.mp4") are neither
classes nor videos (count_hidden counts them).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import multiprocessing
import os
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import av
from av.video.reformatter import VideoReformatter
from tqdm import tqdm

from revvideo.classes import (
    CLASSNAMES_FILE,
    DEFAULT_SPLIT,
    SPLITS,
    first_names,
    folder_class_names,
    kinetics400_class_names,
    normalized_name,
    write_classnames_file,
)
from revvideo.data.decoding import (
    FrameClock,
    VideoDecodeError,
    check_video_file,
    display_rotation,
    scaled_size,
)
from revvideo.data.paths import VIDEO_EXTENSIONS, video_files
from revvideo.utils.errors import DataError, UserError
from revvideo.utils.files import is_hidden, written_whole
from revvideo.utils.text import read_text

ANNOTATION_COLUMNS = ("label", "youtube_id", "time_start", "time_end")
# Where re-encoded videos go inside the output folder: <path under the videos folder>.mp4.
REENCODED_DIR = "videos"
_ENCODER, _ENCODER_OPTIONS = "libx264", {"crf": "23", "preset": "fast"}
# The MP4 metadata tag a re-encoding records its source and settings in: MP4 keeps only a few
# named tags, and this one holds any text.
_PROVENANCE_TAG = "comment"
FAILED_FILE = "failed.txt"
# The lists write_lists writes besides classnames.json (each only when it has rows).
LIST_FILES = (
    *(f"{split}.csv" for split in SPLITS),
    *(f"missing_{split}.txt" for split in SPLITS),
    FAILED_FILE,
)
_LISTS = (*LIST_FILES, CLASSNAMES_FILE)
LAYOUTS = (
    "<split>/<class>/<video> (split folders train, val, test), <class>/<video> (class "
    "folders, split here), or the official annotation CSVs (--annotations)"
)


class Video(NamedTuple):
    """One listed video: split, class index, absolute path of its file."""

    split: str
    label: int
    path: str


@dataclass
class FoundVideos:
    """What a layout yields: the videos, the class names by index, per split the annotation rows
    without a file ("youtube_id start end label"), and one-line notices of what was left out."""

    videos: list[Video]
    class_names: list[str]
    missing: dict[str, list[str]] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)


def choose_class_names(found: Iterable[str], kinetics400: bool | None = None) -> list[str]:
    """Kinetics-400's names (so indices match released checkpoints) when every found name is one
    of them, or when `kinetics400` is True; else the found names, sorted, one per class.

    Names that normalise alike ("air_drumming", "Air drumming") are one class, as everywhere
    classes are matched by name; the first spelling in sorted order names it.
    """
    found = sorted(set(found))
    official = kinetics400_class_names()
    known = {normalized_name(name) for name in official}
    all_known = all(normalized_name(name) in known for name in found)
    if kinetics400 is None:
        kinetics400 = all_known and bool(found)
    if not kinetics400:
        spelling: dict[str, str] = {}
        for name in found:
            spelling.setdefault(normalized_name(name), name)
        return list(spelling.values())
    if not all_known:
        unknown = [name for name in found if normalized_name(name) not in known]
        raise DataError(f"not Kinetics-400 class names: {', '.join(unknown[:5])}")
    return official


def check_class_name(name: str, where: str) -> None:
    """DataError (naming `where`) unless `name` is safe as one folder name inside the output
    folder and in the UTF-8 lists: valid UTF-8, not empty, `.` or `..`, without `/` or `\\`,
    and one printable line."""
    if not is_utf8(name):
        raise DataError(
            f"{where}: the name {escaped(name)} is not valid UTF-8, which the lists are written "
            "in; rename it"
        )
    if name in ("", ".", "..") or "/" in name or "\\" in name or not name.isprintable():
        raise DataError(
            f"{where}: class name {name!r} cannot be a folder name (it must not be empty, "
            "'.' or '..', or hold '/', '\\', a newline or a control character); rename it"
        )


def is_utf8(name: str) -> bool:
    """Whether a file name read from the disk was valid UTF-8 (Python keeps other bytes as
    surrogates, which no UTF-8 text can hold)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def escaped(name: str) -> str:
    """A file name as its bytes, with the ones that are not UTF-8 as escapes: caf\\xe9."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def videos_per_class(videos: Iterable[Video], num_classes: int) -> dict[str, list[int]]:
    """{split: videos of each class, (num_classes,)} for each split that has videos, in
    train, val, test order."""
    counts = Counter((video.split, video.label) for video in videos)
    listed = {split for split, _ in counts}
    return {
        split: [counts[split, label] for label in range(num_classes)]
        for split in SPLITS
        if split in listed
    }


def class_count_lines(counts: Mapping[str, Sequence[int]], class_names: Sequence[str]) -> list[str]:
    """`counts` (videos_per_class) as a table: a header naming the splits, then one line per
    class, its name and its videos in each split."""
    width = max(len(name) for name in ["class", *class_names])
    columns = {split: max(len(split), *(len(str(n)) for n in row)) for split, row in counts.items()}
    header = "class".ljust(width) + "".join(f"  {split:>{columns[split]}}" for split in counts)
    rows = [
        name.ljust(width)
        + "".join(f"  {row[label]:>{columns[split]}}" for split, row in counts.items())
        for label, name in enumerate(class_names)
    ]
    return [header, *rows]


def few_videos_warnings(
    counts: Mapping[str, Sequence[int]], class_names: Sequence[str]
) -> list[str]:
    """One line per split of `counts` (videos_per_class) where classes have fewer than two
    videos, naming them."""
    warnings = []
    for split, row in counts.items():
        few = [name for name, count in zip(class_names, row, strict=True) if count < 2]
        if few:
            why = (
                "the model learns them from one video or none"
                if split == "train"
                else "their scores rest on one video or none"
            )
            warnings.append(
                f"{split}: {len(few)} of {len(class_names)} classes "
                f"{'has' if len(few) == 1 else 'have'} fewer than two videos "
                f"({why}): {first_names(few, 10)}"
            )
    return warnings


def count_hidden(folder: str) -> int:
    """How many hidden files and folders `folder` holds (not counting what hidden folders hold)."""
    count = 0
    for _, folders, names in os.walk(folder):
        count += sum(map(is_hidden, folders + names))
        folders[:] = [name for name in folders if not is_hidden(name)]
    return count


def folder_layout(root: str) -> str:
    """The layout of `root`: "splits" when it has a train, val or test folder, else "classes"
    when it has folders of videos; else DataError naming the layouts."""
    if any(os.path.isdir(os.path.join(root, split)) for split in SPLITS):
        return "splits"
    if _class_folders(root, exclude=()):
        return "classes"
    raise DataError(f"{root} holds none of the layouts read here: {LAYOUTS}")


def videos_from_folders(root: str, kinetics400: bool | None = None) -> FoundVideos:
    """Videos of `root/<split>/<class>/...` for every split folder present, and the class names."""
    splits = [split for split in SPLITS if os.path.isdir(os.path.join(root, split))]
    if not splits:
        raise DataError(
            f"{root} has none of the folders {', '.join(SPLITS)} (<split>/<class>/<video>)"
        )
    found = folder_class_names(root)
    for name in found:
        check_class_name(name, f"class folder in {root}")
    names = choose_class_names(found, kinetics400)
    index = {normalized_name(name): i for i, name in enumerate(names)}
    videos, skipped = [], []
    for split in splits:
        for name in found:
            for path in _listable(video_files(os.path.join(root, split, name)), skipped):
                videos.append(Video(split, index[normalized_name(name)], path))
    notices = _skipped_notice(skipped)
    # Other folders are left out with a notice: one may be a class beside a class called "test".
    if others := list(_class_folders(root, exclude=SPLITS)):
        notices.append(
            f"{len(others)} folders of videos beside the split folders ({', '.join(splits)}) "
            f"left out: {first_names(others)}; a class called {'/'.join(SPLITS)} needs another name"
        )
    if not videos:
        raise DataError(
            f"no video files in the class folders of {root}/{{{','.join(splits)}}}"
            + (f"; {notices[-1]}" if others else "")
        )
    return FoundVideos(videos, names, notices=notices)


def videos_from_class_folders(
    root: str,
    fractions: Sequence[float] = DEFAULT_SPLIT,
    seed: int = 0,
    kinetics400: bool | None = None,
    min_classes: int = 1,
) -> FoundVideos:
    """Videos of `root/<class>/...`, split into train, val and test class by class.

    Each class's videos are shuffled with a generator seeded by `seed` and the class name (so
    one class's split does not depend on the others) and cut into the fractions' shares
    (split_sizes), at least one video in train, then one in val when val's fraction is above 0.
    A class too small for every split, and a folder without videos (left out), are named in
    notices. DataError for `fractions` that are not three shares summing to 1 (train > 0), for
    videos of fewer than `min_classes` classes, and for a val fraction above 0 that no class
    has the videos to fill.
    """
    fractions = _checked_fractions(fractions)
    folders = _class_folders(root, exclude=())
    if not folders:
        raise DataError(f"{root} has no class folders of videos (<class>/<video>)")
    for name in folders:
        check_class_name(name, f"class folder in {root}")
    names = choose_class_names(folders, kinetics400)
    index = {normalized_name(name): i for i, name in enumerate(names)}
    videos, skipped, small = [], [], []
    for name, paths in folders.items():
        paths = _listable(paths, skipped)
        rng = random.Random(f"{seed}/{name}")
        rng.shuffle(paths)
        sizes = split_sizes(len(paths), fractions, rng)
        if any(size == 0 < fraction for size, fraction in zip(sizes, fractions, strict=True)):
            small.append(name)
        label, start = index[normalized_name(name)], 0
        for split, size in zip(SPLITS, sizes, strict=True):
            videos += [Video(split, label, path) for path in paths[start : start + size]]
            start += size
    # A folder whose videos are in another format (or not copied yet) would otherwise vanish
    # from the classes without a word.
    empty = sorted(
        entry.name
        for entry in os.scandir(root)
        if entry.is_dir() and entry.name not in folders and not is_hidden(entry.name)
    )
    empty_notice = (
        f"{len(empty)} of {len(empty) + len(folders)} class folders in {root} hold no videos "
        f"(files ending in {', '.join(VIDEO_EXTENSIONS)}) and are left out: {first_names(empty)}"
    )
    if len({video.label for video in videos}) < min_classes:
        raise DataError(
            f"the class folders of {root} hold videos of fewer than {min_classes} classes, and "
            f"a classifier needs {min_classes} or more: add class folders of videos"
            + (f"; {empty_notice}" if empty else "")
        )
    if fractions[1] > 0 and not any(video.split == "val" for video in videos):
        raise DataError(
            f"no class folder in {root} holds the 2 videos it takes to give val one (the first "
            "goes to train), and training needs val videos: give each class 2 videos or more "
            "(3 to test it too)"
        )
    notices = _skipped_notice(skipped)
    if small:
        notices.append(
            f"{len(small)} of {len(folders)} classes have too few videos for every split (each "
            f"keeps one in train first, then one in val; see the lists for their counts): "
            f"{first_names(small)}"
        )
    if empty:
        notices.append(empty_notice)
    if loose := len(video_files(root)) - sum(len(paths) for paths in folders.values()):
        notices.append(f"{loose} videos directly in {root}, outside any class folder, left out")
    # Sorted, so that the lists read in path order rather than in the shuffled one.
    return FoundVideos(sorted(videos), names, notices=notices)


def split_sizes(count: int, fractions: Sequence[float], rng: random.Random) -> list[int]:
    """How many of a class's `count` videos go to train, val and test: each fraction's share
    rounded down, the videos left over given to the largest remainders (ties drawn with `rng`),
    then one moved into an empty train from the largest other split, and then, when val's
    fraction is above 0, one into an empty val from test, or from train when test has none."""
    shares = [count * fraction for fraction in fractions]
    sizes = [math.floor(share) for share in shares]
    order = sorted(range(len(sizes)), key=lambda i: (sizes[i] - shares[i], rng.random()))
    for i in order[: count - sum(sizes)]:
        sizes[i] += 1
    if count and not sizes[0]:
        largest = max(range(1, len(sizes)), key=lambda i: sizes[i])
        sizes[largest] -= 1
        sizes[0] = 1
    # Training validates on val: a class of two videos gives it one before test gets any.
    if count > 1 and fractions[1] > 0 and not sizes[1]:
        sizes[2 if sizes[2] else 0] -= 1
        sizes[1] = 1
    return sizes


def _checked_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    fractions = tuple(float(fraction) for fraction in fractions)
    if (
        len(fractions) != len(SPLITS)
        or not all(math.isfinite(f) and f >= 0 for f in fractions)
        or fractions[0] == 0
        or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6)
    ):
        shown = " ".join(f"{fraction:g}" for fraction in fractions)
        raise DataError(
            f"split fractions {shown}: give three fractions for train, val and test, each >= 0, "
            "train > 0, summing to 1 (e.g. 0.7 0.15 0.15)"
        )
    return fractions


def _class_folders(root: str, exclude: Sequence[str]) -> dict[str, list[str]]:
    """{folder name: its video files, sorted} for the sub-folders of `root` holding videos
    (hidden ones are none)."""
    folders = {}
    for entry in sorted(os.scandir(root), key=lambda entry: entry.name):
        if is_hidden(entry.name) or not entry.is_dir() or entry.name in exclude:
            continue
        if paths := video_files(entry.path):
            folders[entry.name] = paths
    return folders


def videos_from_annotations(
    annotations: Mapping[str, str], videos_dir: str, kinetics400: bool | None = None
) -> FoundVideos:
    """Matches official annotation rows against downloaded files.

    annotations: split -> annotation CSV (UTF-8, a BOM accepted). The rows without a file are
    returned per split in `missing`.
    """
    rows = {split: _annotation_rows(path) for split, path in annotations.items()}
    names = choose_class_names(
        {row.label for split_rows in rows.values() for row in split_rows}, kinetics400
    )
    index = {normalized_name(name): i for i, name in enumerate(names)}
    files, skipped = {}, []
    for path in _listable(video_files(videos_dir), skipped):
        files.setdefault(os.path.splitext(os.path.basename(path))[0], path)
    videos, missing, annotated = {}, {}, {}
    for split in SPLITS:
        for row in rows.get(split, ()):
            key = f"{row.youtube_id}_{row.start:06d}_{row.end:06d}"
            path = files.get(key) or files.get(row.youtube_id)
            if path is None:
                missing.setdefault(split, []).append(f"{key} {row.label}")
            else:
                # Listed once, where its last row puts it: a clip evaluated must not be trained on.
                videos.pop(path, None)
                videos[path] = Video(split, index[normalized_name(row.label)], path)
                annotated.setdefault(path, []).append(split)
    if not videos:
        raise DataError(
            f"none of the {sum(map(len, rows.values()))} annotated clips is in {videos_dir}: "
            "clips are found by the names <youtube_id>_<start:06d>_<end:06d>.<ext> or "
            "<youtube_id>.<ext>"
        )
    notices = _skipped_notice(skipped)
    if repeated := {path: splits for path, splits in annotated.items() if len(splits) > 1}:
        shown = ", ".join(
            f"{os.path.basename(path)} ({' and '.join(splits)})"
            for path, splits in list(repeated.items())[:3]
        )
        notices.append(
            f"{len(repeated)} clips are annotated more than once ({shown}"
            f"{', ...' if len(repeated) > 3 else ''}): each is listed once, in the last of its "
            f"rows in the order {', '.join(SPLITS)}, so that no clip evaluated is trained on"
        )
    return FoundVideos(list(videos.values()), names, missing, notices)


class _Annotation(NamedTuple):
    label: str
    youtube_id: str
    start: int
    end: int


def _annotation_rows(path: str) -> list[_Annotation]:
    """The labelled rows of an official annotation CSV; DataError naming the file and line for
    a missing column, a time that is not a number, or a label that cannot be a folder name."""
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    rows = []
    try:
        if not set(ANNOTATION_COLUMNS) <= set(reader.fieldnames or ()):
            raise DataError(
                f"{path}: expected the official columns label,youtube_id,time_start,time_end,split"
            )
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            if any(row[column] is None for column in ANNOTATION_COLUMNS):
                raise DataError(f"{where}: fewer columns than the header names")
            if not row["label"]:
                continue
            check_class_name(row["label"], where)
            rows.append(
                _Annotation(
                    row["label"],
                    row["youtube_id"],
                    _seconds(row["time_start"], "time_start", where),
                    _seconds(row["time_end"], "time_end", where),
                )
            )
    except csv.Error as err:
        raise DataError(f"{path}, line {reader.line_num}: {err}") from None
    return rows


def _seconds(text: str, column: str, where: str) -> int:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise DataError(f"{where}: {column} {text!r} is not a number of seconds")
    return int(seconds)


def _listable(paths: Iterable[str], skipped: list[str]) -> list[str]:
    """The paths that can be one `path label` row of a list; the others are added to `skipped`.

    A list is UTF-8 text read line by line (str.splitlines, which also breaks at \\r, \\x1c,
    \\u2028 ...): a path must be valid UTF-8, and a newline or other control character in it
    would split its row.
    """
    listable = []
    for path in paths:
        (listable if path.isprintable() else skipped).append(path)
    return listable


def _skipped_notice(skipped: Sequence[str]) -> list[str]:
    """One notice per reason the `skipped` paths (_listable) cannot be a row."""
    not_utf8 = [path for path in skipped if not is_utf8(path)]
    split = [path for path in skipped if is_utf8(path)]
    notices = []
    if split:
        notices.append(
            f"{len(split)} video files skipped: their paths hold a newline or control "
            f"character, which would split their row of the list ({first_names(split)}); "
            "rename them to list them"
        )
    if not_utf8:
        shown = ", ".join(escaped(path) for path in not_utf8[:3])
        more = ", ..." if len(not_utf8) > 3 else ""
        notices.append(
            f"{len(not_utf8)} video files skipped: their paths are not valid UTF-8, which the "
            f"lists are written in ({shown}{more}); rename them to list them"
        )
    return notices


def check_outputs(
    out_dir: str,
    videos_dir: str,
    inputs: Iterable[str] = (),
    reencoding: bool = False,
    overwrite: bool = False,
) -> None:
    """DataError when writing into `out_dir` could overwrite or mix with an input, or (unless
    `overwrite`) replace or remove a list there.

    That is when `out_dir` is a file; when a list written there (train.csv, ...) is one of
    `inputs` (the annotation CSVs); when re-encoding, if `out_dir/videos` and `videos_dir`
    overlap: the re-encoded files could replace inputs, and the next run would read them as
    videos (or as a class) of its own; and when `out_dir` holds a list (train.csv, failed.txt,
    classnames.json, ...).
    """
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise DataError(f"the output {out_dir} is a file; give a folder")
    written = {os.path.realpath(os.path.join(out_dir, name)) for name in _LISTS}
    for path in inputs:
        if os.path.realpath(path) in written:
            raise DataError(
                f"{path} is an input that the lists written into {out_dir} would overwrite; "
                "choose another output folder"
            )
    if reencoding:
        ours = os.path.realpath(os.path.join(out_dir, REENCODED_DIR))
        theirs = os.path.realpath(videos_dir)
        if os.path.commonpath([ours, theirs]) in (ours, theirs):
            raise DataError(
                f"re-encoded videos go to {os.path.join(out_dir, REENCODED_DIR)}, which overlaps "
                f"the videos folder {videos_dir}: they would mix with the inputs; choose an "
                f"output folder outside {videos_dir}"
            )
    existing = [name for name in _LISTS if os.path.lexists(os.path.join(out_dir, name))]
    if existing and not overwrite:
        raise DataError(
            f"{out_dir} already holds {', '.join(existing)}: add --overwrite to replace them (a "
            "list this dataset leaves empty is removed), or choose another output folder"
        )


def write_lists(
    out_dir: str,
    videos: Sequence[Video],
    class_names: Sequence[str],
    missing: Mapping[str, Sequence[str]] | None = None,
    failed: Sequence[tuple[str, str]] = (),
) -> tuple[list[str], list[str]]:
    """Writes <split>.csv (paths relative to out_dir), classnames.json, missing_<split>.txt and
    failed.txt into out_dir (UTF-8), each whole or not at all (WriteError when one cannot be).
    Returns the names of the files written and removed.

    A list this dataset leaves empty is removed: one left by an earlier run would otherwise
    mix another split (or another dataset) into this one.
    """
    os.makedirs(out_dir, exist_ok=True)
    lines = {name: [] for name in LIST_FILES}
    for video in videos:
        lines[f"{video.split}.csv"].append(
            f"{os.path.relpath(video.path, out_dir)} {video.label}\n"
        )
    for split, rows in (missing or {}).items():
        lines[f"missing_{split}.txt"] = [f"{row}\n" for row in rows]
    lines[FAILED_FILE] = [f"{path}\t{reason}\n" for path, reason in failed]
    written = [name for name, rows in lines.items() if rows] + [CLASSNAMES_FILE]
    removed = [
        name
        for name, rows in lines.items()
        if not rows and os.path.lexists(os.path.join(out_dir, name))
    ]
    for name, rows in lines.items():
        if rows:
            path = os.path.join(out_dir, name)
            with written_whole(path) as partial, open(partial, "w", encoding="utf-8") as file:
                file.writelines(rows)
    write_classnames_file(os.path.join(out_dir, CLASSNAMES_FILE), class_names)
    for name in removed:
        os.remove(os.path.join(out_dir, name))
    return written, removed


class Reencoding(NamedTuple):
    """What reencode_all did: the videos with their re-encoded paths, the (path, reason) that
    failed, how many files it encoded, how many of those replaced a file (of another source or
    short side), and how many earlier re-encodings it reused."""

    videos: list[Video]
    failed: list[tuple[str, str]]
    encoded: int
    replaced: int
    reused: int


def reencode_all(
    videos: Sequence[Video], videos_dir: str, out_dir: str, short_side: int = 320, jobs: int = 1
) -> Reencoding:
    """Re-encodes every video (H.264 .mp4, short side at most `short_side`, no audio) into
    out_dir/videos/<its path under videos_dir>.mp4, in `jobs` processes with a progress bar.

    Each file records its source (path, size, modification time) and the short side in its
    metadata, and is reused only where these match; any other file of that name is encoded
    again. So a run goes on where a killed one stopped (whose partial files are removed first),
    and never takes another source's or another size's file for a video's.
    """
    folder = os.path.join(out_dir, REENCODED_DIR)
    _remove_partials(folder)
    outputs, failed, named = {}, [], {}
    for source in sorted({video.path for video in videos}):
        output = os.path.join(folder, os.path.relpath(source, videos_dir) + ".mp4")
        # On a case-insensitive disk both would be one file, holding either video.
        other = named.setdefault(output.casefold(), source)
        if other == source:
            outputs[source] = output
        else:
            failed.append(
                (
                    source,
                    f"its re-encoding's name differs only in case from that of {other}, and "
                    "case-insensitive disks take both for one file: rename one",
                )
            )
    work = [(source, output, short_side) for source, output in outputs.items()]
    outcomes = Counter()
    with contextlib.ExitStack() as stack:
        if jobs > 1:
            pool = stack.enter_context(multiprocessing.Pool(jobs))
            results = pool.imap_unordered(_reencode_one, work, chunksize=4)
        else:
            results = map(_reencode_one, work)
        for source, outcome, reason in tqdm(
            results, total=len(work), desc="re-encoding", unit="video"
        ):
            outcomes[outcome] += 1
            if reason is not None:
                failed.append((source, reason))
                del outputs[source]
    done = [video._replace(path=outputs[video.path]) for video in videos if video.path in outputs]
    return Reencoding(
        sorted(done),
        sorted(failed),
        outcomes["encoded"] + outcomes["replaced"],
        outcomes["replaced"],
        outcomes["reused"],
    )


def _remove_partials(folder: str) -> None:
    for root, _, names in os.walk(folder):
        for name in names:
            # written_whole's partial files (files.partial_path): hidden, ending in .tmp.mp4.
            if is_hidden(name) and name.endswith(".tmp.mp4"):
                os.remove(os.path.join(root, name))


def _reencode_one(job: tuple[str, str, int]) -> tuple[str, str, str | None]:
    """(source, what was done: "encoded", "replaced", "reused" or "failed", why it failed)."""
    source, output, short_side = job
    try:
        check_video_file(source)  # before opening it: a FIFO would wait for a writer forever
        provenance = _provenance(source, short_side)
        if _recorded_provenance(output) == provenance:
            return source, "reused", None
        existed = os.path.exists(output)
        os.makedirs(os.path.dirname(output), exist_ok=True)
        with written_whole(output) as partial:
            reencode(source, str(partial), short_side, provenance)
    except (UserError, VideoDecodeError) as err:
        return source, "failed", str(err)
    except Exception as err:  # Any other failure is listed too, and the rest carries on.
        return source, "failed", f"{type(err).__name__}: {err}".replace("\n", " ")
    return source, "replaced" if existed else "encoded", None


def _provenance(source: str, short_side: int) -> str:
    """What a re-encoding of `source` records in its metadata: the same text in a file means
    the same source file, short side and encoder settings."""
    stat = os.stat(source)
    return json.dumps(
        {
            "source": os.path.abspath(source),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "short_side": short_side,
            "encoder": [_ENCODER, _ENCODER_OPTIONS],
        }
    )


def _recorded_provenance(path: str) -> str | None:
    """The provenance `path` records; None when it is missing or is no re-encoding of ours."""
    try:
        with av.open(path) as container:
            return container.metadata.get(_PROVENANCE_TAG)
    except (OSError, av.FFmpegError):
        return None


def reencode(source: str, output: str, short_side: int = 320, provenance: str = "") -> None:
    """H.264 copy of `source`'s video stream, short side shrunk to `short_side` if longer and
    sizes made even (H.264 in yuv420p needs even sizes, 2 at least), with `provenance` in its
    metadata. Frames keep their times as players show them (FrameClock): recordings joined
    byte-wise play one after the other, and of frames with one timestamp the first is kept.

    DataError saying what failed: opening or decoding `source`, or the encoder refusing.
    """
    reader = _stage("cannot open it as a video", av.open, source)
    with reader:
        if not reader.streams.video:
            raise DataError("no video stream")
        stream = reader.streams.video[0]
        stream.thread_type = "AUTO"
        height, width = stream.codec_context.height, stream.codec_context.width
        if min(height, width) > short_side:
            height, width = scaled_size(height, width, short_side)
        height, width = max(2, height - height % 2), max(2, width - width % 2)
        with av.open(output, "w", format="mp4") as writer:
            writer.metadata[_PROVENANCE_TAG] = provenance
            rate = stream.average_rate or stream.guessed_rate or 30
            encoded = writer.add_stream(_ENCODER, rate=rate, options=_ENCODER_OPTIONS)
            encoded.width, encoded.height, encoded.pix_fmt = width, height, "yuv420p"
            encoded.codec_context.time_base = stream.time_base
            encoded.set_display_rotation(display_rotation(reader, stream))
            # One reformatter for all frames, so that FFmpeg reuses its scaling context.
            reformatter = VideoReformatter()
            refused = f"the H.264 encoder refuses it at {width}x{height}"

            def encode(frame: av.VideoFrame, pts: int) -> list[av.Packet]:
                scaled = reformatter.reformat(frame, width=width, height=height, format="yuv420p")
                scaled.pts, scaled.time_base = pts, stream.time_base
                return encoded.encode(scaled)

            clock = FrameClock(stream, joined=True)
            frames = reader.decode(stream)
            last = None
            while (frame := _stage("cannot decode it", next, frames, None)) is not None:
                pts = round(clock.time_of(frame) / stream.time_base)
                if last is None or pts > last:
                    writer.mux(_stage(refused, encode, frame, pts))
                    last = pts
            writer.mux(_stage(refused, encoded.encode))


def _stage(failure: str, call, *args):
    """`call(*args)`, an FFmpeg error of which is a DataError: `failure` and FFmpeg's reason."""
    try:
        return call(*args)
    except av.FFmpegError as err:
        error = DataError(f"{failure}: {err.strerror or err}")
    # Raised outside the except block: chained to an OSError, written_whole would take it for
    # a failure to write.
    raise error
