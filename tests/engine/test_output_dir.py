"""OUTPUT_DIR belongs to one run at a time; what killed runs leave is cleaned up; a disk that
cannot take a checkpoint is one line that names the checkpoint kept."""

import fcntl
import json
import logging
import re
import sys

import pytest
import torch

from revvideo.checkpoint import files
from revvideo.checkpoint.training import CHECKPOINT_DIR
from revvideo.data.synthetic import ensure_synthetic_dataset
from revvideo.engine import run
from revvideo.engine.output_lock import LOCK_FILE, output_dir_lock
from revvideo.utils.errors import CheckpointError, UserError

from .helpers import run_command, run_net_command, tiny_cfg, write_cfg


def test_a_second_run_on_the_same_output_dir_is_refused_naming_the_first(tmp_path):
    with output_dir_lock(tmp_path):
        owner = json.loads((tmp_path / LOCK_FILE).read_text())
        in_use = pytest.raises(UserError, match=rf"in use by another run \(pid {owner['pid']} on ")
        with in_use, output_dir_lock(tmp_path):
            pass
    # Released: the next run takes it without a word.
    with output_dir_lock(tmp_path):
        pass


def test_a_lock_left_by_a_dead_run_is_taken_over_and_its_partial_files_removed(tmp_path, caplog):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 4194303, "host": "gone", "started": "x"}))
    checkpoints = tmp_path / CHECKPOINT_DIR
    checkpoints.mkdir()
    (checkpoints / ".checkpoint_epoch_00003.pyth.4194303.tmp.pyth").write_bytes(
        b"half a checkpoint"
    )
    (checkpoints / "checkpoint_epoch_00002.pyth").write_bytes(b"a finished one")

    with caplog.at_level(logging.INFO), output_dir_lock(tmp_path):
        pass

    assert "was left locked by run pid 4194303 on gone, which has ended: taking it over" in (
        caplog.text
    )
    assert "removed 1 partial checkpoint files" in caplog.text
    assert [p.name for p in checkpoints.iterdir()] == ["checkpoint_epoch_00002.pyth"]


def test_run_net_refuses_an_output_dir_in_use_and_writes_nothing_there(tiny_dataset, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    cfg_file = write_cfg(tiny_cfg(tiny_dataset, output), tmp_path / "cfg.yaml")
    with open(output / LOCK_FILE, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write(json.dumps({"pid": 12345, "host": "elsewhere", "started": "today"}))
        lock.flush()
        # Under torchrun: the main process stops on the lock, the other must stop quietly.
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        result = run_command([*torchrun, "--nproc_per_node", "2", *run_net_command(cfg_file)[1:]])

    assert result.returncode != 0
    assert (
        f"error: OUTPUT_DIR {output} is in use by another run (pid 12345 on elsewhere, started "
        "today): wait for it to end, or choose another OUTPUT_DIR"
    ) in result.stderr
    assert "[rank 1] stopped: another process of this run stopped first" in result.stderr
    assert "Connection closed by peer" not in result.stderr
    assert sorted(p.name for p in output.iterdir()) == [LOCK_FILE]


def test_a_full_disk_names_the_checkpoint_that_is_kept(tiny_dataset, tmp_path, monkeypatch):
    cfg = tiny_cfg(tiny_dataset, tmp_path / "out", TEST__ENABLE=False)
    real_save = torch.save

    def fills_the_disk(obj, file, *args, **kwargs):
        # The disk fills at the second epoch's checkpoint; sizing a file in memory still works.
        if hasattr(file, "fileno") and ".checkpoint_epoch_00002.pyth." in file.name:
            raise OSError(28, "No space left on device")
        real_save(obj, file, *args, **kwargs)

    monkeypatch.setattr(files.torch, "save", fills_the_disk)

    with pytest.raises(CheckpointError) as error:
        run(cfg)

    first = tmp_path / "out" / CHECKPOINT_DIR / "checkpoint_epoch_00001.pyth"
    second = tmp_path / "out" / CHECKPOINT_DIR / "checkpoint_epoch_00002.pyth"
    assert re.fullmatch(
        rf"cannot write {re.escape(str(second))}: the disk is full \(the file needs [\d.]+ MiB, "
        rf"[\d.]+ MiB free\); the last good checkpoint, {re.escape(str(first))}, is kept and the "
        "same command resumes from it",
        str(error.value),
    )
    assert first.is_file() and not second.exists()
    assert not list((tmp_path / "out" / CHECKPOINT_DIR).glob(".*.tmp*"))


def test_a_synthetic_dataset_left_half_made_is_cleaned_up(tmp_path):
    root = tmp_path / "data"
    (tmp_path / "data.partial-4194303" / "videos").mkdir(parents=True)

    ensure_synthetic_dataset(
        str(root), classes=("up", "down"), videos_per_class={"train": 1, "val": 1, "test": 1}
    )

    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_rerun_with_nothing_left_to_train_says_so(tiny_dataset, tmp_path, caplog):
    cfg = tiny_cfg(tiny_dataset, tmp_path / "out", SOLVER__MAX_EPOCH=1, TEST__ENABLE=False)
    assert run(cfg.clone()) == 0
    checkpoint = tmp_path / "out" / CHECKPOINT_DIR / "checkpoint_epoch_00001.pyth"
    written = checkpoint.stat().st_mtime_ns

    with caplog.at_level(logging.INFO):
        assert run(cfg.clone()) == 0

    assert (
        f"nothing to train: {checkpoint} already holds all 1 epochs (SOLVER.MAX_EPOCH)"
        in caplog.text
    )
    assert "for epochs 2-1" not in caplog.text
    assert checkpoint.stat().st_mtime_ns == written
