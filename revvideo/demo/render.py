"""The demo's pictures: a video with its running top labels drawn on, and a top-k bar chart.

The video is H.264 in yuv420p with even sides and, in MP4, its index at the front: the
combination every ordinary player and browser opens. Drawing uses PIL's default font; the bar
chart uses matplotlib's object-oriented API (Agg, no display needed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import av
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from revvideo.data.decoding import display_rotation, quarter_turns

TopClasses = Sequence[tuple[str, float]]

# Containers that take the "faststart" flag (index first, so playback starts before the end).
_FASTSTART_SUFFIXES = (".mp4", ".m4v", ".mov")


def write_annotated_video(
    source: str,
    destination: str | Path,
    labels_at: Callable[[float], TopClasses],
    until: float,
) -> int:
    """Re-encodes the first `until` seconds of `source` into `destination` with
    `labels_at(seconds)` drawn on each frame; returns the number of frames written."""
    destination = Path(destination)
    options = (
        {"movflags": "+faststart"} if destination.suffix.lower() in _FASTSTART_SUFFIXES else {}
    )
    written = 0
    with av.open(source) as reader:
        stream = reader.streams.video[0]
        start = stream.start_time or 0
        rate = stream.average_rate or stream.guessed_rate or 30
        # yuv420p stores colour for 2x2 pixel blocks, so the encoder needs even sides.
        coded_width = max(2, stream.codec_context.width // 2 * 2)
        coded_height = max(2, stream.codec_context.height // 2 * 2)
        # Labels are drawn on the upright picture, as players show it.
        turns = quarter_turns(display_rotation(reader, stream))
        width, height = (coded_height, coded_width) if turns % 2 else (coded_width, coded_height)
        font = ImageFont.load_default(size=max(9, height // 16))
        with av.open(str(destination), "w", options=options) as writer:
            encoded = writer.add_stream("libx264", rate=rate)
            encoded.width, encoded.height, encoded.pix_fmt = width, height, "yuv420p"
            encoded.options = {"crf": "20", "preset": "veryfast"}
            time_point = 0.0
            try:
                for frame in reader.decode(stream):
                    if frame.pts is None:
                        time_point += 1 / float(rate)
                    else:
                        time_point = float((frame.pts - start) * stream.time_base)
                    if time_point > until:
                        break
                    image = frame.to_image(width=coded_width, height=coded_height)
                    if turns:
                        image = image.rotate(90 * turns, expand=True)
                    draw_labels(image, labels_at(time_point), font)
                    writer.mux(encoded.encode(av.VideoFrame.from_image(image)))
                    written += 1
            except av.FFmpegError:
                pass  # A damaged stream ends the video where decoding stops.
            writer.mux(encoded.encode())
    return written


def draw_labels(image: Image.Image, top: TopClasses, font: ImageFont.ImageFont) -> None:
    """Writes "name  87%" lines in the top-left corner, on a translucent dark box."""
    text = "\n".join(f"{name}  {probability:.0%}" for name, probability in top)
    draw = ImageDraw.Draw(image, "RGBA")
    margin = max(2, image.height // 60)
    left, top_edge, right, bottom = draw.multiline_textbbox((2 * margin, 2 * margin), text, font)
    draw.rectangle(
        (left - margin, top_edge - margin, right + margin, bottom + margin), fill=(0, 0, 0, 150)
    )
    draw.multiline_text((2 * margin, 2 * margin), text, fill=(255, 255, 255), font=font)


def plot_top_classes(top: TopClasses, title: str, destination: str | Path) -> None:
    """A horizontal bar chart of `top` (best first, drawn at the top) saved as an image."""
    names = [name for name, _ in reversed(top)]
    values = [probability for _, probability in reversed(top)]
    figure = Figure(figsize=(6.4, 1.2 + 0.4 * len(top)), layout="constrained")
    axes = figure.subplots()
    bars = axes.barh(range(len(top)), values, color="tab:blue")
    axes.bar_label(bars, labels=[f"{value:.1%}" for value in values], padding=3)
    axes.set_yticks(range(len(top)), names)
    axes.set_xlim(0, 1.15)
    axes.set_xlabel("probability")
    axes.set_title(title)
    figure.savefig(destination, dpi=120)
