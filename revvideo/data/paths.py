"""Video lists: a Kinetics-style CSV or a `class_name/video` folder tree, checked line by line."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import NamedTuple

from pytorchvideo.data.labeled_video_paths import LabeledVideoPaths

from revvideo.classes import SPLITS, folder_class_names
from revvideo.utils.errors import DataError
from revvideo.utils.files import is_hidden
from revvideo.utils.text import read_text

# Containers PyAV and decord read; other files in a class folder are ignored.
VIDEO_EXTENSIONS = (
    ".mp4",
    ".avi",
    ".mkv",
    ".webm",
    ".mov",
    ".m4v",
    ".mpg",
    ".mpeg",
    ".flv",
    ".3gp",
    ".ts",
    ".m2ts",
    ".mts",
)


class ListedVideo(NamedTuple):
    """One row of a video list: the video's path, its label, where it is listed ("file:line",
    or the class folder) and its line number (0 in a folder tree)."""

    path: str
    label: int
    where: str
    line: int = 0


@dataclass(frozen=True)
class VideoList:
    """The rows of one split's list (`source`: its CSV or folder), in order."""

    source: str
    entries: list[ListedVideo]

    def repeats(self) -> dict[str, list[int]]:
        """{path: its line numbers} for the videos listed more than once (with one label)."""
        lines: dict[str, list[int]] = {}
        for entry in self.entries:
            lines.setdefault(entry.path, []).append(entry.line)
        return {path: numbers for path, numbers in lines.items() if len(numbers) > 1}

    def repeats_notice(self, shown: int = 3) -> str:
        """One line naming the videos listed more than once, "" when there are none: each row
        counts (training draws the video as often, a test scores it as often)."""
        repeats = self.repeats()
        if not repeats:
            return ""
        named = ", ".join(
            f"{path} (lines {', '.join(map(str, lines))})"
            for path, lines in list(repeats.items())[:shown]
        )
        more = ", ..." if len(repeats) > shown else ""
        videos = "1 video is" if len(repeats) == 1 else f"{len(repeats)} videos are"
        return (
            f"{self.source}: {videos} listed more than once with the same label, so "
            f"{'it counts' if len(repeats) == 1 else 'they count'} more than once: {named}{more}"
        )


def read_video_list(
    path_to_data_dir: str,
    split: str,
    num_classes: int,
    path_prefix: str = "",
    separator: str = " ",
) -> LabeledVideoPaths:
    """`<dir>/<split>.csv`, or else the folder `<dir>/<split>/`, as pytorchvideo video paths.

    Raises DataError (one line, naming the file and line) when neither exists, a line is
    malformed, a video is listed with two labels, or a label is not a class index below
    `num_classes`. A video listed twice with one label is kept twice (see
    `VideoList.repeats_notice`).
    """
    listed = read_video_entries(path_to_data_dir, split, path_prefix, separator)
    for path, label, where, _ in listed.entries:
        if not 0 <= label < num_classes:
            raise DataError(
                f"{where}: label {label} of {path} is not a class index in [0, {num_classes}) "
                f"(MODEL.NUM_CLASSES is {num_classes})"
            )
    return LabeledVideoPaths([(entry.path, entry.label) for entry in listed.entries])


def read_video_entries(
    path_to_data_dir: str, split: str, path_prefix: str = "", separator: str = " "
) -> VideoList:
    """The rows of `<dir>/<split>.csv`, or else of the folder `<dir>/<split>/`.

    Raises DataError (one line) when neither exists, a line is malformed, the list is empty,
    or a video is listed with two labels (naming the file, the video, both labels and lines).
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    source = video_list_source(path_to_data_dir, split)
    if source is None:
        raise DataError(
            f"{os.path.join(path_to_data_dir, f'{split}.csv')} not found: DATA.PATH_TO_DATA_DIR "
            f"must hold {split}.csv with one `path label` line per video (label: class index), "
            f"or a folder {os.path.join(path_to_data_dir, split)}/<class>/<video>"
        )
    if source.endswith(".csv"):
        entries = _read_csv(source, path_prefix, separator)
    else:
        entries = _read_folder(path_to_data_dir, split)
    if not entries:
        raise DataError(f"{source} lists no videos")
    first: dict[str, ListedVideo] = {}
    for entry in entries:
        earlier = first.setdefault(entry.path, entry)
        if earlier.label != entry.label:
            raise DataError(
                f"{source}: {entry.path} is listed with label {earlier.label} at line "
                f"{earlier.line} and with label {entry.label} at line {entry.line}, and a video "
                "has one class: correct or remove one of the lines"
            )
    return VideoList(source, entries)


def _read_csv(csv_path: str, path_prefix: str, separator: str) -> list[ListedVideo]:
    """One entry per non-blank line, split on the last separator."""
    base = path_prefix or os.path.dirname(os.path.abspath(csv_path))
    entries = []
    for number, line in enumerate(read_text(csv_path).splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        where = f"{csv_path}:{number}"
        parts = line.rsplit(None if separator == " " else separator, 1)
        if len(parts) != 2 or not parts[0].strip():
            raise DataError(f"{where}: expected `path{separator}label`, got {line!r}")
        path, label_text = parts[0].strip(), parts[1].strip()
        try:
            label = int(label_text)
        except ValueError:
            raise DataError(
                f"{where}: label {label_text!r} is not an integer class index"
            ) from None
        entries.append(
            ListedVideo(os.path.normpath(os.path.join(base, path)), label, where, number)
        )
    return entries


def _read_folder(path_to_data_dir: str, split: str) -> list[ListedVideo]:
    """Videos of `<dir>/<split>/<class>/`, classes numbered over the folders of all splits.

    Numbering over every split keeps a class's index the same in train and test even when a
    split lacks some class. Hidden files and folders (".thumbnails", "._a.mp4") are skipped.
    """
    names = folder_class_names(path_to_data_dir)
    index = {name: i for i, name in enumerate(names)}
    folder = os.path.join(path_to_data_dir, split)
    entries = []
    for name in sorted(os.listdir(folder)):
        class_folder = os.path.join(folder, name)
        if is_hidden(name) or not os.path.isdir(class_folder):
            continue
        for root, _, files in sorted(_walk_visible(class_folder)):
            for file in sorted(files):
                if file.lower().endswith(VIDEO_EXTENSIONS):
                    entries.append(ListedVideo(os.path.join(root, file), index[name], class_folder))
    return entries


def video_list_source(path_to_data_dir: str, split: str) -> str | None:
    """Where `split` is listed: `<dir>/<split>.csv`, else the folder `<dir>/<split>/`, else None."""
    csv_path = os.path.join(path_to_data_dir, f"{split}.csv")
    if os.path.isfile(csv_path):
        return csv_path
    folder = os.path.join(path_to_data_dir, split)
    return folder if os.path.isdir(folder) else None


def video_files(folder: str, extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> list[str]:
    """Paths of the video files (of the files ending with one of `extensions`, lower case)
    anywhere under `folder`, sorted; hidden files and folders (names starting with ".", such
    as macOS's "._a.mp4" or ".thumbnails") are not videos of the dataset and are left out."""
    return sorted(
        os.path.join(root, name)
        for root, _, names in _walk_visible(folder)
        for name in names
        if name.lower().endswith(extensions)
    )


def _walk_visible(folder: str):
    """os.walk(folder) without hidden files and folders (nor what hidden folders hold)."""
    for root, folders, names in os.walk(folder):
        folders[:] = [name for name in folders if not is_hidden(name)]
        yield root, folders, [name for name in names if not is_hidden(name)]
