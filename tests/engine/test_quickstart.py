"""The README's quick start: the embedded default config, from nothing, to a tested model."""

import json

import pytest

from revvideo.config import load_config

from .helpers import ROOT, run_net


@pytest.mark.slow
def test_the_embedded_default_trains_and_tests_above_90_percent(tmp_path):
    config = ROOT / "configs" / "synthetic" / "REV_MVIT_XS.yaml"
    result = run_net(
        config,
        "OUTPUT_DIR",
        str(tmp_path / "output"),
        "DATA.PATH_TO_DATA_DIR",
        str(tmp_path / "data"),
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads((tmp_path / "output" / "test_results.json").read_text())
    assert results["num_videos"] == 72 and results["num_unscored"] == 0
    assert results["top1_acc"] >= 90.0
    last_lines = result.stdout.splitlines()[-2:]
    epochs = load_config(config).SOLVER.MAX_EPOCH
    checkpoint = tmp_path / "output" / "checkpoints" / f"checkpoint_epoch_{epochs:05d}.pyth"
    assert last_lines[0] == f"final checkpoint: {checkpoint}"
    assert (
        last_lines[1]
        == f"classify a video: python demo/classify.py <video> --checkpoint {checkpoint}"
    )
