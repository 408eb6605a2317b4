"""Small videos written with PyAV whose frames say which frame they are and where a pixel is.

Red is 30 + 6 * frame index (readable for frames 0 to 37), the same all over the frame; green
rises from 0 at the left edge to 255 at the right, blue from the top to the bottom. Flat and smooth content survives
lossy codecs, scaling and cropping well enough to read back.
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
