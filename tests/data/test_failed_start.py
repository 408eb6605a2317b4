"""A run that stops on a config or data error before training leaves no lock behind: neither
OUTPUT_DIR/.run.lock nor the synthetic dataset's <folder>.lock."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from revvideo.engine import output_lock
from revvideo.engine.output_lock import LOCK_FILE, output_dir_lock
from revvideo.utils.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
QUICK_START = ROOT / "configs" / "synthetic" / "REV_MVIT_XS.yaml"


def run_net(*opts) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "tools" / "run_net.py"), "--cfg", str(QUICK_START)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [*command, *map(str, opts)], capture_output=True, text=True, env=env, timeout=300
    )


def files_under(folder: Path) -> list[str]:
    """Every file and folder under `folder`, relative, hidden ones included, but not what the
    synthetic dataset holds."""
    found = []
    for here, folders, names in os.walk(folder):
        found += [os.path.relpath(os.path.join(here, name), folder) for name in folders + names]
        folders[:] = [name for name in folders if name != "synthetic"]
    return sorted(found)


def test_a_run_stopped_by_a_config_or_data_error_leaves_nothing_it_made(tmp_path):
    output, data = tmp_path / "out", tmp_path / "data" / "synthetic"
    common = ("OUTPUT_DIR", output, "DATA.PATH_TO_DATA_DIR", data)

    # Generates the data, owns OUTPUT_DIR, then the trainer finds no optimizer step in an epoch.
    stopped = run_net(*common, "TRAIN.ACCUMULATION_STEPS", 100)
    assert stopped.returncode == 2, stopped.stderr
    assert "error: an epoch has 18 batches of TRAIN.BATCH_SIZE 16, fewer than" in stopped.stderr
    assert (data / "train.csv").is_file()
    assert files_under(tmp_path) == ["data", "data/synthetic"]  # OUTPUT_DIR made, then removed

    # The data checked before OUTPUT_DIR is owned: a list gone.
    (data / "val.csv").unlink()
    stopped = run_net(*common)
    assert stopped.returncode == 2, stopped.stderr
    assert "val.csv" in stopped.stderr
    assert files_under(tmp_path) == ["data", "data/synthetic"]


def test_the_run_lock_is_there_only_while_a_run_holds_it(tmp_path, monkeypatch):
    with output_dir_lock(tmp_path):
        assert (tmp_path / LOCK_FILE).is_file()
    assert not (tmp_path / LOCK_FILE).exists()

    # A run that locks the file just as its holder removes it locks the new one instead.
    locked = output_lock._locked

    def removed_once_locked(path):
        lock = locked(path)
        if not removed:
            removed.append(path)
            path.unlink()
        return lock

    removed = []
    monkeypatch.setattr(output_lock, "_locked", removed_once_locked)
    with output_dir_lock(tmp_path):
        assert removed and (tmp_path / LOCK_FILE).is_file()
        with pytest.raises(UserError, match="in use by another run"), output_dir_lock(tmp_path):
            pass
    assert not (tmp_path / LOCK_FILE).exists()
