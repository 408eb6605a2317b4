"""Preparing Kinetics-style datasets: our CSVs from folders or official annotations, re-encoding.

Used by tools/prepare_kinetics.py. Official Kinetics annotation CSVs have a header and the
columns label,youtube_id,time_start,time_end,split; downloaders name the clips
`<youtube_id>_<start:06d>_<end:06d>.<ext>` or `<youtube_id>.<ext>`, often inside label folders.
"""

from __future__ import annotations

import contextlib
import csv
import json
import multiprocessing
import os
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import av
from av.video.reformatter import VideoReformatter
from tqdm import tqdm

from revvideo.data.decoding import display_rotation, scaled_size
from revvideo.data.paths import SPLITS, class_names_from_folders, video_files
from revvideo.utils.errors import DataError


class Video(NamedTuple):
    """One listed video: split, class index, absolute path of its file."""

    split: str
    label: int
    path: str


def kinetics400_class_names() -> list[str]:
    """The 400 Kinetics-400 class names in their usual (alphabetical) order, without download."""
    import torchvision

    return torchvision.models.get_weight("MViT_V1_B_Weights.KINETICS400_V1").meta["categories"]


def normalized_name(name: str) -> str:
    """Lower-case words: "passing_American_football_(in_game)" and the official
    "passing American football (in game)" become the same."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", name.lower()).split())


def choose_class_names(found: Iterable[str], kinetics400: bool | None = None) -> list[str]:
    """Kinetics-400's names (so indices match released checkpoints) when every found name is one
    of them, or when `kinetics400` is True; else the found names, sorted."""
    found = sorted(set(found))
    official = kinetics400_class_names()
    known = {normalized_name(name) for name in official}
    all_known = all(normalized_name(name) in known for name in found)
    if kinetics400 is None:
        kinetics400 = all_known and bool(found)
    if not kinetics400:
        return found
    if not all_known:
        unknown = [name for name in found if normalized_name(name) not in known]
        raise DataError(f"not Kinetics-400 class names: {', '.join(unknown[:5])}")
    return official


def videos_from_folders(
    root: str, kinetics400: bool | None = None
) -> tuple[list[Video], list[str]]:
    """Videos of `root/<split>/<class>/...` for every split folder present, and the class names."""
    splits = [split for split in SPLITS if os.path.isdir(os.path.join(root, split))]
    if not splits:
        raise DataError(
            f"{root} has none of the folders {', '.join(SPLITS)} (<split>/<class>/<video>)"
        )
    found = class_names_from_folders(root)
    names = choose_class_names(found, kinetics400)
    index = {normalized_name(name): i for i, name in enumerate(names)}
    videos = []
    for split in splits:
        for name in found:
            folder = os.path.join(root, split, name)
            for path in video_files(folder):
                videos.append(Video(split, index[normalized_name(name)], path))
    return videos, names


def videos_from_annotations(
    annotations: dict[str, str], videos_dir: str, kinetics400: bool | None = None
) -> tuple[list[Video], list[str], dict[str, list[str]]]:
    """Matches official annotation rows against downloaded files.

    annotations: split -> annotation CSV. Returns the videos found, the class names, and per
    split the rows without a file ("youtube_id start end label").
    """
    rows = {split: _annotation_rows(path) for split, path in annotations.items()}
    names = choose_class_names(
        {row["label"] for split in rows.values() for row in split}, kinetics400
    )
    index = {normalized_name(name): i for i, name in enumerate(names)}
    files = {}
    for path in video_files(videos_dir):
        files.setdefault(os.path.splitext(os.path.basename(path))[0], path)
    videos, missing = [], {}
    for split, split_rows in rows.items():
        for row in split_rows:
            start, end = int(float(row["time_start"])), int(float(row["time_end"]))
            key = f"{row['youtube_id']}_{start:06d}_{end:06d}"
            path = files.get(key) or files.get(row["youtube_id"])
            if path is None:
                missing.setdefault(split, []).append(f"{key} {row['label']}")
            else:
                videos.append(Video(split, index[normalized_name(row["label"])], path))
    return videos, names, missing


def _annotation_rows(path: str) -> list[dict[str, str]]:
    if not os.path.isfile(path):
        raise DataError(f"annotation file {path} not found")
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        needed = {"label", "youtube_id", "time_start", "time_end"}
        if not needed <= set(reader.fieldnames or ()):
            raise DataError(
                f"{path}: expected the official columns label,youtube_id,time_start,time_end,split"
            )
        return [row for row in reader if row["label"]]


def write_lists(
    out_dir: str,
    videos: Sequence[Video],
    class_names: Sequence[str],
    missing: dict[str, list[str]] | None = None,
    failed: Sequence[tuple[str, str]] = (),
) -> None:
    """Writes <split>.csv (paths relative to out_dir), classnames.json, missing_<split>.txt and
    failed.txt into out_dir."""
    os.makedirs(out_dir, exist_ok=True)
    for split in SPLITS:
        lines = [
            f"{os.path.relpath(video.path, out_dir)} {video.label}\n"
            for video in videos
            if video.split == split
        ]
        if lines:
            with open(os.path.join(out_dir, f"{split}.csv"), "w") as file:
                file.writelines(lines)
    with open(os.path.join(out_dir, "classnames.json"), "w") as file:
        json.dump({name: i for i, name in enumerate(class_names)}, file, indent=1)
    for split, rows in (missing or {}).items():
        with open(os.path.join(out_dir, f"missing_{split}.txt"), "w") as file:
            file.writelines(f"{row}\n" for row in rows)
    if failed:
        with open(os.path.join(out_dir, "failed.txt"), "w") as file:
            file.writelines(f"{path}\t{reason}\n" for path, reason in failed)


def reencode_all(
    videos: Sequence[Video],
    out_dir: str,
    class_names: Sequence[str],
    short_side: int = 320,
    jobs: int = 1,
) -> tuple[list[Video], list[tuple[str, str]]]:
    """Re-encodes every video (H.264 .mp4, short side at most `short_side`, no audio) into
    out_dir/videos/<split>/<class>/, in `jobs` processes with a progress bar.

    Resumable: finished files are kept and skipped (each is written under a temporary name and
    renamed when complete). Returns the re-encoded videos and the (path, reason) that failed.
    """
    work = []
    for video in videos:
        name = os.path.splitext(os.path.basename(video.path))[0] + ".mp4"
        folder = os.path.join(out_dir, "videos", video.split, class_names[video.label])
        work.append((video, os.path.join(folder, name), short_side))
    done, failed = [], []
    with contextlib.ExitStack() as stack:
        if jobs > 1:
            pool = stack.enter_context(multiprocessing.Pool(jobs))
            results = pool.imap_unordered(_reencode_one, work, chunksize=4)
        else:
            results = map(_reencode_one, work)
        for video, output, reason in tqdm(
            results, total=len(work), desc="re-encoding", unit="video"
        ):
            if reason is None:
                done.append(video._replace(path=output))
            else:
                failed.append((video.path, reason))
    return sorted(done), sorted(failed)


def _reencode_one(job: tuple[Video, str, int]) -> tuple[Video, str, str | None]:
    video, output, short_side = job
    if os.path.exists(output):
        return video, output, None
    os.makedirs(os.path.dirname(output), exist_ok=True)
    partial = output + ".partial.mp4"
    try:
        reencode(video.path, partial, short_side)
    except Exception as err:  # Any failure is listed and the rest carries on.
        if os.path.exists(partial):
            os.remove(partial)
        return video, output, f"{type(err).__name__}: {err}".replace("\n", " ")
    os.replace(partial, output)
    return video, output, None


def reencode(source: str, output: str, short_side: int = 320) -> None:
    """H.264 copy of `source`'s video stream, short side shrunk to `short_side` if longer,
    keeping every frame's timestamp."""
    with av.open(source) as reader:
        if not reader.streams.video:
            raise DataError("no video stream")
        stream = reader.streams.video[0]
        stream.thread_type = "AUTO"
        height, width = stream.codec_context.height, stream.codec_context.width
        if min(height, width) > short_side:
            height, width = scaled_size(height, width, short_side)
        # yuv420p needs even sizes.
        height, width = height - height % 2, width - width % 2
        with av.open(output, "w", format="mp4") as writer:
            rate = stream.average_rate or stream.guessed_rate or 30
            encoded = writer.add_stream(
                "libx264", rate=rate, options={"crf": "23", "preset": "fast"}
            )
            encoded.width, encoded.height, encoded.pix_fmt = width, height, "yuv420p"
            encoded.codec_context.time_base = stream.time_base
            encoded.set_display_rotation(display_rotation(reader, stream))
            # One reformatter for all frames, so that FFmpeg reuses its scaling context.
            reformatter = VideoReformatter()
            for frame in reader.decode(stream):
                scaled = reformatter.reformat(frame, width=width, height=height, format="yuv420p")
                scaled.pts, scaled.time_base = frame.pts, frame.time_base
                writer.mux(encoded.encode(scaled))
            writer.mux(encoded.encode())
