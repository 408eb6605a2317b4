"""What one run of `demo/classify.py` does once its options are parsed: find the inputs, load the
classifier, classify each input, print and write the results."""

from __future__ import annotations

import itertools
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from revvideo.checkpoint import RELEASES, checkpoint_file, find_release
from revvideo.checkpoint.training import CHECKPOINT_DIR, latest_checkpoint
from revvideo.config import load_config
from revvideo.data.decoding import VideoDecodeError, check_video_file
from revvideo.data.paths import VIDEO_EXTENSIONS, video_files
from revvideo.demo.classifier import (
    UNKNOWN,
    Classifier,
    VideoResult,
    classify_image,
    classify_video,
    load_classifier,
    top_classes,
)
from revvideo.demo.images import IMAGE_EXTENSIONS, is_image, read_image
from revvideo.demo.live import LiveWindow
from revvideo.demo.render import (
    plot_timeline,
    plot_top_classes,
    write_annotated_image,
    write_annotated_video,
)
from revvideo.demo.timeline import Segment, Timeline, segments_of, write_subtitles
from revvideo.utils.errors import CheckpointError, ConfigError, DataError, UserError
from revvideo.utils.files import WriteError

# The README's quick start; its OUTPUT_DIR is where the default checkpoint is looked for.
QUICK_START_CONFIG = Path("configs/synthetic/REV_MVIT_XS.yaml")


class UsageError(UserError):
    """A mistake in the command-line options."""


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
    min_confidence: float | None = None
    timeline: bool = False
    stride: float | None = None
    srt: str | None = None
    timeline_plot: str | None = None
    stream: bool = False

    @property
    def wants_timeline(self) -> bool:
        return self.timeline or self.srt is not None or self.timeline_plot is not None


def pick_device(name: str | None) -> torch.device:
    """The device `name` (--device) names, else CUDA if available, else the CPU; UsageError (one
    line, with the devices there are) for one this machine lacks."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    available = _devices()
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    # "cuda" is "cuda:0", as torch takes it.
    if device is None or not any(
        device.type == usable.type and (device.index or 0) == (usable.index or 0)
        for usable in available
    ):
        names = ", ".join(str(usable) for usable in available)
        raise UsageError(f"--device {name}: no such device on this machine (it has {names})")
    return device


def _devices() -> list[torch.device]:
    """The devices this machine can classify on: the CPU and its accelerator's (CUDA, MPS, ...)."""
    accelerator = torch.accelerator.current_accelerator(check_available=True)
    if accelerator is None:
        return [torch.device("cpu")]
    count = torch.accelerator.device_count()
    return [torch.device("cpu"), *(torch.device(accelerator.type, i) for i in range(count))]


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


def checkpoint_source(checkpoint: str | None) -> str | Path:
    """What `checkpoint` (--checkpoint) names: a release name as given, else its file (see
    revvideo.checkpoint.checkpoint_file), else (None) the quick start's newest checkpoint.
    Nothing is downloaded; UserError (one line) when there is none."""
    if checkpoint is None:
        return quick_start_checkpoint()
    if find_release(checkpoint) is not None:
        return checkpoint
    return checkpoint_file(checkpoint, "--checkpoint")


def find_inputs(inputs: Sequence[str]) -> list[tuple[str, str | None]]:
    """(file, None) for each file named or each video or image inside a named folder, in order,
    and (input, why) for each input that gives none or cannot be classified (see _unusable)."""
    found: list[tuple[str, str | None]] = []
    for name in inputs:
        if os.path.isdir(name):
            files = video_files(name, VIDEO_EXTENSIONS + IMAGE_EXTENSIONS)
            if not files:
                found.append((name, _no_files(name)))
            found.extend((file, _unusable(file)) for file in files)
        else:
            found.append((name, _unusable(name)))
    return found


def _unusable(path: str) -> str | None:
    """Why `path` cannot be classified, told before anything opens it (opening a FIFO waits for
    a writer forever), else None."""
    if not os.path.lexists(path):
        if path == "-" or "://" in path:
            return f"{path}: a live source: read it with --stream"
        return f"{path}: no such file or folder"
    try:
        check_video_file(path)
    except VideoDecodeError as err:
        return f"{path}: {err}"
    return None


def _no_files(folder: str) -> str:
    """Why the folder `folder` gives no input: it cannot be read (video_files passes over such
    folders), or it holds none."""
    try:
        os.scandir(folder).close()
    except OSError as err:
        return f"{folder}: cannot read the folder: {err.strerror or err}"
    return f"{folder}: no video or image files ({', '.join(VIDEO_EXTENSIONS + IMAGE_EXTENSIONS)})"


def _annotated_suffix(path: str) -> str:
    """An annotated image keeps its format; an annotated video is MP4."""
    return Path(path).suffix if is_image(path) else ".mp4"


# The suffix of each output's file (by its JSON key; its option is --<key>) after the input's name.
_OUTPUT_SUFFIXES: dict[str, Callable[[str], str]] = {
    "output": _annotated_suffix,
    "plot": lambda _: ".png",
    "srt": lambda _: ".srt",
    "timeline_plot": lambda _: ".png",
}


def output_paths(
    asked: dict[str, str | None], inputs: Sequence[tuple[str, str | None]]
) -> list[dict[str, Path]]:
    """Where each of `inputs` (see find_inputs) writes the outputs `asked` (JSON key -> the
    option's value or None): {key: file} for each input, empty for one that cannot be
    classified. For a run of one input the file is the value, unless it is a folder; else it is
    in that folder, named after the input (see _free_name). A name that is not there still
    counts as an input: it does not turn the folder meant into a file."""
    targets: list[dict[str, Path]] = [{} for _ in inputs]
    taken: set[str] = set()  # across the options: --output and --plot may name one folder
    for key, given in asked.items():
        if given is None:
            continue
        path = Path(given)
        single = len(inputs) == 1 and not path.is_dir()
        if single:
            _refuse_file_on_the_way(given, path.parent)
        else:
            # Refused before anything is classified: every output would fail.
            if path.exists() and not path.is_dir():
                raise UsageError(
                    f"{given} is a file but there are {len(inputs)} inputs; name a folder"
                )
            if path.suffix and not path.is_dir():
                raise UsageError(
                    f"{given} names one file but there are {len(inputs)} inputs; name a folder"
                )
            _refuse_file_on_the_way(given, path)
        for (file, problem), target in zip(inputs, targets, strict=True):
            if problem is None:
                suffix = _OUTPUT_SUFFIXES[key](file)
                target[key] = path if single else path / _free_name(file, suffix, path, taken)
    return targets


def _free_name(file: str, suffix: str, folder: Path, taken: set[str]) -> str:
    """The first name for an output of `file` in `folder` that no other output of the run has
    taken (`taken`: their paths, resolved and case-blind, as on macOS and Windows "A.mp4" and
    "a.mp4" are one file), which it then takes: `<stem><suffix>`, else with the input's
    extension, `<stem>_<extension><suffix>` (x_mp4.png beside x_png.png), else numbered."""
    stem, extension = Path(file).stem, Path(file).suffix[1:]
    tagged = f"{stem}_{extension}" if extension else stem
    numbered = (f"{tagged}_{number}{suffix}" for number in itertools.count(2))
    folder = folder.resolve()
    names = itertools.chain([f"{stem}{suffix}", f"{tagged}{suffix}"], numbered)
    name = next(name for name in names if str(folder / name).casefold() not in taken)
    taken.add(str(folder / name).casefold())
    return name


def _refuse_file_on_the_way(option: str, folder: Path) -> None:
    """UsageError if a file stands where `folder` (or a folder above it) would be made."""
    for above in (folder, *folder.parents):
        if above.exists() or above.is_symlink():
            if not above.is_dir():
                raise UsageError(f"cannot write {option}: {above} is a file, not a folder")
            return


def refuse_overwrites(targets: list[dict[str, Path]], inputs: Sequence[str]) -> None:
    """Raises UsageError before anything is written if an output file (`targets`: see
    output_paths) is one of the existing `inputs`, links included, or is there but not a
    regular file (a device, a FIFO: a write would replace it), or two options name one file."""
    read = {_file_id(name): name for name in inputs if os.path.isfile(name)}
    written: dict[Path, str] = {}
    for key, target in (item for paths in targets for item in paths.items()):
        option = f"--{key.replace('_', '-')}"
        if target.exists() and not target.is_file():
            try:
                check_video_file(str(target))  # which says what it is
            except VideoDecodeError as err:
                raise UsageError(f"{option} {target}: {err}; name another file or folder") from None
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


def _annotate(
    classifier: Classifier,
    result: VideoResult,
    timeline: Timeline | None,
    topk: int,
    destination: Path,
) -> None:
    """`result`'s image with its labels, or its video with, at each moment, the labels of the
    `timeline`'s windows that cover it and the segment it is in."""
    names = classifier.class_names
    if timeline is None:
        write_annotated_image(read_image(result.path), destination, result.top(topk, names))
        return

    def heading(time_point: float) -> str:
        # The labels score these seconds, not the video: its result is what the run prints.
        start, end = timeline.span(time_point)
        segment = timeline.segment_at(time_point)
        return (
            f"{segment.name} {segment.start:.1f}-{segment.end:.1f} s\n"
            f"window {start:.1f}-{end:.1f} s"
        )

    write_annotated_video(
        result.path,
        destination,
        lambda time_point: top_classes(timeline.scores_at(time_point), names, topk),
        result.duration,
        names,
        min(topk, len(names)),
        heading,
    )


# UserErrors that concern every input, not the one at hand (a model whose scores are not
# finite): they stop the run. Every other error of an input is that input's alone.
_RUN_ERRORS = (CheckpointError, ConfigError, UsageError)


def _classify_one(classifier: Classifier, path: str, views: tuple[int, int] | None) -> VideoResult:
    if is_image(path):
        return classify_image(classifier, path)
    return classify_video(classifier, path, views)


def _write_outputs(
    classifier: Classifier,
    result: VideoResult,
    timeline: Timeline | None,
    options: DemoOptions,
    targets: dict[str, Path],
) -> tuple[dict[str, Path], dict[str, str]]:
    """Writes the outputs of `result` and its `timeline` asked for (`targets`: "output" /
    "plot" / "srt" / "timeline_plot" -> file; those of a timeline only where there is one); see
    _write_each."""
    clips, crops = result.views
    title = f"{printable(Path(result.path).name)} ({clips}x{crops} views)"
    top = result.top(options.topk, classifier.class_names)
    writers = {
        "output": lambda target: _annotate(classifier, result, timeline, options.topk, target),
        "plot": lambda target: plot_top_classes(top, title, target),
        **_timeline_writers(classifier, timeline, result.path, options.topk),
    }
    return _write_each(result.path, targets, writers, result.warnings)


def _timeline_writers(
    classifier: Classifier, timeline: Timeline | None, path: str, topk: int
) -> dict[str, Callable[[Path], None]]:
    """The writers of --srt and --timeline-plot for `timeline` (of the input `path`), if any."""
    if timeline is None:
        return {}
    title = f"{printable(Path(path).name)}: timeline"
    return {
        "srt": lambda target: write_subtitles(timeline.segments, target),
        "timeline_plot": lambda target: plot_timeline(
            timeline, classifier.class_names, topk, title, target
        ),
    }


def _write_each(
    path: str,
    targets: dict[str, Path],
    writers: dict[str, Callable[[Path], None]],
    warnings: list[str],
) -> tuple[dict[str, Path], dict[str, str]]:
    """Writes each of `targets` (JSON key -> file) that has a writer, whole or not at all; the
    files written and, for each that could not be, why (one line naming the input `path`). One
    that replaces a file says so in `warnings`."""
    written: dict[str, Path] = {}
    failures: dict[str, str] = {}
    for key, target in targets.items():
        if key not in writers:
            continue
        existed = target.exists()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            writers[key](target)
        except _RUN_ERRORS:
            raise
        except WriteError as err:
            failures[key] = f"{path}: {err}"
        except Exception as err:
            failures[key] = f"{path}: cannot write {target}: {_reason(err)}"
        else:
            written[key] = target
            if existed:
                warnings.append(f"{target}: replaced the file that was there")
    return written, failures


def _timeline(
    classifier: Classifier,
    result: VideoResult,
    asked: bool,
    drawn: bool = False,
    stride: float | None = None,
) -> Timeline | None:
    """The timeline of `result`'s video when `asked` (its warnings join the result's) or
    `drawn` on the video by --output; None for an image, said in a warning if it was asked."""
    if is_image(result.path) or not (asked or drawn):
        if is_image(result.path) and asked:
            result.warnings.append(f"{result.path}: a still image has no timeline")
        return None
    timeline = classifier.timeline(result.path, stride)
    if asked:  # else they repeat what the result's warnings say
        result.warnings.extend(timeline.warnings)
    return timeline


def _reason(err: Exception) -> str:
    """One line for an error: an OSError's reason, else the first line of the message; an
    error no one foresaw is named by its type."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    lines = str(err).strip().splitlines()
    message = lines[0] if lines else ""
    if isinstance(err, (UserError, OSError, ValueError)):
        return message or type(err).__name__
    return f"unexpected {type(err).__name__}" + (f": {message}" if message else "")


def _input_failure(path: str, err: Exception) -> str:
    """The one line that says why `path` could not be classified."""
    if isinstance(err, UserError) and str(err).startswith(f"{path}:"):
        return str(err)
    return f"{path}: {_reason(err)}"


def printable(text: str) -> str:
    """`text` as it is shown: the bytes of a file name that are not UTF-8 (which Python holds as
    lone surrogates, "surrogateescape") as \\xNN escapes, so that every line and the JSON are
    valid Unicode; a real name containing "\\xff" looks the same, a price worth paying."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that surrogateescape did not make
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


class StdoutError(Exception):
    """stdout cannot take the results (its reader has gone, its disk is full); the OSError is
    the cause."""


def say(line: str, file=None) -> None:
    """Prints `line` (see printable) on `file` (stdout by default); characters that the
    stream's encoding lacks (a class name on an ASCII terminal) as backslash escapes. A stdout
    that cannot take it raises StdoutError, at once: each line is flushed."""
    file = sys.stdout if file is None else file
    line = printable(line)
    encoding = getattr(file, "encoding", None) or "utf-8"
    try:
        print(line.encode(encoding, "backslashreplace").decode(encoding), file=file, flush=True)
    except OSError as err:
        if file is not sys.stdout:
            raise
        raise StdoutError(err) from err


def _print_result(
    classifier: Classifier,
    result: VideoResult,
    top: list[tuple[str, float]],
    written: dict[str, Path],
    timeline: Timeline | None = None,
) -> None:
    clips, crops = result.views
    say(f"{result.path}: {clips}x{crops} views, {result.seconds:.2f} s")
    if classifier.min_confidence is not None:
        threshold = f"--min-confidence {classifier.min_confidence:g}"
        name, probability = top[0]
        if classifier.answer(result.probabilities) == UNKNOWN:
            say(f"  answer: {UNKNOWN} (best guess {name} {probability:.1%}, below {threshold})")
        else:
            say(f"  answer: {name} ({probability:.1%}, at least {threshold})")
    width = max(len(name) for name, _ in top)
    for rank, (name, probability) in enumerate(top, start=1):
        say(f"  {rank}. {name:<{width}}  {probability:6.1%}")
    if timeline is not None:
        say(f"  timeline: {len(timeline.windows)} windows, {len(timeline.segments)} segments")
        for segment in timeline.segments:
            say(f"  {_segment_line(segment)}")
    for path in written.values():
        say(f"  wrote {path}")


def _json_entry(
    classifier: Classifier,
    result: VideoResult,
    top: list[tuple[str, float]],
    written: dict[str, Path],
    failures: dict[str, str],
    timeline: Timeline | None = None,
) -> dict:
    clips, crops = result.views
    names = classifier.class_names
    timeline_entry = {}
    if timeline is not None:
        windows = [
            {
                "start": round(window.start, 4),
                "end": round(window.end, 4),
                "top_k": _top_k(top_classes(window.probabilities, names, len(top))),
            }
            for window in timeline.windows
        ]
        segments = [_segment_entry(segment) for segment in timeline.segments]
        timeline_entry = {"timeline": {"windows": windows, "segments": segments}}
    return (
        {
            "path": printable(result.path),
            "class": classifier.answer(result.probabilities),
            "top_k": _top_k(top),
            "temperature": classifier.temperature,
            "seconds": round(result.seconds, 4),
            "views": f"{clips}x{crops}",
            "warnings": [printable(warning) for warning in result.warnings],
        }
        | {key: printable(str(path)) for key, path in written.items()}
        | {f"{key}_error": printable(reason) for key, reason in failures.items()}
        | timeline_entry
    )


def classify_entry(
    classifier: Classifier, path: str, topk: int = 5, timeline: bool = False
) -> dict:
    """The entry `classify.py --json` prints for the file `path` (with its "timeline" when
    asked; nothing written), for front ends other than the command line. Raises UserError (one
    line) for a file that cannot be classified."""
    result = _classify_one(classifier, path, None)
    top = result.top(topk, classifier.class_names)
    return _json_entry(classifier, result, top, {}, {}, _timeline(classifier, result, timeline))


def _top_k(top: list[tuple[str, float]]) -> list[dict]:
    return [{"class": name, "probability": round(p, 6)} for name, p in top]


def _segment_line(segment: Segment) -> str:
    return f"{segment.start:.2f}-{segment.end:.2f} s  {segment.name}  {segment.probability:.0%}"


def _segment_entry(segment: Segment) -> dict:
    return {
        "class": segment.name,
        "start": round(segment.start, 4),
        "end": round(segment.end, 4),
        "probability": round(segment.probability, 6),
    }


def _error_entry(path: str, problem: str) -> dict:
    return {"path": printable(path), "error": printable(problem)}


def _print_json(entries: list[dict]) -> None:
    # No NaN or Infinity, which are not JSON: every number here has been checked finite. Paths
    # that are not UTF-8 are shown with \xNN escapes (printable), so the document is valid.
    say(json.dumps(entries, indent=1, allow_nan=False))


def stream_source(options: DemoOptions) -> int:
    """classify_all for --stream: a line per window of the one source (`options.inputs`) as soon
    as it is scored, then, at the source's end or on Ctrl-C (a normal end of a live source), a
    summary with the segments and the --srt and --timeline-plot files of what was seen; the exit
    status: 0, or 1 for a source that cannot be read or an output that cannot be written."""
    if len(options.inputs) != 1:
        raise UsageError(f"--stream reads one source, got {len(options.inputs)} inputs")
    for option, value in _FILE_ONLY_OPTIONS.items():
        if getattr(options, value) not in (None, False):
            raise UsageError(f"{option} is for video files, not --stream")
    source = options.inputs[0]
    asked = {"srt": options.srt, "timeline_plot": options.timeline_plot}
    targets = output_paths(asked, [(source, None)])[0]
    read = [source] if os.path.isfile(source) else []
    classifier = _load(options, pick_device(options.device), [targets], read)
    try:
        stream = classifier.stream(source, options.stride)
    except DataError as err:
        say(f"error: {err}", sys.stderr)
        if options.json:
            say(json.dumps(_error_entry(source, str(err))))
        return 1
    windows: list[LiveWindow] = []
    stopped = None
    scored = iter(stream)
    try:
        for window in scored:
            windows.append(window)
            _print_window(classifier, window, options)
    except KeyboardInterrupt as stop:
        number = getattr(stop, "signal_number", signal.SIGINT)
        stopped = "Ctrl-C" if number == signal.SIGINT else signal.Signals(number).name
    finally:
        scored.close()
    warnings = [f"{source}: {warning}" for warning in stream.warnings]
    segments, written, failures = [], {}, {}
    if windows:
        segments = segments_of(windows, classifier.class_names, float(classifier.clip_duration))
        writers = _timeline_writers(classifier, Timeline(windows, segments), source, options.topk)
        written, failures = _write_each(source, targets, writers, warnings)
    for warning in warnings:
        say(f"warning: {warning}", sys.stderr)
    for reason in failures.values():
        say(f"error: {reason}", sys.stderr)
    if options.json:
        summary = {
            "path": printable(source),
            "windows": len(windows),
            "skipped": stream.skipped,
            "stopped": stopped,
            "segments": [_segment_entry(segment) for segment in segments],
            "warnings": [printable(warning) for warning in warnings],
        }
        summary |= {key: printable(str(path)) for key, path in written.items()}
        summary |= {f"{key}_error": printable(reason) for key, reason in failures.items()}
        say(json.dumps(summary, allow_nan=False))
    elif windows:
        ended = f"stopped by {stopped}" if stopped else "ended"
        say(
            f"{printable(source)} {ended}: {len(windows)} windows scored, {stream.skipped} skipped "
            f"(the model behind the source), {windows[-1].end:.2f} s seen"
        )
        for segment in segments:
            say(f"  {_segment_line(segment)}")
        for path in written.values():
            say(f"  wrote {path}")
    else:
        say(f"{printable(source)}: no window to score ({'stopped' if stopped else 'ended'} first)")
    return 1 if failures else 0


# Options of classify.py that --stream does not take, by their DemoOptions field.
_FILE_ONLY_OPTIONS = {
    "--views": "views",
    "--output": "output",
    "--plot": "plot",
}


def _print_window(classifier: Classifier, window: LiveWindow, options: DemoOptions) -> None:
    """One line (text or JSON) for a window of a stream, flushed."""
    top = top_classes(window.probabilities, classifier.class_names, options.topk)
    answer = classifier.answer(window.probabilities)
    if options.json:
        entry = {
            "start": round(window.start, 4),
            "end": round(window.end, 4),
            "class": answer,
            "top_k": _top_k(top),
            "latency": round(window.latency, 4),
            "skipped": window.skipped,
        }
        say(json.dumps(entry, allow_nan=False))
        return
    skipped = f"  ({window.skipped} skipped before it)" if window.skipped else ""
    say(
        f"{window.start:.2f}-{window.end:.2f} s  {answer}  {top[0][1]:.1%}  latency "
        f"{window.latency:.2f} s{skipped}"
    )


def classify_all(options: DemoOptions) -> int:
    """Classifies every input of `options`; the exit status (see demo/classify.py).

    Every input gets a verdict: its result, or one `error:` line for it (also for an error no
    one foresaw), after which the next input is classified; an output that cannot be written
    is reported without losing the result. Only errors that concern every input (an option
    mistake, the model's scores are not finite) and Ctrl-C stop the run; the results so far are
    kept, and in JSON each input left gets that error (or "interrupted"), so that the document
    is always whole."""
    if options.stream:
        return stream_source(options)
    inputs: list[tuple[str, str | None]] = [(name, None) for name in options.inputs]
    entries: list[dict] = []  # one per input done, in order
    try:
        inputs = find_inputs(options.inputs)
        status = _classify_inputs(options, inputs, entries)
    except (UserError, KeyboardInterrupt) as stop:
        if options.json:
            why = "interrupted" if isinstance(stop, KeyboardInterrupt) else str(stop)
            left = inputs[len(entries) :]
            _print_json(entries + [_error_entry(name, problem or why) for name, problem in left])
        raise
    if options.json:
        _print_json(entries)
    return status


def _load(
    options: DemoOptions, device: torch.device, outputs: list[dict[str, Path]], read: list[str]
) -> Classifier:
    """The classifier of --checkpoint (and --cfg), once nothing it reads (`read`, the
    checkpoint, the config) would be overwritten by `outputs` (see output_paths)."""
    checkpoint = checkpoint_source(options.checkpoint)
    # The quick start's or a run folder's file: which one is said.
    if options.checkpoint is None or os.path.isdir(options.checkpoint):
        say(f"using {checkpoint}", sys.stderr)
    refuse_overwrites(outputs, [*read, str(checkpoint), *([options.cfg] if options.cfg else [])])
    classifier = load_classifier(checkpoint, options.cfg, device, options.min_confidence)
    if classifier.temperature is not None and not options.json:
        # A notice, like the checkpoint used: stdout keeps only the results.
        say(
            "probabilities calibrated: logits divided by the checkpoint's temperature "
            f"{classifier.temperature:.4g}",
            sys.stderr,
        )
    return classifier


def _classify_inputs(
    options: DemoOptions, inputs: list[tuple[str, str | None]], entries: list[dict]
) -> int:
    """classify_all's work: the verdict of each of `inputs` ((file, why it cannot be classified
    or None), see find_inputs) added to `entries` as its JSON entry, and printed as text unless
    --json."""
    device = pick_device(options.device)
    files = [file for file, problem in inputs if problem is None]
    asked = {"output": options.output, "plot": options.plot}
    asked |= {"srt": options.srt, "timeline_plot": options.timeline_plot}
    outputs = output_paths(asked, inputs)
    if options.stride is not None and not options.wants_timeline:
        raise UsageError("--stride sets the windows of --timeline: add --timeline")
    if files:
        classifier = _load(options, device, outputs, files)
        _check_views(classifier, options.views or classifier.views)
    failed = unwritten = asked = 0
    for (file, problem), targets in zip(inputs, outputs, strict=True):
        if problem is None:
            try:
                result = _classify_one(classifier, file, options.views)
                timeline = _timeline(
                    classifier,
                    result,
                    options.wants_timeline,
                    bool(options.output),
                    options.stride,
                )
                written, failures = _write_outputs(classifier, result, timeline, options, targets)
            except _RUN_ERRORS:
                raise
            except Exception as err:
                problem = _input_failure(file, err)
        if problem is not None:
            say(f"error: {problem}", sys.stderr)
            entries.append(_error_entry(file, problem))
            failed += 1
            continue
        for warning in result.warnings:
            say(f"warning: {warning}", sys.stderr)
        for reason in failures.values():
            say(f"error: {reason}", sys.stderr)
        asked += len(targets)
        unwritten += len(failures)
        top = result.top(options.topk, classifier.class_names)
        shown = timeline if options.wants_timeline else None
        entries.append(_json_entry(classifier, result, top, written, failures, shown))
        if not options.json:
            _print_result(classifier, result, top, written, shown)
    if not files:
        # Every input failed before the checkpoint was needed: a missing one is named too.
        checkpoint_source(options.checkpoint)
    if failed and len(inputs) > 1:
        say(f"error: {failed} of {len(inputs)} inputs could not be classified", sys.stderr)
    if unwritten and len(inputs) > 1:
        say(f"error: {unwritten} of {asked} output files could not be written", sys.stderr)
    return 1 if failed or unwritten else 0
