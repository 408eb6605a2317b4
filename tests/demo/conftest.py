"""A tiny Rev-MViT trained here to tell red, green and blue videos apart, and such videos."""

import contextlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from data.videos import write_audio_only
from PIL import Image

from revvideo.checkpoint import save_checkpoint
from revvideo.cli import classify
from revvideo.config import get_cfg, load_config
from revvideo.data.synthetic import write_video
from revvideo.models import build_model

ROOT = Path(__file__).resolve().parents[2]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
CLASS_NAMES = list(COLOURS)


def load_script(relative_path):
    """The Python file at `relative_path` (from the repository root), imported as a module."""
    path = ROOT / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_cfg():
    """Rev-MViT with 3 layers (a stage transition at layer 1) on 4-frame 32 px clips."""
    cfg = get_cfg()
    cfg.MODEL.NUM_CLASSES = len(COLOURS)
    cfg.MODEL.DROPOUT_RATE = 0.0
    cfg.DATA.NUM_FRAMES = 4
    cfg.DATA.SAMPLING_RATE = 2
    cfg.DATA.TARGET_FPS = 15
    cfg.DATA.TRAIN_CROP_SIZE = 32
    cfg.DATA.TEST_CROP_SIZE = 32
    cfg.DATA.TRAIN_JITTER_SCALES = [32, 40]
    cfg.MVIT.CLS_EMBED_ON = False
    cfg.MVIT.SEP_POS_EMBED = True
    cfg.MVIT.DEPTH = 3
    cfg.MVIT.EMBED_DIM = 16
    cfg.MVIT.PATCH_PADDING = [1, 3, 3]
    cfg.MVIT.DIM_MUL = [[1, 2.0]]
    cfg.MVIT.HEAD_MUL = [[1, 2.0]]
    cfg.MVIT.POOL_Q_STRIDE = [[1, 1, 2, 2]]
    cfg.MVIT.POOL_KV_STRIDE_ADAPTIVE = [1, 4, 4]
    cfg.MVIT.POOL_KVQ_KERNEL = [3, 3, 3]
    cfg.MVIT.DROPPATH_RATE = 0.0
    cfg.MVIT.REV.ENABLE = True
    cfg.MVIT.REV.BUFFER_LAYERS = [1]
    cfg.TEST.NUM_ENSEMBLE_VIEWS = 3
    cfg.TEST.NUM_SPATIAL_CROPS = 1
    return cfg


def tiny_image_cfg():
    """configs/imagenet/REV_VIT_S.yaml (an image model: one-frame clips, ImageNet's mean and
    std) with 2 layers of width 32 on 32 px images (4 x 4 patches of 8 px) and our 3 classes."""
    cfg = load_config(ROOT / "configs" / "imagenet" / "REV_VIT_S.yaml")
    cfg.MODEL.NUM_CLASSES = len(COLOURS)
    cfg.DATA.TRAIN_CROP_SIZE = cfg.DATA.TEST_CROP_SIZE = 32
    cfg.MVIT.EMBED_DIM, cfg.MVIT.NUM_HEADS, cfg.MVIT.DEPTH = 32, 2, 2
    cfg.MVIT.PATCH_KERNEL = cfg.MVIT.PATCH_STRIDE = [8, 8]
    cfg.MVIT.DROPPATH_RATE = 0.0
    return cfg


def colour_frames(colours, frames_each=30, height=48, width=64, seed=0):
    """uint8 (T, H, W, 3): `frames_each` frames of each colour in turn, with pixel noise."""
    rng = np.random.default_rng(seed)
    parts = []
    for colour in colours:
        noise = rng.integers(-25, 26, size=(frames_each, height, width, 3))
        parts.append(np.clip(np.array(COLOURS[colour]) + noise, 0, 255).astype(np.uint8))
    return np.concatenate(parts)


def write_colour_video(path, *colours, fps=15, **kwargs):
    """An H.264 (or, for .avi, MPEG-4) video showing each colour for 2 s by default."""
    codec = "mpeg4" if str(path).endswith(".avi") else "libx264"
    write_video(str(path), colour_frames(colours or ("red",), **kwargs), fps, codec)
    return str(path)


def write_colour_image(path, colour, height=48, width=64, seed=0):
    """A picture of `colour` with pixel noise; the format follows the extension."""
    Image.fromarray(colour_frames((colour,), 1, height, width, seed)[0]).save(path)
    return str(path)


def write_video_with_audio(path, colour="red", seconds=2, fps=15, audio_codec="aac"):
    """A video of `colour` with a 440 Hz tone of the same length (mono, 22.05 kHz)."""
    rate, samples_per_frame = 22050, 1024
    frames = colour_frames((colour,), frames_each=seconds * fps)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        audio = container.add_stream(audio_codec, rate=rate)
        audio.layout = "mono"
        for image in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        for index in range(seconds * rate // samples_per_frame):
            time = (np.arange(samples_per_frame) + index * samples_per_frame) / rate
            tone = (0.5 * np.sin(2 * np.pi * 440 * time)).astype(np.float32)[None]
            frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, index * samples_per_frame
            container.mux(audio.encode(frame))
        container.mux(video.encode())
        container.mux(audio.encode())
    return str(path)


def training_batch(cfg, generator, size=12):
    """Normalised clips of random colours (the videos' colours with noise) and their labels."""
    labels = torch.randint(len(COLOURS), (size,), generator=generator)
    base = torch.tensor(list(COLOURS.values()), dtype=torch.float32)[labels]
    shape = (size, 3, cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE, cfg.DATA.TRAIN_CROP_SIZE)
    pixels = base[:, :, None, None, None] + 40 * torch.randn(shape, generator=generator)
    mean = torch.tensor(cfg.DATA.MEAN)[:, None, None, None]
    std = torch.tensor(cfg.DATA.STD)[:, None, None, None]
    return (pixels.clamp(0, 255) / 255 - mean) / std, labels


def train_tiny(cfg, steps=60):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = build_model(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        clips, labels = training_batch(cfg, generator)
        loss = torch.nn.functional.cross_entropy(model(clips), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@contextlib.contextmanager
def single_thread():
    """Tiny models run single-threaded: on a busy machine a second OpenMP thread mostly waits
    at barriers (a training step of the tiny model: 30 ms alone, 2 s with two threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(checkpoint path, cfg) of the tiny colour classifier, saved as training saves it."""
    cfg = tiny_cfg()
    path = tmp_path_factory.mktemp("trained") / "checkpoint_epoch_00001.pyth"
    with single_thread():
        model = train_tiny(cfg)
    save_checkpoint(path, model, cfg=cfg.dump(), class_names=CLASS_NAMES, epoch=1)
    return path, cfg


@pytest.fixture(scope="session")
def trained_images(tmp_path_factory):
    """(checkpoint path, cfg) of a tiny image model (Rev-ViT) that tells the colours apart."""
    cfg = tiny_image_cfg()
    path = tmp_path_factory.mktemp("trained_images") / "image_model.pyth"
    with single_thread():
        model = train_tiny(cfg)
    save_checkpoint(path, model, cfg=cfg.dump(), class_names=CLASS_NAMES, epoch=1)
    return path, cfg


@pytest.fixture(scope="session")
def videos(tmp_path_factory):
    """One 2 s video per colour (mp4, mp4, avi) and one that turns from red to blue."""
    folder = tmp_path_factory.mktemp("videos")
    return {
        "red": write_colour_video(folder / "red.mp4", "red"),
        "green": write_colour_video(folder / "green.mp4", "green", seed=1),
        "blue": write_colour_video(folder / "blue.avi", "blue", seed=2),
        "red_then_blue": write_colour_video(folder / "red_then_blue.mp4", "red", "blue"),
    }


def run_main(capsys, *args):
    """classify.main in this process: (exit status, stdout, stderr lines)."""
    status = classify.main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err.splitlines()


def run_tool(script, *args, cwd=None):
    """Runs tools/<script> or demo/<script> in a new interpreter; returns the finished process."""
    return subprocess.run(
        [sys.executable, str(ROOT / script), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        timeout=300,
    )


def write_truncated(path, source, fraction=0.6):
    """The first `fraction` of `source`'s bytes."""
    data = Path(source).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * fraction)])
    return str(path)


def write_partly_damaged(path, fraction=0.6):
    """A 4 s red video whose index is complete (at the front) but of whose bytes only the
    first `fraction` are left."""
    whole = Path(path).with_suffix(".whole" + Path(path).suffix)
    write_video(
        str(whole),
        colour_frames(("red", "red")),
        15,
        "libx264",
        container_options={"movflags": "faststart"} if str(path).endswith(".mp4") else None,
    )
    return write_truncated(path, whole, fraction)


@pytest.fixture(scope="session")
def bad_videos(tmp_path_factory, videos):
    """Files no video can be read from, by what is wrong with them."""
    folder = tmp_path_factory.mktemp("bad")
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "text.mp4").write_text("not a video\n" * 100)
    # An H.264 elementary stream, without a container (the muxer follows the extension).
    write_video(str(folder / "raw.h264"), colour_frames(("red",)), 15, "libx264")
    return {
        "missing": str(folder / "missing.mp4"),
        "empty": str(folder / "empty.mp4"),
        "truncated": write_truncated(folder / "truncated.mp4", videos["red"], 0.5),
        "not a video": str(folder / "text.mp4"),
        "no video stream": write_audio_only(folder / "audio.m4a"),
        "raw stream": str(folder / "raw.h264"),
    }
