"""The annotated video: drawn on the picture as players show it, labels sized to the picture,
--topk of them, and the source's audio kept."""

import av
import numpy as np
import pytest

from revvideo.data.synthetic import write_video
from revvideo.demo import render
from revvideo.demo.render import label_font, write_annotated_video
from revvideo_demo import classify

from .conftest import write_video_with_audio

LONG_NAMES = ["passing American football (not in game)", "dancing macarena", "yawning"]


def first_picture(path):
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24").astype(float)


def test_a_rotated_video_is_annotated_upright(tmp_path):
    # Stored 64 wide and 48 high with a white bottom-right corner; shown turned a quarter
    # clockwise (display rotation -90), the corner is at the bottom left of a 48 x 64 portrait
    # picture (the labels are drawn at the top).
    frames = np.zeros((6, 48, 64, 3), dtype=np.uint8)
    frames[:, -12:, -12:] = 255
    source = tmp_path / "turned.mp4"
    write_video(str(source), frames, fps=6, rotation=-90)
    output = tmp_path / "annotated.mp4"

    written = write_annotated_video(
        str(source), output, lambda _: [("waving", 0.9)], until=10.0, names=["waving"], lines=1
    )

    assert written == 6
    with av.open(str(output)) as container:
        frame = next(container.decode(video=0))
        assert frame.rotation == 0, "the pixels are turned, not the display matrix"
    picture = first_picture(output)
    assert picture.shape == (64, 48, 3)
    assert picture[-10:-2, 2:10].mean() > 200, "the white corner is at the bottom left"
    assert picture[-10:-2, -10:-2].mean() < 40, "the bottom right stays dark"


def test_the_labels_of_a_small_video_stay_in_its_top_third(tmp_path):
    frames = np.full((6, 48, 64, 3), 180, dtype=np.uint8)
    source = tmp_path / "small.mp4"
    write_video(str(source), frames, fps=6)
    top = [(name, 0.3) for name in LONG_NAMES]

    write_annotated_video(
        str(source), tmp_path / "out.mp4", lambda _: top, 10.0, LONG_NAMES, len(top)
    )

    picture = first_picture(tmp_path / "out.mp4").mean(axis=2)
    assert picture[:16].min() < 100, "the labels' dark box is there"
    assert np.abs(picture[16:] - 180).max() < 10, "the rest is untouched"


def test_the_font_is_a_sixteenth_of_a_large_picture():
    assert label_font(1280, 720, LONG_NAMES, 3).size == 45
    # Five long labels across a 320 px picture: smaller, to fit its width.
    assert label_font(320, 240, LONG_NAMES, 5).size < 15


@pytest.mark.parametrize(("suffix", "codec"), [(".mp4", "aac"), (".mkv", "pcm_s16le")])
def test_the_sound_comes_along_as_aac(tmp_path, suffix, codec):
    source = write_video_with_audio(tmp_path / f"tone{suffix}", audio_codec=codec)

    write_annotated_video(source, tmp_path / "out.mp4", lambda _: [("red", 1.0)], 1.5, ["red"], 1)

    with av.open(str(tmp_path / "out.mp4")) as container:
        audio = container.streams.audio[0]
        assert (audio.codec_context.name, audio.rate) == ("aac", 22050)
        samples = np.concatenate(
            [frame.to_ndarray().reshape(-1) for frame in container.decode(audio)]
        )
    # 1.5 s of the tone (AAC adds up to two frames of priming and padding).
    assert 1.5 * 22050 <= len(samples) <= 1.5 * 22050 + 3 * 1024
    assert np.sqrt(np.mean(samples[2048:-2048] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


def test_the_demo_draws_topk_labels_and_keeps_the_sound(trained, tmp_path, monkeypatch, capsys):
    drawn = []
    draw_labels = render.draw_labels
    monkeypatch.setattr(
        render,
        "draw_labels",
        lambda image, top, font: drawn.append(top) or draw_labels(image, top, font),
    )
    source = write_video_with_audio(tmp_path / "tone.mp4", colour="green")

    status = classify.main(
        [
            source,
            "--checkpoint",
            str(trained[0]),
            "--topk",
            "2",
            "--output",
            str(tmp_path / "a.mp4"),
        ]
    )

    out, err = capsys.readouterr()
    assert status == 0, err
    assert out.splitlines()[-1] == f"  wrote {tmp_path / 'a.mp4'}"
    assert len(drawn) == 30 and all(len(top) == 2 for top in drawn)
    assert drawn[0][0][0] == "green"
    with av.open(str(tmp_path / "a.mp4")) as container:
        assert container.streams.audio[0].codec_context.name == "aac"
