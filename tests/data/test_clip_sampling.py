import itertools
from fractions import Fraction

import pytest
from pytorchvideo.data.clip_sampling import ConstantClipsPerVideoSampler

from revvideo.data.clip_sampling import EvenClipsPerVideoSampler, clip_starts, frame_times


def test_clips_span_the_whole_video():
    clip = Fraction(16 * 4, 30)
    starts = clip_starts(EvenClipsPerVideoSampler(clip, 5), 10.0)
    assert len(starts) == 5
    assert starts[0] == 0
    assert starts[-1] + clip == pytest.approx(10.0)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert max(gaps) - min(gaps) < 1e-9


def test_pytorchvideo_sampler_misses_the_end_which_ours_fixes():
    clip = Fraction(2)
    theirs = clip_starts(ConstantClipsPerVideoSampler(clip, 4), 10.0)
    ours = clip_starts(EvenClipsPerVideoSampler(clip, 4), 10.0)
    assert float(theirs[-1] + clip) < 10.0 - 1.5
    assert float(ours[-1] + clip) == pytest.approx(10.0)


def test_single_clip_is_centred_and_short_videos_start_at_zero():
    assert clip_starts(EvenClipsPerVideoSampler(Fraction(2), 1), 10.0) == [4]
    assert clip_starts(EvenClipsPerVideoSampler(Fraction(2), 3), 1.0) == [0, 0, 0]


def test_sampler_restarts_for_each_video():
    sampler = EvenClipsPerVideoSampler(Fraction(1), 3)
    assert clip_starts(sampler, 5.0) == clip_starts(sampler, 5.0) == [0, 2, 4]


def test_frame_times_step_through_the_clip():
    times = frame_times(Fraction(1), Fraction(16, 15), 8)
    assert times[0] == 1.0
    assert times[1] - times[0] == pytest.approx(2 / 15)
    assert times[-1] == pytest.approx(1 + 14 / 15)
