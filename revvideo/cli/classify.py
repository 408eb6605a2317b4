"""Classify video files or images with a trained model and print the top classes.

    python demo/classify.py video.mp4                      # the quick start's newest checkpoint
    python demo/classify.py clips/ b.mkv --checkpoint output/run/checkpoints/x.pyth
    python demo/classify.py video.mp4 --checkpoint rev_mvit_b_16x4_k400 --views 10x3 --json
    python demo/classify.py photo.jpg --checkpoint rev_vit_b_in1k      # ImageNet-1k classes
    python demo/classify.py video.mp4 --output annotated.mp4 --plot top5.png
    python demo/classify.py video.mp4 --checkpoint output/run --min-confidence 0.8 --json
    python demo/classify.py long.mp4 --timeline --srt long.srt --timeline-plot long.png
    ffmpeg -re -i talk.mp4 -f mpegts - | python demo/classify.py - --stream
    python demo/classify.py --stream rtsp://camera.local/live

--checkpoint takes a checkpoint file, a run's OUTPUT_DIR (its best checkpoint, else its last) or
a release name (downloaded once into the torch hub cache); a name that is none of them lists the
releases. The model comes from --cfg, else from the config stored in the checkpoint. Folders are searched for videos and images (.jpg .jpeg .png
.bmp .webp). Image models (one-frame clips, such as the ImageNet releases) classify an image from
its centre crop (short side resized as in their test, bicubic) and a video from --views K frames
spread over it (default: its middle frame); video models refuse images. With several inputs,
--output and --plot name folders that receive one file per input, named after the input's file
name without its extension: <name>.mp4 (an image keeps its own extension) / <name>.png; where
another output of the run took that name (two inputs of one name, or --output and --plot in one
folder), <name>_<extension> (x_mp4.png beside x_png.png), then <name>_<extension>_2, ...
Nothing is ever written onto an input (a video, an image, the checkpoint or the config); each
file written is reported with its input ("output" and "plot" in JSON). The labels drawn on a
video are those of the window of the video that they score, named above them ("window 2.0-2.5 s");
the printed result is the whole video's.

With --timeline, a video is also scored window by window: windows one clip long (the model's
frames x sampling rate at its frame rate) every --stride seconds (default: half a clip) over the
whole video, decoded in one streamed pass. Their probabilities, smoothed over 3 windows, make
contiguous segments of one class: the label changes only where another class leads it by 0.1,
and a segment shorter than a clip joins a neighbour. One line per segment ("0.00-4.27 s  spin
91 %"); in JSON a "timeline" with each window's start, end and top_k and each segment's class,
start, end and mean probability. --srt (or a .vtt name) and --timeline-plot imply --timeline.
A video shorter than a clip gets one window; a damaged one ends where its frames stop.

With --stream, the one input is a live source: - (a video piped on stdin, such as `ffmpeg ... -f
mpegts -`), a URL that FFmpeg opens (rtsp, http, udp) or a capture device (/dev/video0). A line
per window ("12.00-13.07 s  spin  91.2%  latency 0.21 s") as soon as its frames have arrived
and it is scored; in JSON one object per line, then a summary object. When the model is slower
than the source, a window still waiting when the next is whole is skipped, and counted: the
lines stay near real time and memory bounded. A source faster than real time (a file piped in)
waits for the model instead. At the source's end, or on Ctrl-C (which ends a stream normally,
status 0), a summary: windows scored and skipped, and the segments of what was seen, which
--srt and --timeline-plot write.

A checkpoint that stores a calibration temperature (fitted at the end of training) has its logits
divided by it before the softmax, said once (in JSON each result's "temperature", null when the
checkpoint stores none). With --min-confidence P, an input whose top probability is below P is
answered "unknown", with its best guess and probability beside it (in JSON each result's "class",
the top class or "unknown"; "top_k" keeps the guesses).

Every input gets a verdict: its result, or one `error:` line (then the next input); an output
that cannot be written is an `error:` line beside the input's result ("output_error" and
"plot_error" in JSON). Files are written whole or not at all (a hidden partial file, renamed
when complete); one that replaces an existing file says so in a warning. File names that are
not UTF-8 are shown, in text and JSON, with their other bytes as \\xNN escapes.

Exit status: 0 every input classified and every output written; 1 some input could not be
classified or some output written (each on an `error:` line, then how many); 2 a mistake in
the options, the config or the checkpoint, including a model whose scores are not finite (one
`error:` line); 130 interrupted by Ctrl-C (one `interrupted` line); 141 stdout closed by its
reader (`| head`), quietly, as for Unix tools that SIGPIPE ends. A stdout that cannot be written
(a full disk) stops the run with one `error:` line, status 1. Whatever stops the run, the
JSON document is whole: the results so far, and each input left with that error (or
"interrupted"). Only a command line that cannot be parsed prints no JSON.
"""

# Only the standard library is imported here, so that --help and mistakes in the options are
# answered at once; revvideo.demo.run (torch, PyAV, the models) is imported after parsing.
from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence

from revvideo.utils.cli import command_parser, positive_int, run_interruptibly
from revvideo.utils.errors import UserError

# Views (clips x crops) per input at most: each is a forward pass, and all are held in memory
# at once (10 MB each for a 16-frame 224 px clip on the CPU); the usual test takes 30 (10x3).
MAX_VIEWS = 300


def _views(text: str) -> tuple[int, int]:
    clips, _, crops = text.lower().partition("x")
    if not (clips.isdigit() and crops.isdigit() and int(clips) > 0 and int(crops) > 0):
        raise argparse.ArgumentTypeError(
            f"--views takes <clips>x<crops> such as 5x1 or 10x3, got {text!r}"
        )
    if int(clips) * int(crops) > MAX_VIEWS:
        raise argparse.ArgumentTypeError(
            f"at most {MAX_VIEWS} views (clips x crops) per input, got {text!r}"
        )
    return int(clips), int(crops)


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected a probability in (0, 1], got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:  # NaN fails too
        raise argparse.ArgumentTypeError(
            f"--stride takes a positive number of seconds, got {text!r}"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(__doc__)
    parser.add_argument(
        "inputs",
        nargs="+",
        help="video or image files, or folders of them; with --stream, a source",
    )
    parser.add_argument(
        "--cfg",
        help="YAML config of the model (default: the config stored in the checkpoint; a release "
        "brings its own)",
    )
    parser.add_argument(
        "--checkpoint",
        help="checkpoint file or release name, e.g. rev_mvit_b_16x4_k400 (Kinetics-400 videos) "
        "or rev_vit_b_in1k (ImageNet-1k images) (default: the newest checkpoint of the quick "
        "start, configs/synthetic/REV_MVIT_XS.yaml, run from the repository's root)",
    )
    parser.add_argument(
        "--topk",
        type=positive_int,
        default=5,
        help="classes printed, plotted and drawn on --output (default: %(default)s)",
    )
    parser.add_argument(
        "--views",
        type=_views,
        help=f"<clips>x<crops> per video, e.g. 5x1 or 10x3, at most {MAX_VIEWS} views; for an "
        "image model <frames>x1; a video gets at most one clip per frame a clip can start at "
        "(default: the checkpoint's test views, 1x1 for the ImageNet releases)",
    )
    parser.add_argument(
        "--device", help="cpu, cuda, cuda:1, mps, ... (default: cuda if available, else cpu)"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document on stdout instead of text (default: text)",
    )
    parser.add_argument(
        "--output",
        help="write the video (or image) with its running top --topk labels drawn on, and the "
        "video's audio, here: a file for one input, a folder for several (default: none)",
    )
    parser.add_argument(
        "--plot",
        help="write a bar chart of the top --topk classes here (.png): a file for one input, "
        "a folder for several (default: none)",
    )
    parser.add_argument(
        "--min-confidence",
        type=_probability,
        metavar="P",
        help="answer unknown (with the best guess beside it) when the top calibrated "
        "probability is below P, 0 < P <= 1 (default: always the top class)",
    )
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="also score every window of each video and print its segments (default: off)",
    )
    parser.add_argument(
        "--stride",
        type=_seconds,
        metavar="SECONDS",
        help="seconds between the starts of --timeline windows (default: half a clip)",
    )
    parser.add_argument(
        "--stream",
        action="store_true",
        help="read the one input as a live source: - (a video piped on stdin, e.g. MPEG-TS), a "
        "URL (rtsp://, http://, udp://) or a capture device (/dev/video0); print a line per "
        "window as it is scored, and a summary at its end or on Ctrl-C (default: off)",
    )
    parser.add_argument(
        "--srt",
        help="write the timeline's segments as subtitles here (.srt, or WebVTT for .vtt): a file "
        "for one input, a folder for several (default: none)",
    )
    parser.add_argument(
        "--timeline-plot",
        help="write a plot of the top --topk classes' probabilities over time, segments shaded, "
        "here (.png): a file for one input, a folder for several (default: none)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # A command line argparse refuses asks for nothing yet, --json included: no JSON, status 2.
    return run_interruptibly(lambda: _classify(build_parser().parse_args(argv)))


def _classify(args: argparse.Namespace) -> int:
    from revvideo.demo.run import DemoOptions, StdoutError, classify_all, say

    try:
        return classify_all(DemoOptions(**vars(args)))
    except UserError as err:
        say(f"error: {err}", sys.stderr)
        return 2
    except StdoutError as err:
        # What stdout still holds goes nowhere, so that Python's flush at exit cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if isinstance(err.__cause__, BrokenPipeError):
            return 141  # 128 + SIGPIPE: its reader has gone (`| head`), quietly, as Unix tools
        say(f"error: cannot write the results: {err.__cause__.strerror}", sys.stderr)
        return 1
