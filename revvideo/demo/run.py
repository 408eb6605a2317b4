"""What one run of `demo/classify.py` does once its options are parsed: find the inputs, load the
classifier, classify each input, print and write the results."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
    classify_image,
    classify_video,
    load_classifier,
    running_scores,
    top_classes,
)
from revvideo.demo.images import IMAGE_EXTENSIONS, is_image, read_image
from revvideo.demo.render import plot_top_classes, write_annotated_image, write_annotated_video
from revvideo.utils.errors import DataError, UserError

# The README's quick start; its OUTPUT_DIR is where the default checkpoint is looked for.
QUICK_START_CONFIG = Path("configs/synthetic/REV_MVIT_XS.yaml")


class UsageError(UserError):
    """A mistake in the command-line options."""


class OutputError(UserError):
    """An output of one input that cannot be written."""


@dataclass
class DemoOptions:
    """What demo/classify.py was asked (its --help documents each option and its default)."""

    inputs: list[str]
    cfg: str | None
    checkpoint: str | None
    topk: int
    views: tuple[int, int] | None
    device: str | None
    json: bool
    output: str | None
    plot: str | None


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


def find_inputs(inputs: Sequence[str]) -> list[tuple[str, str | None]]:
    """(file, None) for each file named or each video or image inside a named folder, in order,
    and (input, why) for each input that gives none."""
    found: list[tuple[str, str | None]] = []
    for name in inputs:
        if os.path.isdir(name):
            files = video_files(name, VIDEO_EXTENSIONS + IMAGE_EXTENSIONS)
            if not files:
                found.append(
                    (
                        name,
                        f"{name}: no video or image files "
                        f"({', '.join(VIDEO_EXTENSIONS + IMAGE_EXTENSIONS)})",
                    )
                )
            found.extend((file, None) for file in files)
        elif os.path.exists(name):
            found.append((name, None))
        else:
            found.append((name, f"{name}: no such file or folder"))
    return found


def output_paths(
    option: str | None, inputs: Sequence[str], suffix: Callable[[str], str]
) -> dict[str, Path]:
    """Where each input's --output / --plot goes: the path itself for one input, else
    `<folder>/<input name><suffix(input)>` (numbered when two inputs share a name)."""
    if option is None:
        return {}
    path = Path(option)
    if len(inputs) == 1 and not path.is_dir():
        return {inputs[0]: path}
    if path.suffix and not path.is_dir():
        raise UsageError(
            f"{option} names one file but there are {len(inputs)} inputs; name a folder"
        )
    paths: dict[str, Path] = {}
    # Names compared case-blind: on macOS and Windows "A.mp4" and "a.mp4" are one file.
    taken: set[str] = set()
    for file in inputs:
        stem, extension = Path(file).stem, suffix(file)
        target, number = path / f"{stem}{extension}", 1
        while target.name.casefold() in taken:
            number += 1
            target = path / f"{stem}_{number}{extension}"
        taken.add(target.name.casefold())
        paths[file] = target
    return paths


def _annotated_suffix(path: str) -> str:
    """An annotated image keeps its format; an annotated video is MP4."""
    return Path(path).suffix if is_image(path) else ".mp4"


def refuse_overwrites(outputs: dict[str, dict[str, Path]], inputs: Sequence[str]) -> None:
    """Raises UsageError before anything is written if an output file (`outputs`: option ->
    {input: file}) is one of the existing `inputs`, links included, or two options name one
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


def _check_views(classifier: Classifier, views: tuple[int, int] | None) -> None:
    """Image models take one centre crop per frame: more crops would all be the same."""
    if classifier.image_view is not None and views is not None and views[1] != 1:
        raise UsageError(
            f"--views {views[0]}x{views[1]}: {classifier.source} is an image model, which "
            f"classifies one centre crop per frame: use --views {views[0]}x1"
        )


def _annotate(classifier: Classifier, result: VideoResult, topk: int, destination: Path) -> None:
    names = classifier.class_names
    if is_image(result.path):
        write_annotated_image(read_image(result.path), destination, result.top(topk, names))
        return
    scores = running_scores(classifier, result)
    write_annotated_video(
        result.path,
        destination,
        lambda time_point: top_classes(scores.at(time_point), names, topk),
        result.duration,
        names,
        min(topk, len(names)),
    )


def _classify_one(
    classifier: Classifier,
    path: str,
    options: DemoOptions,
    annotated: Path | None,
    plot: Path | None,
) -> tuple[VideoResult, dict[str, Path]]:
    """Classifies `path` and writes the outputs asked for; the result and the files written
    ("output", "plot"). UserError for what fails."""
    if is_image(path):
        result = classify_image(classifier, path)
    else:
        result = classify_video(classifier, path, options.views)
    written: dict[str, Path] = {}
    try:
        if annotated is not None:
            annotated.parent.mkdir(parents=True, exist_ok=True)
            _annotate(classifier, result, options.topk, annotated)
            written["output"] = annotated
        if plot is not None:
            plot.parent.mkdir(parents=True, exist_ok=True)
            clips, crops = result.views
            title = f"{Path(path).name} ({clips}x{crops} views)"
            plot_top_classes(result.top(options.topk, classifier.class_names), title, plot)
            written["plot"] = plot
    except (OSError, ValueError, av.FFmpegError) as err:
        reason = getattr(err, "strerror", None) or err
        raise OutputError(f"{path}: cannot write its output: {reason}") from None
    return result, written


def _print_result(
    result: VideoResult, top: list[tuple[str, float]], written: dict[str, Path]
) -> None:
    clips, crops = result.views
    print(f"{result.path}: {clips}x{crops} views, {result.seconds:.2f} s")
    width = max(len(name) for name, _ in top)
    for rank, (name, probability) in enumerate(top, start=1):
        print(f"  {rank}. {name:<{width}}  {probability:6.1%}")
    for path in written.values():
        print(f"  wrote {path}")


def _json_entry(
    result: VideoResult, top: list[tuple[str, float]], written: dict[str, Path]
) -> dict:
    clips, crops = result.views
    return {
        "path": result.path,
        "top_k": [{"class": name, "probability": round(p, 6)} for name, p in top],
        "seconds": round(result.seconds, 4),
        "views": f"{clips}x{crops}",
        "warnings": result.warnings,
    } | {key: str(path) for key, path in written.items()}


def classify_all(options: DemoOptions) -> int:
    """Classifies every input of `options`; the exit status (see demo/classify.py)."""
    device = _device(options.device)
    inputs = find_inputs(options.inputs)
    files = [file for file, problem in inputs if problem is None]
    annotated_paths = output_paths(options.output, files, _annotated_suffix)
    plot_paths = output_paths(options.plot, files, lambda _: ".png")
    if files:
        checkpoint = options.checkpoint
        if checkpoint is None:
            checkpoint = quick_start_checkpoint()
            print(f"using {checkpoint}", file=sys.stderr)
        refuse_overwrites(
            {"--output": annotated_paths, "--plot": plot_paths},
            [*files, str(checkpoint), *([options.cfg] if options.cfg else [])],
        )
        classifier = load_classifier(checkpoint, options.cfg, device)
        _check_views(classifier, options.views or classifier.views)
    entries: list[dict] = []
    failed = 0
    for file, problem in inputs:
        if problem is None:
            try:
                result, written = _classify_one(
                    classifier, file, options, annotated_paths.get(file), plot_paths.get(file)
                )
            # Only this input's own failures are counted; others (a checkpoint whose scores
            # are not finite) concern every input and stop the run.
            except (DataError, OutputError) as err:
                problem = str(err)
        if problem is not None:
            print(f"error: {problem}", file=sys.stderr)
            entries.append({"path": file, "error": problem})
            failed += 1
            continue
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        top = result.top(options.topk, classifier.class_names)
        if options.json:
            entries.append(_json_entry(result, top, written))
        else:
            _print_result(result, top, written)
    if options.json:
        # No NaN or Infinity, which are not JSON: every number here has been checked finite.
        json.dump(entries, sys.stdout, indent=1, allow_nan=False)
        print()
    if failed and len(inputs) > 1:
        print(f"error: {failed} of {len(inputs)} inputs could not be classified", file=sys.stderr)
    return 1 if failed else 0
