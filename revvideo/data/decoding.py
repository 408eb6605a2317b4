"""Decoding: the frames a video shows at chosen times, for many clips in one pass.

Both readers have `duration`, `close()` and `read_frames(times)`, which is what the datasets use.
The decord reader extends pytorchvideo's `EncodedVideoDecord`. The PyAV reader is our own:
pytorchvideo's `EncodedVideoPyAV.get_clip` is slow for this job, as measured on 10 s 426x320
H.264 files: it converts every frame of a clip window to RGB with a new colour converter per
frame (about 1.3 ms a frame against 0.1 ms with one reused converter), it returns float32
windows of which a clip keeps one frame in SAMPLING_RATE, each clip seeks and decodes again from
the previous keyframe, and for files whose stream has no duration (mkv, webm) it decodes the
whole video to RGB on opening. `read_frames` decodes the span once, converts only the frames it
returns, and can scale them while converting.

Frames are chosen by timestamp: the frame shown at time t is the last one starting at or before
t. Variable frame rates therefore need nothing special, and times past the end of a short video
repeat its last frame. Frames come upright: a rotation in the container's display matrix (phones
store portrait video as landscape frames plus a rotation) is applied, as players do.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence

import av
import numpy as np
import torch
import torch.nn.functional as F
from av.video.reformatter import VideoReformatter
from pytorchvideo.data.encoded_video_decord import EncodedVideoDecord

BACKENDS = ("pyav", "decord")

# FFmpeg demuxers whose headers state a reliable duration.
_INDEXED_FORMATS = frozenset({"mov", "mp4", "matroska", "webm", "avi", "flv"})

# Timestamps closer than this (seconds) are the same instant; absorbs float rounding of pts.
_TIME_EPS = 1e-3
# A stream ending this much (seconds, or 3 frame intervals if longer) before the duration in its
# header is reported as truncated.
_TRUNCATION_TOLERANCE = 0.25


class VideoDecodeError(Exception):
    """A video that cannot be used; the message is the short reason shown in skip reports."""


def open_video(path: str, backend: str = "pyav", threads: int = 1) -> VideoReader:
    """Opens `path` with "pyav" or "decord", raising VideoDecodeError with the reason it is unusable.

    `threads` is the decoder's thread count (0: automatic); loader workers use 1 so that several
    workers do not compete for the same cores.
    """
    if not os.path.exists(path):
        raise VideoDecodeError("missing file")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError("empty file")
    if backend == "pyav":
        return PyAVVideo(path, threads)
    if backend == "decord":
        return DecordVideo(path, threads)
    raise ValueError(f"unknown decoding backend {backend!r}; expected one of {BACKENDS}")


def scaled_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) with the short side resized to `short_side`, keeping the aspect ratio."""
    if height <= width:
        return short_side, max(short_side, round(width * short_side / height))
    return max(short_side, round(height * short_side / width)), short_side


class FrameClock:
    """When each frame of a video stream is shown, in seconds from the stream's start.

    A frame without a timestamp follows the previous one by one frame interval (the average
    frame rate's, else 1/30 s); call `restart()` after seeking.
    """

    def __init__(self, stream: av.VideoStream) -> None:
        self.start_pts = stream.start_time or 0
        self.time_base = stream.time_base
        rate = stream.average_rate or stream.guessed_rate
        self.frame_interval = 1.0 / float(rate) if rate else 1.0 / 30
        self.restart()

    def restart(self) -> None:
        self._time = -self.frame_interval

    def time_of(self, frame: av.VideoFrame) -> float:
        if frame.pts is None:
            self._time += self.frame_interval
        else:
            self._time = float((frame.pts - self.start_pts) * self.time_base)
        return self._time


class PyAVVideo:
    """A video file read with PyAV (FFmpeg); audio is never decoded."""

    def __init__(self, path: str, threads: int = 1) -> None:
        # Not pytorchvideo's EncodedVideoPyAV: its constructor copies the file into memory and,
        # when the stream has no duration, decodes every frame to RGB to find one.
        self._video_name = os.path.basename(path)
        self._threads = threads
        try:
            self._container = av.open(path)
        except av.FFmpegError as err:
            raise VideoDecodeError(f"cannot open: {_ffmpeg_reason(err)}") from None
        if not self._container.streams.video:
            self._container.close()
            raise VideoDecodeError("no video stream")
        container_format = self._container.format
        if container_format.flags & av.format.Flags.no_timestamps.value:
            # An elementary stream (.h264, .hevc, .m4v): FFmpeg makes up a frame rate (25 fps)
            # and every packet's timestamp is unset, so clips would be cut at wrong times.
            self._container.close()
            mp4 = os.path.splitext(self._video_name)[0] + ".mp4"
            raise VideoDecodeError(
                f"{container_format.long_name} without a container, so its frames have no "
                f"times: wrap it in one with `ffmpeg -framerate <its frame rate> -i "
                f"{self._video_name} -c copy {mp4}`"
            )
        self._stream = self._container.streams.video[0]
        self._stream.thread_count = threads
        if threads != 1:
            self._stream.thread_type = "AUTO"
        self._clock = FrameClock(self._stream)
        self.duration = self._header_duration()
        # One converter for all frames: FFmpeg then reuses its scaling context.
        self._reformatter = VideoReformatter()

    def close(self) -> None:
        self._container.close()

    def _header_duration(self) -> float:
        """Seconds from the first frame to the end of the last.

        Taken from the headers of indexed containers; MPEG program/transport streams only
        estimate it from the bit rate, so their packet timestamps are read instead.
        """
        indexed = not _INDEXED_FORMATS.isdisjoint(self._container.format.name.split(","))
        if indexed and self._stream.duration:
            return float(self._stream.duration * self._clock.time_base)
        if indexed and self._container.duration:
            return self._container.duration / av.time_base
        end = 0
        try:
            for packet in self._container.demux(self._stream):
                if packet.pts is not None:
                    end = max(end, packet.pts + (packet.duration or 0))
            if not end:
                # Checked before seeking back, whose failure would hide this reason.
                raise VideoDecodeError("no timestamps and no duration")
            self._container.seek(self._clock.start_pts, stream=self._stream)
        except av.FFmpegError as err:
            raise VideoDecodeError(f"cannot read: {_ffmpeg_reason(err)}") from None
        return float((end - self._clock.start_pts) * self._clock.time_base)

    def read_frames(
        self, times: Sequence[float], short_side: int | None = None
    ) -> tuple[torch.Tensor, list[int]]:
        """The frames shown at `times` (seconds from the start, ascending), decoded in one pass.

        Returns uint8 (N, H, W, 3) RGB, each distinct frame once, and for every time the row of
        its frame. With `short_side` the frames are scaled (while converting to RGB) so that
        their short side has that length.
        """
        rows: list[int] = []
        frames: list[np.ndarray] = []
        previous = previous_time = None
        previous_row = None
        decoded_time = 0.0
        try:
            for frame, time in self._decode_from(times[0]):
                decoded_time = time
                if previous is not None:
                    # Every time before this frame starts shows the previous frame (times before
                    # the first frame included).
                    while len(rows) < len(times) and times[len(rows)] < time - _TIME_EPS:
                        if previous_row is None:
                            frames.append(self._to_rgb(previous, short_side))
                            previous_row = len(frames) - 1
                        rows.append(previous_row)
                    if len(rows) == len(times):
                        break
                previous, previous_time, previous_row = frame, time, None
                # Every time left is at this frame's start (or before the first frame): this
                # frame is shown then, so the next one, which may not even decode, is not needed.
                if times[-1] <= time + _TIME_EPS:
                    break
        except av.FFmpegError as err:
            raise VideoDecodeError(
                f"decoding failed after {decoded_time:.2f} s: {_ffmpeg_reason(err)}"
            ) from None
        if len(rows) < len(times):
            if previous is None:
                raise VideoDecodeError("no frame could be decoded")
            _raise_if_truncated(previous_time, times[-1], self.duration, self._clock.frame_interval)
            if previous_row is None:
                frames.append(self._to_rgb(previous, short_side))
            rows.extend([len(frames) - 1] * (len(times) - len(rows)))
        return torch.from_numpy(np.stack(frames)), rows

    def _decode_from(self, start: float):
        """(frame, seconds from the start) from the last keyframe at or before `start` on."""
        if start > _TIME_EPS:
            target = self._clock.start_pts + int(start / self._clock.time_base)
            self._container.seek(target, stream=self._stream, backward=True)
            frames = self._timed_frames()
            first = next(frames, None)
            if first is None or first[1] <= start + _TIME_EPS:
                if first is not None:
                    yield first
                yield from frames
                return
            # The seek landed after `start` (imprecise index): read from the beginning instead.
            frames.close()
        self._container.seek(self._clock.start_pts, stream=self._stream, backward=True)
        yield from self._timed_frames()

    def _timed_frames(self):
        self._clock.restart()
        for frame in self._container.decode(self._stream):
            yield frame, self._clock.time_of(frame)

    def _to_rgb(self, frame: av.VideoFrame, short_side: int | None) -> np.ndarray:
        height, width = frame.height, frame.width
        if short_side is not None:
            height, width = scaled_size(height, width, short_side)
        rgb = self._reformatter.reformat(
            frame, width=width, height=height, format="rgb24", threads=self._threads
        )
        return np.rot90(rgb.to_ndarray(), quarter_turns(frame.rotation))


class DecordVideo(EncodedVideoDecord):
    """A video file read with decord (which applies the display rotation itself); audio is never
    decoded."""

    def __init__(self, path: str, threads: int = 1) -> None:
        # decord indexes only the frames it finds, so a truncated file looks like a short
        # video; the container's header (read with PyAV, without decoding) tells the length.
        header = PyAVVideo(path)
        stated_duration = header.duration
        header.close()
        try:
            super().__init__(path, os.path.basename(path), decode_audio=False, num_threads=threads)
        except RuntimeError as err:
            raise VideoDecodeError(_decord_reason(err)) from None
        num_frames = len(self._av_reader)
        if num_frames == 0:
            raise VideoDecodeError("no frame could be decoded")
        starts = self._av_reader.get_frame_timestamp(list(range(num_frames)))[:, 0]
        # In some containers (MPEG program streams) decord's frame index is broken: garbage
        # timestamps, and seeks that land on the wrong frames. Such files are timed by the
        # average frame rate and read from their first frame, without seeking.
        self._index_is_sound = bool(
            np.all(np.isfinite(starts)) and np.all(np.diff(starts) >= 0) and starts[0] >= 0
        )
        if not self._index_is_sound:
            starts = np.arange(num_frames) / self._fps
        self._frame_starts = starts
        _raise_if_truncated(float(starts[-1]), math.inf, stated_duration, 1.0 / self._fps)
        # pytorchvideo's duration, frames / average frame rate, is short for a variable frame
        # rate; the header's is the PyAV reader's, so both backends cut the same clips.
        self._duration = stated_duration

    def read_frames(
        self, times: Sequence[float], short_side: int | None = None
    ) -> tuple[torch.Tensor, list[int]]:
        """Same contract as PyAVVideo.read_frames; scaling is done with torch after decoding."""
        wanted = np.asarray(times, dtype=np.float64) + _TIME_EPS
        indices = np.searchsorted(self._frame_starts, wanted, side="right") - 1
        indices = np.clip(indices, 0, len(self._frame_starts) - 1)
        distinct, rows = np.unique(indices, return_inverse=True)
        wanted = distinct if self._index_is_sound else np.arange(distinct[-1] + 1)
        try:
            batch = self._av_reader.get_batch(wanted.tolist())
        except Exception as err:  # decord raises its own DECORDError and RuntimeError types.
            raise VideoDecodeError(_decord_reason(err)) from None
        frames = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(batch.asnumpy())
        if not self._index_is_sound:
            frames = frames[torch.from_numpy(distinct)]
        if short_side is not None:
            frames = _resize_frames(frames, short_side)
        return frames, rows.tolist()


# What open_video returns: both have duration, read_frames(times, short_side) and close().
VideoReader = PyAVVideo | DecordVideo


def display_rotation(container: av.container.InputContainer, stream: av.VideoStream) -> int:
    """Degrees counterclockwise by which `stream`'s first frame is shown rotated (0 if none
    decodes); the container is left at the stream's start.

    PyAV exposes the display matrix on decoded frames only, so this decodes one frame.
    """
    try:
        frame = next(container.decode(stream), None)
    except av.FFmpegError:
        frame = None
    container.seek(stream.start_time or 0, stream=stream, backward=True)
    return frame.rotation if frame is not None else 0


def quarter_turns(rotation: float) -> int:
    """Counterclockwise quarter turns (0-3) nearest to a display rotation in degrees."""
    return round(rotation / 90) % 4


def _raise_if_truncated(
    last_frame_time: float, wanted_until: float, duration: float, frame_interval: float
) -> None:
    """Raises if the frames stop well before both `wanted_until` and the stated duration."""
    expected = min(wanted_until, duration - frame_interval)
    if expected - last_frame_time > max(_TRUNCATION_TOLERANCE, 3 * frame_interval):
        raise VideoDecodeError(
            f"truncated: frames stop at {last_frame_time:.2f} s of {duration:.2f} s"
        )


def _resize_frames(frames: torch.Tensor, short_side: int) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> (N, H', W', 3) with short side `short_side` (antialiased bilinear)."""
    height, width = scaled_size(frames.shape[1], frames.shape[2], short_side)
    if (height, width) == tuple(frames.shape[1:3]):
        return frames
    # A channels-last uint8 view takes torch's fast uint8 resampling path.
    channels_last = frames.permute(0, 3, 1, 2)
    resized = F.interpolate(channels_last, size=(height, width), mode="bilinear", antialias=True)
    return resized.permute(0, 2, 3, 1)


def _ffmpeg_reason(err: av.FFmpegError) -> str:
    return err.strerror or str(err)


def _decord_reason(err: Exception) -> str:
    """decord's messages carry C++ source locations and timestamps; keeps the readable part."""
    text = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    text = re.sub(r"\[[\d:]+\]\s*\S+:\d+:\s*", "", text).strip()
    if "video stream" in text.lower():
        return "no video stream"
    return f"decord: {text}" if text else f"decord: {type(err).__name__}"
