"""The demo's pictures: a video with its running top labels drawn on under the window they score
(an image with its top labels), and a top-k bar chart.

Videos are H.264 in yuv420p with even sides (in MP4, the index first), which every ordinary
player and browser opens, with the source's audio as AAC, which every container of H.264 takes.
Labels use PIL's default font, within the picture's top third; the chart uses matplotlib's Agg.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av
import torch
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from revvideo.data.decoding import FrameClock, display_rotation, quarter_turns
from revvideo.demo.timeline import Timeline
from revvideo.utils.files import written_whole

TopClasses = Sequence[tuple[str, float]]

# Containers that take the "faststart" flag (index first, so playback starts before the end).
_FASTSTART_SUFFIXES = (".mp4", ".m4v", ".mov")
# The labels' font is this fraction of the picture's height, unless they would then not fit in
# the top LABELS_HEIGHT of the picture or across it.
_FONT_HEIGHT = 1 / 16
LABELS_HEIGHT = 1 / 3


def write_annotated_video(
    source: str,
    destination: str | Path,
    labels_at: Callable[[float], TopClasses],
    until: float,
    names: Sequence[str],
    lines: int,
    heading_at: Callable[[float], str] = lambda _: "",
) -> int:
    """Re-encodes the first `until` seconds of `source` (its audio too) into `destination` with
    `labels_at(seconds)` drawn on each frame, under `heading_at(seconds)`: at most
    `lines` labels, each one of `names` (which, with the heading at `until`, size the font).
    Returns the number of frames written.

    Every frame is scaled to the size of the first (a stream whose size changes midway keeps
    one picture size). `destination` appears whole or not at all (utils.files.written_whole);
    a write that fails raises WriteError, and a damaged source ends the video where its
    decoding stops."""
    destination = Path(destination)
    if not destination.suffix:
        raise ValueError(f"{destination} has no extension to choose the video format by (.mp4)")
    options = (
        {"movflags": "+faststart"} if destination.suffix.lower() in _FASTSTART_SUFFIXES else {}
    )
    written = 0
    with av.open(source) as reader:
        stream = reader.streams.video[0]
        sound = reader.streams.audio[0] if reader.streams.audio else None
        clock = FrameClock(stream)
        rate = stream.average_rate or stream.guessed_rate or 30
        source_width, source_height = _picture_size(source, stream)
        # yuv420p stores colour for 2x2 pixel blocks, so the encoder needs even sides.
        coded_width = max(2, source_width // 2 * 2)
        coded_height = max(2, source_height // 2 * 2)
        # Labels are drawn on the upright picture, as players show it.
        turns = quarter_turns(display_rotation(reader, stream))
        width, height = (coded_height, coded_width) if turns % 2 else (coded_width, coded_height)
        # The last heading is taken as the longest: its times have the most digits.
        font = label_font(width, height, names, lines, heading_at(until))
        with (
            written_whole(destination) as partial,
            av.open(str(partial), "w", options=options) as writer,
        ):
            encoded = writer.add_stream("libx264", rate=rate)
            encoded.width, encoded.height, encoded.pix_fmt = width, height, "yuv420p"
            encoded.options = {"crf": "20", "preset": "veryfast"}
            audio = None
            if sound is not None:
                audio = _AudioTrack(sound, writer, float(clock.start_pts * clock.time_base), until)
            video_done = False
            # Only reading errors are caught: the writer's (a full disk) are the write's failure.
            for packet in _readable(
                reader.demux(*([stream] if audio is None else [stream, sound]))
            ):
                if packet.stream.type == "audio":
                    audio.add(packet)
                elif not video_done:
                    try:
                        frames = packet.decode()
                    except av.FFmpegError:
                        break  # A damaged stream ends the video where decoding stops.
                    for frame in frames:
                        time_point = clock.time_of(frame)
                        if time_point > until:
                            video_done = True
                            break
                        # Scaled to the first frame's size, whatever this one's.
                        image = frame.to_image(width=coded_width, height=coded_height)
                        if turns:
                            image = image.rotate(90 * turns, expand=True)
                        draw_labels(image, labels_at(time_point), font, heading_at(time_point))
                        writer.mux(encoded.encode(av.VideoFrame.from_image(image)))
                        written += 1
                if video_done and (audio is None or audio.done):
                    break
            writer.mux(encoded.encode())
            if audio is not None:
                audio.close()
    return written


def _readable(packets: Iterator[av.Packet]) -> Iterator[av.Packet]:
    """`packets` up to the first that cannot be read (a damaged file ends there)."""
    while True:
        try:
            packet = next(packets)
        except (StopIteration, av.FFmpegError):
            return
        yield packet


def _picture_size(source: str, stream: av.video.stream.VideoStream) -> tuple[int, int]:
    """(width, height) of the stream's first frame: its header's, else (a header that does not
    say) the first decoded frame's."""
    context = stream.codec_context
    if context.width and context.height:
        return context.width, context.height
    with av.open(source) as container, contextlib.suppress(av.FFmpegError, StopIteration):
        frame = next(container.decode(video=0))
        return frame.width, frame.height
    return 2, 2


class _AudioTrack:
    """The source's audio from the video's first frame (`start`, seconds on the source's clock)
    to `until` seconds after it, re-encoded as AAC into `writer`."""

    def __init__(
        self,
        source: av.audio.stream.AudioStream,
        writer: av.container.OutputContainer,
        start: float,
        until: float,
    ) -> None:
        self.rate = source.rate
        self.encoder = writer.add_stream("aac", rate=self.rate)
        # The default layout of its channel count: a source may give only the count ("1 channels"),
        # which the AAC encoder refuses.
        self.encoder.layout = av.AudioLayout(f"{source.codec_context.channels}c")
        self.writer = writer
        self.start, self.until = start, until
        self.next_time = 0.0  # where a frame without a timestamp starts
        self.done = False

    def add(self, packet: av.Packet) -> None:
        try:
            frames = packet.decode()
        except av.FFmpegError:
            return  # A damaged audio packet is a moment of silence, not the end of the video.
        for frame in frames:
            time_point = self.next_time if frame.pts is None else frame.time - self.start
            self.next_time = time_point + frame.samples / self.rate
            if time_point > self.until:
                self.done = True
                return
            if time_point < 0:
                continue  # Sound from before the first frame.
            frame.pts, frame.time_base = round(time_point * self.rate), Fraction(1, self.rate)
            self.writer.mux(self.encoder.encode(frame))

    def close(self) -> None:
        self.writer.mux(self.encoder.encode())


def write_annotated_image(image: Image.Image, destination: str | Path, top: TopClasses) -> None:
    """Saves `image` with the labels `top` drawn on (the format follows the file name), whole
    or not at all (see write_annotated_video)."""
    destination = Path(destination)
    image_format = Image.registered_extensions().get(destination.suffix.lower())
    if image_format is None:
        raise ValueError(f"{destination} has no image extension to choose the format by")
    labelled = image.copy()
    draw_labels(labelled, top, label_font(*image.size, [name for name, _ in top], len(top)))
    with written_whole(destination) as partial:
        labelled.save(partial, format=image_format)


def _label_text(top: TopClasses, heading: str = "") -> str:
    lines = [f"{name}  {probability:.0%}" for name, probability in top]
    return "\n".join([heading, *lines] if heading else lines)


def _margin(height: int) -> int:
    return max(1, height // 60)


def _spacing(font: ImageFont.FreeTypeFont) -> int:
    """Space between label lines, in proportion to the font (PIL's default is 4 pixels)."""
    return max(1, round(font.size / 4))


def label_font(
    width: int, height: int, names: Sequence[str], lines: int, heading: str = ""
) -> ImageFont.FreeTypeFont:
    """The font for `lines` labels that may name any of `names`, under `heading`, on a `width` x
    `height` picture: 1/16 of its height, smaller if the box of the longest labels would not fit
    in the picture's top third or across it."""
    font = ImageFont.load_default(size=max(1, round(height * _FONT_HEIGHT)))
    longest = max(names, key=lambda name: font.getlength(name))
    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    _, _, right, bottom = draw.multiline_textbbox(
        (0, 0), _label_text([(longest, 1.0)] * lines, heading), font, spacing=_spacing(font)
    )
    margin = _margin(height)
    # The text starts 2 margins in (see draw_labels) and its box reaches 1 margin past it; the
    # box stays 1 margin clear of the right edge.
    scale = min(
        1.0,
        (width - 4 * margin) / max(1, right),
        (height * LABELS_HEIGHT - 3 * margin) / max(1, bottom),
    )
    return ImageFont.load_default(size=max(1, int(font.size * scale)))


def draw_labels(
    image: Image.Image, top: TopClasses, font: ImageFont.FreeTypeFont, heading: str = ""
) -> None:
    """Writes `heading` (if any) and "name  87%" lines in the top-left corner, on a translucent
    dark box."""
    text = _label_text(top, heading)
    draw = ImageDraw.Draw(image, "RGBA")
    margin = _margin(image.height)
    origin = (2 * margin, 2 * margin)
    spacing = _spacing(font)
    left, top_edge, right, bottom = draw.multiline_textbbox(origin, text, font, spacing=spacing)
    draw.rectangle(
        (left - margin, top_edge - margin, right + margin, bottom + margin), fill=(0, 0, 0, 150)
    )
    draw.multiline_text(origin, text, fill=(255, 255, 255), font=font, spacing=spacing)


def plot_top_classes(top: TopClasses, title: str, destination: str | Path) -> None:
    """A horizontal bar chart of `top` (best first, drawn at the top) saved as an image, whole
    or not at all (see write_annotated_video)."""
    names = [name for name, _ in reversed(top)]
    values = [probability for _, probability in reversed(top)]
    figure = Figure(figsize=(6.4, 1.2 + 0.4 * len(top)), layout="constrained")
    axes = figure.subplots()
    bars = axes.barh(range(len(top)), values, color="tab:blue")
    axes.bar_label(bars, labels=[f"{value:.1%}" for value in values], padding=3)
    # Names and titles are plain text: matplotlib would read what stands between dollars as TeX.
    axes.set_yticks(range(len(top)), names, parse_math=False)
    axes.set_xlim(0, 1.15)
    axes.set_xlabel("probability")
    axes.set_title(title, parse_math=False)
    # The format follows the file name (PNG without an extension), named here: the partial
    # file's name ends in .tmp when the destination's has no extension.
    image_format = Path(destination).suffix[1:].lower() or "png"
    with written_whole(destination) as partial:
        figure.savefig(partial, dpi=120, format=image_format)


def plot_timeline(
    timeline: Timeline, names: Sequence[str], top: int, title: str, destination: str | Path
) -> None:
    """The windows' probabilities (at their centres) of the `top` classes most probable over the
    whole video, with each segment shaded in its class's colour, saved whole (as
    plot_top_classes)."""
    probabilities = torch.stack([window.probabilities for window in timeline.windows])
    centres = [(window.start + window.end) / 2 for window in timeline.windows]
    shown = probabilities.mean(dim=0).topk(min(top, len(names))).indices.tolist()
    colours = {label: f"C{rank}" for rank, label in enumerate(shown)}
    figure = Figure(figsize=(8, 3.2), layout="constrained")
    axes = figure.subplots()
    for label in shown:
        axes.plot(centres, probabilities[:, label], color=colours[label], label=names[label])
    for segment in timeline.segments:
        colour = colours.get(names.index(segment.name), "lightgrey")
        axes.axvspan(segment.start, segment.end, color=colour, alpha=0.15, linewidth=0)
    axes.set_ylim(0, 1)
    axes.set_xlim(0, timeline.segments[-1].end)
    axes.set_xlabel("seconds")
    axes.set_ylabel("probability")
    axes.set_title(title, parse_math=False)
    legend = axes.legend(loc="upper right", fontsize="small")
    for text in legend.get_texts():
        text.set_parse_math(False)
    image_format = Path(destination).suffix[1:].lower() or "png"
    with written_whole(destination) as partial:
        figure.savefig(partial, dpi=120, format=image_format)
