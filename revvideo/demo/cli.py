"""Classify video files with a trained model and print the top classes.

    python demo/classify.py video.mp4                      # the quick start's newest checkpoint
    python demo/classify.py clips/ b.mkv --checkpoint output/run/checkpoints/x.pyth
    python demo/classify.py video.mp4 --checkpoint rev_mvit_b_16x4_k400 --views 10x3 --json
    python demo/classify.py video.mp4 --output annotated.mp4 --plot top5.png

--checkpoint takes a checkpoint file or a release name (downloaded once into the torch hub
cache). The model comes from --cfg, else from the config stored in the checkpoint. Folders are
searched for video files. With several videos, --output and --plot name folders that receive
one <video name>.mp4 / .png each. Nothing is ever written onto an input (a video, the checkpoint
or the config).

Exit status: 0 every video classified; 1 some video could not be (each on an `error:` line,
then how many); 2 a mistake in the options, the config or the checkpoint, including a model
whose scores are not finite (one `error:` line).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import av
import torch

from revvideo.checkpoint import RELEASES
from revvideo.checkpoint.training import CHECKPOINT_DIR, latest_checkpoint
from revvideo.config import load_config
from revvideo.data.paths import VIDEO_EXTENSIONS, video_files
from revvideo.demo.classifier import (
    Classifier,
    VideoResult,
    classify_video,
    load_classifier,
    running_scores,
    top_classes,
)
from revvideo.demo.render import plot_top_classes, write_annotated_video
from revvideo.utils.errors import DataError, UserError

# The README's quick start; its OUTPUT_DIR is where the default checkpoint is looked for.
QUICK_START_CONFIG = Path("configs/synthetic/REV_MVIT_XS.yaml")
# Top classes drawn on the annotated video.
LABELS_SHOWN = 3


class UsageError(UserError):
    """A mistake in the command-line options."""


class OutputError(UserError):
    """An output of one video that cannot be written."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def _views(text: str) -> tuple[int, int]:
    clips, _, crops = text.lower().partition("x")
    if not (clips.isdigit() and crops.isdigit() and int(clips) > 0 and int(crops) > 0):
        raise argparse.ArgumentTypeError(
            f"--views takes <clips>x<crops> such as 5x1 or 10x3, got {text!r}"
        )
    return int(clips), int(crops)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("videos", nargs="+", help="video files or folders of videos")
    parser.add_argument("--cfg", help="YAML config of the model (default: the checkpoint's)")
    parser.add_argument(
        "--checkpoint",
        help="checkpoint file or release name "
        f"({', '.join(sorted(RELEASES))}); default: the quick start's newest checkpoint",
    )
    parser.add_argument("--topk", type=_positive, default=5, help="classes to show (5)")
    parser.add_argument(
        "--views",
        type=_views,
        help="<clips>x<crops> per video, e.g. 5x1 or 10x3 (default: the config's test views)",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--output", help="write the video with its running top-3 labels here")
    parser.add_argument("--plot", help="write a bar chart of the top classes here (.png)")
    return parser


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a device (cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: there are {torch.cuda.device_count()} CUDA devices")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {name}: MPS is not available on this machine")
    return device


def quick_start_checkpoint() -> Path:
    """The newest checkpoint the quick start wrote, looked for from the current directory
    (the README's commands run from the repository's root): never another clone's."""
    if not QUICK_START_CONFIG.is_file():
        raise UsageError(
            f"no --checkpoint given and no {QUICK_START_CONFIG} here: pass --checkpoint <file.pyth "
            f"or a release: {', '.join(sorted(RELEASES))}>, or run from the repository's root to "
            "use the quick start's newest checkpoint"
        )
    output_dir = Path(load_config(QUICK_START_CONFIG).OUTPUT_DIR)
    found = latest_checkpoint(output_dir)
    if found is not None:
        return found
    raise UsageError(
        f"no --checkpoint given and the quick start has written none to "
        f"{output_dir / CHECKPOINT_DIR}: train one with `python tools/run_net.py --cfg "
        f"{QUICK_START_CONFIG}`, or pass --checkpoint <file.pyth or a release: "
        f"{', '.join(sorted(RELEASES))}>"
    )


def find_videos(inputs: Sequence[str]) -> list[tuple[str, str | None]]:
    """(video, None) for each video file named or inside a named folder, in order, and
    (input, why) for each input that gives none."""
    found: list[tuple[str, str | None]] = []
    for name in inputs:
        if os.path.isdir(name):
            videos = video_files(name)
            if not videos:
                found.append((name, f"{name}: no video files ({', '.join(VIDEO_EXTENSIONS)})"))
            found.extend((video, None) for video in videos)
        elif os.path.exists(name):
            found.append((name, None))
        else:
            found.append((name, f"{name}: no such file or folder"))
    return found


def output_paths(option: str | None, videos: Sequence[str], suffix: str) -> dict[str, Path]:
    """Where each video's --output / --plot goes: the path itself for one video, else
    `<folder>/<video name><suffix>` (numbered when two videos share a name)."""
    if option is None:
        return {}
    path = Path(option)
    if len(videos) == 1 and not path.is_dir():
        return {videos[0]: path}
    if path.suffix and not path.is_dir():
        raise UsageError(
            f"{option} names one file but there are {len(videos)} videos; name a folder"
        )
    paths: dict[str, Path] = {}
    # Names compared case-blind: on macOS and Windows "A.mp4" and "a.mp4" are one file.
    taken: set[str] = set()
    for video in videos:
        stem = Path(video).stem
        target, number = path / f"{stem}{suffix}", 1
        while target.name.casefold() in taken:
            number += 1
            target = path / f"{stem}_{number}{suffix}"
        taken.add(target.name.casefold())
        paths[video] = target
    return paths


def refuse_overwrites(outputs: dict[str, dict[str, Path]], inputs: Sequence[str]) -> None:
    """Raises UsageError before anything is written if an output file (`outputs`: option ->
    {video: file}) is one of the existing `inputs`, links included, or two options name one
    file."""
    read = {_file_id(name): name for name in inputs if os.path.isfile(name)}
    written: dict[Path, str] = {}
    for option, paths in outputs.items():
        for target in paths.values():
            if target.is_file() and _file_id(target) in read:
                raise UsageError(
                    f"{option} would overwrite {read[_file_id(target)]}, an input of this run; "
                    "name another file or folder"
                )
            other = written.setdefault(target.resolve(), option)
            if other != option:
                raise UsageError(f"{other} and {option} both name {target}; name two files")


def _file_id(path: str | Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def _classify_one(
    classifier: Classifier,
    video: str,
    args: argparse.Namespace,
    annotated: Path | None,
    plot: Path | None,
) -> VideoResult:
    """Classifies `video` and writes the outputs asked for; UserError for what fails."""
    result = classify_video(classifier, video, args.views)
    names = classifier.class_names
    try:
        if annotated is not None:
            scores = running_scores(classifier, result)
            annotated.parent.mkdir(parents=True, exist_ok=True)
            write_annotated_video(
                video,
                annotated,
                lambda time_point: top_classes(scores.at(time_point), names, LABELS_SHOWN),
                result.duration,
            )
        if plot is not None:
            plot.parent.mkdir(parents=True, exist_ok=True)
            clips, crops = result.views
            title = f"{Path(video).name} ({clips}x{crops} views)"
            plot_top_classes(result.top(args.topk, names), title, plot)
    except (OSError, ValueError, av.FFmpegError) as err:
        reason = getattr(err, "strerror", None) or err
        raise OutputError(f"{video}: cannot write its output: {reason}") from None
    return result


def _print_result(result: VideoResult, top: list[tuple[str, float]]) -> None:
    clips, crops = result.views
    print(f"{result.path}: {clips}x{crops} views, {result.seconds:.2f} s")
    width = max(len(name) for name, _ in top)
    for rank, (name, probability) in enumerate(top, start=1):
        print(f"  {rank}. {name:<{width}}  {probability:6.1%}")


def _json_entry(result: VideoResult, top: list[tuple[str, float]]) -> dict:
    clips, crops = result.views
    return {
        "path": result.path,
        "top_k": [{"class": name, "probability": round(p, 6)} for name, p in top],
        "seconds": round(result.seconds, 4),
        "views": f"{clips}x{crops}",
        "warnings": result.warnings,
    }


def _classify_all(args: argparse.Namespace) -> int:
    device = _device(args.device)
    inputs = find_videos(args.videos)
    videos = [video for video, problem in inputs if problem is None]
    annotated_paths = output_paths(args.output, videos, ".mp4")
    plot_paths = output_paths(args.plot, videos, ".png")
    if videos:
        checkpoint = args.checkpoint
        if checkpoint is None:
            checkpoint = quick_start_checkpoint()
            print(f"using {checkpoint}", file=sys.stderr)
        refuse_overwrites(
            {"--output": annotated_paths, "--plot": plot_paths},
            [*videos, str(checkpoint), *([args.cfg] if args.cfg else [])],
        )
        classifier = load_classifier(checkpoint, args.cfg, device)
    entries: list[dict] = []
    failed = 0
    for video, problem in inputs:
        if problem is None:
            try:
                result = _classify_one(
                    classifier, video, args, annotated_paths.get(video), plot_paths.get(video)
                )
            # Only this video's own failures are counted; others (a checkpoint whose scores
            # are not finite) concern every video and stop the run.
            except (DataError, OutputError) as err:
                problem = str(err)
        if problem is not None:
            print(f"error: {problem}", file=sys.stderr)
            entries.append({"path": video, "error": problem})
            failed += 1
            continue
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        top = result.top(args.topk, classifier.class_names)
        if args.json:
            entries.append(_json_entry(result, top))
        else:
            _print_result(result, top)
    if args.json:
        # No NaN or Infinity, which are not JSON: every number here has been checked finite.
        json.dump(entries, sys.stdout, indent=1, allow_nan=False)
        print()
    if failed and len(inputs) > 1:
        print(f"error: {failed} of {len(inputs)} inputs could not be classified", file=sys.stderr)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _classify_all(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
