"""Helpers for engine tests: tiny configs, running tools/run_net.py in a child process, and
reading what a run wrote."""

import json
import os
import subprocess
import sys
from pathlib import Path

from revvideo.checkpoint import model_entries, read_checkpoint, save_checkpoint
from revvideo.classes import dataset_class_names
from revvideo.config import CfgNode, load_config
from revvideo.models import build_model

ROOT = Path(__file__).resolve().parents[2]
RUN_NET = ROOT / "tools" / "run_net.py"

# A Rev-MViT with width 16, stage transitions at layers 1 and 3, on 4 frames of 32 px, no
# randomness in the model, 3 classes, no loader workers, 2 epochs of 3 steps.
TINY_OPTS = {
    "RNG_SEED": 0,
    "LOG_PERIOD": 1,
    "MODEL.NUM_CLASSES": 3,
    "MODEL.DROPOUT_RATE": 0.0,
    "DATA.NUM_FRAMES": 4,
    "DATA.SAMPLING_RATE": 4,
    "DATA.TARGET_FPS": 15,
    "DATA.TRAIN_CROP_SIZE": 32,
    "DATA.TEST_CROP_SIZE": 32,
    "DATA.TRAIN_JITTER_SCALES": [32, 40],
    "MVIT.CLS_EMBED_ON": False,
    "MVIT.SEP_POS_EMBED": True,
    "MVIT.DEPTH": 4,
    "MVIT.EMBED_DIM": 16,
    "MVIT.PATCH_KERNEL": [3, 7, 7],
    "MVIT.PATCH_STRIDE": [2, 4, 4],
    "MVIT.PATCH_PADDING": [1, 3, 3],
    "MVIT.DIM_MUL": [[1, 2.0], [3, 2.0]],
    "MVIT.HEAD_MUL": [[1, 2.0], [3, 2.0]],
    "MVIT.POOL_KVQ_KERNEL": [3, 3, 3],
    "MVIT.POOL_Q_STRIDE": [[1, 1, 2, 2], [3, 1, 2, 2]],
    "MVIT.POOL_KV_STRIDE_ADAPTIVE": [1, 4, 4],
    "MVIT.DROPPATH_RATE": 0.0,
    "MVIT.REV.ENABLE": True,
    "MVIT.REV.BUFFER_LAYERS": [1, 3],
    "AUG.ENABLE": False,
    "MIXUP.ENABLE": False,
    "TRAIN.BATCH_SIZE": 4,
    "TRAIN.EVAL_PERIOD": 1,
    "TRAIN.CHECKPOINT_PERIOD": 1,
    "SOLVER.OPTIMIZING_METHOD": "adamw",
    "SOLVER.BASE_LR": 0.001,
    "SOLVER.WARMUP_START_LR": 0.0001,
    "SOLVER.WARMUP_EPOCHS": 1.0,
    "SOLVER.COSINE_AFTER_WARMUP": True,
    "SOLVER.COSINE_END_LR": 0.0001,
    "SOLVER.MAX_EPOCH": 2,
    "SOLVER.WEIGHT_DECAY": 0.05,
    "SOLVER.ZERO_WD_1D_PARAM": True,
    "TEST.BATCH_SIZE": 6,
    "TEST.NUM_ENSEMBLE_VIEWS": 2,
    "TEST.NUM_SPATIAL_CROPS": 1,
    "DATA_LOADER.NUM_WORKERS": 0,
}

# Clips longer than every video (no random start), the whole frame, no flip: the same training
# clips whatever the random generators do.
FIXED_CLIPS = {
    "DATA__SAMPLING_RATE": 8,
    "DATA__RANDOM_FLIP": False,
    "DATA__TRAIN_JITTER_SCALES_RELATIVE": [1.0, 1.0],
    "DATA__TRAIN_JITTER_ASPECT_RELATIVE": [1.0, 1.0],
}


def tiny_cfg(dataset: Path, output_dir: Path, **overrides) -> CfgNode:
    """The tiny config on `dataset`, writing to `output_dir`; `overrides` use "A__B" for "A.B"."""
    opts = dict(TINY_OPTS)
    opts["DATA.PATH_TO_DATA_DIR"] = str(dataset)
    opts["OUTPUT_DIR"] = str(output_dir)
    opts.update({key.replace("__", "."): value for key, value in overrides.items()})
    flat = [item for pair in opts.items() for item in pair]
    return load_config(None, flat)


def saved_checkpoint(dataset: Path, tmp_path: Path) -> Path:
    """tmp_path/trained.pyth: the tiny model on 4x32x32 clips, untrained, as training saves it
    (weights, config, class names)."""
    cfg = tiny_cfg(dataset, tmp_path / "trained")
    path = tmp_path / "trained.pyth"
    names = dataset_class_names(str(dataset))
    save_checkpoint(path, build_model(cfg), **model_entries(cfg, names, source="scratch"))
    return path


def evaluation_cfg(dataset: Path, output_dir: Path, checkpoint: Path, **overrides) -> CfgNode:
    """tiny_cfg of a run that only tests `checkpoint`."""
    return tiny_cfg(
        dataset, output_dir, TRAIN__ENABLE=False, TEST__CHECKPOINT_FILE_PATH=str(checkpoint),
        **overrides,
    )  # fmt: skip


def write_cfg(cfg: CfgNode, path: Path) -> Path:
    path.write_text(cfg.dump())
    return path


def run_net_command(cfg_file: Path, *opts: str) -> list[str]:
    return [sys.executable, str(RUN_NET), "--cfg", str(cfg_file), *opts]


def quiet_env() -> dict[str, str]:
    """Environment for child processes: one thread each, so that tests running side by side on
    a small machine do not slow each other down."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def run_command(command: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs `command` from the repository root with quiet_env(), capturing its output."""
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=quiet_env(), cwd=ROOT
    )


def run_net(cfg_file: Path, *opts: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_command(run_net_command(cfg_file, *opts), timeout)


def records(output_dir: Path, kind: str) -> list[dict]:
    """The records of `kind` ("step", "epoch", "test") in the run's log.jsonl, in order."""
    lines = (output_dir / "log.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["kind"] == kind]


def epoch_weights(output_dir: Path, epoch: int) -> dict:
    """The model state of the run's checkpoint after `epoch`."""
    path = output_dir / "checkpoints" / f"checkpoint_epoch_{epoch:05d}.pyth"
    return read_checkpoint(path)["model_state"]


def newest_test_folder(output_dir: Path) -> Path:
    """The newest (or the only) test folder of a run into `output_dir`, OUTPUT_DIR/test/<name>."""
    return max((Path(output_dir) / "test").iterdir(), key=lambda folder: folder.stat().st_mtime_ns)


def newest_test_results(output_dir: Path) -> dict:
    """test_results.json of the newest (or the only) test into `output_dir`."""
    return json.loads((newest_test_folder(output_dir) / "test_results.json").read_text())
