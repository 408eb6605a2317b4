import textwrap

from revvideo.config import get_cfg, load_config
from revvideo.config.defaults import IGNORED_KEYS


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
