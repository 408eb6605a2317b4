"""Video lists: a Kinetics-style CSV or a `class_name/video` folder tree, checked line by line."""

from __future__ import annotations

import os

from pytorchvideo.data.labeled_video_paths import LabeledVideoPaths

from revvideo.classes import SPLITS, folder_class_names
from revvideo.utils.errors import DataError
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
    malformed, or a label is not a class index below `num_classes`.
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
    for path, label, where in entries:
        if not 0 <= label < num_classes:
            raise DataError(
                f"{where}: label {label} of {path} is not a class index in [0, {num_classes}) "
                f"(MODEL.NUM_CLASSES is {num_classes})"
            )
    return LabeledVideoPaths([(path, label) for path, label, _ in entries])


def _read_csv(csv_path: str, path_prefix: str, separator: str) -> list[tuple[str, int, str]]:
    """(path, label, "file:line") per non-blank line, split on the last separator."""
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
        entries.append((os.path.normpath(os.path.join(base, path)), label, where))
    return entries


def _read_folder(path_to_data_dir: str, split: str) -> list[tuple[str, int, str]]:
    """Videos of `<dir>/<split>/<class>/`, classes numbered over the folders of all splits.

    Numbering over every split keeps a class's index the same in train and test even when a
    split lacks some class.
    """
    names = folder_class_names(path_to_data_dir)
    index = {name: i for i, name in enumerate(names)}
    folder = os.path.join(path_to_data_dir, split)
    entries = []
    for name in sorted(os.listdir(folder)):
        class_folder = os.path.join(folder, name)
        if not os.path.isdir(class_folder):
            continue
        for root, _, files in sorted(os.walk(class_folder)):
            for file in sorted(files):
                if file.lower().endswith(VIDEO_EXTENSIONS):
                    entries.append((os.path.join(root, file), index[name], class_folder))
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
    anywhere under `folder`, sorted."""
    return sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(folder)
        for name in names
        if name.lower().endswith(extensions)
    )
