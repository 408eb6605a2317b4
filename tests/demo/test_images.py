"""demo/classify.py on still images: image models (a tiny one trained here, and the ImageNet
releases' real architecture from the hub cache), images and videos mixed, and bad images."""

import json
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from revvideo.checkpoint import RELEASES, save_checkpoint
from revvideo.cli import classify
from revvideo.demo.images import read_image, rgb_picture
from revvideo.models import rev_vit_s
from revvideo.utils.errors import DataError

from .conftest import write_colour_image


def run_main(capsys, *args):
    """classify.main in this process: (exit status, stdout, stderr lines)."""
    status = classify.main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err.splitlines()


def top1(out):
    """The first class of each result in the text output."""
    return [line.split()[1] for line in out.splitlines() if line.startswith("  1.")]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """One picture per colour, in each format the demo reads, of various sizes."""
    folder = tmp_path_factory.mktemp("images")
    return {
        "red": write_colour_image(folder / "red.jpg", "red", height=40, width=90),
        "green": write_colour_image(folder / "green.png", "green", height=120, width=50, seed=1),
        "blue": write_colour_image(folder / "blue.webp", "blue", seed=2),
        "red_bmp": write_colour_image(folder / "red.bmp", "red", seed=3),
        "green_jpeg": write_colour_image(folder / "green.JPEG", "green", seed=4),
    }


def test_an_image_model_classifies_images(trained_images, images, capsys):
    status, out, err = run_main(capsys, *images.values(), "--checkpoint", trained_images[0])

    assert status == 0, err
    assert top1(out) == ["red", "green", "blue", "red", "green"]
    for path in images.values():
        assert f"{path}: 1x1 views, " in out


def test_a_folder_of_videos_and_images(trained_images, images, videos, tmp_path, capsys):
    for name in ("red", "green"):
        shutil.copy(images[name], tmp_path)
    shutil.copy(videos["blue"], tmp_path / "sub.avi")
    (tmp_path / "notes.txt").write_text("neither")

    status, out, err = run_main(capsys, tmp_path, "--checkpoint", trained_images[0], "--json")

    assert status == 0, err
    results = json.loads(out)
    assert [(r["path"], r["top_k"][0]["class"]) for r in results] == [
        (str(tmp_path / "green.png"), "green"),
        (str(tmp_path / "red.jpg"), "red"),
        (str(tmp_path / "sub.avi"), "blue"),  # its middle frame
    ]
    assert [r["views"] for r in results] == ["1x1"] * 3


def test_a_video_and_an_image_of_one_name_get_outputs_and_plots_each(
    trained_images, images, videos, tmp_path, capsys
):
    (tmp_path / "in").mkdir()
    shutil.copy(videos["red"], tmp_path / "in" / "x.mp4")
    shutil.copy(images["green"], tmp_path / "in" / "x.png")
    out = tmp_path / "out"

    status, _, err = run_main(
        capsys, tmp_path / "in", "--checkpoint", trained_images[0], "--output", out, "--plot", out
    )

    assert status == 0, err
    # The annotated video and image keep their names; the plots beside them get the extension.
    assert sorted(path.name for path in out.iterdir()) == [
        "x.mp4",
        "x.png",
        "x_mp4.png",
        "x_png.png",
    ]


def test_an_image_model_classifies_frames_spread_over_a_video(trained_images, videos, capsys):
    checkpoint = trained_images[0]

    status, out, _ = run_main(capsys, videos["red"], "--checkpoint", checkpoint)
    assert status == 0 and top1(out) == ["red"]
    assert "1x1 views" in out  # the config's test views: the middle frame

    # The first and the last frame: half red, half blue.
    status, out, _ = run_main(
        capsys, videos["red_then_blue"], "--checkpoint", checkpoint, "--views", "2x1", "--json"
    )
    assert status == 0
    top = json.loads(out)[0]["top_k"]
    assert {entry["class"] for entry in top[:2]} == {"red", "blue"}
    assert top[0]["probability"] < 0.75


def test_an_image_model_takes_one_crop_per_frame(trained_images, videos, capsys):
    status, out, err = run_main(
        capsys, videos["red"], "--checkpoint", trained_images[0], "--views", "3x3"
    )

    assert status == 2 and out == ""
    assert err == [
        f"error: --views 3x3: {trained_images[0]} is an image model, which classifies one centre "
        "crop per frame: use --views 3x1"
    ]


def test_a_video_model_refuses_images_and_classifies_the_videos(trained, images, videos, capsys):
    status, out, err = run_main(capsys, images["red"], videos["green"], "--checkpoint", trained[0])

    assert status == 1
    assert top1(out) == ["green"]
    assert err == [
        f"error: {images['red']}: a still image, but {trained[0]} classifies 4-frame video clips: "
        "give it videos, or classify images with an image model (e.g. --checkpoint "
        "rev_vit_b_in1k)",
        "error: 1 of 2 inputs could not be classified",
    ]


def test_bad_images_are_one_error_line_each(trained_images, images, tmp_path, capsys):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image\n" * 10)
    data = Path(images["red"]).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    inputs = [tmp_path / name for name in ("empty.jpg", "text.png", "cut.jpg")]

    status, out, err = run_main(capsys, *inputs, images["green"], "--checkpoint", trained_images[0])

    assert status == 1
    assert top1(out) == ["green"]
    assert err[:2] == [
        f"error: {inputs[0]}: empty file",
        f"error: {inputs[1]}: not an image, or a damaged one",
    ]
    assert err[2].startswith(f"error: {inputs[2]}: cannot read the image: image file is truncated")
    assert err[3:] == ["error: 3 of 4 inputs could not be classified"]


def test_annotated_images_keep_their_format_and_size(trained_images, tmp_path, capsys):
    sources = [
        write_colour_image(tmp_path / "red.jpg", "red", height=120, width=200),
        write_colour_image(tmp_path / "green.png", "green", height=160, width=120),
    ]

    status, out, err = run_main(
        capsys,
        *sources,
        "--checkpoint",
        trained_images[0],
        "--output",
        tmp_path / "annotated",
        "--plot",
        tmp_path / "plots",
        "--json",
        "--topk",
        "2",
    )

    assert status == 0, err
    annotated = [tmp_path / "annotated" / name for name in ("red.jpg", "green.png")]
    plots = [tmp_path / "plots" / name for name in ("red.png", "green.png")]
    assert err == []
    results = json.loads(out)
    assert [(r["output"], r["plot"]) for r in results] == [
        (str(a), str(p)) for a, p in zip(annotated, plots, strict=True)
    ]
    for path, source in zip(annotated, sources, strict=True):
        with Image.open(path) as picture, Image.open(source) as original:
            assert picture.format == original.format
            assert picture.size == original.size
            drawn, before = (np.asarray(p.convert("L"), dtype=float) for p in (picture, original))
        # The labels' dark box (white text on it) at the top left; below the top third the
        # picture is as it was (but for JPEG's second compression).
        third = len(drawn) // 3
        corner = np.s_[: third // 2, : drawn.shape[1] // 4]
        assert (drawn[corner] < 0.6 * before[corner]).mean() > 0.4
        assert np.abs(drawn[third:] - before[third:]).mean() < 3


def test_a_large_image_is_read_without_pils_warning_and_a_larger_one_refused(tmp_path, monkeypatch):
    path = write_colour_image(tmp_path / "large.png", "red", height=48, width=64)
    # PIL warns of images above MAX_IMAGE_PIXELS and refuses those above twice as many.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 48 * 64 - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(path).size == (64, 48)

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 48 * 64 // 2 - 1)
    with pytest.raises(DataError, match=rf"^{path}: cannot read the image: .*3072 pixels"):
        read_image(path)


def test_images_are_read_upright(tmp_path):
    path = tmp_path / "portrait.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: shown turned a quarter clockwise
    Image.new("RGB", (64, 48), (200, 30, 30)).save(path, exif=exif)

    assert read_image(str(path)).size == (48, 64)


def test_an_imagenet_release_classifies_an_image_as_pyslowfast_tests(tmp_path, monkeypatch, capsys):
    """rev_vit_s_in1k's file in the hub cache (random weights, the release's architecture):
    the demo's probabilities are those of the model on PySlowFast's ImageNet test view, made
    with torchvision's transforms: short side 256 (bicubic), centre 224, ImageNet mean/std."""
    release = RELEASES["rev_vit_s_in1k"]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(0)
    model = rev_vit_s(1000, num_frames=1).eval()
    cached = tmp_path / "torch" / "hub" / "checkpoints" / release.file_name
    cached.parent.mkdir(parents=True)
    save_checkpoint(cached, model)
    photo = tmp_path / "photo.png"
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (300, 400, 3), dtype=torch.uint8, generator=generator)
    Image.fromarray(pixels.numpy()).save(photo)
    test_view = transforms.Compose(
        [
            transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(release.mean, release.std),
        ]
    )
    with torch.no_grad(), Image.open(photo) as image:
        expected = model(test_view(image.convert("RGB"))[None]).softmax(dim=1)[0]

    status, out, err = run_main(
        capsys, photo, "--checkpoint", "rev_vit_s_in1k", "--json", "--device", "cpu"
    )

    assert status == 0, err
    top = json.loads(out)[0]["top_k"]
    values, indices = expected.topk(5)
    names = release.class_names()
    assert [entry["class"] for entry in top] == [names[i] for i in indices]
    assert [entry["probability"] for entry in top] == pytest.approx(values.tolist(), abs=1e-5)


def test_help_names_real_releases():
    help_text = classify.build_parser().format_help()
    for name in ("rev_mvit_b_16x4_k400", "rev_vit_b_in1k"):
        assert name in help_text and name in RELEASES


# --- bit depths and modes ---------------------------------------------------------------------

SIXTEEN_BIT = np.array([[0, 257, 1000, 32896], [40000, 65280, 65534, 65535]], dtype=np.uint16)


def write_png16(path, samples):
    """A 16-bit PNG of `samples` (uint16: (H, W) grey, (H, W, 2) grey and alpha, (H, W, 3) RGB,
    (H, W, 4) RGBA), written byte by byte: PIL writes 16 bits only for grey."""
    samples = np.asarray(samples, dtype=">u2")
    if samples.ndim == 2:
        samples = samples[..., None]
    height, width, channels = samples.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = b"".join(b"\0" + row.tobytes() for row in samples.reshape(height, -1))

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    Path(path).write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    return str(path)


def grey(values):
    """(H, W, 3) uint8 of the grey `values`."""
    return np.repeat(np.asarray(values, dtype=np.uint8)[..., None], 3, axis=2)


def test_a_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "grey16.png"
    Image.fromarray(SIXTEEN_BIT).save(path)  # PIL writes mode I;16 as a 16-bit PNG
    with Image.open(path) as written:
        assert written.mode == "I;16"

    picture = read_image(str(path))

    assert picture.mode == "RGB"
    expected = np.rint(SIXTEEN_BIT / 257)  # 0, 1, 4, 128, 156, 254, 255, 255
    assert np.array_equal(np.asarray(picture), grey(expected))


@pytest.mark.parametrize("channels", [2, 3, 4], ids=["LA", "RGB", "RGBA"])
def test_16_bit_colour_pngs_are_scaled(tmp_path, channels):
    samples = np.stack([SIXTEEN_BIT, 65535 - SIXTEEN_BIT, SIXTEEN_BIT // 2, SIXTEEN_BIT], axis=2)
    samples = samples[..., [0, 3]] if channels == 2 else samples[..., :channels]
    picture = read_image(write_png16(tmp_path / "colour16.png", samples))

    colour = samples[..., :1].repeat(3, axis=2) if channels == 2 else samples[..., :3]
    # PIL keeps the high byte of each sample: v / 256 rounded down, within 1 of v / 257.
    assert np.abs(np.asarray(picture, dtype=float) - colour / 257).max() <= 1


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.fromarray(SIXTEEN_BIT.astype(np.int32)), grey(np.rint(SIXTEEN_BIT / 257))),
        # 32-bit integers beyond the 16-bit range are clipped to it.
        (Image.fromarray(np.array([[-5, 70000]], dtype=np.int32)), grey([[0, 255]])),
        (
            Image.fromarray(np.array([[0.0, 0.25, 0.5, 1.0, 1.5, -0.5]], dtype=np.float32)),
            grey([[0, 64, 128, 255, 255, 0]]),
        ),
        (Image.fromarray(np.array([[True, False]])), grey([[255, 0]])),
        (Image.fromarray(np.array([[7, 200]], dtype=np.uint8)), grey([[7, 200]])),
        (Image.new("LA", (2, 1), (90, 0)), grey([[90, 90]])),  # alpha dropped
        (Image.new("RGBA", (1, 1), (10, 20, 30, 40)), np.array([[[10, 20, 30]]])),
        (Image.new("CMYK", (1, 1), (255, 0, 0, 0)), np.array([[[0, 255, 255]]])),
        (Image.new("CMYK", (1, 1), (0, 0, 0, 0)), np.array([[[255, 255, 255]]])),
        (Image.new("La", (1, 1), (100, 255)), grey([[100]])),
    ],
    ids=["I", "I clipped", "F", "1", "L", "LA", "RGBA", "CMYK cyan", "CMYK white", "La"],
)
def test_every_mode_becomes_8_bit_rgb(image, expected):
    picture = rgb_picture(image)

    assert picture.mode == "RGB"
    assert np.array_equal(np.asarray(picture), expected)


def test_a_palette_image_shows_its_colours(tmp_path):
    palette = Image.new("P", (2, 1))
    palette.putpalette([200, 10, 20, 5, 250, 30] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "palette.png")

    picture = read_image(str(tmp_path / "palette.png"))

    assert np.asarray(picture).tolist() == [[[200, 10, 20], [5, 250, 30]]]


@pytest.mark.parametrize("mode", ["I", "F", "CMYK"])
def test_images_of_deep_modes_are_read_from_their_files(tmp_path, mode):
    """TIFF holds 32-bit integer and float pictures (a .png PIL would refuse to write)."""
    values = {
        "I": Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.int32)),
        "F": Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)),
        "CMYK": Image.frombytes("CMYK", (3, 1), bytes([0, 0, 0, 255, 0, 0, 0, 127, 0, 0, 0, 0])),
    }[mode]
    values.save(tmp_path / "deep.tiff")
    with Image.open(tmp_path / "deep.tiff") as written:
        assert written.mode == mode

    assert np.asarray(read_image(str(tmp_path / "deep.tiff"))).tolist() == [
        [[0, 0, 0], [128, 128, 128], [255, 255, 255]]
    ]


def test_the_demo_annotates_a_16_bit_png_in_its_own_greys(trained_images, tmp_path, capsys):
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (48, 1))
    Image.fromarray(ramp).save(tmp_path / "ramp.png")

    status, _, err = run_main(
        capsys,
        tmp_path / "ramp.png",
        "--checkpoint",
        trained_images[0],
        "--output",
        tmp_path / "annotated.png",
    )

    assert status == 0, err
    with Image.open(tmp_path / "annotated.png") as annotated:
        drawn = np.asarray(annotated.convert("RGB"), dtype=float)
    below_labels = drawn[len(drawn) // 2 :, :, 0]
    assert np.abs(below_labels - np.rint(ramp[0] / 257)).max() <= 1
    assert (below_labels == 255).mean() < 0.05
