"""Where clips are cut (pytorchvideo clip samplers) and when their frames are taken."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from pytorchvideo.data.clip_sampling import ClipInfo, ClipSampler, ConstantClipsPerVideoSampler


class EvenClipsPerVideoSampler(ConstantClipsPerVideoSampler):
    """Exactly `clips_per_video` clips spread over the whole video, max_start / (n - 1) apart:
    the first starts at 0 and the last ends at the end (the parent's, max_start / n apart, never
    reach it); a single clip is centred, and in a video shorter than a clip all start at 0."""

    def __call__(
        self, last_clip_time: float, video_duration: float, annotation: dict[str, Any]
    ) -> ClipInfo:
        max_start = max(Fraction(video_duration) - self._clip_duration, Fraction(0))
        count = self._clips_per_video
        clip_index, aug_index = self._current_clip_index, self._current_aug_index
        start = max_start / 2 if count == 1 else max_start * clip_index / (count - 1)
        self._current_aug_index += 1
        if self._current_aug_index >= self._augs_per_clip:
            self._current_aug_index = 0
            self._current_clip_index += 1
        is_last_clip = self._current_clip_index >= count
        if is_last_clip:
            self.reset()
        return ClipInfo(start, start + self._clip_duration, clip_index, aug_index, is_last_clip)


def clip_starts(sampler: ClipSampler, duration: float) -> list[Fraction]:
    """Start times (seconds) of every clip `sampler` cuts from a video of `duration` seconds."""
    sampler.reset()
    starts = []
    last_end = Fraction(0)
    while True:
        info = sampler(last_end, duration, {})
        starts.append(Fraction(info.clip_start_sec))
        last_end = info.clip_end_sec
        if info.is_last_clip:
            return starts


def clip_duration(num_frames: int, sampling_rate: int, target_fps: float) -> Fraction:
    """Seconds a clip of `num_frames` frames taken every `sampling_rate` frames at `target_fps`
    spans, exactly (a 16 x 4 clip at 30 fps lasts 32/15 s), so clip windows tile time."""
    return Fraction(num_frames * sampling_rate) / Fraction(str(target_fps))


def frame_times(start: Fraction, clip_duration: Fraction, num_frames: int) -> list[float]:
    """Times (seconds) of a clip's `num_frames` frames, evenly spaced from `start`.

    The last frame is one step before the clip's end, so clips of consecutive windows tile time.
    """
    step = clip_duration / num_frames
    return [float(start + step * i) for i in range(num_frames)]
