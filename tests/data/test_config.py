import textwrap

import pytest

from revvideo.config import ConfigError, get_cfg, load_config
from revvideo.config.defaults import IGNORED_KEYS
from revvideo.engine.run import check_config


def test_data_sections_have_pyslowfast_defaults():
    cfg = get_cfg()
    assert cfg.DATA.DECODING_BACKEND == "pyav"
    assert cfg.DATA.SAMPLING_RATE == 8 and cfg.DATA.TARGET_FPS == 30
    assert cfg.DATA.TRAIN_JITTER_SCALES == [256, 320] and cfg.DATA.TEST_CROP_SIZE == 256
    assert cfg.AUG.NUM_SAMPLE == 1 and cfg.AUG.RE_PROB == 0.25
    assert cfg.MIXUP.ALPHA == 0.8 and cfg.MIXUP.LABEL_SMOOTH_VALUE == 0.1
    assert cfg.TEST.NUM_ENSEMBLE_VIEWS == 10 and cfg.TEST.NUM_SPATIAL_CROPS == 3
    assert cfg.DATA_LOADER.NUM_WORKERS == 8 and cfg.TRAIN.BATCH_SIZE == 64


def test_pyslowfast_rev_mvit_data_settings_load(tmp_path):
    path = tmp_path / "rev.yaml"
    path.write_text(
        textwrap.dedent(
            """
            DATA:
              USE_OFFSET_SAMPLING: True
              DECODING_BACKEND: torchvision
              NUM_FRAMES: 16
              SAMPLING_RATE: 4
              TRAIN_JITTER_SCALES: [256, 320]
              TRAIN_CROP_SIZE: 224
              TEST_CROP_SIZE: 224
              TRAIN_JITTER_SCALES_RELATIVE: [0.08, 1.0]
              TRAIN_JITTER_ASPECT_RELATIVE: [0.75, 1.3333]
            AUG:
              NUM_SAMPLE: 2
              ENABLE: True
              COLOR_JITTER: 0.4
              AA_TYPE: rand-m7-n4-mstd0.5-inc1
              INTERPOLATION: bicubic
              RE_PROB: 0.25
              RE_MODE: pixel
              RE_COUNT: 1
              RE_SPLIT: False
            MIXUP:
              ENABLE: True
              ALPHA: 0.8
              CUTMIX_ALPHA: 1.0
              PROB: 1.0
              SWITCH_PROB: 0.5
              LABEL_SMOOTH_VALUE: 0.1
            TEST:
              BATCH_SIZE: 64
              NUM_SPATIAL_CROPS: 1
              NUM_ENSEMBLE_VIEWS: 5
            DATA_LOADER:
              NUM_WORKERS: 8
              PIN_MEMORY: True
            """
        )
    )
    cfg = load_config(path)
    assert cfg.AUG.NUM_SAMPLE == 2 and cfg.TEST.NUM_ENSEMBLE_VIEWS == 5
    assert "DATA.USE_OFFSET_SAMPLING" in IGNORED_KEYS and "AUG.RE_SPLIT" in IGNORED_KEYS


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "MIXUP.LABEL_SMOOTH_VALUE",
            "1.0",
            r"MIXUP\.LABEL_SMOOTH_VALUE must be in \[0, 1\), got 1\.0",
        ),
        ("MIXUP.PROB", "1.5", r"MIXUP\.PROB must be a probability, got 1\.5"),
        ("MIXUP.SWITCH_PROB", "-0.1", r"MIXUP\.SWITCH_PROB must be a probability"),
        ("MIXUP.ALPHA", "-1.0", r"MIXUP\.ALPHA must not be negative"),
        ("MIXUP.CUTMIX_ALPHA", "-1", r"MIXUP\.CUTMIX_ALPHA must not be negative"),
        ("DATA.TRAIN_JITTER_SCALES", "[320, 256]", r"must be \[min, max\] with 0 < min <= max"),
        ("DATA.TRAIN_JITTER_SCALES", "[256.5, 320]", r"DATA\.TRAIN_JITTER_SCALES must be"),
        ("DATA.TRAIN_JITTER_SCALES_RELATIVE", "[0.08, 1.5]", r"fractions of the frame's area"),
        ("DATA.TRAIN_JITTER_SCALES_RELATIVE", "[0.08, 1.0]", r"set together"),
        ("DATA.TRAIN_CROP_SIZE", "288", r"DATA\.TRAIN_JITTER_SCALES \[256, 320\] must not be"),
        ("DATA.STD", "[0.2, 0, 0.2]", r"DATA\.STD must hold 3 positive values"),
        ("DATA.MEAN", "[0.5]", r"DATA\.MEAN must hold 3 values"),
        ("DATA.DECODING_BACKEND", "ffmpeg", r"must be one of pyav, decord, torchvision"),
        ("DATA.INPUT_CHANNEL_NUM", "[1]", r"DATA\.INPUT_CHANNEL_NUM must be \[3\]"),
        ("DATA.PATH_LABEL_SEPARATOR", "''", r"DATA\.PATH_LABEL_SEPARATOR must not be empty"),
        ("DATA.ENSEMBLE_METHOD", "mean", r"DATA\.ENSEMBLE_METHOD must be one of sum, max"),
        ("AUG.INTERPOLATION", "nearest", r"AUG\.INTERPOLATION must be one of bilinear, bicubic"),
        ("AUG.RE_MODE", "rand", r"AUG\.RE_MODE must be one of pixel, const"),
        ("AUG.RE_PROB", "2.0", r"AUG\.RE_PROB must be a probability"),
        ("AUG.AA_TYPE", "rand-x", r"AUG\.AA_TYPE 'rand-x'"),
        ("AUG.NUM_SAMPLE", "0", r"AUG\.NUM_SAMPLE must be positive"),
        ("TEST.NUM_SPATIAL_CROPS", "0", r"TEST\.NUM_SPATIAL_CROPS must be positive"),
        ("DATA_LOADER.NUM_WORKERS", "-1", r"DATA_LOADER\.NUM_WORKERS must not be negative"),
    ],
)
def test_data_settings_are_checked_before_a_run_starts(key, value, message):
    with pytest.raises(ConfigError, match=message) as info:
        check_config(load_config(None, [key, value]))
    assert "\n" not in str(info.value)
