"""Every input gets a verdict: an unexpected error in one input, an output that cannot be written,
a file name that is not UTF-8 or a model that fails midway never loses the other results, and
--views is bounded."""

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest

from revvideo.cli import classify
from revvideo.demo import classifier as classifier_module
from revvideo.demo import render, run
from revvideo.utils.errors import CheckpointError

from .conftest import ROOT, write_colour_video


def run_main(capsys, *args):
    """classify.main in this process: (exit status, stdout, stderr lines)."""
    status = classify.main(
        [os.fsdecode(arg) if isinstance(arg, bytes) else str(arg) for arg in args]
    )
    captured = capsys.readouterr()
    return status, captured.out, captured.err.splitlines()


def top1(out):
    return [line.split()[1] for line in out.splitlines() if line.startswith("  1.")]


@pytest.fixture
def three(videos, tmp_path):
    """Three videos in a folder of their own: red.mp4, green.mp4, blue.avi."""
    folder = tmp_path / "in"
    folder.mkdir()
    return [shutil.copy(videos[colour], folder) for colour in ("red", "green", "blue")]


# --- an unexpected error is one input's verdict -----------------------------------------------


def failing_for(name, error, real):
    def classify_video(classifier, path, views=None):
        if os.path.basename(path) == name:
            raise error
        return real(classifier, path, views)

    return classify_video


@pytest.mark.parametrize("json_output", [False, True], ids=["text", "json"])
def test_an_unexpected_error_is_that_inputs_error_line(
    trained, three, monkeypatch, capsys, json_output
):
    boom = TypeError("set_text(): incompatible function arguments.\nInvoked with: ...")
    monkeypatch.setattr(run, "classify_video", failing_for("green.mp4", boom, run.classify_video))

    status, out, err = run_main(
        capsys, *three, "--checkpoint", trained[0], *(["--json"] if json_output else [])
    )

    assert status == 1
    message = f"{three[1]}: unexpected TypeError: set_text(): incompatible function arguments."
    assert err == [f"error: {message}", "error: 1 of 3 inputs could not be classified"]
    if json_output:
        results = json.loads(out)
        assert [r["path"] for r in results] == three
        assert results[1] == {"path": three[1], "error": message}
        assert [results[i]["top_k"][0]["class"] for i in (0, 2)] == ["red", "blue"]
    else:
        assert top1(out) == ["red", "blue"]


def test_a_model_that_fails_midway_keeps_the_results_so_far(trained, three, monkeypatch, capsys):
    broken = CheckpointError("the model gives non-finite scores: the weights of x are broken")
    monkeypatch.setattr(run, "classify_video", failing_for("green.mp4", broken, run.classify_video))

    status, out, err = run_main(capsys, *three, "--checkpoint", trained[0], "--json")

    assert status == 2
    assert err == [f"error: {broken}"], "one line for the model, not one per input"
    results = json.loads(out)
    assert results[0]["top_k"][0]["class"] == "red"
    assert results[1:] == [{"path": path, "error": str(broken)} for path in three[1:]]


def test_a_run_stopped_before_any_result_still_prints_every_inputs_verdict(
    trained, three, tmp_path, capsys
):
    (tmp_path / "garbage.pyth").write_text("not a checkpoint")
    missing = str(tmp_path / "missing.mp4")
    stops = [
        ["--checkpoint", tmp_path / "garbage.pyth"],
        ["--checkpoint", trained[0], "--device", "toaster"],
        ["--checkpoint", trained[0], "--output", three[0]],
    ]
    for options in stops:
        status, out, err = run_main(capsys, missing, *three, *options, "--json")

        assert status == 2 and len(err) == 1 and err[0].startswith("error: "), err
        why = err[0][len("error: ") :]
        assert json.loads(out) == [
            {"path": missing, "error": f"{missing}: no such file or folder"},
            *({"path": path, "error": why} for path in three),
        ]


def test_ctrl_c_still_prints_every_inputs_verdict(trained, three, monkeypatch, capsys):
    stop = KeyboardInterrupt()
    monkeypatch.setattr(run, "classify_video", failing_for("green.mp4", stop, run.classify_video))

    status, out, err = run_main(capsys, *three, "--checkpoint", trained[0], "--json")

    assert status == 130
    assert err == ["interrupted"]
    results = json.loads(out)
    assert results[0]["top_k"][0]["class"] == "red"
    assert results[1:] == [{"path": path, "error": "interrupted"} for path in three[1:]]


# --- file names that are not UTF-8 ------------------------------------------------------------


@pytest.fixture
def undecodable(videos, tmp_path):
    """A copy of the red video named b"\\xff.mp4" (not UTF-8), as Python names it."""
    if sys.platform in ("darwin", "win32"):
        pytest.skip("the file system takes only Unicode names")
    path = os.path.join(os.fsencode(tmp_path), b"\xff.mp4")
    shutil.copy(videos["red"], path)
    return os.fsdecode(path)


def test_a_name_that_is_not_utf8_gets_its_plot_and_valid_json(
    trained, videos, undecodable, tmp_path, capsys
):
    status, out, err = run_main(
        capsys,
        undecodable,
        videos["green"],
        "--checkpoint",
        trained[0],
        "--plot",
        tmp_path / "plots",
        "--json",
    )

    assert status == 0, err
    results = json.loads(out)  # valid JSON, the name's byte shown as \xff
    assert [r["path"] for r in results] == [f"{tmp_path}/\\xff.mp4", videos["green"]]
    assert results[0]["plot"] == f"{tmp_path}/plots/\\xff.png"
    assert [r["top_k"][0]["class"] for r in results] == ["red", "green"]
    assert sorted(os.listdir(os.fsencode(tmp_path / "plots"))) == [b"green.png", b"\xff.png"]


def test_a_name_that_is_not_utf8_prints_on_an_ascii_terminal(trained, undecodable, tmp_path):
    missing = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"gone\xfe.mp4"))
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "demo" / "classify.py"),
            undecodable,
            missing,
            "--checkpoint",
            str(trained[0]),
            "--output",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        env=os.environ | {"OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "ascii"},
        timeout=300,
    )

    out, err = done.stdout.decode("ascii"), done.stderr.decode("ascii")
    assert done.returncode == 1, err
    assert "Traceback" not in err
    assert out.splitlines()[0].startswith(f"{tmp_path}/\\xff.mp4: 3x1 views, ")
    assert out.splitlines()[-1] == f"  wrote {tmp_path}/out/\\xff.mp4"
    assert err.splitlines() == [
        f"error: {tmp_path}/gone\\xfe.mp4: no such file or folder",
        "error: 1 of 2 inputs could not be classified",
    ]


# --- outputs that cannot be written -----------------------------------------------------------


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("json_output", [False, True], ids=["text", "json"])
def test_outputs_that_cannot_be_written_keep_the_results(
    trained, three, tmp_path, monkeypatch, capsys, json_output
):
    monkeypatch.setattr(render.Figure, "savefig", full_disk)
    plots = tmp_path / "plots"

    status, out, err = run_main(
        capsys,
        *three,
        "--checkpoint",
        trained[0],
        "--plot",
        plots,
        *(["--json"] if json_output else []),
    )

    assert status == 1
    names = ("red.png", "green.png", "blue.png")
    assert len(err) == 4
    for line, path, name in zip(err, three, names, strict=False):
        assert line.startswith(f"error: {path}: cannot write {plots / name}: the disk is full (")
    assert err[3] == "error: 3 of 3 output files could not be written"
    assert os.listdir(plots) == [], "no partial file left"
    if json_output:
        results = json.loads(out)
        assert [r["top_k"][0]["class"] for r in results] == ["red", "green", "blue"]
        assert all("plot" not in r and r["plot_error"] for r in results)
    else:
        assert top1(out) == ["red", "green", "blue"]
        assert "wrote" not in out


def test_an_output_that_fails_unexpectedly_keeps_the_result_and_the_other_output(
    trained, videos, tmp_path, monkeypatch, capsys
):
    def broken(*args, **kwargs):
        raise TypeError("incompatible function arguments")

    monkeypatch.setattr(run, "plot_top_classes", broken)

    status, out, err = run_main(
        capsys,
        videos["red"],
        "--checkpoint",
        trained[0],
        "--plot",
        tmp_path / "top.png",
        "--output",
        tmp_path / "annotated.mp4",
    )

    assert status == 1
    assert top1(out) == ["red"]
    assert out.splitlines()[-1] == f"  wrote {tmp_path / 'annotated.mp4'}"
    assert err == [
        f"error: {videos['red']}: cannot write {tmp_path / 'top.png'}: unexpected TypeError: "
        "incompatible function arguments"
    ]


def test_an_existing_file_for_several_outputs_is_refused_before_classifying(
    trained, three, tmp_path, capsys
):
    (tmp_path / "out").write_text("the user's")

    for option in ("--output", "--plot"):
        status, out, err = run_main(
            capsys, *three, "--checkpoint", trained[0], option, tmp_path / "out"
        )

        assert status == 2 and out == ""
        assert err == [f"error: {tmp_path / 'out'} is a file but there are 3 inputs; name a folder"]
        assert (tmp_path / "out").read_text() == "the user's"


@pytest.mark.parametrize("several", [False, True], ids=["one input", "several"])
def test_a_file_where_a_folder_is_needed_is_refused(trained, three, tmp_path, capsys, several):
    (tmp_path / "file").write_text("a file, not a folder")
    target = tmp_path / "file" / "sub" / ("plots" if several else "top.png")

    status, out, err = run_main(
        capsys, *(three if several else three[:1]), "--checkpoint", trained[0], "--plot", target
    )

    assert status == 2 and out == ""
    assert err == [f"error: cannot write {target}: {tmp_path / 'file'} is a file, not a folder"]


@pytest.mark.parametrize("several", [False, True], ids=["one input", "several"])
def test_an_output_onto_a_special_file_is_refused(trained, three, tmp_path, capsys, several):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    # A FIFO stands for any file that is not a regular one (as root, --output /dev/null).
    target = tmp_path / ("red.png" if several else "top.png")
    os.mkfifo(target)

    status, out, err = run_main(
        capsys,
        *(three if several else three[:1]),
        "--checkpoint",
        trained[0],
        "--plot",
        tmp_path if several else target,
    )

    assert status == 2 and out == ""
    assert err == [
        f"error: --plot {target}: not a regular file (a FIFO); name another file or folder"
    ]
    assert stat.S_ISFIFO(os.stat(target).st_mode)


def test_replacing_a_file_says_so(trained, videos, tmp_path, capsys):
    (tmp_path / "top.png").write_bytes(b"the user's")

    status, out, err = run_main(
        capsys, videos["red"], "--checkpoint", trained[0], "--plot", tmp_path / "top.png"
    )

    assert status == 0
    assert err == [f"warning: {tmp_path / 'top.png'}: replaced the file that was there"]
    assert out.splitlines()[-1] == f"  wrote {tmp_path / 'top.png'}"
    assert (tmp_path / "top.png").read_bytes().startswith(b"\x89PNG")


def test_an_input_given_twice_writes_two_files(trained, videos, tmp_path, capsys):
    status, out, err = run_main(
        capsys,
        videos["red"],
        videos["red"],
        "--checkpoint",
        trained[0],
        "--output",
        tmp_path / "out",
        "--json",
    )

    assert status == 0 and err == []
    outputs = [result["output"] for result in json.loads(out)]
    assert outputs == [str(tmp_path / "out" / "red.mp4"), str(tmp_path / "out" / "red_mp4.mp4")]
    assert sorted(os.listdir(tmp_path / "out")) == ["red.mp4", "red_mp4.mp4"]


def test_an_unreadable_folder_and_a_link_loop_say_what_they_are(
    trained, videos, tmp_path, monkeypatch, capsys
):
    locked = tmp_path / "locked"
    locked.mkdir()
    shutil.copy(videos["red"], locked)
    loop = tmp_path / "loop.mp4"
    loop.symlink_to(loop)
    scandir = os.scandir

    def denied(path="."):
        # As a folder without read permission does (root would still read it).
        if os.fspath(path) == str(locked):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(locked))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", denied)

    status, _, err = run_main(capsys, locked, loop, videos["green"], "--checkpoint", trained[0])

    assert status == 1
    assert err == [
        f"error: {locked}: cannot read the folder: Permission denied",
        f"error: {loop}: cannot open: Too many levels of symbolic links",
        "error: 2 of 3 inputs could not be classified",
    ]


# --- a stdout that cannot take the results --------------------------------------------------


def run_demo_into(stdout, trained, videos):
    """demo/classify.py on two videos, its stdout `stdout`: the process, started."""
    return subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "demo" / "classify.py"),
            videos["red"],
            videos["green"],
            "--checkpoint",
            str(trained[0]),
        ],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )


def test_a_closed_stdout_ends_the_run_quietly(trained, videos):
    demo = run_demo_into(subprocess.PIPE, trained, videos)
    demo.stdout.close()  # as `| head -1` does once it has its line

    err = demo.stderr.read()

    assert demo.wait(timeout=300) == 128 + signal.SIGPIPE, err
    assert err == ""


def test_a_full_stdout_is_one_error_line(trained, videos):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    with open("/dev/full", "w") as full:
        demo = run_demo_into(full, trained, videos)
        err = demo.stderr.read()

    assert demo.wait(timeout=300) == 1, err
    assert err == "error: cannot write the results: No space left on device\n"


# --- --views ----------------------------------------------------------------------------------


def test_views_beyond_the_limit_are_refused_at_once(capsys):
    started = time.perf_counter()
    with pytest.raises(SystemExit) as exit_status:
        classify.main(["absent.mp4", "--views", "100000x1"])

    assert exit_status.value.code == 2
    assert capsys.readouterr().err == (
        f"error: argument --views: at most {classify.MAX_VIEWS} views (clips x crops) per "
        "input, got '100000x1' (see --help)\n"
    )
    assert time.perf_counter() - started < 5


def test_a_video_gets_at_most_one_clip_per_frame(trained, videos, tmp_path, capsys):
    # 2 s at 15 fps; a clip lasts 8/15 s: clips can start at its first 23 frames.
    status, out, err = run_main(
        capsys, videos["red"], "--checkpoint", trained[0], "--views", "300x1"
    )

    assert status == 0
    assert out.startswith(f"{videos['red']}: 23x1 views, ")
    assert err == [
        f"warning: {videos['red']}: --views 300x1: its frames make only 23 different clips: "
        "classified on 23x1 views"
    ]

    # Shorter than a clip: the checkpoint's 3 clips would be one and the same.
    short = write_colour_video(tmp_path / "short.mp4", "green", frames_each=4)
    status, out, err = run_main(capsys, short, "--checkpoint", trained[0])

    assert status == 0
    assert out.startswith(f"{short}: 1x1 views, ")
    assert len(err) == 1 and "shorter than a clip" in err[0]


def test_distinct_clips():
    assert classifier_module.distinct_clips(2.0, 8 / 15, 15.0) == 23
    assert classifier_module.distinct_clips(0.2, 8 / 15, 15.0) == 1
    assert classifier_module.distinct_clips(2.0, 8 / 15, None) is None


# --- inputs that are not files to read --------------------------------------------------------


def test_a_fifo_is_one_error_line_not_a_hang(trained, videos, tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    (tmp_path / "folder").mkdir()
    fifos = [tmp_path / "pipe.mp4", tmp_path / "pipe.png", tmp_path / "folder" / "in.mp4"]
    for fifo in fifos:
        os.mkfifo(fifo)

    # Opening a FIFO waits for a writer: in a process of its own, so that a hang fails the test.
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "demo" / "classify.py"),
            *map(str, fifos[:2]),
            str(tmp_path / "folder"),
            videos["red"],
            "--checkpoint",
            str(trained[0]),
        ],
        capture_output=True,
        text=True,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        timeout=120,
    )

    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        *(f"error: {fifo}: not a regular file (a FIFO)" for fifo in fifos),
        "error: 3 of 4 inputs could not be classified",
    ]
    assert done.stdout.splitlines()[1].split()[1] == "red"
