import pickle

import pytest
import torch

from revvideo.data.transforms import (
    MultiViewCrops,
    Normalize,
    TrainAugmentation,
    parse_rand_augment,
)
from revvideo.utils.errors import ConfigError

MEAN, STD = [0.45, 0.45, 0.45], [0.225, 0.225, 0.225]


def augmentation(**changes):
    settings = dict(
        crop_size=32,
        jitter_scales=[36, 44],
        relative_scales=[0.08, 1.0],
        relative_aspects=[0.75, 1.3333],
        flip=True,
        interpolation="bicubic",
        augment=True,
        rand_augment=parse_rand_augment("rand-m9-n4-mstd0.5-p1.0-inc1"),
        color_jitter=0.4,
        erase_prob=0.0,
        erase_mode="pixel",
        erase_count=1,
        mean=MEAN,
        std=STD,
    )
    settings.update(changes)
    return TrainAugmentation(**settings)


def still_clip(frames=8, height=48, width=64, seed=0):
    """uint8 (T, 3, H, W): one random textured image repeated."""
    image = torch.randint(0, 256, (3, height, width), generator=torch.Generator().manual_seed(seed))
    return image.to(torch.uint8).expand(frames, 3, height, width).contiguous()


@pytest.mark.parametrize("aa_type", ["rand-m7-n4-mstd0.5-inc1", "rand-m9-mstd0.5-inc1", "rand-m3"])
def test_rand_augment_strings_are_read(aa_type):
    rand_augment = parse_rand_augment(aa_type)
    expected_layers = 4 if "-n4" in aa_type else 2
    assert rand_augment.randaug_fn.num_sample_op == expected_layers


@pytest.mark.parametrize("aa_type", ["auto-m7", "rand-n2", "rand-m7-inc0", "rand-m7-w0", "rand-mx"])
def test_bad_rand_augment_strings_name_the_key(aa_type):
    with pytest.raises(ConfigError, match=r"AUG\.AA_TYPE"):
        parse_rand_augment(aa_type)


def test_empty_aa_type_means_no_rand_augment():
    assert parse_rand_augment("") is None


@pytest.mark.parametrize("aa_type", ["rand-m9-n4-mstd0.5-p1.0-inc1", ""])
def test_every_frame_of_a_clip_gets_the_same_augmentation(aa_type):
    torch.manual_seed(0)
    transform = augmentation(rand_augment=parse_rand_augment(aa_type), erase_prob=1.0)
    clip = still_clip()
    outputs = [transform(clip) for _ in range(10)]
    for video in outputs:
        assert video.shape == (3, 8, 32, 32)
        assert video.dtype == torch.float32
        assert torch.allclose(video, video[:, :1].expand_as(video)), "frames were augmented apart"
    # ... while different clips get different augmentations.
    assert not torch.allclose(outputs[0], outputs[1])


def test_normalisation_without_augmentation_is_exact():
    transform = augmentation(relative_scales=[], relative_aspects=[], augment=False, flip=False)
    grey = torch.full((4, 3, 40, 50), 153, dtype=torch.uint8)
    video = transform(grey)
    expected = (153 / 255 - 0.45) / 0.225
    assert video.shape == (3, 4, 32, 32)
    assert torch.allclose(video, torch.full_like(video, expected), atol=1e-5)


def test_scale_jitter_and_flip_without_relative_crop():
    torch.manual_seed(0)
    transform = augmentation(relative_scales=[], relative_aspects=[], augment=False)
    ramp = torch.linspace(0, 255, 64).round().to(torch.uint8).expand(2, 3, 48, 64).contiguous()
    slopes = set()
    for _ in range(20):
        video = transform(ramp)
        assert video.shape == (3, 2, 32, 32)
        slopes.add(bool(video[0, 0, 0, -1] > video[0, 0, 0, 0]))
    assert slopes == {True, False}, "a horizontal flip happens about half the time"


@pytest.mark.parametrize(("mode", "count"), [("pixel", 1), ("const", 3)])
def test_random_erasing_erases_the_same_box_in_every_frame(mode, count):
    torch.manual_seed(1)
    transform = augmentation(
        augment=True,
        rand_augment=None,
        color_jitter=0.0,
        flip=False,
        relative_scales=[1.0, 1.0],
        relative_aspects=[1.0, 1.0],
        erase_prob=1.0,
        erase_mode=mode,
        erase_count=count,
    )
    grey = torch.full((4, 3, 32, 32), 153, dtype=torch.uint8)
    video = transform(grey)
    expected = (153 / 255 - 0.45) / 0.225
    erased = (video - expected).abs() > 1e-4
    assert erased.any()
    assert torch.equal(erased, erased[:, :1].expand_as(erased))
    assert torch.allclose(video, video[:, :1].expand_as(video))
    if mode == "const":
        assert torch.allclose(video[erased], torch.zeros(1))


def test_normalize_writes_into_the_given_tensor():
    normalize = Normalize(MEAN, STD)
    frames = torch.full((3, 2, 4, 4), 255, dtype=torch.uint8)
    out = torch.empty(3, 2, 4, 4)
    assert normalize(frames, out=out) is out
    assert torch.allclose(out, torch.full_like(out, (1 - 0.45) / 0.225))


def test_views_normalised_in_the_loader_equal_uint8_views_normalised_on_the_device():
    frames = torch.randint(0, 256, (6, 32, 50, 3), dtype=torch.uint8)
    normalize = Normalize(MEAN, STD)
    rows = [[0, 1, 2], [3, 4, 5]]
    for crops in (1, 3):
        floats = MultiViewCrops(32, crops, normalize)(frames, rows)
        pixels = MultiViewCrops(32, crops)(frames, rows)
        assert (floats.dtype, pixels.dtype) == (torch.float32, torch.uint8)
        torch.testing.assert_close(
            normalize.model_input(pixels, torch.device("cpu")), floats, atol=1e-6, rtol=0
        )


def test_model_input_normalises_uint8_views_per_channel_and_moves_float_clips():
    normalize = Normalize([0.4, 0.5, 0.6], [0.2, 0.25, 0.3])
    views = torch.randint(0, 256, (2, 3, 4, 5, 5), dtype=torch.uint8)
    normalised = normalize.model_input(views, torch.device("cpu"))
    assert normalised.dtype == torch.float32 and normalised.shape == views.shape
    assert normalised.is_contiguous()
    for channel, (mean, std) in enumerate([(0.4, 0.2), (0.5, 0.25), (0.6, 0.3)]):
        expected = (views[:, channel].double() / 255 - mean) / std
        torch.testing.assert_close(normalised[:, channel].double(), expected, atol=1e-5, rtol=0)
    clips = torch.randn(2, 3, 4, 5, 5)
    assert normalize.model_input(clips, torch.device("cpu")) is clips


def ramp_frames(count, height, width):
    """uint8 (N, H, W, 3): red = frame number, green = column, blue = row."""
    frames = torch.empty(count, height, width, 3, dtype=torch.uint8)
    frames[..., 0] = torch.arange(count).view(count, 1, 1)
    frames[..., 1] = torch.arange(width).view(1, 1, width)
    frames[..., 2] = torch.arange(height).view(1, height, 1)
    return frames


@pytest.mark.parametrize(("height", "width"), [(32, 50), (50, 32)])
def test_three_crops_cover_both_ends_and_the_centre_of_the_long_side(height, width):
    crops = MultiViewCrops(32, 3)
    frames = ramp_frames(6, height, width)
    views = crops(frames, [[0, 1, 2], [3, 4, 5]])
    assert views.shape == (6, 3, 3, 32, 32)
    assert views.dtype == torch.uint8
    # Green holds the column and blue the row: the crop's top-left pixel gives its offset.
    offset_channel = 1 if width > height else 2
    for view_index, pixels in enumerate(views):
        clip = view_index // 3
        assert pixels[0, :, 0, 0].tolist() == [3 * clip, 3 * clip + 1, 3 * clip + 2]
        assert pixels[offset_channel, 0, 0, 0].item() == [0, 9, 18][view_index % 3]


def test_one_crop_is_the_centre():
    crops = MultiViewCrops(32, 1)
    views = crops(ramp_frames(2, 32, 50), [[0, 1]])
    assert views[0][1, 0, 0, 0].item() == 9


def test_normalize_copies_its_constants_to_a_device_once_and_never_to_workers():
    normalize = Normalize([0.45, 0.45, 0.45], [0.225, 0.225, 0.225])
    frames = torch.zeros(3, 2, 4, 4, dtype=torch.uint8, device="meta")  # stands in for a GPU
    normalize(frames)
    copies = normalize._copies[frames.device]
    normalize(frames)
    assert normalize._copies[frames.device] is copies  # no copy per batch
    assert pickle.loads(pickle.dumps(normalize))._copies == {}  # what a loader worker gets
