"""Clip transforms on uint8 frames: training augmentation and multi-view test crops.

Spatial steps use torchvision.transforms.v2, which resamples uint8 frames with antialiasing
(pytorchvideo's resizes interpolate float32 frames without it, several times slower); RandAugment
is pytorchvideo's. Every random choice is drawn once per clip, so all frames of a clip get the
same crop, flip, RandAugment operations and erased box, and motion stays intact.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torchvision.transforms.v2 as v2

from revvideo.data.pytorchvideo_transforms import RandAugment
from revvideo.utils.errors import ConfigError

INTERPOLATIONS = {
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
}
ERASE_MODES = ("pixel", "const")

# RandAugment fills areas uncovered by rotations, shears and translations with mid grey.
_RAND_AUGMENT_FILL = {"fill": (128, 128, 128)}
# Random erasing box: fraction of the frame's area and aspect ratio (timm's defaults).
_ERASE_AREA = (0.02, 1 / 3)
_ERASE_ASPECT = (0.3, 3.3)


def parse_rand_augment(aa_type: str) -> RandAugment | None:
    """pytorchvideo RandAugment from timm's notation, e.g. "rand-m7-n4-mstd0.5-inc1"; "" is None.

    m: magnitude (0-10), n: operations per clip (default 2), mstd: standard deviation of the
    magnitude (default 0), p: probability of each operation (default 0.5), inc1: the
    "increasing" operation set, the only one pytorchvideo implements.
    """
    if not aa_type:
        return None
    usage = "expected rand-m<magnitude>[-n<ops>][-mstd<std>][-p<prob>][-inc1]"
    parts = aa_type.split("-")
    if parts[0] != "rand":
        raise ConfigError(f"AUG.AA_TYPE {aa_type!r}: only RandAugment is supported; {usage}")
    settings = {"m": None, "n": 2, "mstd": 0.0, "p": 0.5, "inc": 1}
    for part in parts[1:]:
        match = re.fullmatch(r"(mstd|inc|m|n|p)(\d+(?:\.\d*)?)", part)
        if match is None:
            raise ConfigError(f"AUG.AA_TYPE {aa_type!r}: cannot read {part!r}; {usage}")
        settings[match.group(1)] = float(match.group(2))
    if settings["m"] is None:
        raise ConfigError(f"AUG.AA_TYPE {aa_type!r} has no magnitude; {usage}")
    if settings["inc"] != 1:
        raise ConfigError(f"AUG.AA_TYPE {aa_type!r}: only the increasing variant (inc1) exists")
    return RandAugment(
        magnitude=settings["m"],
        num_layers=int(settings["n"]),
        prob=settings["p"],
        transform_hparas=_RAND_AUGMENT_FILL,
        sampling_type="gaussian",
        sampling_hparas={"sampling_std": settings["mstd"]},
    )


class Normalize:
    """uint8 (3, ...) -> float32 (x / 255 - mean) / std per channel, in one pass into `out`."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        std_tensor = torch.tensor(std, dtype=torch.float32)
        self.scale = 1.0 / (255.0 * std_tensor)
        self.offset = -torch.tensor(mean, dtype=torch.float32) / std_tensor
        # (offset, scale) copied once per device: a copy from pageable memory in every batch
        # would make the host wait for the GPU each time.
        self._copies: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __getstate__(self) -> dict:
        # Loader workers get the CPU tensors only, never a GPU's copies.
        return self.__dict__ | {"_copies": {}}

    def __call__(self, frames: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        per_channel = (3,) + (1,) * (frames.dim() - 1)
        if frames.device not in self._copies:
            self._copies[frames.device] = (
                self.offset.to(frames.device),
                self.scale.to(frames.device),
            )
        offset, scale = self._copies[frames.device]
        return torch.addcmul(offset.view(per_channel), frames, scale.view(per_channel), out=out)

    def model_input(self, clips: torch.Tensor, device: torch.device) -> torch.Tensor:
        """A batch of clips (B, 3, T, H, W) on `device`, as the model takes them.

        uint8 clips (test and validation views for a GPU, see MultiViewCrops) are normalised
        there, after a transfer a quarter the size of float32's; float clips (already
        normalised) are only moved.
        """
        clips = clips.to(device, non_blocking=True)
        if clips.dtype != torch.uint8:
            return clips
        normalized = torch.empty(clips.shape, device=device)
        self(clips.transpose(0, 1), out=normalized.transpose(0, 1))
        return normalized


class TrainAugmentation:
    """One training clip: uint8 frames (T, 3, H, W) -> normalised float32 (3, T, crop, crop).

    Random resized crop (or short-side jitter and a random crop), horizontal flip, RandAugment
    or colour jitter, normalisation, random erasing.
    """

    def __init__(
        self,
        *,
        crop_size: int,
        jitter_scales: Sequence[int],
        relative_scales: Sequence[float],
        relative_aspects: Sequence[float],
        flip: bool,
        interpolation: str,
        augment: bool,
        rand_augment: RandAugment | None,
        color_jitter: float,
        erase_prob: float,
        erase_mode: str,
        erase_count: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.crop_size = crop_size
        mode = INTERPOLATIONS[interpolation]
        if relative_scales:
            spatial = [
                v2.RandomResizedCrop(
                    crop_size,
                    scale=tuple(relative_scales),
                    ratio=tuple(relative_aspects),
                    interpolation=mode,
                    antialias=True,
                )
            ]
        else:
            spatial = [
                # max_size is exclusive: the short side is uniform over [min, max].
                v2.RandomResize(jitter_scales[0], jitter_scales[1] + 1, interpolation=mode),
                v2.RandomCrop(crop_size),
            ]
        if flip:
            spatial.append(v2.RandomHorizontalFlip())
        self.spatial = v2.Compose(spatial)
        self.augment_ops = None
        self.erase_prob = 0.0
        if augment:
            if rand_augment is not None:
                self.augment_ops = rand_augment
            elif color_jitter > 0:
                self.augment_ops = v2.ColorJitter(color_jitter, color_jitter, color_jitter)
            self.erase_prob = erase_prob
        value = "random" if erase_mode == "pixel" else 0.0
        # Boxes drawn together share the erased area, as in timm's random erasing.
        self.erasers = [
            v2.RandomErasing(
                p=1.0,
                scale=(_ERASE_AREA[0] / count, _ERASE_AREA[1] / count),
                ratio=_ERASE_ASPECT,
                value=value,
                inplace=True,
            )
            for count in range(1, erase_count + 1)
        ]
        self.normalize = Normalize(mean, std)

    def __call__(self, frames: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """frames: uint8 (T, 3, H, W); out: optional float32 (3, T, crop, crop) to write into."""
        frames = self.spatial(frames)
        if self.augment_ops is not None:
            frames = self.augment_ops(frames)
        video = self.normalize(frames.transpose(0, 1), out=out)
        if self.erase_prob and torch.rand(()) < self.erase_prob:
            count = int(torch.randint(len(self.erasers), ()))
            # Erasing sees (T, 3, H, W) so the box and its noise are shared by all frames.
            frames_first = video.transpose(0, 1)
            for _ in range(count + 1):
                self.erasers[count](frames_first)
        return video


class MultiViewCrops:
    """Test views: frames scaled to short side `crop_size` -> K clips x S square crops.

    The S crops of a clip lie along the long side, evenly from one end to the other (S = 1: the
    centre; S = 3: both ends and the centre). With `normalize` the views are normalised float32,
    for a model on the CPU: the loader's worker processes then share that work. Without, they
    stay uint8, for a model on a GPU: a quarter of the bytes to write, pass between processes
    and transfer, and `Normalize.model_input` normalises them there.
    """

    def __init__(
        self, crop_size: int, num_spatial_crops: int, normalize: Normalize | None = None
    ) -> None:
        self.crop_size = crop_size
        self.num_spatial_crops = num_spatial_crops
        self.normalize = normalize
        self.dtype = torch.uint8 if normalize is None else torch.float32

    def __call__(
        self,
        frames: torch.Tensor,
        clip_rows: Sequence[Sequence[int]],
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """frames: uint8 (N, H, W, 3), short side crop_size; clip_rows: K lists of T frame rows.

        Returns (K * S, 3, T, crop, crop) of `self.dtype`, view k * S + s being crop s of clip k,
        written into `out` if given.
        """
        _, height, width, _ = frames.shape
        channels_first = frames.permute(3, 0, 1, 2)
        size = self.crop_size
        crops = self.num_spatial_crops
        spare = max(height, width) - size
        offsets = (
            [spare // 2] if crops == 1 else [round(i * spare / (crops - 1)) for i in range(crops)]
        )
        shape = (len(clip_rows) * crops, 3, len(clip_rows[0]), size, size)
        windows = [
            channels_first[:, :, offset : offset + size, :size]
            if height > width
            else channels_first[:, :, :size, offset : offset + size]
            for offset in offsets
        ]
        views = torch.empty(shape, dtype=self.dtype) if out is None else out
        for clip, rows in enumerate(clip_rows):
            for crop, window in enumerate(windows):
                view = views[clip * crops + crop]
                # Frame by frame (normalising while copying: one pass over the output): much
                # faster than index_select into a strided window.
                for time, row in enumerate(rows):
                    if self.normalize is None:
                        view[:, time].copy_(window[:, row])
                    else:
                        self.normalize(window[:, row], out=view[:, time])
        return views
