"""demo/classify.py end to end with a checkpoint trained here, its outputs, and bad inputs."""

import contextlib
import json
import re
import shutil
import urllib.error
from pathlib import Path

import av
import pytest
import torch
from PIL import Image

from revvideo.checkpoint import RELEASES, Release, load_weights, save_checkpoint
from revvideo.cli import classify
from revvideo.data.paths import VIDEO_EXTENSIONS
from revvideo.demo import run
from revvideo.demo.classifier import load_classifier
from revvideo.demo.images import IMAGE_EXTENSIONS
from revvideo.models import build_model

from .conftest import (
    CLASS_NAMES,
    ROOT,
    run_main,
    run_tool,
    tiny_cfg,
    write_colour_video,
    write_partly_damaged,
    write_truncated,
)

CPU = torch.device("cpu")


def reject_non_finite(constant):
    raise AssertionError(f"{constant} is not JSON")


# --- classifying ------------------------------------------------------------------------------


def test_classifies_videos_and_prints_json(trained, videos):
    checkpoint, _ = trained
    run = run_tool(
        "demo/classify.py",
        videos["red"],
        videos["green"],
        videos["blue"],
        "--checkpoint",
        checkpoint,
        "--json",
        "--topk",
        "2",
    )

    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout, parse_constant=reject_non_finite)
    assert [result["path"] for result in results] == [videos[c] for c in CLASS_NAMES]
    for colour, result in zip(CLASS_NAMES, results, strict=True):
        assert result["top_k"][0]["class"] == colour
        assert result["top_k"][0]["probability"] > 0.9
        assert len(result["top_k"]) == 2
        assert result["views"] == "3x1"  # the config's TEST views
        assert result["seconds"] > 0
        assert result["warnings"] == []


def test_writes_an_annotated_video_and_a_bar_chart(trained, videos, tmp_path):
    checkpoint, _ = trained
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(videos["red_then_blue"], folder)
    run = run_tool(
        "demo/classify.py",
        folder,
        "--checkpoint",
        checkpoint,
        "--views",
        "4x3",
        "--output",
        tmp_path / "out" / "annotated.mp4",
        "--plot",
        tmp_path / "out" / "top.png",
    )

    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith(f"{folder / 'red_then_blue.mp4'}: 4x3 views, ")
    assert lines[0].endswith(" s")
    assert {line.split()[1] for line in lines[1:3]} == {"red", "blue"}
    # Three classes, fewer than --topk, then the files written.
    assert lines[4:] == [
        f"  wrote {tmp_path / 'out' / 'annotated.mp4'}",
        f"  wrote {tmp_path / 'out' / 'top.png'}",
    ]
    with av.open(str(tmp_path / "out" / "annotated.mp4")) as container:
        stream = container.streams.video[0]
        assert container.format.name.startswith("mov,mp4")
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert (stream.width, stream.height) == (64, 48)
        assert sum(1 for _ in container.decode(stream)) == 60
    with Image.open(tmp_path / "out" / "top.png") as chart:
        assert chart.format == "PNG" and chart.width > 300


def test_timeline_scores_follow_the_video(trained, videos):
    classifier = load_classifier(trained[0], None, CPU)
    timeline = classifier.timeline(videos["red_then_blue"])

    assert len(timeline.windows) == 14  # one clip long (0.53 s), every half clip, over 4 s
    assert CLASS_NAMES[timeline.scores_at(0.3).argmax()] == "red"
    assert CLASS_NAMES[timeline.scores_at(3.7).argmax()] == "blue"
    assert [segment.name for segment in timeline.segments] == ["red", "blue"]
    assert timeline.segment_at(100.0) == timeline.segments[-1]
    # Past the last window (none covers it) the nearest one speaks.
    assert torch.equal(timeline.scores_at(100.0), timeline.windows[-1].probabilities)


def test_several_videos_to_folders(trained, videos, tmp_path, capsys):
    status, out, err = run_main(
        capsys,
        videos["red"],
        videos["green"],
        "--checkpoint",
        trained[0],
        "--plot",
        tmp_path / "plots",
        "--views",
        "1x1",
    )

    assert status == 0, err
    assert sorted(path.name for path in (tmp_path / "plots").iterdir()) == ["green.png", "red.png"]
    assert "1x1 views" in out


def test_cfg_overrides_the_stored_config(trained, videos, tmp_path, capsys):
    checkpoint, cfg = trained
    cfg = cfg.clone()
    cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS = 2, 3
    (tmp_path / "cfg.yaml").write_text(cfg.dump())

    status, out, _ = run_main(
        capsys, videos["red"], "--checkpoint", checkpoint, "--cfg", tmp_path / "cfg.yaml"
    )

    assert status == 0
    assert "2x3 views" in out.splitlines()[0]


def test_class_names_fall_back_to_placeholders(trained, videos, tmp_path, capsys):
    cfg = trained[1]
    save_checkpoint(tmp_path / "unnamed.pyth", build_model(cfg), cfg=cfg.dump())

    status, out, _ = run_main(capsys, videos["red"], "--checkpoint", tmp_path / "unnamed.pyth")

    assert status == 0
    assert {line.split()[1] for line in out.splitlines()[1:]} == {"class_0", "class_1", "class_2"}


def test_partly_damaged_video_is_classified_from_what_decodes(trained, tmp_path, capsys):
    damaged = [write_partly_damaged(tmp_path / name) for name in ("cut.mp4", "cut.mkv")]

    status, out, err = run_main(
        capsys, *damaged, "--checkpoint", trained[0], "--output", tmp_path / "annotated"
    )

    assert status == 0, err
    assert [line.split()[1] for line in out.splitlines() if line.startswith("  1.")] == [
        "red",
        "red",
    ]
    assert len(err) == 2
    for path, line in zip(damaged, err, strict=True):
        assert line.startswith(f"warning: {path}: ")
        assert "; classified from its first " in line
    # Both named cut: the second output's name says its extension.
    assert [line for line in out.splitlines() if line.startswith("  wrote ")] == [
        f"  wrote {tmp_path / 'annotated' / name}" for name in ("cut.mp4", "cut_mkv.mp4")
    ]
    with av.open(str(tmp_path / "annotated" / "cut.mp4")) as container:
        written = sum(1 for _ in container.decode(video=0))
    assert 10 < written < 60  # the frames that decode, not the 4 s the header promises


def test_video_shorter_than_a_clip_gets_a_warning(trained, tmp_path, capsys):
    short = write_colour_video(tmp_path / "short.mp4", "green", frames_each=4)

    status, out, err = run_main(capsys, short, "--checkpoint", trained[0])

    assert status == 0
    assert out.splitlines()[1].split()[1] == "green"
    assert err == [
        f"warning: {short}: shorter than a clip (0.27 s < 0.53 s): its last frame fills the rest"
    ]


def register_tiny_release(trained, tmp_path, monkeypatch):
    """Makes the tiny colour classifier the release "tiny_colours", downloaded from its file
    into a hub cache of its own (tmp_path/torch)."""
    checkpoint, cfg = trained
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    release = Release(
        name="tiny_colours",
        builder="tiny_colours",
        url=Path(checkpoint).as_uri(),
        file_name="tiny_colours.pyth",
        source="this test",
        top1=100.0,
        views=(2, 1),
        num_classes=3,
        num_frames=4,
        sampling_rate=2,
        target_fps=15,
        crop_size=32,
    )
    monkeypatch.setitem(RELEASES, release.name, release)
    monkeypatch.setattr(release.__class__, "class_names", lambda self: CLASS_NAMES)

    def tiny_colours(num_classes, weights=None):
        return load_weights(build_model(cfg), weights, "tiny_colours")

    monkeypatch.setattr("revvideo.models.tiny_colours", tiny_colours, raising=False)


def test_release_name_downloads_and_uses_the_release_settings(
    trained, videos, tmp_path, monkeypatch, capsys
):
    register_tiny_release(trained, tmp_path, monkeypatch)

    status, out, err = run_main(capsys, videos["blue"], "--checkpoint", "tiny_colours")

    assert status == 0, err
    assert "2x1 views" in out.splitlines()[0]
    assert out.splitlines()[1].split()[1] == "blue"
    assert (tmp_path / "torch" / "hub" / "checkpoints" / "tiny_colours.pyth").is_file()


def test_a_release_that_cannot_be_downloaded_names_the_option(
    trained, videos, tmp_path, monkeypatch, capsys
):
    register_tiny_release(trained, tmp_path, monkeypatch)

    def offline(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)

    status, out, err = run_main(capsys, videos["blue"], "--checkpoint", "tiny_colours")

    assert status == 2 and out == ""
    assert len(err) == 1
    assert err[0].endswith(
        "; download it elsewhere and pass --checkpoint <path> or save it as "
        f"{tmp_path / 'torch' / 'hub' / 'checkpoints' / 'tiny_colours.pyth'}"
    ), err


# --- the default checkpoint -------------------------------------------------------------------


def test_without_checkpoint_uses_the_quick_starts_newest(
    trained, videos, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / run.QUICK_START_CONFIG).parent.mkdir(parents=True)
    (tmp_path / run.QUICK_START_CONFIG).write_text("OUTPUT_DIR: output/quick\n")

    status, out, err = run_main(capsys, videos["red"])

    assert status == 2
    assert err == [
        "error: no --checkpoint given and the quick start has written none to "
        "output/quick/checkpoints: train one with `python tools/run_net.py --cfg "
        "configs/synthetic/REV_MVIT_XS.yaml`, or pass --checkpoint <file.pyth or a release: "
        f"{', '.join(sorted(RELEASES))}>"
    ]

    checkpoints = tmp_path / "output" / "quick" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "checkpoint_epoch_00001.pyth").write_text("older, and not a checkpoint")
    shutil.copy(trained[0], checkpoints / "checkpoint_epoch_00002.pyth")

    status, out, err = run_main(capsys, videos["red"])

    assert status == 0
    assert err == [f"using {Path('output/quick/checkpoints/checkpoint_epoch_00002.pyth')}"]
    assert out.splitlines()[1].split()[1] == "red"


def test_quick_start_config_names_the_output_dir(trained, tmp_path, monkeypatch):
    # The repository's own quick-start config, in a copy of the checkout: the default checkpoint
    # is the newest one training with it writes.
    monkeypatch.chdir(tmp_path)
    (tmp_path / run.QUICK_START_CONFIG).parent.mkdir(parents=True)
    shutil.copy(ROOT / run.QUICK_START_CONFIG, tmp_path / run.QUICK_START_CONFIG)
    checkpoints = tmp_path / "output" / "rev_mvit_xs" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for epoch in (1, 2):
        shutil.copy(trained[0], checkpoints / f"checkpoint_epoch_{epoch:05d}.pyth")

    assert run.quick_start_checkpoint() == Path(
        "output/rev_mvit_xs/checkpoints/checkpoint_epoch_00002.pyth"
    )


# --- bad inputs -------------------------------------------------------------------------------

RAW_STREAM = (
    "raw H.264 video without a container, so its frames have no times: wrap it in one with "
    "`ffmpeg -framerate <its frame rate> -i raw.h264 -c copy raw.mp4`"
)


def test_each_bad_video_is_one_error_line_and_the_rest_is_classified(trained, videos, bad_videos):
    run = run_tool(
        "demo/classify.py", *bad_videos.values(), videos["green"], "--checkpoint", trained[0]
    )

    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    errors = run.stderr.splitlines()
    assert errors == [
        f"error: {bad_videos['missing']}: no such file or folder",
        f"error: {bad_videos['empty']}: empty file",
        f"error: {bad_videos['truncated']}: cannot open: Invalid data found when processing input",
        f"error: {bad_videos['not a video']}: cannot open: Invalid data found when processing input",
        f"error: {bad_videos['no video stream']}: no video stream",
        f"error: {bad_videos['raw stream']}: {RAW_STREAM}",
        "error: 6 of 7 inputs could not be classified",
    ]
    assert run.stdout.splitlines()[1].split()[1] == "green"


@pytest.mark.parametrize(
    "kind", ["missing", "empty", "truncated", "not a video", "no video stream", "raw stream"]
)
def test_a_single_bad_video_fails_with_one_line(trained, bad_videos, kind, capsys):
    status, out, err = run_main(capsys, bad_videos[kind], "--checkpoint", trained[0], "--json")

    assert status == 1
    assert len(err) == 1 and err[0].startswith(f"error: {bad_videos[kind]}: ")
    assert json.loads(out) == [{"path": bad_videos[kind], "error": err[0][len("error: ") :]}]


def test_folder_without_videos(trained, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("no videos here")

    status, _, err = run_main(capsys, tmp_path, "--checkpoint", trained[0])

    assert status == 1
    extensions = ", ".join(VIDEO_EXTENSIONS + IMAGE_EXTENSIONS)
    assert err == [f"error: {tmp_path}: no video or image files ({extensions})"]


def write_garbage(path, trained):
    path.write_text("this is not a checkpoint\n")


def write_truncated_checkpoint(path, trained):
    write_truncated(path, trained[0], 0.5)


def write_without_config(path, trained):
    save_checkpoint(path, build_model(trained[1]))


def write_pyslowfast_config(path, trained):
    save_checkpoint(path, build_model(trained[1]), cfg="DETECTION:\n  ENABLE: False\n")


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (None, r"checkpoint .*absent\.pyth does not exist$"),
        (write_garbage, r"is not a PyTorch checkpoint, or it is corrupt or truncated$"),
        (
            write_truncated_checkpoint,
            r"is not a PyTorch checkpoint, or it is corrupt or truncated$",
        ),
        (write_without_config, r"holds no revvideo config; pass the YAML config .* with --cfg$"),
        (
            write_pyslowfast_config,
            r"the config stored in .* is not a revvideo config \(Non-existent config key: "
            r"DETECTION\); pass the YAML config that describes its model$",
        ),
    ],
    ids=["missing", "garbage", "truncated", "no config", "foreign config"],
)
def test_unusable_checkpoint_is_one_error_line(trained, videos, tmp_path, capsys, write, message):
    path = tmp_path / "absent.pyth"
    if write is not None:
        write(path, trained)

    status, out, err = run_main(capsys, videos["red"], "--checkpoint", path)

    assert status == 2
    assert out == ""
    assert len(err) == 1
    assert err[0].startswith("error: ")
    assert re.search(message, err[0]), err[0]


def test_checkpoint_that_does_not_fit_the_config(trained, videos, tmp_path, capsys):
    cfg = tiny_cfg()
    cfg.MVIT.DEPTH = 4
    (tmp_path / "deeper.yaml").write_text(cfg.dump())

    status, _, err = run_main(
        capsys, videos["red"], "--checkpoint", trained[0], "--cfg", tmp_path / "deeper.yaml"
    )

    assert status == 2
    assert len(err) == 1
    assert err[0].startswith(f"error: {trained[0]} does not fit RevMViT: ")
    assert "missing keys (rev_backbone.layers.3." in err[0]


VIEWS_USAGE = "--views takes <clips>x<crops> such as 5x1 or 10x3"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--views", "0x1"], f"argument --views: {VIEWS_USAGE}, got '0x1' (see --help)"),
        (["--views", "five"], f"argument --views: {VIEWS_USAGE}, got 'five' (see --help)"),
        (["--topk", "0"], "argument --topk: expected a positive integer, got '0' (see --help)"),
        ([], "the following arguments are required: inputs (see --help)"),
    ],
)
def test_malformed_options_are_one_error_line(capsys, options, message):
    with pytest.raises(SystemExit) as exit_status:
        classify.main(options)

    assert exit_status.value.code == 2
    assert capsys.readouterr().err == f"error: {message}\n"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        # Installed, revvideo says which configs it ships.
        (
            ["--cfg", "absent.yaml"],
            r"config file not found: absent\.yaml( \(revvideo ships configs/ .*synthetic/.+\))?",
        ),
    ],
)
def test_unusable_options_are_one_error_line(trained, videos, capsys, options, message):
    status, _, err = run_main(capsys, videos["red"], "--checkpoint", trained[0], *options)

    assert status == 2
    assert len(err) == 1 and re.fullmatch(f"error: {message}", err[0]), err


@pytest.mark.parametrize("device", ["toaster", "xpu", "hpu", "vulkan", "meta", "cuda:99"])
def test_a_device_this_machine_lacks_is_one_error_line(trained, videos, capsys, device):
    status, out, err = run_main(
        capsys, videos["red"], "--checkpoint", trained[0], "--device", device
    )

    assert status == 2 and out == ""
    assert len(err) == 1
    assert re.fullmatch(
        rf"error: --device {device}: no such device on this machine \(it has cpu(, \w+:\d+)*\)",
        err[0],
    ), err


def test_devices_of_an_accelerator_are_taken_by_index(monkeypatch):
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda **_: torch.device("cuda"))
    monkeypatch.setattr(torch.accelerator, "device_count", lambda: 2)

    assert run.pick_device("cuda") == torch.device("cuda")
    assert run.pick_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(
        run.UsageError, match=r"^--device cuda:2: .*\(it has cpu, cuda:0, cuda:1\)$"
    ):
        run.pick_device("cuda:2")


def test_one_output_file_for_several_videos_is_refused(trained, videos, capsys):
    status, _, err = run_main(
        capsys, videos["red"], videos["green"], "--checkpoint", trained[0], "--output", "a.mp4"
    )

    assert status == 2
    assert err == ["error: a.mp4 names one file but there are 2 inputs; name a folder"]


def test_unwritable_output_is_refused_before_classifying(trained, videos, tmp_path, capsys):
    (tmp_path / "file").write_text("a file, not a folder")
    target = tmp_path / "file" / "top.png"

    status, out, err = run_main(capsys, videos["red"], "--checkpoint", trained[0], "--plot", target)

    assert status == 2 and out == ""
    assert err == [f"error: cannot write {target}: {tmp_path / 'file'} is a file, not a folder"]


def test_a_config_that_does_not_fit_suggests_the_checkpoints_own(trained, videos, tmp_path, capsys):
    checkpoint, cfg = trained
    other = cfg.clone()
    other.MVIT.EMBED_DIM = cfg.MVIT.EMBED_DIM * 2
    (tmp_path / "other.yaml").write_text(other.dump())

    status, out, err = run_main(
        capsys, videos["red"], "--checkpoint", checkpoint, "--cfg", tmp_path / "other.yaml"
    )

    assert status == 2 and out == ""
    assert len(err) == 1 and err[0].startswith(f"error: {checkpoint} does not fit RevMViT: ")
    assert err[0].endswith(
        f"; the checkpoint carries its own config: drop --cfg {tmp_path / 'other.yaml'}"
    )


def test_a_checkpoint_whose_scores_are_not_finite_stops_the_run(trained, videos, tmp_path, capsys):
    model = build_model(trained[1])
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    path = tmp_path / "nan.pyth"
    save_checkpoint(path, model, cfg=trained[1].dump(), class_names=CLASS_NAMES)
    message = f"error: the model gives non-finite scores: the weights of {path} are broken"

    for output in ([], ["--json"]):
        status, out, err = run_main(
            capsys, videos["red"], videos["green"], "--checkpoint", path, *output
        )

        assert status == 2
        assert err == [message], "one line for the checkpoint, not one per video"
        if output:
            why = message[len("error: ") :]
            assert json.loads(out) == [
                {"path": video, "error": why} for video in (videos["red"], videos["green"])
            ]
        else:
            assert out == ""


def test_the_demo_never_writes_onto_its_input(trained, videos, tmp_path, capsys):
    folder = tmp_path / "clips"
    folder.mkdir()
    video = Path(shutil.copy(videos["red"], folder / "red.mp4"))
    shutil.copy(videos["blue"], folder / "blue.avi")
    (tmp_path / "link.mp4").symlink_to(video)
    original = video.read_bytes()
    checkpoint = trained[0]
    cases = [
        ([video, "--output", video], "--output", video),
        ([video, "--plot", video], "--plot", video),
        ([video, "--output", tmp_path / "link.mp4"], "--output", video),
        ([folder, "--output", folder], "--output", video),
        # Refused before anything is written: no plot either.
        ([folder, "--plot", folder, "--output", folder], "--output", video),
        ([video, "--output", checkpoint], "--output", checkpoint),
    ]
    for arguments, option, overwritten in cases:
        status, out, err = run_main(capsys, *arguments, "--checkpoint", checkpoint)

        assert status == 2 and out == ""
        assert err == [
            f"error: {option} would overwrite {overwritten}, an input of this run; "
            "name another file or folder"
        ]
        assert video.read_bytes() == original
        assert sorted(path.name for path in folder.iterdir()) == ["blue.avi", "red.mp4"]


def test_output_and_plot_in_one_file_are_refused(trained, videos, tmp_path, capsys):
    target = tmp_path / "out.png"

    status, _, err = run_main(
        capsys, videos["red"], "--checkpoint", trained[0], "--output", target, "--plot", target
    )

    assert status == 2
    assert err == [f"error: --output and --plot both name {target}; name two files"]
    assert not target.exists()


def test_videos_with_one_name_get_an_output_each(trained, videos, tmp_path, capsys):
    sources = []
    for folder, name in (("a", "clip.mp4"), ("b", "clip.mp4"), ("c", "Clip.avi")):
        (tmp_path / folder).mkdir()
        sources.append(shutil.copy(videos["red"], tmp_path / folder / name))

    status, _, err = run_main(
        capsys, *sources, "--checkpoint", trained[0], "--plot", tmp_path / "plots"
    )

    assert status == 0, err
    # Told apart whatever the case: on macOS and Windows Clip.png would be clip.png.
    assert sorted(path.name for path in (tmp_path / "plots").iterdir()) == [
        "Clip_avi.png",
        "clip.png",
        "clip_mp4.png",
    ]


def test_a_video_damaged_within_its_first_clip_is_classified_from_what_decodes(
    trained, tmp_path, capsys
):
    # About 0.2 s decode, less than a clip: the frames the clip repeats past them are not
    # decoded. How many exactly follows x264's bytes, which vary from run to run: a plain
    # decode of the file says.
    damaged = write_partly_damaged(tmp_path / "damaged.mp4", fraction=0.15)
    with av.open(damaged) as container, contextlib.suppress(av.FFmpegError):
        for frame in container.decode(video=0):
            last = frame.time
    decoded = f"{last:.2f} s"

    status, out, err = run_main(
        capsys, damaged, "--checkpoint", trained[0], "--output", tmp_path / "annotated.mp4"
    )

    assert status == 0, err
    assert out.splitlines()[1].split()[1] == "red"
    assert 0 < last < 0.53
    assert err == [
        f"warning: {damaged}: decoding failed after {decoded}: Invalid data found when "
        f"processing input; classified from its first {decoded}, which decode",
        f"warning: {damaged}: shorter than a clip ({decoded} < 0.53 s): its last frame fills the "
        "rest",
    ]
    assert out.splitlines()[-1] == f"  wrote {tmp_path / 'annotated.mp4'}"
