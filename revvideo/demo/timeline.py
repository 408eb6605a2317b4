"""A video's timeline: windows one clip long every stride along it, each with its class scores,
smoothed into contiguous segments of one class, and those segments as subtitles (SRT, WebVTT).

A label changes only where another class leads the current one by `margin` in the smoothed
scores (hysteresis), and a run of windows shorter than `min_length` seconds joins a neighbour,
so the segments follow the evidence rather than every window's noise.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from revvideo.utils.files import written_whole

# Windows averaged (centred) before the labels are chosen.
SMOOTHING_WINDOWS = 3
# How far another class must lead the current label's smoothed probability to take over.
MARGIN = 0.1


@dataclass
class Window:
    """A clip's scores: seconds [start, end) of the video and its probabilities (classes,)."""

    start: float
    end: float
    probabilities: torch.Tensor


@dataclass
class Segment:
    """Seconds [start, end) labelled `name`, with its windows' mean probability of that class."""

    name: str
    start: float
    end: float
    probability: float


@dataclass
class Timeline:
    """Windows in time order and the segments, which tile [0, the last window's end)."""

    windows: list[Window]
    segments: list[Segment]
    warnings: list[str] = field(default_factory=list)

    def segment_at(self, time_point: float) -> Segment:
        """The segment `time_point` (seconds) is in: the last one past the end."""
        return next(
            (segment for segment in self.segments if time_point < segment.end), self.segments[-1]
        )

    def scores_at(self, time_point: float) -> torch.Tensor:
        """(classes,): the mean probabilities of the windows that speak at `time_point`."""
        return torch.stack([window.probabilities for window in self._speaking(time_point)]).mean(0)

    def span(self, time_point: float) -> tuple[float, float]:
        """(first second, last second) of the windows that speak at `time_point`."""
        speaking = self._speaking(time_point)
        return min(window.start for window in speaking), max(window.end for window in speaking)

    def _speaking(self, time_point: float) -> list[Window]:
        """The windows covering `time_point`, else the nearest one."""
        covering = [w for w in self.windows if w.start <= time_point < w.end]
        return covering or [
            min(self.windows, key=lambda w: abs((w.start + w.end) / 2 - time_point))
        ]


def window_starts(duration: float, length: float, stride: float) -> list[float]:
    """Starts (seconds) of windows of `length` every `stride` over `duration` seconds; the last
    one ends at the video's end. A video shorter than a window gets one window, at 0."""
    if duration <= length:
        return [0.0]
    count = math.floor((duration - length) / stride + 1e-9) + 1
    starts = [index * stride for index in range(count)]
    if duration - (starts[-1] + length) > 1e-6:
        starts.append(duration - length)
    return starts


def smooth(probabilities: torch.Tensor, width: int = SMOOTHING_WINDOWS) -> torch.Tensor:
    """(W, C) -> (W, C): the centred moving average over `width` windows (odd), the first and
    last window repeated beyond the ends."""
    half = width // 2
    padded = torch.cat(
        [probabilities[:1].expand(half, -1), probabilities, probabilities[-1:].expand(half, -1)]
    )
    return padded.unfold(0, 2 * half + 1, 1).mean(dim=-1)


def hysteresis_labels(smoothed: torch.Tensor, margin: float = MARGIN) -> list[int]:
    """The class of each of the (W, C) windows: the first's leader, then the current label kept
    until another class leads it by at least `margin`."""
    current = int(smoothed[0].argmax())
    labels = []
    for row in smoothed:
        leader = int(row.argmax())
        if row[leader] - row[current] >= margin and leader != current:
            current = leader
        labels.append(current)
    return labels


def segments_of(
    windows: list[Window], names: list[str], min_length: float, margin: float = MARGIN
) -> list[Segment]:
    """Contiguous segments of `windows` (at least one): each window speaks for the seconds
    nearer its centre than its neighbours' (the first from 0, the last to its end); runs shorter
    than `min_length` seconds join the longer of their neighbours."""
    probabilities = torch.stack([window.probabilities for window in windows])
    labels = hysteresis_labels(smooth(probabilities), margin)
    centres = [(window.start + window.end) / 2 for window in windows]
    bounds = [0.0, *((a + b) / 2 for a, b in itertools.pairwise(centres)), windows[-1].end]
    runs = _runs(labels)  # [label, first window, last window + 1]
    while len(runs) > 1:
        lengths = [bounds[stop] - bounds[first] for _, first, stop in runs]
        shortest = min(range(len(runs)), key=lengths.__getitem__)
        if lengths[shortest] >= min_length:
            break
        neighbours = [i for i in (shortest - 1, shortest + 1) if 0 <= i < len(runs)]
        into = max(neighbours, key=lengths.__getitem__)
        first, stop = runs[shortest][1], runs[shortest][2]
        labels[first:stop] = [runs[into][0]] * (stop - first)
        runs = _runs(labels)
    return [
        Segment(
            names[label],
            bounds[first],
            bounds[stop],
            float(probabilities[first:stop, label].mean()),
        )
        for label, first, stop in runs
    ]


def _runs(labels: list[int]) -> list[list[int]]:
    """[label, first index, last index + 1] of each run of equal labels."""
    runs: list[list[int]] = []
    for index, label in enumerate(labels):
        if runs and runs[-1][0] == label:
            runs[-1][2] = index + 1
        else:
            runs.append([label, index, index + 1])
    return runs


def subtitles(segments: list[Segment], vtt: bool = False) -> str:
    """One cue per segment ("spin 91 %"), as SRT or, with `vtt`, WebVTT."""
    separator = "." if vtt else ","
    lines = ["WEBVTT", ""] if vtt else []
    for number, segment in enumerate(segments, start=1):
        if not vtt:
            lines.append(str(number))
        start, end = _stamp(segment.start, separator), _stamp(segment.end, separator)
        lines += [f"{start} --> {end}", f"{segment.name} {segment.probability * 100:.0f} %", ""]
    return "\n".join(lines)


def write_subtitles(segments: list[Segment], destination: str | Path) -> None:
    """SRT, or WebVTT for a .vtt name, written whole or not at all."""
    with written_whole(destination) as partial:
        partial.write_text(subtitles(segments, Path(destination).suffix.lower() == ".vtt"))


def _stamp(seconds: float, separator: str) -> str:
    """hh:mm:ss,mmm (SRT) or hh:mm:ss.mmm (WebVTT)."""
    hours, rest = divmod(round(seconds * 1000), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, millis = divmod(rest, 1000)
    return f"{hours:02}:{minutes:02}:{whole:02}{separator}{millis:03}"
