"""Ctrl-C in tools/run_net.py and demo/classify.py, pressed at moments the commands reach
themselves (tests/engine/ctrl_c.py): as torch loads, in the test phase and again while the
loader's workers shut down, in the middle of a training step. Each ends with exit status 130
and no traceback, from the command or its loader workers: one `interrupted` line, or in
training the checkpoint that the first Ctrl-C saves."""

import os
import signal
import subprocess
import sys
import time

import pytest

from revvideo.checkpoint import model_entries, save_checkpoint
from revvideo.checkpoint.training import latest_checkpoint
from revvideo.classes import dataset_class_names
from revvideo.data.loader import VideoLoader
from revvideo.engine import run
from revvideo.engine.stopping import StopRequest
from revvideo.models import build_model

from .helpers import ROOT, epoch_weights, evaluation_cfg, quiet_env, records, tiny_cfg, write_cfg

CTRL_C = ROOT / "tests" / "engine" / "ctrl_c.py"


def _interrupted(moment: str, script: str, *arguments: str) -> subprocess.CompletedProcess:
    """`script` run with Ctrl-C at `moment`, in a session of its own: the Ctrl-C reaches its
    process group, not pytest."""
    return subprocess.run(
        [sys.executable, str(CTRL_C), moment, str(ROOT / script), *arguments],
        capture_output=True, text=True, timeout=300, env=quiet_env(), cwd=ROOT,
        start_new_session=True,
    )  # fmt: skip


def _assert_no_traceback(result: subprocess.CompletedProcess) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output and "Exception ignored" not in output, output


def _assert_one_line(result: subprocess.CompletedProcess) -> None:
    _assert_no_traceback(result)
    assert result.returncode == 130, result.stdout + result.stderr
    assert result.stderr == "interrupted\n", result.stderr


@pytest.mark.parametrize(
    "command",
    [
        # The quick start, writing only under tmp_path should it ever get past the imports.
        [
            "tools/run_net.py", "--cfg", "configs/synthetic/REV_MVIT_XS.yaml",
            "OUTPUT_DIR", "{tmp}/out", "DATA.PATH_TO_DATA_DIR", "{tmp}/data",
        ],
        ["demo/classify.py", "{tmp}/video.mp4"],
        ["tools/prepare_kinetics.py", "{tmp}/lists", "--videos", "{tmp}"],
        ["tools/convert_checkpoint.py", "{tmp}/a.pyth", "{tmp}/b.pyth"],
        ["tools/benchmark.py", "--frames", "2", "--size", "32", "--json", "{tmp}/b.json"],
        ["tools/make_synthetic_dataset.py", "{tmp}/synthetic"],
    ],
    ids=["run_net", "classify", "prepare_kinetics", "convert", "benchmark", "synthetic"],
)  # fmt: skip
def test_ctrl_c_while_torch_or_pyav_loads_is_one_line(command, tmp_path):
    _assert_one_line(_interrupted("import", *(part.format(tmp=tmp_path) for part in command)))
    # Nothing written, but the synthetic dataset's lock file (an empty file for flock).
    assert {path.name for path in tmp_path.iterdir()} <= {"synthetic.lock"}


def test_ctrl_c_in_the_test_and_again_as_its_workers_shut_down_is_one_line(tiny_dataset, tmp_path):
    cfg = tiny_cfg(tiny_dataset, tmp_path / "trained")
    checkpoint = tmp_path / "trained.pyth"
    names = dataset_class_names(str(tiny_dataset))
    save_checkpoint(checkpoint, build_model(cfg), **model_entries(cfg, names, source="scratch"))
    test_only = tiny_cfg(
        tiny_dataset, tmp_path / "out", TRAIN__ENABLE=False,
        TEST__CHECKPOINT_FILE_PATH=str(checkpoint), DATA_LOADER__NUM_WORKERS=2,
    )  # fmt: skip
    config = write_cfg(test_only, tmp_path / "test.yaml")
    result = _interrupted("test", "tools/run_net.py", "--cfg", str(config))
    _assert_one_line(result)
    assert not (tmp_path / "out").exists()  # the run made it and wrote nothing


def _interrupted_training(moment: str, dataset, tmp_path) -> subprocess.CompletedProcess:
    """Training into tmp_path/out with two loader workers, two batches a step (after a Ctrl-C
    in a step, it needs another batch from the workers), Ctrl-C at `moment`."""
    cfg = tiny_cfg(
        dataset, tmp_path / "out", TRAIN__BATCH_SIZE=2, TRAIN__ACCUMULATION_STEPS=2,
        DATA_LOADER__NUM_WORKERS=2,
    )  # fmt: skip
    config = write_cfg(cfg, tmp_path / "cfg.yaml")
    result = _interrupted(moment, "tools/run_net.py", "--cfg", str(config))
    _assert_no_traceback(result)
    assert result.returncode == 130, result.stdout + result.stderr
    return result


def test_ctrl_c_to_training_and_its_workers_saves_a_checkpoint_mid_step(tiny_dataset, tmp_path):
    result = _interrupted_training("step", tiny_dataset, tmp_path)
    assert "stopped by SIGINT; resume with the same command" in result.stdout
    assert latest_checkpoint(tmp_path / "out").name == "checkpoint_epoch_00000_step_000001.pyth"


def test_a_second_ctrl_c_as_the_loader_workers_shut_down_stops_training(tiny_dataset, tmp_path):
    # The first Ctrl-C ends the epoch's loop; the second lands in the workers' shutdown, where an
    # exception would be printed and lost: it stops the run once they are down, unsaved.
    result = _interrupted_training("step-twice", tiny_dataset, tmp_path)
    assert result.stderr.endswith("interrupted\n"), result.stderr
    assert latest_checkpoint(tmp_path / "out") is None


def test_ctrl_c_to_the_benchmark_ends_its_measuring_process_too(tmp_path):
    command = [
        "tools/benchmark.py",
        "--frames",
        "2",
        "--size",
        "32",
        "--json",
        f"{tmp_path}/b.json",
    ]
    process = subprocess.Popen(
        [sys.executable, str(CTRL_C), "measure", str(ROOT / command[0]), *command[1:]],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=quiet_env(), cwd=ROOT,
        start_new_session=True,
    )  # fmt: skip
    stdout, stderr = process.communicate(timeout=300)
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    _assert_one_line(result)
    assert not (tmp_path / "b.json").exists()
    # The measuring process (spawned, in the same process group) is gone too.
    deadline = time.monotonic() + 60
    while _group_alive(process.pid):
        assert time.monotonic() < deadline, "a measuring process outlived the benchmark"
        time.sleep(0.1)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def _assert_nothing_went_on(result: subprocess.CompletedProcess) -> None:
    assert "went on after the stop" not in result.stderr, result.stderr


# Validation and the test in batches of 2 clips: 3 validation batches, 6 test batches (2 views).
SMALL_BATCHES = dict(TEST__BATCH_SIZE=2, DATA_LOADER__NUM_WORKERS=2)


@pytest.mark.parametrize(("moment", "status"), [("validation", 130), ("validation-sigterm", 143)])
def test_a_stop_during_validation_stops_it_and_keeps_the_epoch(
    tiny_dataset, tmp_path, moment, status
):
    cfg = tiny_cfg(tiny_dataset, tmp_path / "out", **SMALL_BATCHES)
    config = write_cfg(cfg, tmp_path / "cfg.yaml")
    result = _interrupted(moment, "tools/run_net.py", "--cfg", str(config))
    _assert_no_traceback(result)
    _assert_nothing_went_on(result)
    assert result.returncode == status, result.stdout + result.stderr
    signal_name = "SIGINT" if status == 130 else "SIGTERM"
    assert f"validation of epoch 1 stopped by {signal_name}" in result.stdout
    assert f"stopped by {signal_name}; resume with the same command" in result.stdout
    assert result.stderr == ""
    assert latest_checkpoint(tmp_path / "out").name == "checkpoint_epoch_00001.pyth"
    assert not (tmp_path / "out" / "test").exists()


def test_sigterm_during_an_evaluation_is_one_line_and_writes_no_results(
    tiny_dataset, tmp_path, checkpoint
):
    test_only = evaluation_cfg(tiny_dataset, tmp_path / "out", checkpoint, **SMALL_BATCHES)
    config = write_cfg(test_only, tmp_path / "test.yaml")
    result = _interrupted("test-sigterm", "tools/run_net.py", "--cfg", str(config))
    _assert_no_traceback(result)
    _assert_nothing_went_on(result)
    assert result.returncode == 143, result.stdout + result.stderr
    assert result.stderr == "interrupted by SIGTERM\n"
    # Nothing but the lock of the run that had OUTPUT_DIR.
    assert not (tmp_path / "out").exists()  # the run made it and wrote nothing


def test_sigterm_in_the_test_after_training_names_the_checkpoint_kept(tiny_dataset, tmp_path):
    cfg = tiny_cfg(tiny_dataset, tmp_path / "out", SOLVER__MAX_EPOCH=1, **SMALL_BATCHES)
    config = write_cfg(cfg, tmp_path / "cfg.yaml")
    result = _interrupted("test-sigterm", "tools/run_net.py", "--cfg", str(config))
    _assert_no_traceback(result)
    _assert_nothing_went_on(result)
    assert result.returncode == 143, result.stdout + result.stderr
    checkpoint = tmp_path / "out" / "checkpoints" / "checkpoint_epoch_00001.pyth"
    assert result.stderr == (
        f"interrupted by SIGTERM; the newest checkpoint, {checkpoint}, is kept (the same command "
        "goes on from it)\n"
    )
    assert not (tmp_path / "out" / "test").exists()


def test_a_run_stopped_in_validation_resumes_to_the_weights_of_one_never_stopped(
    tiny_dataset, tmp_path, monkeypatch
):
    common = dict(TEST__ENABLE=False, TEST__BATCH_SIZE=2)
    assert run(tiny_cfg(tiny_dataset, tmp_path / "whole", **common)) == 0
    cfg = tiny_cfg(tiny_dataset, tmp_path / "stopped", **common)
    iterate, validation_batches = VideoLoader.__iter__, []

    def iterate_and_stop(self):
        for batch in iterate(self):
            if self.name == "val":
                validation_batches.append(batch)
                if len(validation_batches) == 1:
                    signal.raise_signal(signal.SIGTERM)  # to training's StopRequest
            yield batch

    with monkeypatch.context() as patched:
        patched.setattr(VideoLoader, "__iter__", iterate_and_stop)
        assert run(cfg.clone()) == 143
    assert len(validation_batches) == 1  # of 3
    assert latest_checkpoint(tmp_path / "stopped").name == "checkpoint_epoch_00001.pyth"
    assert run(cfg.clone()) == 0

    epochs = records(tmp_path / "stopped", "epoch")
    assert [(r["epoch"], r["val_top1"] is None) for r in epochs] == [(1, True), (2, False)]
    expected, resumed = epoch_weights(tmp_path / "whole", 2), epoch_weights(tmp_path / "stopped", 2)
    assert max((expected[k] - resumed[k]).abs().max().item() for k in expected) <= 1e-6


def test_a_ctrl_c_after_a_sigterm_aborts_at_once():
    with pytest.raises(KeyboardInterrupt), StopRequest() as stop:
        signal.raise_signal(signal.SIGTERM)
        assert stop.signal_number == signal.SIGTERM
        signal.raise_signal(signal.SIGINT)
        pytest.fail("the Ctrl-C did not abort")
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # further ones, while closing
    signal.signal(signal.SIGINT, signal.default_int_handler)
