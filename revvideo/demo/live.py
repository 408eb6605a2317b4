"""Windows of a live source scored as their frames arrive, with bounded memory.

The source is decoded on a thread of its own, so that it is read as it comes. It hands each
whole window to the model through one slot: a window still waiting there when the next is whole
is skipped (and counted), so a model slower than real time falls behind by at most one window,
never by a queue. A source ahead of real time, counted from its first frame (a file piped in
faster than it plays), instead waits for the model until real time catches up with it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from revvideo.data.decoding import LiveVideo, VideoDecodeError
from revvideo.demo.timeline import Window

Clip = tuple[float, float, list[np.ndarray]]  # start, end (seconds), frames


@dataclass
class LiveWindow(Window):
    """A window of a live source: with `latency`, the seconds from its last frame's arrival to
    its scores, and `skipped`, the windows skipped just before it."""

    latency: float = 0.0
    skipped: int = 0


class LiveStream:
    """Iterating gives the LiveWindows of `clips` (from `video`, see
    revvideo.data.decoding.clips_as_decoded) in time order, scored by `score` (frames ->
    probabilities (classes,)), until the source ends or the iteration stops; then `skipped`
    counts the windows skipped and `warnings` says why the source ended early, if it did."""

    def __init__(
        self,
        video: LiveVideo,
        clips: Iterator[tuple[float, float, list[np.ndarray]]],
        score: Callable[[list[np.ndarray]], torch.Tensor],
        length: float,
    ) -> None:
        self.skipped = 0
        self.warnings: list[str] = []
        self._video = video
        self._score = score
        self._slot = _Slot()
        self._reader = threading.Thread(target=self._read, args=(clips, float(length)), daemon=True)

    def __iter__(self) -> Iterator[LiveWindow]:
        self._reader.start()
        try:
            while (taken := self._slot.take()) is not None:
                (start, end, frames), arrived, skipped = taken
                probabilities = self._score(frames)
                self.skipped += skipped
                yield LiveWindow(start, end, probabilities, time.monotonic() - arrived, skipped)
        finally:
            self._slot.stop()
        if self._slot.error is not None:
            self.warnings.append(self._slot.error)
        if self._video.damaged_packets:
            self.warnings.append(
                f"{self._video.damaged_packets} packets did not decode and were passed over"
            )

    def _read(self, clips: Iterator[tuple[float, float, list[np.ndarray]]], length: float) -> None:
        """The decoding thread: each whole clip into the slot, then the end (and why)."""
        error = None
        try:
            for start, seen, frames in clips:
                end = min(start + length, seen)
                # When a source playing at real time from its first frame would reach `end`.
                due = self._video.first_frame_at + end
                if not self._slot.put((start, end, frames), due):
                    break
        except VideoDecodeError as err:
            error = str(err)
        except Exception as err:  # the source's end, said as a warning, not a lost thread
            error = f"unexpected {type(err).__name__}: {err}"
        finally:
            self._video.close()
            self._slot.finish(error)


class _Slot:
    """The newest whole clip, from the decoding thread to the model (see the module's doc)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._waiting: tuple[Clip, float] | None = None  # the clip and when it was whole
        self._skipped = 0  # since the last take
        self._stopped = False
        self._ended = False
        self.error: str | None = None

    def put(self, clip: Clip, due: float) -> bool:
        """Hands over `clip`, which a source at real time makes whole at `due` (monotonic
        seconds); False once the model has stopped taking clips."""
        with self._changed:
            now = time.monotonic()
            while self._waiting is not None and not self._stopped:
                left = due - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            if self._waiting is not None:
                self._skipped += 1
            self._waiting = (clip, now)
            self._changed.notify_all()
            return not self._stopped

    def take(self) -> tuple[Clip, float, int] | None:
        """(clip, when it was whole, clips skipped before it), waiting for one; None at the
        end."""
        with self._changed:
            while self._waiting is None and not self._ended:
                self._changed.wait()
            if self._waiting is None:
                return None
            (clip, whole), skipped = self._waiting, self._skipped
            self._waiting, self._skipped = None, 0
            self._changed.notify_all()
            return clip, whole, skipped

    def finish(self, error: str | None) -> None:
        with self._changed:
            self._ended, self.error = True, error
            self._changed.notify_all()

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
