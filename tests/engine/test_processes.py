"""tools/run_net.py as a user runs it: killed and restarted, signalled, under torchrun, and
given mistakes."""

import importlib
import signal
import subprocess
import sys
import time

import pytest
import torch

import revvideo.engine
from revvideo.checkpoint import read_checkpoint
from revvideo.checkpoint.training import latest_checkpoint
from revvideo.cli import run_net as run_net_front
from revvideo.config import get_cfg
from revvideo.utils.errors import RunStopped

from .helpers import (
    FIXED_CLIPS,
    ROOT,
    epoch_weights,
    newest_test_results,
    quiet_env,
    records,
    run_command,
    run_net,
    run_net_command,
    tiny_cfg,
    write_cfg,
)


def _start(cfg_file):
    return subprocess.Popen(
        run_net_command(cfg_file),
        env=quiet_env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(condition, process, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _assert_ran(result):
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_run_killed_and_restarted_ends_with_the_weights_of_an_uninterrupted_run(
    tiny_dataset, tmp_path
):
    # Random flips and crops, and a loader worker: resuming must restore every generator.
    settings = dict(SOLVER__MAX_EPOCH=3, DATA__RANDOM_FLIP=True, DATA_LOADER__NUM_WORKERS=1)
    uninterrupted = write_cfg(
        tiny_cfg(tiny_dataset, tmp_path / "a", **settings), tmp_path / "a.yaml"
    )
    interrupted = write_cfg(tiny_cfg(tiny_dataset, tmp_path / "b", **settings), tmp_path / "b.yaml")
    _assert_ran(run_net(uninterrupted))

    process = _start(interrupted)
    first = tmp_path / "b" / "checkpoints" / "checkpoint_epoch_00001.pyth"
    _wait_for(first.exists, process)
    process.kill()
    process.wait()
    assert latest_checkpoint(tmp_path / "b") == first
    result = run_net(interrupted)
    _assert_ran(result)
    assert "resuming from" in result.stdout

    expected, resumed = epoch_weights(tmp_path / "a", 3), epoch_weights(tmp_path / "b", 3)
    assert max((expected[k] - resumed[k]).abs().max().item() for k in expected) <= 1e-6
    # The resumed run's log reads like the uninterrupted one's.
    for kind in ("step", "epoch"):
        steps = [[r["step"] for r in records(tmp_path / name, kind)] for name in "ab"]
        assert steps[0] == steps[1]


@pytest.mark.parametrize(
    ("signal_number", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["TERM", "INT"]
)
def test_a_signal_saves_a_checkpoint_and_the_same_command_resumes(
    tiny_dataset, tmp_path, signal_number, status
):
    # One video per step: 12 steps per epoch, so the signal arrives in the middle of one. Random
    # crops and flips in a loader worker, dropout and drop path: the resumed half-epoch must
    # draw what an uninterrupted run draws.
    settings = dict(
        TRAIN__BATCH_SIZE=1,
        SOLVER__MAX_EPOCH=2,
        DATA__RANDOM_FLIP=True,
        DATA_LOADER__NUM_WORKERS=1,
        MODEL__DROPOUT_RATE=0.5,
        MVIT__DROPPATH_RATE=0.2,
    )
    cfg_file = write_cfg(
        tiny_cfg(tiny_dataset, tmp_path / "out", **settings), tmp_path / "cfg.yaml"
    )
    uninterrupted = tiny_cfg(tiny_dataset, tmp_path / "uninterrupted", **settings)
    _assert_ran(run_net(write_cfg(uninterrupted, tmp_path / "uninterrupted.yaml")))
    log = tmp_path / "out" / "log.jsonl"
    process = _start(cfg_file)
    _wait_for(lambda: log.exists() and '"kind": "step"' in log.read_text(), process)
    process.send_signal(signal_number)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == status, output
    assert "Traceback" not in output
    assert f"stopped by {signal.Signals(signal_number).name}" in output
    stopped_at = latest_checkpoint(tmp_path / "out")
    assert stopped_at is not None
    steps_done = read_checkpoint(stopped_at)["scheduler_state"]["step_count"]
    assert 0 < steps_done < 24

    result = run_net(cfg_file)
    _assert_ran(result)
    assert f"resuming from {stopped_at}" in result.stdout
    final = read_checkpoint(latest_checkpoint(tmp_path / "out"))
    assert (final["epoch"], final["scheduler_state"]["step_count"]) == (2, 24)
    assert "_step_" not in " ".join(p.name for p in (tmp_path / "out" / "checkpoints").iterdir())
    # Each step logged once: the stopped run's steps, then the resumed run's.
    assert [r["step"] for r in records(tmp_path / "out", "step")] == list(range(1, 25))
    expected, resumed = epoch_weights(tmp_path / "uninterrupted", 2), final["model_state"]
    assert max((expected[k] - resumed[k]).abs().max().item() for k in expected) <= 1e-6


def test_two_processes_train_like_one_on_the_same_global_batch(tiny_dataset, tmp_path):
    # SGD (Adam would magnify rounding differences in near-zero gradients) on fixed clips.
    settings = dict(FIXED_CLIPS, SOLVER__OPTIMIZING_METHOD="sgd", SOLVER__BASE_LR=0.05)
    one = write_cfg(tiny_cfg(tiny_dataset, tmp_path / "one", **settings), tmp_path / "one.yaml")
    two = write_cfg(tiny_cfg(tiny_dataset, tmp_path / "two", **settings), tmp_path / "two.yaml")
    _assert_ran(run_net(one))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    result = run_command([*torchrun, "--nproc_per_node", "2", *run_net_command(two)[1:]])
    _assert_ran(result)
    assert "on 2 process(es)" in result.stdout

    start = epoch_weights(tmp_path / "one", 1)
    single, distributed = epoch_weights(tmp_path / "one", 2), epoch_weights(tmp_path / "two", 2)
    moved = max((single[k] - start[k]).abs().max().item() for k in single)
    assert moved > 0.01
    for name, tensor in single.items():
        torch.testing.assert_close(distributed[name], tensor, rtol=0, atol=1e-5, msg=name)
    losses = [[r["loss"] for r in records(tmp_path / name, "step")] for name in ("one", "two")]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    results = [newest_test_results(tmp_path / name) for name in ("one", "two")]
    assert results[0]["num_videos"] == results[1]["num_videos"] == 6
    assert results[1]["top1_acc"] == results[0]["top1_acc"]


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (["MVIT.DEPHT", "4"], "unknown config key MVIT.DEPHT in the command line; did you mean"),
        (["SOLVER.MAX_EPOCH", "many"], "SOLVER.MAX_EPOCH in the command line must be int"),
        (["TRAIN.ENABLE", "False", "TEST.CHECKPOINT_FILE_PATH", "{tmp}/nope.pyth"], "nope.pyth"),
        (["OUTPUT_DIR", "{tmp}/file/out"], "OUTPUT_DIR {tmp}/file/out is not writable"),
        (["DATA.PATH_TO_DATA_DIR", "{tmp}/nothing"], "{tmp}/nothing/train.csv not found"),
        (["TRAIN.BATCH_SIZE", "0"], "TRAIN.BATCH_SIZE must be positive"),
        (
            ["MODEL.NUM_CLASSES", "5"],
            "MODEL.NUM_CLASSES is 5 but the dataset in {data} has 3 classes ('up', 'down', 'still');",
        ),
        (
            ["TRAIN.CHECKPOINT_FILE_PATH", "rev_mvit_b"],
            "TRAIN.CHECKPOINT_FILE_PATH 'rev_mvit_b' is neither a file nor a release",
        ),
        (
            ["DATA.GENERATE_SYNTHETIC", "True", "DATA.PATH_TO_DATA_DIR", "{tmp}"],
            "{tmp} is not empty and holds no synthetic dataset: generate it into an empty folder, "
            "or set DATA.GENERATE_SYNTHETIC False to use the videos listed there",
        ),
        (
            ["TRAIN.BATCH_SIZE", "auto"],
            "TRAIN.BATCH_SIZE auto searches a CUDA GPU's memory, and this run is on the cpu: "
            "set a number of videos",
        ),
        (
            ["MVIT.REV.STORED_LAYERS", "auto"],
            "MVIT.REV.STORED_LAYERS auto searches a CUDA GPU's memory, and this run is on the "
            "cpu: list the layers to store, or none",
        ),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "missing-checkpoint",
        "output-not-writable",
        "no-data",
        "batch",
        "class-count",
        "fine-tuning-source",
        "synthetic-into-another-dataset",
        "auto-batch-on-cpu",
        "auto-stored-layers-on-cpu",
    ],
)
def test_user_mistakes_are_one_line_errors(tiny_dataset, tmp_path, opts, message):
    (tmp_path / "file").write_text("a file, not a folder")
    cfg_file = write_cfg(tiny_cfg(tiny_dataset, tmp_path / "out"), tmp_path / "cfg.yaml")
    result = run_net(cfg_file, *(opt.format(tmp=tmp_path) for opt in opts))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1, result.stderr
    assert message.format(tmp=tmp_path, data=tiny_dataset) in result.stderr
    # Inputs are checked before anything is written.
    assert not (tmp_path / "out").exists()


def test_the_kinetics_config_without_data_says_how_to_prepare_it(tmp_path):
    config = ROOT / "configs" / "kinetics" / "REV_MVIT_B_16x4.yaml"
    result = run_net(
        config, "DATA.PATH_TO_DATA_DIR", str(tmp_path / "k400"), "OUTPUT_DIR", str(tmp_path)
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"{tmp_path}/k400/train.csv not found" in result.stderr
    assert "tools/prepare_kinetics.py" in result.stderr


def test_a_loader_worker_death_outside_the_loader_stops_the_run_with_one_line(monkeypatch, capsys):
    # torch's SIGCHLD handler raises this wherever the main process is, e.g. in the model.
    engine_run = importlib.import_module("revvideo.engine.run")

    def dies(cfg):
        raise RuntimeError(
            "DataLoader worker (pid 4242) exited unexpectedly with exit code 1. Details are "
            "lost due to multiprocessing. Rerunning with num_workers=0 may give better error "
            "trace."
        )

    monkeypatch.setattr(engine_run, "check_inputs", dies)
    with pytest.raises(RunStopped) as stopped:
        engine_run.run(get_cfg())
    message = str(stopped.value)
    assert "\n" not in message
    assert message.startswith(
        "a data loader worker died (exited unexpectedly with exit code 1) while the model"
    )
    assert "same command resumes" in message

    def fails(cfg):
        raise RuntimeError("some other failure")

    monkeypatch.setattr(engine_run, "check_inputs", fails)
    with pytest.raises(RuntimeError, match="some other failure"):
        engine_run.run(get_cfg())

    def stops(cfg):
        raise RunStopped(message)

    monkeypatch.setattr(revvideo.engine, "run", stops)
    assert run_net_front.main(["--cfg", str(ROOT / "configs/synthetic/REV_MVIT_XS.yaml")]) == 1
    assert capsys.readouterr().err == f"error: {message}\n"


def test_a_disk_that_cannot_take_a_file_is_one_error_line(monkeypatch, capsys, tmp_path):

    def disk_full(cfg):
        raise OSError(28, "No space left on device", str(tmp_path / "log.jsonl"))

    monkeypatch.setattr(revvideo.engine, "run", disk_full)
    config = str(ROOT / "configs/synthetic/REV_MVIT_XS.yaml")
    assert run_net_front.main(["--cfg", config, "OUTPUT_DIR", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        f"error: cannot write {tmp_path / 'log.jsonl'}: No space left on device; no checkpoint "
        "was written\n"
    )
