"""Decoding: the frames a video shows at chosen times, for many clips in one pass.

`open_video` returns a reader with `duration`, `close()` and `read_frames(times, short_side)`:
- the frame shown at time t is the last one starting at or before t, on the video stream's clock
  (FrameClock: 0 at the stream's start); times past the end show the last frame;
- frames come upright (the container's display rotation applied) and at the size the stream's
  header declares, so all clips of a video have one size even where the frame size changes;
- the frames are those a decode from the first frame gives, however the reader seeks: FFmpeg's
  seeks in MPEG program and transport streams land past the time asked for, and recordings
  joined byte-wise (`cat a.ts b.ts`) restart their timestamps at each join (shown one after the
  other, read from the first frame).
The PyAV reader is the reference. decord (DATA.DECODING_BACKEND decord) reads only the videos it
can be trusted with; PyAV reads the others, and the reader's `fallback` says why.

`clips_as_decoded` cuts clips from one forward decode as it goes, of a file (PyAVVideo) or of a
live source (LiveVideo: stdin, a URL, a capture device), for timelines of any length.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from time import monotonic

import av
import numpy as np
import torch
import torch.nn.functional as F
from av.video.reformatter import VideoReformatter
from pytorchvideo.data.encoded_video_decord import EncodedVideoDecord

BACKENDS = ("pyav", "decord")

# FFmpeg demuxers whose headers state a reliable duration, and that seek by an index.
_INDEXED_FORMATS = frozenset({"mov", "mp4", "matroska", "webm", "avi", "flv"})

# Times closer than this (seconds), or than a quarter of a frame interval where that is less,
# are the same instant: absorbs float rounding and timestamps rounded to 1 ms (Matroska's).
_TIME_EPS = 1e-3
# A stream ending this much (seconds, or 3 frame intervals if longer) before the duration in its
# header is reported as truncated.
_TRUNCATION_TOLERANCE = 0.25
# A live source is probed this long (microseconds) and this far (bytes) before its first frame:
# FFmpeg's defaults (5 s, 5 MB) would delay the first result by seconds.
_LIVE_PROBE = {"analyzeduration": "1000000", "probesize": "1000000"}
# Seconds a network source may take to open, and then to send more (FFmpeg gives up after it).
_NETWORK_TIMEOUT = 10.0
# When a seek lands after the time wanted, the next one aims this many seconds earlier, then
# twice as many, and so on.
_SEEK_LEAD = 1.0

# What a path that is there but not a regular file is, by its stat.S_IS* test.
_NOT_REGULAR = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class VideoDecodeError(Exception):
    """A video that cannot be used; the message is the short reason shown in skip reports."""


def open_video(path: str, backend: str = "pyav", threads: int = 1) -> VideoReader:
    """Opens `path` with "pyav" or "decord", raising VideoDecodeError with the reason it is unusable.

    `threads` is the decoder's thread count (0: automatic); loader workers use 1 so that several
    workers do not compete for the same cores. With "decord", a video decord cannot read is read
    with PyAV (see DecordVideo).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown decoding backend {backend!r}; expected one of {BACKENDS}")
    check_video_file(path)
    if backend == "pyav":
        return PyAVVideo(path, threads)
    return DecordVideo(path, threads)


def check_video_file(path: str) -> None:
    """VideoDecodeError unless `path` is a regular, non-empty file: call it before anything
    opens `path`, since opening a FIFO or a capture device waits for a writer or a stream
    forever (either is a source of frames, not a video file)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise VideoDecodeError("missing file") from None
    except OSError as err:
        raise VideoDecodeError(f"cannot open: {err.strerror or err}") from None
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _NOT_REGULAR if test(mode)), "a special file")
        raise VideoDecodeError(f"not a regular file ({kind})")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError("empty file")


def scaled_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) with the short side resized to `short_side`, keeping the aspect ratio."""
    if height <= width:
        return short_side, max(short_side, round(width * short_side / height))
    return max(short_side, round(height * short_side / width)), short_side


class FrameClock:
    """When each frame of a video stream is shown, in seconds from the stream's start.

    A frame without a timestamp follows the previous one by one frame interval (the average
    frame rate's, else 1/30 s). In a stream of `joined` recordings (see PyAVVideo), so does a
    frame whose timestamp goes back, where a part starts its timestamps again: the parts are
    shown one after the other. Call `restart()` after seeking.
    """

    def __init__(self, stream: av.VideoStream, joined: bool = False) -> None:
        self.start_pts = stream.start_time or 0
        self.time_base = stream.time_base
        rate = stream.average_rate or stream.guessed_rate
        # Frames per second, None when the stream states none (frames are then 1/30 s apart).
        self.frame_rate = float(rate) if rate else None
        self.frame_interval = 1.0 / self.frame_rate if rate else 1.0 / 30
        self.same_instant = _same_instant(self.frame_interval)
        self.joined = joined
        self.restart()

    def restart(self) -> None:
        self._time = -self.frame_interval
        self._offset = 0.0  # added to the timestamps of the part being shown

    def time_of(self, frame: av.VideoFrame) -> float:
        if frame.pts is None:
            self._time += self.frame_interval
            return self._time
        time = float((frame.pts - self.start_pts) * self.time_base) + self._offset
        if self.joined and time < self._time - self.same_instant:
            self._offset += self._time + self.frame_interval - time
            time = self._time + self.frame_interval
        self._time = time
        return time

    def pts_at(self, seconds: float) -> int:
        """The stream timestamp (in its time base) of `seconds` on this clock, rounded down."""
        return self.start_pts + math.floor(seconds / self.time_base)


class _ShownFrames:
    """Turns a stream's decoded frames into upright RGB pictures of one size."""

    def __init__(self, stream: av.VideoStream, threads: int) -> None:
        codec = stream.codec_context
        # Every frame is scaled to this (height, width) (see the module's doc); the first
        # converted frame's when the header states none.
        self._size = (codec.height, codec.width) if codec.height and codec.width else None
        self._threads = threads
        # One converter for all frames: FFmpeg then reuses its scaling context.
        self._reformatter = VideoReformatter()

    def to_rgb(self, frame: av.VideoFrame, short_side: int | None = None) -> np.ndarray:
        """uint8 (H, W, 3): `frame` upright, at the stream's declared size or with its short
        side `short_side`."""
        if self._size is None:
            self._size = (frame.height, frame.width)
        height, width = self._size
        if short_side is not None:
            height, width = scaled_size(height, width, short_side)
        rgb = self._reformatter.reformat(
            frame, width=width, height=height, format="rgb24", threads=self._threads
        )
        return np.rot90(rgb.to_ndarray(), quarter_turns(frame.rotation))


class PyAVVideo(_ShownFrames):
    """A video file read with PyAV (FFmpeg); audio is never decoded."""

    def __init__(self, path: str, threads: int = 1) -> None:
        # Not pytorchvideo's EncodedVideoPyAV: its constructor copies the file into memory and,
        # when the stream has no duration, decodes every frame to RGB to find one.
        self._path = path
        self._video_name = os.path.basename(path)
        self._threads = threads
        # Whether the file is recordings joined byte-wise (see _header_duration).
        self._joined = False
        self._open()
        self.duration = self._header_duration()
        super().__init__(self._stream, threads)

    def _open(self) -> None:
        """Opens the file; decoding then starts at its first frame (`_fresh`)."""
        container = _open_container(self._path)
        container_format = container.format
        if container_format.flags & av.format.Flags.no_timestamps.value:
            # An elementary stream (.h264, .hevc, .m4v): FFmpeg makes up a frame rate (25 fps)
            # and every packet's timestamp is unset, so clips would be cut at wrong times.
            container.close()
            mp4 = os.path.splitext(self._video_name)[0] + ".mp4"
            raise VideoDecodeError(
                f"{container_format.long_name} without a container, so its frames have no "
                f"times: wrap it in one with `ffmpeg -framerate <its frame rate> -i "
                f"{self._video_name} -c copy {mp4}`"
            )
        self._container = container
        self._stream = container.streams.video[0]
        self._stream.thread_count = self._threads
        if self._threads != 1:
            self._stream.thread_type = "AUTO"
        self._clock = FrameClock(self._stream, self._joined)
        self._fresh = True

    def close(self) -> None:
        self._container.close()

    @property
    def indexed(self) -> bool:
        """Whether the container has an index (duration in its header, seeks by its index)."""
        return not _INDEXED_FORMATS.isdisjoint(self._container.format.name.split(","))

    @property
    def format_name(self) -> str:
        """The container format's name, as FFmpeg writes it out (MPEG-TS (MPEG-2 Transport
        Stream))."""
        return self._container.format.long_name

    @property
    def frame_rate(self) -> float | None:
        """Frames per second the stream states, None when it states none."""
        return self._clock.frame_rate

    @property
    def declared_size(self) -> tuple[int, int] | None:
        """(height, width) the stream's header states for its frames, before any rotation."""
        return self._size

    def _header_duration(self) -> float:
        """Seconds from the stream's start to the end of its last frame: the indexed header's,
        else from the packet timestamps, which also set `_joined` where they start again."""
        if self.indexed and self._stream.duration:
            return float(self._stream.duration * self._clock.time_base)
        # A container's duration (Matroska, WebM, FLV) counts from time 0 or the first DTS.
        if self.indexed and self._container.duration and self._clock.start_pts == 0:
            return self._container.duration / av.time_base
        # [first timestamp, end] of each part; the first part is timed from the stream's start.
        parts: list[list[int]] = []
        # A packet without a duration (FLV has none) lasts one frame interval.
        frame_ticks = round(self._clock.frame_interval / self._clock.time_base)
        last_dts = None
        try:
            with av.open(self._path) as scan:  # so that this opening stays at the first frame
                stream = scan.streams.video[0]
                for packet in scan.demux(stream):
                    if packet.pts is None:
                        continue
                    # Decoding timestamps only rise within a stream (presentation ones follow
                    # B-frames about).
                    dts = packet.pts if packet.dts is None else packet.dts
                    if not parts or dts < last_dts:
                        start = self._clock.start_pts if not parts else packet.pts
                        parts.append([start, packet.pts])
                    last_dts = dts
                    part = parts[-1]
                    part[0] = min(part[0], packet.pts)
                    part[1] = max(part[1], packet.pts + (packet.duration or frame_ticks))
        except av.FFmpegError as err:
            raise VideoDecodeError(f"cannot read: {_ffmpeg_reason(err)}") from None
        if not parts:
            raise VideoDecodeError("no timestamps and no duration")
        self._joined = self._clock.joined = len(parts) > 1
        return float(sum(end - start for start, end in parts) * self._clock.time_base)

    def read_frames(
        self, times: Sequence[float], short_side: int | None = None
    ) -> tuple[torch.Tensor, list[int]]:
        """The frames shown at `times` (seconds from the start, in any order), decoded in one
        pass.

        Returns uint8 (N, H, W, 3) RGB, each distinct frame once, and for every time the row of
        its frame. Frames are scaled (while converting to RGB) to the stream's declared size, or
        with `short_side` so that their short side has that length.
        """
        wanted = _checked_times(times)
        order = np.argsort(wanted, kind="stable")
        frames, rows = self._read_ascending(wanted[order].tolist(), short_side)
        rows_by_time = np.empty_like(order)
        rows_by_time[order] = rows
        return frames, rows_by_time.tolist()

    @property
    def clock(self) -> FrameClock:
        return self._clock

    def frames(self) -> Iterator[tuple[av.VideoFrame, float]]:
        """(frame, seconds from the start) of every frame in display order, one forward decode
        from the first: memory does not grow with the video. Raises VideoDecodeError, after
        the frames that decode, for a video damaged or cut before its stated end."""
        last_time = None
        try:
            for frame, time in self._frames_from_first():
                last_time = time
                yield frame, time
        except av.FFmpegError as err:
            raise VideoDecodeError(
                f"decoding failed after {last_time or 0.0:.2f} s: {_ffmpeg_reason(err)}"
            ) from None
        if last_time is None:
            raise VideoDecodeError("no frame could be decoded")
        _raise_if_truncated(last_time, self.duration, self.duration, self._clock.frame_interval)

    def _read_ascending(
        self, times: list[float], short_side: int | None
    ) -> tuple[torch.Tensor, list[int]]:
        """read_frames for ascending `times`."""
        rows: list[int] = []
        frames: list[np.ndarray] = []
        previous = previous_time = None
        previous_row = None
        decoded_time = 0.0
        same_instant = self._clock.same_instant
        try:
            for frame, time in self._decode_from(times[0]):
                decoded_time = time
                if previous is not None:
                    # Every time before this frame starts shows the previous frame (times before
                    # the first frame included).
                    while len(rows) < len(times) and times[len(rows)] < time - same_instant:
                        if previous_row is None:
                            frames.append(self.to_rgb(previous, short_side))
                            previous_row = len(frames) - 1
                        rows.append(previous_row)
                    if len(rows) == len(times):
                        break
                previous, previous_time, previous_row = frame, time, None
                # Every time left is at this frame's start (or before the first frame): this
                # frame is shown then, so the next one, which may not even decode, is not needed.
                if times[-1] <= time + same_instant:
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
                frames.append(self.to_rgb(previous, short_side))
            rows.extend([len(frames) - 1] * (len(times) - len(rows)))
        return torch.from_numpy(np.stack(frames)), rows

    def _decode_from(self, start: float) -> Iterator[tuple[av.VideoFrame, float]]:
        """(frame, seconds from the start) in display order, from the frame shown at `start` (or
        the first frame) on: the frames, and times, of a decode from the first frame."""
        lead = 0.0
        same_instant = self._clock.same_instant
        while not self._joined and start - lead > same_instant:
            frames = self._frames_after_seek(start - lead)
            first = next(frames, None)
            if first is not None and first[1] <= start + same_instant:
                yield first
                yield from frames
                return
            # Landed after `start`, or on no keyframe at all: aim earlier.
            frames.close()
            lead = max(2 * lead, _SEEK_LEAD)
        yield from self._frames_from_first()

    def _frames_after_seek(self, time: float) -> Iterator[tuple[av.VideoFrame, float]]:
        """Frames from the first keyframe with a timestamp after a seek to `time` (seconds).

        Frames before it may lack the frames they are predicted from, and one without a
        timestamp cannot be placed, so they are dropped; nothing comes if the seek fails or
        the decoder fails before that keyframe.
        """
        self._fresh = False
        self._clock.restart()
        try:
            self._container.seek(self._clock.pts_at(time), stream=self._stream, backward=True)
        except av.FFmpegError:
            return
        frames = self._container.decode(self._stream)
        try:
            for frame in frames:
                if frame.key_frame and frame.pts is not None:
                    break
            else:
                return
        except av.FFmpegError:
            return
        yield frame, self._clock.time_of(frame)
        for frame in frames:
            yield frame, self._clock.time_of(frame)

    def _frames_from_first(self) -> Iterator[tuple[av.VideoFrame, float]]:
        """Every frame from the first, opening the file again if it was read from: no seek
        reaches the first frame in every container (MPEG-TS, AVI)."""
        if not self._fresh:
            self._container.close()
            self._open()
        self._fresh = False
        self._clock.restart()
        for frame in self._container.decode(self._stream):
            yield frame, self._clock.time_of(frame)


class LiveVideo(_ShownFrames):
    """Frames of a source as they arrive: a video piped on stdin ("-"), a URL that FFmpeg opens
    (rtsp://, http://, udp://, ...), a capture device (/dev/video0) or a file, read once from
    its first frame. Times count from the first frame.
    """

    def __init__(self, source: str, threads: int = 1) -> None:
        url, device_format, network = _live_url(source)
        container = _open_container(
            url,
            format=device_format,
            options=_LIVE_PROBE,
            timeout=_NETWORK_TIMEOUT if network else None,
        )
        self._container = container
        self._stream = container.streams.video[0]
        self._stream.thread_count = threads
        super().__init__(self._stream, threads)
        # Parts whose timestamps start again (a restarted encoder) follow one another.
        self.clock = FrameClock(self._stream, joined=True)
        self.damaged_packets = 0
        self.first_frame_at: float | None = None  # monotonic() when it decoded

    def close(self) -> None:
        self._container.close()

    def frames(self) -> Iterator[tuple[av.VideoFrame, float]]:
        """(frame, seconds from the first frame) as each decodes; a packet that does not decode
        is skipped and counted in `damaged_packets`. Raises VideoDecodeError when the source
        fails (a network stream silent for longer than its timeout)."""
        seconds = 0.0
        try:
            for packet in self._container.demux(self._stream):
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    self.damaged_packets += 1
                    continue
                for frame in frames:
                    if self.first_frame_at is None:
                        self.first_frame_at = monotonic()
                        if frame.pts is not None:
                            self.clock.start_pts = frame.pts
                    seconds = self.clock.time_of(frame)
                    yield frame, seconds
        except av.ExitError:  # the network timeout's interrupt
            raise VideoDecodeError(
                f"nothing arrived for {_NETWORK_TIMEOUT:g} s after {seconds:.2f} s of video"
            ) from None
        except av.FFmpegError as err:
            raise VideoDecodeError(
                f"the source failed after {seconds:.2f} s: {_ffmpeg_reason(err)}"
            ) from None


def _open_container(url: str, **options) -> av.container.InputContainer:
    """`av.open(url, **options)`, with a video stream; VideoDecodeError (the reason) if not."""
    try:
        container = av.open(url, **options)
    except av.FFmpegError as err:
        raise VideoDecodeError(f"cannot open: {_ffmpeg_reason(err)}") from None
    # FFmpeg's tty demuxer shows any text file as a video of its characters.
    problem = "text, not a video" if container.format.name == "tty" else None
    if not container.streams.video:
        problem = "no video stream"
    if problem is not None:
        container.close()
        raise VideoDecodeError(problem)
    return container


def _live_url(source: str) -> tuple[str, str | None, bool]:
    """(what FFmpeg opens, its input format or None, whether it is a network stream) for a
    LiveVideo `source`; VideoDecodeError for a source that is not one."""
    if source == "-":
        if os.isatty(0):
            raise VideoDecodeError("stdin is a terminal: pipe a video into it")
        return "pipe:0", None, False
    if "://" in source:
        return source, None, not source.startswith("file:")
    try:
        mode = os.stat(source).st_mode
    except OSError as err:
        raise VideoDecodeError(f"cannot open: {err.strerror}") from None
    if stat.S_ISDIR(mode):
        raise VideoDecodeError("a directory, not a video source")
    # A character device is a camera: Linux names its capture API.
    return source, "v4l2" if stat.S_ISCHR(mode) else None, False


def clips_as_decoded(
    video: PyAVVideo | LiveVideo,
    starts: Iterable[float],
    times_of: Callable[[float], Sequence[float]],
    short_side: int | None = None,
) -> Iterator[tuple[float, float, list[np.ndarray]]]:
    """(start, seconds seen, the RGB frames shown at `times_of(start)`) for each of the
    ascending `starts`, as soon as `video.frames()` has passed the clip's last time: one forward
    decode, each frame converted once (see `to_rgb`), only the clips under way held. Where the
    frames end, or fail (a VideoDecodeError, raised after), the clips begun by then are
    finished with the last frame, and "seconds seen" says where the frames stopped; it is
    infinite for the clips that were whole."""
    same_instant = video.clock.same_instant
    starts = iter(starts)
    upcoming = next(starts, None)
    under_way: list[tuple[float, Sequence[float], list[np.ndarray]]] = []
    previous = rgb = failure = None
    last_time = -math.inf
    try:
        for frame, last_time in video.frames():
            # Times before this frame starts show the previous one (the first frame if none).
            while upcoming is not None and upcoming < last_time - same_instant:
                under_way.append((upcoming, times_of(upcoming), []))
                upcoming = next(starts, None)
            for _, times, shown in under_way:
                while len(shown) < len(times) and times[len(shown)] < last_time - same_instant:
                    if rgb is None:
                        rgb = video.to_rgb(frame if previous is None else previous, short_side)
                    shown.append(rgb)
            while under_way and len(under_way[0][2]) == len(under_way[0][1]):
                start, _, shown = under_way.pop(0)
                yield start, math.inf, shown
            previous, rgb = frame, None
    except VideoDecodeError as err:
        failure = err
    if previous is not None:
        # The last frame is shown for a frame interval: the clips starting by then are begun.
        seen = last_time + video.clock.frame_interval
        while upcoming is not None and upcoming < seen - same_instant:
            under_way.append((upcoming, times_of(upcoming), []))
            upcoming = next(starts, None)
        for start, times, shown in under_way:
            rgb = video.to_rgb(previous, short_side) if rgb is None else rgb
            yield start, seen, shown + [rgb] * (len(times) - len(shown))
    if failure is not None:
        raise failure


class _DecordFault(Exception):
    """decord cannot read a video, or cannot be trusted with it; PyAV may still read it."""


class _DecordFrames(EncodedVideoDecord):
    """decord's reader of one video (which applies the display rotation itself), checked
    against what PyAV's reader of the same file (`header`) states about it.

    decord reaches a frame by seeking to the last keyframe before it in display order. In an
    open GOP (x265's default, MPEG-2's) the frames just before a keyframe are decoded after it,
    so after that seek the decoder drops them and decord's frames slip: such streams are not
    decord's (`_check_closed_gops`).
    """

    def __init__(self, path: str, threads: int, header: PyAVVideo) -> None:
        if not header.indexed:
            raise _DecordFault(
                f"decord: no frame index in {header.format_name}, where its seeks and frame "
                "times are wrong"
            )
        try:
            super().__init__(path, os.path.basename(path), decode_audio=False, num_threads=threads)
        except RuntimeError as err:
            raise _DecordFault(_decord_reason(err)) from None
        num_frames = len(self._av_reader)
        if num_frames == 0:
            raise _DecordFault("decord: no frame could be decoded")
        starts = self._av_reader.get_frame_timestamp(list(range(num_frames)))[:, 0]
        if not (np.all(np.isfinite(starts)) and np.all(np.diff(starts) >= 0)):
            raise _DecordFault("decord: frame times out of order")
        frame_interval = 1.0 / self._fps
        tolerance = max(_TRUNCATION_TOLERANCE, 3 * frame_interval)
        # Its clock must be PyAV's: starting at the stream's start, ending by its duration.
        if not 0 <= starts[0] <= tolerance:
            raise _DecordFault(f"decord: first frame at {starts[0]:.2f} s")
        if starts[-1] > header.duration + tolerance:
            raise _DecordFault(
                f"decord: frame times run to {starts[-1]:.2f} s of {header.duration:.2f} s"
            )
        # decord indexes only the frames it finds, so a truncated file looks like a short
        # video; the container's header tells the length. That is the file's fault, not
        # decord's: PyAV would find the same.
        _raise_if_truncated(float(starts[-1]), math.inf, header.duration, frame_interval)
        _check_closed_gops(path)
        self._frame_starts = starts
        self._same_instant = _same_instant(frame_interval)
        self._declared_size = header.declared_size

    def read_frames(
        self, times: Sequence[float], short_side: int | None = None
    ) -> tuple[torch.Tensor, list[int]]:
        wanted = _checked_times(times) + self._same_instant
        indices = np.searchsorted(self._frame_starts, wanted, side="right") - 1
        indices = np.clip(indices, 0, len(self._frame_starts) - 1)
        distinct, rows = np.unique(indices, return_inverse=True)
        try:
            batch = self._av_reader.get_batch(distinct.tolist())
        except Exception as err:  # decord raises its own DECORDError and RuntimeError types.
            raise _DecordFault(_decord_reason(err)) from None
        frames = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(batch.asnumpy())
        size = tuple(frames.shape[1:3])
        if self._declared_size is not None and size not in (
            self._declared_size,
            self._declared_size[::-1],
        ):
            height, width = self._declared_size
            raise _DecordFault(
                f"decord: frames of {size[1]}x{size[0]} from a stream of {width}x{height}"
            )
        if short_side is not None:
            frames = _resize_frames(frames, short_side)
        return frames, rows.tolist()


def _check_closed_gops(path: str) -> None:
    """_DecordFault if a keyframe of the video stream is followed, in decoding order, by a
    frame shown before it (an open GOP), or if its packets cannot all be read to tell."""
    try:
        with av.open(path) as scan:
            keyframe_pts = None
            for packet in scan.demux(scan.streams.video[0]):
                if packet.is_keyframe:
                    keyframe_pts = packet.pts
                elif None not in (packet.pts, keyframe_pts) and packet.pts < keyframe_pts:
                    raise _DecordFault("decord: open GOPs, in which its seeks skip frames")
    except av.FFmpegError as err:
        raise _DecordFault(f"decord: GOPs unchecked: {_ffmpeg_reason(err)}") from None


class DecordVideo:
    """A video file read with decord, or with PyAV where decord fails on it or cannot be trusted
    with it (_DecordFrames): `fallback` says why, None while decord reads. PyAV opens the file
    first: the duration is its header's (decord's is short for variable frame rates), and the
    VideoDecodeError for a file neither reads is PyAV's."""

    def __init__(self, path: str, threads: int = 1) -> None:
        self._pyav = PyAVVideo(path, threads)
        self.duration = self._pyav.duration
        self.fallback: str | None = None
        self._decord: _DecordFrames | None = None
        try:
            self._decord = _DecordFrames(path, threads, self._pyav)
        except _DecordFault as fault:
            self.fallback = str(fault)
        except VideoDecodeError:
            self._pyav.close()
            raise

    def close(self) -> None:
        self._pyav.close()
        if self._decord is not None:
            self._decord.close()

    def read_frames(
        self, times: Sequence[float], short_side: int | None = None
    ) -> tuple[torch.Tensor, list[int]]:
        """Same contract as PyAVVideo.read_frames; decord's frames are scaled with torch after
        decoding."""
        if self._decord is not None:
            try:
                return self._decord.read_frames(times, short_side)
            except _DecordFault as fault:
                self.fallback = str(fault)
                self._decord.close()
                self._decord = None
        return self._pyav.read_frames(times, short_side)


# What open_video returns: both have duration, read_frames(times, short_side) and close().
VideoReader = PyAVVideo | DecordVideo


def display_rotation(container: av.container.InputContainer, stream: av.VideoStream) -> int:
    """Degrees counterclockwise by which `stream`'s first frame is shown rotated (0 if none
    decodes). PyAV gives the rotation on decoded frames only: the frame comes from a second
    opening of the file, so that `container` stays at its start (a seek back may not get there)."""
    try:
        with av.open(container.name) as peek:
            frame = next(peek.decode(peek.streams[stream.index]), None)
    except (av.FFmpegError, OSError):
        frame = None
    return frame.rotation if frame is not None else 0


def quarter_turns(rotation: float) -> int:
    """Counterclockwise quarter turns (0-3) nearest to a display rotation in degrees."""
    return round(rotation / 90) % 4


def _same_instant(frame_interval: float) -> float:
    """Seconds within which two times are one instant (see _TIME_EPS)."""
    return min(_TIME_EPS, frame_interval / 4)


def _checked_times(times: Sequence[float]) -> np.ndarray:
    """`times` as float64 seconds; ValueError if there are none or one is not finite."""
    wanted = np.asarray(times, dtype=np.float64)
    if wanted.size == 0:
        raise ValueError("read_frames: times is empty")
    finite = np.isfinite(wanted)
    if not finite.all():
        raise ValueError(f"read_frames: times must be finite seconds, not {wanted[~finite][0]}")
    return wanted


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
