"""Small videos written with PyAV whose frames say which frame they are and where a pixel is.

Red is 30 + 6 * frame index (readable for frames 0 to 37), the same all over the frame; green
rises from 0 at the left edge to 255 at the right, blue from the top to the bottom. Flat and smooth content survives
lossy codecs, scaling and cropping well enough to read back.

numbered_frames write their index (up to 255) in binary, over a texture that gives them a
realistic size in bytes, for the seeking tests; plain_decode reads a video back without seeking.
"""

from __future__ import annotations

import os

import av
import numpy as np
import torch

from revvideo.data.synthetic import write_video

# High bit rates for the MPEG-4 part 2 and MPEG-2 encoders, whose defaults blur the frames.
CODECS = {
    "mp4": ("libx264", {}),
    "avi": ("mpeg4", {"b": "4M"}),
    "mkv": ("libx264", {}),
    "webm": ("libvpx-vp9", {"lossless": "1"}),
    "mpg": ("mpeg2video", {"b": "4M"}),
    "ts": ("libx264", {}),
}


def indexed_frames(count: int, height: int = 48, width: int = 64) -> np.ndarray:
    frames = np.empty((count, height, width, 3), dtype=np.uint8)
    frames[..., 0] = ((30 + 6 * np.arange(count)) % 256)[:, None, None]
    frames[..., 1] = np.linspace(0, 255, width).round()[None, None, :]
    frames[..., 2] = np.linspace(0, 255, height).round()[None, :, None]
    return frames


def write_indexed_video(
    path, count: int = 30, fps: float = 15, height: int = 48, width: int = 64, **kwargs
) -> str:
    """Writes an indexed video; the codec follows the extension (see CODECS)."""
    codec, options = CODECS[str(path).rsplit(".", 1)[1]]
    kwargs.setdefault("options", options)
    write_video(str(path), indexed_frames(count, height, width), fps, codec, **kwargs)
    return str(path)


def frame_index(frame: torch.Tensor) -> int:
    """Index of a decoded uint8 (H, W, 3) frame, read in its centre (edges suffer from chroma
    subsampling at odd sizes)."""
    height, width = frame.shape[:2]
    centre = frame[height // 4 : -(height // 4) or None, width // 4 : -(width // 4) or None]
    return round((centre[..., 0].float().mean().item() - 30) / 6)


def denormalize(video: torch.Tensor, cfg) -> torch.Tensor:
    """A normalised (3, ...) clip back to 0-255 values."""
    shape = (3,) + (1,) * (video.dim() - 1)
    mean = torch.tensor(cfg.DATA.MEAN).view(shape)
    std = torch.tensor(cfg.DATA.STD).view(shape)
    return (video * std + mean) * 255


def clip_indices(clip: torch.Tensor, cfg) -> list[int]:
    """Frame index of each frame of a (3, T, H, W) clip: uint8 pixels or normalised floats."""
    pixels = clip.float() if clip.dtype == torch.uint8 else denormalize(clip, cfg)
    red = pixels[0].mean(dim=(1, 2))
    return [round((value.item() - 30) / 6) for value in red]


def good_entries(count: int = 6) -> list[tuple[str, int]]:
    """(path, label) of `count` videos/vN, mp4 for odd N and avi for even, class N % 3."""
    return [(f"videos/v{n}.{'mp4' if n % 2 else 'avi'}", n % 3) for n in range(count)]


def write_dataset(root, videos_per_split: dict[str, list[tuple[str, int]]]) -> str:
    """Writes <split>.csv files listing (relative path, label) entries under root."""
    os.makedirs(root, exist_ok=True)
    for split, entries in videos_per_split.items():
        with open(os.path.join(root, f"{split}.csv"), "w") as csv:
            csv.writelines(f"{path} {label}\n" for path, label in entries)
    return str(root)


def write_audio_only(path):
    """An AAC file: a container without a video stream."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for index in range(16):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 16000, index * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return str(path)


# Frames whose number is written on them in binary, for the seeking tests.
NUMBER_BITS = 8


def numbered_frames(count: int, height: int = 120, width: int = 160, seed: int = 0) -> np.ndarray:
    """uint8 RGB frames (count, H, W, 3) whose index (below 256) can be read back exactly.

    The middle third of the rows holds NUMBER_BITS cells side by side, most significant bit on
    the left, white for 1 and black for 0: that survives lossy codecs and scaling. Above and
    below it, a smooth texture that changes every frame gives the frames a realistic size in
    bytes, so that a second of video spans many packets (demuxers without an index seek by
    byte position, and small files hide their errors).
    """
    assert count <= 2**NUMBER_BITS
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, (count, 3, 6, 8)).astype(np.float32))
    texture = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic")
    frames = texture.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy().copy()
    top, bottom = height // 3, 2 * height // 3
    edges = np.linspace(0, width, NUMBER_BITS + 1).round().astype(int)
    for index in range(count):
        for bit in range(NUMBER_BITS):
            on = (index >> (NUMBER_BITS - 1 - bit)) & 1
            frames[index, top:bottom, edges[bit] : edges[bit + 1]] = 255 if on else 0
    return frames


def frame_number(frame: torch.Tensor | np.ndarray) -> int:
    """The index written on a decoded (H, W, 3) frame of numbered_frames, read in the middle of
    each cell."""
    frame = torch.as_tensor(np.asarray(frame))
    height, width = frame.shape[:2]
    rows = frame[height * 5 // 12 : height * 7 // 12 + 1].float()
    number = 0
    for bit in range(NUMBER_BITS):
        left = width * (4 * bit + 1) // (4 * NUMBER_BITS)
        right = width * (4 * bit + 3) // (4 * NUMBER_BITS)
        number = 2 * number + int(rows[:, left : right + 1].mean() > 127.5)
    return number


def write_numbered_video(
    path, codec: str, count: int = 50, fps: float = 25, options: dict | None = None, **kwargs
) -> str:
    """Writes numbered_frames (see it for `count` and **kwargs' height, width) with `codec`."""
    size = {key: kwargs.pop(key) for key in ("height", "width") if key in kwargs}
    write_video(str(path), numbered_frames(count, **size), fps, codec, options=options, **kwargs)
    return str(path)


def write_size_change(path, codec: str, parts, fps: float = 25, options: dict | None = None) -> str:
    """One video stream whose frame size changes: `parts` are (frames, height, width) in turn,
    numbered on from each other (see numbered_frames), at `fps` with continuous timestamps.

    Each part has its own encoder and the packets go into one stream, as a camera that
    switches resolution or a byte-wise concatenation of recordings makes it: MPEG program and
    transport streams carry the sequence header (or H.264 parameter sets) in band, so their
    decoders pick up the new size.
    """
    from fractions import Fraction

    total = sum(count for count, _, _ in parts)
    time_base = Fraction(1, fps)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = parts[0][1:]
        stream.pix_fmt = "yuv420p"
        start = 0
        for count, height, width in parts:
            encoder = av.CodecContext.create(codec, "w")
            encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
            encoder.time_base, encoder.framerate = time_base, Fraction(fps)
            encoder.options = dict(options or {})
            images = numbered_frames(total, height, width)[start : start + count]
            for number, image in enumerate(images, start):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts, frame.time_base = number, time_base
                for packet in encoder.encode(frame.reformat(format="yuv420p")):
                    packet.stream, packet.time_base = stream, time_base
                    container.mux(packet)
            for packet in encoder.encode(None):
                packet.stream, packet.time_base = stream, time_base
                container.mux(packet)
            start += count
    return str(path)


def plain_decode(path) -> list[tuple[float, int, tuple[int, int]]]:
    """(seconds from the stream's start, frame number, (height, width)) of every frame of a
    numbered video, decoding it from the start without a seek: what a reader must give."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        start = stream.start_time or 0
        return [
            (
                float((frame.pts - start) * stream.time_base),
                frame_number(frame.to_ndarray(format="rgb24")),
                (frame.height, frame.width),
            )
            for frame in container.decode(stream)
        ]


def shown_at(decoded: list[tuple[float, int, tuple[int, int]]], time: float) -> int:
    """Number of the frame of `decoded` (see plain_decode) shown at `time`: the last one starting
    at or before it (the first one before the first frame)."""
    starts = [start for start, _, _ in decoded]
    row = max(0, int(np.searchsorted(starts, time + 1e-3, side="right")) - 1)
    return decoded[row][1]


def write_joined(path, codec: str, parts, fps: float = 25, options: dict | None = None) -> str:
    """Recordings joined byte-wise, as `cat a.ts b.ts > path` joins them: `parts` are (frames,
    height, width), numbered on from each other (see numbered_frames), each written alone with
    `codec` in the container of `path`'s extension, so that each starts its timestamps again."""
    total = sum(count for count, _, _ in parts)
    joined = b""
    start = 0
    for number, (count, height, width) in enumerate(parts):
        part = f"{path}.part{number}{os.path.splitext(str(path))[1]}"
        frames = numbered_frames(total, height, width)[start : start + count]
        write_video(part, frames, fps, codec, options=options)
        with open(part, "rb") as file:
            joined += file.read()
        os.remove(part)
        start += count
    with open(path, "wb") as file:
        file.write(joined)
    return str(path)
