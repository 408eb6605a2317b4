"""A small synthetic video dataset whose classes differ only in motion.

Each video shows a textured bar on a textured background; the class is how the bar moves
(direction, rotation, growing or shrinking, the order of two movements). Every class draws the
bar's look from one distribution, and paired classes (up/down, grow/shrink, ...) are time
reversals or mirror images of each other: one frame says nothing about the class, a few frames
say everything. Videos are real files (H.264 .mp4 or MPEG-4 part 2 .avi) of varying size, length
and frame rate, listed in Kinetics-style CSVs; the dataset is a deterministic function of the seed.

"left", "right", "clockwise" and "counterclockwise" swap under a horizontal flip and need
DATA.RANDOM_FLIP False; the default classes do not.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import math
import os
import shutil
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from revvideo.classes import CLASSNAMES_FILE, first_names, write_classnames_file
from revvideo.utils.errors import DataError

FORMAT_VERSION = 1
MARKER = "synthetic.json"

# Vertical/horizontal speed (frame heights or widths per second), size growth rate (log per
# second) and rotation speed (degrees per second) ranges.
_SPEED = (0.32, 0.42)
_GROWTH = (0.55, 0.75)
_SPIN = (120.0, 200.0)
# The bar's length and its centre's range, as fractions of the frame's short side. The bar moves
# in the centred square of the frame, so a centre crop always shows it.
_SIZE = (0.24, 0.55)
_CENTRE = (0.22, 0.78)
_ASPECT = 2.4

MOTIONS = (
    "up",
    "down",
    "grow",
    "shrink",
    "spin",
    "still",
    "left",
    "right",
    "clockwise",
    "counterclockwise",
    "up_then_down",
    "down_then_up",
)
DEFAULT_CLASSES = ("up", "down", "grow", "shrink", "spin", "still")
DEFAULT_VIDEOS_PER_CLASS = {"train": 48, "val": 8, "test": 12}
_FRAME_SIZES = ((64, 48), (80, 48), (56, 56), (72, 54), (48, 64), (96, 54))
_FRAME_RATES = (10, 12, 15, 20, 24, 25, 30)
_DURATION = (1.2, 1.8)


def write_video(
    path: str,
    frames: np.ndarray,
    fps: float,
    codec: str = "libx264",
    *,
    times: Sequence[float] | None = None,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
    rotation: int = 0,
) -> None:
    """Encodes uint8 RGB frames (T, H, W, 3) with PyAV; the container follows the extension.

    `times` (seconds, increasing) gives each frame its own timestamp, for variable frame rate
    files; by default frame i is at i / fps. `options` go to the encoder, `container_options`
    to the muxer (e.g. {"movflags": "faststart"}). `rotation` (degrees counterclockwise) is
    stored in the display matrix, as phones store portrait video, for containers that have one.
    """
    import av  # here, with torch in _texture, so that the command's --help needs only numpy

    time_base = Fraction(1, 1000) if times is not None else None
    with av.open(path, "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = dict(options or {})
        if rotation:
            stream.set_display_rotation(rotation)
        if time_base is not None:
            stream.codec_context.time_base = time_base
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            if time_base is not None:
                frame.pts = round(times[index] / time_base)
                frame.time_base = time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def render_video(motion: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """uint8 RGB frames (T, H, W, 3) of one video of class `motion`, and its frame rate."""
    width, height = _FRAME_SIZES[rng.integers(len(_FRAME_SIZES))]
    fps = int(_FRAME_RATES[rng.integers(len(_FRAME_RATES))])
    duration = rng.uniform(*_DURATION)
    count = max(2, round(duration * fps))
    seconds = np.arange(count) / fps
    background = _texture(rng, height, width, coarse=(3, 4), fine=(12, 16))
    bar = _bar_texture(rng)
    centre_x, centre_y, log_size, angle = _trajectory(motion, rng, seconds)
    short_side = min(height, width)
    left, top = (width - short_side) / 2, (height - short_side) / 2
    grid = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    frames = np.empty((count, height, width, 3), dtype=np.uint8)
    for index in range(count):
        image = background.copy()
        _draw_bar(
            image,
            bar,
            grid,
            centre=(left + centre_x[index] * short_side, top + centre_y[index] * short_side),
            length=math.exp(log_size[index]) * short_side,
            angle=angle[index],
        )
        frames[index] = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
    return frames, fps


def _trajectory(motion: str, rng: np.random.Generator, seconds: np.ndarray):
    """Per frame: centre x, y and log length (in short sides) and angle (radians).

    A class and its time reversal share one construction, which keeps their single-frame
    statistics identical.
    """
    duration = float(seconds[-1]) if len(seconds) > 1 else 1.0
    count = len(seconds)
    low, high = math.log(_SIZE[0]), math.log(_SIZE[1])
    x = np.full(count, rng.uniform(*_CENTRE))
    y = np.full(count, rng.uniform(*_CENTRE))
    log_size = np.full(count, rng.uniform(low, high))
    angle = np.full(count, rng.uniform(0, math.pi))
    reverse = motion in ("down", "shrink", "right", "counterclockwise")
    if motion in ("up", "down", "left", "right"):
        travel = min(rng.uniform(*_SPEED) * duration, _CENTRE[1] - _CENTRE[0])
        start = rng.uniform(_CENTRE[0] + travel, _CENTRE[1])
        path = start - travel * seconds / duration
        if motion in ("up", "down"):
            y = path
        else:
            x = path
    elif motion in ("grow", "shrink"):
        growth = min(rng.uniform(*_GROWTH) * duration, high - low)
        log_size = rng.uniform(low, high - growth) + growth * seconds / duration
    elif motion in ("spin", "clockwise", "counterclockwise"):
        speed = math.radians(rng.uniform(*_SPIN))
        if motion == "spin" and rng.random() < 0.5:
            speed = -speed
        angle = angle[0] + speed * seconds
    elif motion in ("up_then_down", "down_then_up"):
        # A V-shaped path, turning half way: the same positions in either order.
        travel = min(rng.uniform(*_SPEED) * duration / 2, _CENTRE[1] - _CENTRE[0])
        top = rng.uniform(_CENTRE[0], _CENTRE[1] - travel)
        distance_from_turn = np.abs(2 * seconds / duration - 1)
        if motion == "up_then_down":
            y = top + travel * distance_from_turn
        else:
            y = top + travel * (1 - distance_from_turn)
    elif motion != "still":
        raise ValueError(f"unknown motion {motion!r}; expected one of {MOTIONS}")
    if reverse:
        x, y, log_size, angle = x[::-1], y[::-1], log_size[::-1], angle[::-1]
    return x, y, log_size, angle


def _texture(rng: np.random.Generator, height: int, width: int, coarse, fine) -> np.ndarray:
    """float (H, W, 3) in [0, 1]: muted colour blobs plus finer detail and pixel noise, calmer
    than the bar so that the bar stands out."""
    # Imported here, the one use of torch, so that the command's --help needs only numpy.
    import torch
    import torch.nn.functional as F

    layers = [
        (torch.from_numpy(rng.random((1, 3, *coarse), dtype=np.float32)), 0.4),
        (torch.from_numpy(rng.random((1, 3, *fine), dtype=np.float32)), 0.15),
    ]
    image = sum(
        weight * F.interpolate(layer, size=(height, width), mode="bicubic", align_corners=False)
        for layer, weight in layers
    )[0]
    image = image.permute(1, 2, 0).numpy() + 0.2 + 0.05 * rng.random((height, width, 3))
    return np.clip(image, 0, 1)


def _bar_texture(rng: np.random.Generator) -> np.ndarray:
    """float (8, 20, 3): stripes in two random colours, well apart from each other."""
    first = rng.random(3)
    second = np.clip(1 - first + rng.uniform(-0.15, 0.15, 3), 0, 1)
    stripes = (np.arange(20) // 3) % 2
    texture = np.where(stripes[None, :, None] == 0, first, second)
    return np.repeat(texture, 8, axis=0)


def _draw_bar(image, texture, grid, centre, length, angle) -> None:
    """Paints a rotated, dark-outlined textured bar onto float image (H, W, 3) in place.

    grid: pixel-centre (rows, cols) coordinates of the image.
    """
    rows, cols = grid
    dx, dy = cols - centre[0], rows - centre[1]
    cos, sin = math.cos(angle), math.sin(angle)
    along = (dx * cos + dy * sin) / length + 0.5
    across = (-dx * sin + dy * cos) * _ASPECT / length + 0.5
    inside = (along >= 0) & (along < 1) & (across >= 0) & (across < 1)
    border_along = 1.5 / length
    border_across = border_along * _ASPECT
    edge = inside & (
        (along < border_along)
        | (along > 1 - border_along)
        | (across < border_across)
        | (across > 1 - border_across)
    )
    tex_rows = np.clip((across * texture.shape[0]).astype(int), 0, texture.shape[0] - 1)
    tex_cols = np.clip((along * texture.shape[1]).astype(int), 0, texture.shape[1] - 1)
    image[inside] = texture[tex_rows[inside], tex_cols[inside]]
    image[edge] = 0.05


def generate_synthetic_dataset(
    root: str,
    seed: int = 0,
    classes: Sequence[str] = DEFAULT_CLASSES,
    videos_per_class: dict[str, int] | None = None,
) -> None:
    """Writes videos/<split>/<class>/*, <split>.csv, classnames.json and the marker into root."""
    videos_per_class = videos_per_class or DEFAULT_VIDEOS_PER_CLASS
    for split_number, (split, per_class) in enumerate(videos_per_class.items()):
        lines = []
        for label, motion in enumerate(classes):
            folder = os.path.join(root, "videos", split, motion)
            os.makedirs(folder, exist_ok=True)
            for number in range(per_class):
                rng = np.random.default_rng([seed, split_number, label, number])
                frames, fps = render_video(motion, rng)
                if rng.random() < 0.7:
                    # Lossless: x264's decisions (so its lossy output) vary from run to run even
                    # single-threaded, while lossless frames decode to exactly what was drawn.
                    options = {"qp": "0"}
                    name, codec = _video_name(split, number, ".mp4"), "libx264"
                else:
                    name, codec, options = _video_name(split, number, ".avi"), "mpeg4", {"b": "2M"}
                write_video(os.path.join(folder, name), frames, fps, codec, options=options)
                lines.append(f"videos/{split}/{motion}/{name} {label}\n")
        with open(os.path.join(root, f"{split}.csv"), "w") as csv:
            csv.writelines(lines)
    write_classnames_file(os.path.join(root, CLASSNAMES_FILE), classes)
    with open(os.path.join(root, MARKER), "w") as marker:
        json.dump(_description(seed, classes, videos_per_class), marker, indent=1)


def _video_name(split: str, number: int, extension: str) -> str:
    return f"{split}_{number:04d}{extension}"


def ensure_synthetic_dataset(
    path_to_data_dir: str,
    seed: int = 0,
    classes: Sequence[str] = DEFAULT_CLASSES,
    videos_per_class: dict[str, int] | None = None,
) -> bool:
    """Generates the synthetic dataset in `path_to_data_dir` unless it is already there.

    Idempotent and safe to call from several processes at once (a file lock serialises them);
    the dataset appears complete or not at all. A synthetic dataset of other settings is
    replaced; a folder holding anything this function did not write is never touched:
    DataError naming it, before any video is made. Returns whether it generated the dataset
    (False: already there).
    """
    videos_per_class = videos_per_class or DEFAULT_VIDEOS_PER_CLASS
    wanted = _description(seed, classes, videos_per_class)
    root = os.path.abspath(path_to_data_dir)
    os.makedirs(os.path.dirname(root), exist_ok=True)
    with _locked(root + ".lock"):
        existing = _read_marker(root)
        if existing == wanted:
            return False
        if os.path.lexists(root) and not os.path.isdir(root):
            raise DataError(f"{root} is a file: give a folder for the synthetic dataset")
        foreign = _foreign_files(root, existing)
        if foreign and existing is None:
            raise DataError(
                f"{root} is not empty and holds no synthetic dataset: generate it into an empty "
                "folder, or set DATA.GENERATE_SYNTHETIC False to use the videos listed there"
            )
        if foreign:
            raise DataError(
                f"{root} holds a synthetic dataset of other settings, which would be replaced, "
                f"and files it did not write, which would go with it: {first_names(foreign)}; "
                "move them, or choose another folder"
            )
        # Under the lock no other generator is at work: what a killed one left goes.
        for leftover in glob.glob(f"{glob.escape(root)}.partial-*") + glob.glob(
            f"{glob.escape(root)}.stale-*"
        ):
            shutil.rmtree(leftover, ignore_errors=True)
        partial = f"{root}.partial-{os.getpid()}"
        os.makedirs(partial)
        try:
            generate_synthetic_dataset(partial, seed, classes, videos_per_class)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        # Swap the new dataset in; an older synthetic one (other seed or size) is removed.
        stale = f"{root}.stale-{os.getpid()}"
        if os.path.isdir(root):
            os.rename(root, stale)
        os.rename(partial, root)
        shutil.rmtree(stale, ignore_errors=True)
    return True


def _description(seed: int, classes: Sequence[str], videos_per_class: dict[str, int]) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "classes": list(classes),
        "videos_per_class": dict(videos_per_class),
    }


def _read_marker(root: str) -> dict | None:
    """The description in root's marker; None without one, or with one of another format."""
    try:
        with open(os.path.join(root, MARKER)) as marker:
            found = json.load(marker)
        if found == _description(found["seed"], found["classes"], found["videos_per_class"]):
            return found
    except (OSError, ValueError, TypeError, KeyError):
        pass
    return None


def _foreign_files(root: str, description: dict | None) -> list[str]:
    """The paths under `root` (relative, sorted) that are no part of the synthetic dataset
    `description` describes (None: of none)."""
    ours = set()
    if description is not None:
        ours = {MARKER, CLASSNAMES_FILE, "videos"}
        for split, count in description["videos_per_class"].items():
            ours |= {f"{split}.csv", os.path.join("videos", split)}
            for motion in description["classes"]:
                folder = os.path.join("videos", split, motion)
                ours.add(folder)
                for number in range(count):
                    ours |= {
                        os.path.join(folder, _video_name(split, number, extension))
                        for extension in (".mp4", ".avi")
                    }
    found = []
    for folder, folders, names in os.walk(root):
        here = os.path.relpath(folder, root)
        paths = {name: os.path.normpath(os.path.join(here, name)) for name in folders + names}
        found += [path for path in paths.values() if path not in ours]
        # A folder that is not ours is named, not what it holds.
        folders[:] = [name for name in folders if paths[name] in ours]
    return sorted(found)


@contextlib.contextmanager
def _locked(lock_path: str):
    """Holds an exclusive lock on `lock_path`, a file that is there only while one holds it.

    The holder removes the file before letting go, so a waiter may get the lock of a file
    that is gone or replaced: it checks that the file it locked is the one at `lock_path`, and
    tries again if not.
    """
    while True:
        handle = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            with contextlib.suppress(FileNotFoundError):
                if os.path.samestat(os.fstat(handle), os.stat(lock_path)):
                    break
        except BaseException:
            os.close(handle)
            raise
        os.close(handle)
    try:
        yield
    finally:
        os.remove(lock_path)
        os.close(handle)
