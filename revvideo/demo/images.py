"""Still images for the image models (ImageNet's Rev-ViT and Rev-MViT): an image is a one-frame clip.

The view an image model sees is PySlowFast's ImageNet test view: the short side resized to
`short_side` with bicubic interpolation (on the PIL image, as PySlowFast's ImageNet loader does),
then the centre `crop_size` square. Frames of a video given to an image model get the same view.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from revvideo.data.dataset import TestClips
from revvideo.data.decoding import VideoReader
from revvideo.data.transforms import MultiViewCrops
from revvideo.utils.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# PySlowFast's DATA.IN_VAL_CROP_RATIO: the centre crop's share of the resized short side (a 224
# crop of 256), for image models whose config gives only the crop size.
CENTRE_CROP_RATIO = 0.875


def is_image(path: str | os.PathLike) -> bool:
    """Whether `path` names an image file, by its extension."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def short_side_for(crop_size: int) -> int:
    """The short side an image is resized to before its centre `crop_size` crop."""
    return int(crop_size / CENTRE_CROP_RATIO)


def read_image(path: str) -> Image.Image:
    """The 8-bit RGB picture in `path` (see rgb_picture), upright as viewers show it (its EXIF
    orientation applied).

    Raises DataError (one line) for a file that is not a readable image, or one of more than
    twice Image.MAX_IMAGE_PIXELS (179 Mpx), which PIL refuses as a possible decompression bomb.
    """
    try:
        with warnings.catch_warnings():
            # Below PIL's refusal a large picture is read like any other: no two-line warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return rgb_picture(ImageOps.exif_transpose(image))
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image, or a damaged one") from None
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: cannot read the image: {err}") from None


# Modes whose samples are not 0-255, and the sample value that is white: PIL's convert("RGB")
# would clip them at 255 (a 16-bit PNG all but white). "I" (32-bit) is how PIL may give a
# 16-bit greyscale PNG, the deepest grey the demo's formats hold; "F" (32-bit float) is taken
# as float pictures usually are, 0.0 black to 1.0 white.
_WHITE = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}


def rgb_picture(image: Image.Image) -> Image.Image:
    """`image` as 8-bit RGB, whatever its mode: samples scaled from the mode's range (a 16-bit
    value v becomes round(v / 257)); alpha dropped, as PIL's convert and PySlowFast's ImageNet
    loader drop it; palette, 1-bit, CMYK, ... converted by PIL. PIL reads 16-bit colour PNGs as
    8-bit RGB(A) itself (their high bytes: v / 256, rounded down)."""
    white = _WHITE.get(image.mode)
    if white is None:
        if image.mode == "La":  # premultiplied grey: PIL converts it only to LA
            image = image.convert("LA")
        return image.convert("RGB")
    samples = np.asarray(image, dtype=np.float64)
    grey = np.clip(np.rint(samples * (255 / white)), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


@dataclass(frozen=True)
class ImageView:
    """Picture -> uint8 (crop_size, crop_size, 3): the short side resized to `short_side`
    (bicubic), then the centre square."""

    short_side: int
    crop_size: int

    def __call__(self, image: Image.Image) -> np.ndarray:
        resized = TF.resize(image, self.short_side, InterpolationMode.BICUBIC)
        return np.array(TF.center_crop(resized, self.crop_size))

    def model_view(self, image: Image.Image) -> torch.Tensor:
        """uint8 (1, 3, 1, crop, crop): one view of one frame, as the classifier scores clips."""
        return torch.from_numpy(self(image)).permute(2, 0, 1)[None, :, None]


class _FramesAsImages:
    """A video whose frames are read as an image model sees images (see ImageView): square
    frames of the crop size, which TestClips' crop then takes whole."""

    def __init__(self, video: VideoReader, view: ImageView) -> None:
        self.duration = video.duration
        self._video = video
        self._view = view

    def read_frames(
        self, times: Sequence[float], short_side: int | None = None
    ) -> tuple[torch.Tensor, list[int]]:
        frames, rows = self._video.read_frames(times)
        views = [self._view(Image.fromarray(frame.numpy())) for frame in frames]
        return torch.from_numpy(np.stack(views)), rows


class FrameClips(TestClips):
    """TestClips of one frame each for an image model: K frames spread evenly over the video
    (K = 1: its middle), each seen as an image (ImageView)."""

    def __init__(
        self, view: ImageView, clip_duration: Fraction, num_clips: int, crops: MultiViewCrops
    ) -> None:
        super().__init__(1, clip_duration, num_clips, crops)
        self.view = view

    def __call__(self, video: VideoReader) -> torch.Tensor:
        return super().__call__(_FramesAsImages(video, self.view))
