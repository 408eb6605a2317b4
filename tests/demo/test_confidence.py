"""The demo's calibrated probabilities (a checkpoint's temperature), abstention
(--min-confidence) and the windows named on an annotated video."""

import json
import re
import shutil

import pytest
import torch

from revvideo.checkpoint.files import add_entries
from revvideo.cli import classify
from revvideo.demo import render
from revvideo.demo.classifier import (
    UNKNOWN,
    classify_video,
    load_classifier,
)

from .conftest import run_main

CPU = torch.device("cpu")
TEMPERATURE = 3.0


@pytest.fixture(scope="module")
def calibrated(trained, tmp_path_factory):
    """The tiny colour classifier's checkpoint with a temperature of 3."""
    path = tmp_path_factory.mktemp("calibrated") / "calibrated.pyth"
    shutil.copy(trained[0], path)
    add_entries(path, temperature=TEMPERATURE)
    return path


def test_the_temperature_divides_the_logits(trained, calibrated):
    plain = load_classifier(trained[0], None, CPU)
    classifier = load_classifier(calibrated, None, CPU)
    views = torch.randn(5, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))

    with torch.no_grad():
        expected = (plain.model(views) / TEMPERATURE).softmax(dim=1)
    assert classifier.temperature == TEMPERATURE and plain.temperature is None
    torch.testing.assert_close(classifier.probabilities(views), expected, atol=1e-5, rtol=0)
    # Not the uncalibrated scores: the test would pass without the division otherwise.
    assert (plain.probabilities(views) - expected).abs().max() > 0.05


def test_the_json_result_is_the_calibrated_one(trained, calibrated, videos, capsys):
    plain = classify_video(load_classifier(trained[0], None, CPU), videos["red"], (1, 1))

    status, out, err = run_main(
        capsys, videos["red"], "--checkpoint", calibrated, "--views", "1x1", "--topk", "3", "--json"
    )

    assert status == 0, err
    (result,) = json.loads(out)
    assert result["temperature"] == TEMPERATURE
    assert result["class"] == "red"
    # One view: the softmax of logits / T, the logits being log p up to a constant.
    expected = (plain.probabilities.log() / TEMPERATURE).softmax(dim=0)
    for entry in result["top_k"]:
        index = ["red", "green", "blue"].index(entry["class"])
        assert entry["probability"] == pytest.approx(expected[index].item(), abs=1e-5)
    assert result["top_k"][0]["probability"] < plain.probabilities.max().item() - 0.05


def test_text_says_once_that_the_probabilities_are_calibrated(calibrated, videos, capsys):
    status, out, err = run_main(capsys, videos["red"], videos["green"], "--checkpoint", calibrated)

    assert status == 0
    assert err == ["probabilities calibrated: logits divided by the checkpoint's temperature 3"]
    assert "temperature" not in out  # stdout holds the results only


def test_a_checkpoint_without_temperature_says_none(trained, videos, capsys):
    status, out, _ = run_main(capsys, videos["red"], "--checkpoint", trained[0], "--json")

    assert status == 0
    (result,) = json.loads(out)
    assert result["temperature"] is None and result["class"] == "red"


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan", "abc"])
def test_a_checkpoints_unusable_temperature_is_one_error_line(
    trained, videos, tmp_path, capsys, value
):
    path = tmp_path / "odd.pyth"
    shutil.copy(trained[0], path)
    add_entries(path, temperature=value if value == "abc" else float(value))

    status, _, err = run_main(capsys, videos["red"], "--checkpoint", path)

    assert status == 2
    shown = repr(value if value == "abc" else float(value))
    assert err == [f"error: {path}: its temperature {shown} is not a positive number"]


# --- abstention -------------------------------------------------------------------------------


def test_below_min_confidence_the_answer_is_unknown_with_the_guess_in_top_k(
    calibrated, videos, capsys
):
    status, out, _ = run_main(
        capsys, videos["red"], "--checkpoint", calibrated, "--min-confidence", "0.999", "--json"
    )

    assert status == 0
    (result,) = json.loads(out)
    assert result["class"] == UNKNOWN
    assert result["top_k"][0]["class"] == "red" and result["top_k"][0]["probability"] < 0.999

    status, out, _ = run_main(
        capsys, videos["red"], "--checkpoint", calibrated, "--min-confidence", "0.4", "--json"
    )

    assert status == 0
    (result,) = json.loads(out)
    assert result["class"] == "red" and result["top_k"][0]["probability"] >= 0.4


def test_text_says_unknown_and_the_best_guess(calibrated, videos, capsys):
    status, out, _ = run_main(
        capsys, videos["red"], "--checkpoint", calibrated, "--min-confidence", "0.999"
    )

    assert status == 0
    assert re.fullmatch(
        r"  answer: unknown \(best guess red \d+\.\d%, below --min-confidence 0\.999\)",
        out.splitlines()[1],
    ), out

    status, out, _ = run_main(
        capsys, videos["red"], "--checkpoint", calibrated, "--min-confidence", "0.4"
    )

    assert re.fullmatch(
        r"  answer: red \(\d+\.\d%, at least --min-confidence 0\.4\)", out.splitlines()[1]
    ), out


def test_the_classifier_abstains_as_the_command_does(calibrated, videos):
    classifier = load_classifier(calibrated, None, CPU, min_confidence=0.999)
    result = classify_video(classifier, videos["red"])

    assert classifier.answer(result.probabilities) == UNKNOWN
    classifier.min_confidence = None
    assert classifier.answer(result.probabilities) == "red"
    with pytest.raises(ValueError, match=r"min_confidence must be in \(0, 1\], got 1\.5"):
        load_classifier(calibrated, None, CPU, min_confidence=1.5)


@pytest.mark.parametrize("value", ["0", "1.5", "-0.2", "nan", "inf", "high"])
def test_a_bad_min_confidence_is_one_error_line(capsys, value):
    with pytest.raises(SystemExit) as exit_status:
        classify.main(["video.mp4", "--min-confidence", value])

    assert exit_status.value.code == 2
    assert capsys.readouterr().err == (
        f"error: argument --min-confidence: expected a probability in (0, 1], got {value!r} "
        "(see --help)\n"
    )


# --- rough edges ------------------------------------------------------------------------------


@pytest.mark.parametrize("as_json", [False, True])
def test_a_missing_input_and_a_missing_checkpoint_are_both_named(tmp_path, capsys, as_json):
    missing, absent = tmp_path / "missing.mp4", tmp_path / "absent.pyth"

    status, out, err = run_main(
        capsys, missing, "--checkpoint", absent, *(["--json"] if as_json else [])
    )

    assert status == 2
    assert err == [
        f"error: {missing}: no such file or folder",
        f"error: checkpoint {absent} does not exist",
    ]
    if as_json:
        assert json.loads(out) == [{"path": str(missing), "error": err[0][len("error: ") :]}]


def test_the_annotated_video_names_its_segment_and_the_window_its_labels_score(
    trained, videos, tmp_path, monkeypatch, capsys
):
    headings = []
    draw_labels = render.draw_labels
    monkeypatch.setattr(
        render,
        "draw_labels",
        lambda image, top, font, heading="": (
            headings.append(heading) or draw_labels(image, top, font, heading)
        ),
    )

    status, out, _ = run_main(
        capsys, videos["red_then_blue"], "--checkpoint", trained[0], "--output", tmp_path / "a.mp4"
    )

    assert status == 0
    assert len(headings) == 60  # 4 s at 15 fps
    timeline = load_classifier(trained[0], None, CPU).timeline(videos["red_then_blue"])
    for frame, heading in enumerate(headings):
        start, end = timeline.span(frame / 15)
        segment = timeline.segment_at(frame / 15)
        assert heading == (
            f"{segment.name} {segment.start:.1f}-{segment.end:.1f} s\n"
            f"window {start:.1f}-{end:.1f} s"
        )
        assert start <= frame / 15 < end and segment.start <= frame / 15 < segment.end
    # The current segment is drawn: red for the first half, blue for the second.
    assert headings[0].startswith("red 0.0-2.") and headings[-1].startswith("blue 2.")
    assert headings[0].endswith("window 0.0-0.5 s")
    # The printed result is still the whole video's: red and blue, half each.
    assert {line.split()[1] for line in out.splitlines()[1:3]} == {"red", "blue"}


def test_a_run_folder_gives_its_best_model_else_its_last(
    trained, calibrated, videos, tmp_path, capsys
):
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    shutil.copy(trained[0], checkpoints / "last.pyth")

    status, out, err = run_main(capsys, videos["red"], "--checkpoint", tmp_path / "run", "--json")

    assert status == 0
    assert err == [f"using {checkpoints / 'last.pyth'}"]
    assert json.loads(out)[0]["temperature"] is None

    shutil.copy(calibrated, checkpoints / "best.pyth")
    status, out, err = run_main(capsys, videos["red"], "--checkpoint", tmp_path / "run", "--json")

    assert status == 0
    assert err == [f"using {checkpoints / 'best.pyth'}"]
    assert json.loads(out)[0]["temperature"] == TEMPERATURE
