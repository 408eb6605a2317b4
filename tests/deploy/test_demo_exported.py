"""classify.py on an exported model (.onnx on onnxruntime, .pt2 on torch.export): the
checkpoint's answers, its calibration, and its timeline."""

import json

import pytest
from demo.conftest import run_main, write_colour_video


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_colour_video(tmp_path_factory.mktemp("video") / "red_then_blue.mp4", "red", "blue")


def classify_json(capsys, video, checkpoint, *options):
    status, out, err = run_main(capsys, video, "--checkpoint", checkpoint, "--json", *options)
    assert status == 0, err
    return json.loads(out)[0]


def test_the_demo_answers_as_the_checkpoint(exported, checkpoint, video, capsys):
    options = ("--topk", "3", "--views", "3x2", "--timeline")
    expected = classify_json(capsys, video, checkpoint[0], *options)
    answer = classify_json(capsys, video, exported.path, *options)

    assert answer["class"] == expected["class"] and answer["views"] == "3x2"
    assert answer["temperature"] == expected["temperature"] == pytest.approx(1.5)
    for got, want in zip(answer["top_k"], expected["top_k"], strict=True):
        assert got["class"] == want["class"]
        assert got["probability"] == pytest.approx(want["probability"], abs=1e-3)
    windows = answer["timeline"]["windows"]
    assert len(windows) == len(expected["timeline"]["windows"])
    for got, want in zip(windows, expected["timeline"]["windows"], strict=True):
        assert (got["start"], got["end"]) == (want["start"], want["end"])
        assert got["top_k"][0]["probability"] == pytest.approx(
            want["top_k"][0]["probability"], abs=1e-3
        )
    segments = [segment["class"] for segment in answer["timeline"]["segments"]]
    assert segments == ["red", "blue"]


def test_an_exported_model_takes_no_config(exported, checkpoint, video, capsys):
    status, _, err = run_main(
        capsys, video, "--checkpoint", exported.path, "--cfg", "configs/synthetic/REV_MVIT_XS.yaml"
    )
    assert status == 2
    assert err == [f"error: {exported.path} is an exported model with its own settings: drop --cfg"]
