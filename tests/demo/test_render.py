"""The annotated video: drawn on the picture as players show it, labels sized to the picture,
--topk of them, and the source's audio kept."""

import errno
import os
import signal
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from revvideo.cli import classify
from revvideo.data.synthetic import write_video
from revvideo.demo import render
from revvideo.demo.render import label_font, write_annotated_video
from revvideo.utils.files import WriteError

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
        lambda image, top, font, heading="": (
            drawn.append(top) or draw_labels(image, top, font, heading)
        ),
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


# --- whole or not at all ----------------------------------------------------------------------


def interrupt_after(count, real):
    """`real`, which raises KeyboardInterrupt (a Ctrl-C) on its call number `count` + 1."""
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) > count:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("before", [None, b"the earlier file"], ids=["new", "replacing"])
def test_an_interrupted_video_leaves_no_partial_file(tmp_path, monkeypatch, before):
    source = tmp_path / "in" / "source.mp4"
    source.parent.mkdir()
    write_video(str(source), np.full((90, 48, 64, 3), 120, dtype=np.uint8), fps=15)
    output = tmp_path / "out.mp4"
    if before is not None:
        output.write_bytes(before)
    drawn = []
    # Past the encoder's lookahead: packets have been written when the Ctrl-C comes.
    monkeypatch.setattr(
        render, "draw_labels", interrupt_after(60, lambda *args: drawn.append(args))
    )

    with pytest.raises(KeyboardInterrupt):
        write_annotated_video(str(source), output, lambda _: [("a", 1.0)], 10.0, ["a"], 1)

    assert len(drawn) == 60, "interrupted midway"
    left = sorted(path.name for path in tmp_path.iterdir())
    assert left == ["in"] + ([] if before is None else ["out.mp4"])
    if before is not None:
        assert output.read_bytes() == before


def test_ctrl_c_while_the_demo_writes_its_video(trained, tmp_path, monkeypatch, capsys):
    source = write_video_with_audio(tmp_path / "tone.mp4", colour="green", seconds=4)
    monkeypatch.setattr(render, "draw_labels", interrupt_after(45, render.draw_labels))

    handler = signal.getsignal(signal.SIGINT)
    try:
        status = classify.main(
            [source, "--checkpoint", str(trained[0]), "--output", str(tmp_path / "out" / "a.mp4")]
        )
    finally:
        # An interrupted command ignores Ctrl-C from then on; this process goes on.
        signal.signal(signal.SIGINT, handler)

    assert status == 130
    assert capsys.readouterr().err == "interrupted\n"
    assert list((tmp_path / "out").iterdir()) == []


def test_an_interrupted_plot_or_image_leaves_no_file(tmp_path, monkeypatch):
    def half_written(self, path, **kwargs):
        Path(path).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(render.Figure, "savefig", half_written)
    with pytest.raises(KeyboardInterrupt):
        render.plot_top_classes([("a", 0.7), ("b", 0.3)], "title", tmp_path / "top.png")

    monkeypatch.setattr(render.Image.Image, "save", half_written)
    with pytest.raises(KeyboardInterrupt):
        render.write_annotated_image(Image.new("RGB", (64, 48)), tmp_path / "a.jpg", [("a", 1.0)])

    assert list(tmp_path.iterdir()) == []


def test_dollars_in_a_plot_are_plain_text(tmp_path, monkeypatch):
    drawn, savefig = [], render.Figure.savefig

    def saved(figure, *args, **kwargs):
        drawn.append(figure)
        savefig(figure, *args, **kwargs)

    monkeypatch.setattr(render.Figure, "savefig", saved)
    # Between dollars, matplotlib would read TeX: "\\frac" is malformed, "$5$" would lose them.
    top = [("cost $5$", 0.6), ("$\\frac$", 0.4)]

    render.plot_top_classes(top, "cost $\\frac$.mp4 (1x1 views)", tmp_path / "top.png")

    axes = drawn[0].axes[0]
    texts = [axes.title, *axes.get_yticklabels()]
    assert [text.get_text() for text in texts] == [
        "cost $\\frac$.mp4 (1x1 views)",
        "$\\frac$",
        "cost $5$",
    ]
    assert not any(text.get_parse_math() for text in texts)


def test_a_full_disk_keeps_the_earlier_file(tmp_path, monkeypatch):
    source = tmp_path / "source.mp4"
    write_video(str(source), np.full((30, 48, 64, 3), 120, dtype=np.uint8), fps=15)
    output = tmp_path / "out.mp4"
    output.write_bytes(b"the earlier file")

    def full_disk(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(render, "draw_labels", full_disk)

    with pytest.raises(WriteError, match=r"cannot write .*out\.mp4: the disk is full \(the file"):
        write_annotated_video(str(source), output, lambda _: [("a", 1.0)], 10.0, ["a"], 1)

    assert output.read_bytes() == b"the earlier file"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.mp4", "source.mp4"]


def test_a_video_without_an_extension_is_one_line():
    with pytest.raises(ValueError, match="out has no extension to choose the video format by"):
        write_annotated_video("in.mp4", "out", lambda _: [], 1.0, ["a"], 1)


# --- a frame size that changes ----------------------------------------------------------------


def test_a_video_whose_frame_size_changes_keeps_the_first_size(tmp_path):
    # Two MPEG-TS files of different sizes, one after the other: one stream whose frames grow
    # from 64 x 48 (red) to 96 x 80 (blue) midway, as a broadcast recording may.
    parts = []
    for name, (height, width), colour in (
        ("a.ts", (48, 64), (220, 30, 30)),
        ("b.ts", (80, 96), (30, 40, 220)),
    ):
        frames = np.empty((15, height, width, 3), dtype=np.uint8)
        frames[:] = colour
        write_video(str(tmp_path / name), frames, fps=15, codec="mpeg2video")
        parts.append((tmp_path / name).read_bytes())
    source = tmp_path / "grows.ts"
    source.write_bytes(b"".join(parts))
    with av.open(str(source)) as container:
        sizes = [(frame.width, frame.height) for frame in container.decode(video=0)]
    assert set(sizes) == {(64, 48), (96, 80)}

    written = write_annotated_video(
        str(source), tmp_path / "out.mp4", lambda _: [("x", 1.0)], 100.0, ["x"], 1
    )

    with av.open(str(tmp_path / "out.mp4")) as container:
        pictures = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(pictures) == written
    assert {picture.shape for picture in pictures} == {(48, 64, 3)}
    # The larger frames are scaled to the first size, not cut: blue up to the corner.
    assert pictures[-1][-4:, -4:].mean(axis=(0, 1)) == pytest.approx((30, 40, 220), abs=25)
    assert pictures[0][-4:, -4:].mean(axis=(0, 1)) == pytest.approx((220, 30, 30), abs=25)
