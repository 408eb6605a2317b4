"""Train and test a video model from a config (PySlowFast's tools/run_net.py conventions).

    python tools/run_net.py --cfg configs/synthetic/REV_MVIT_XS.yaml        # the quick start
    python tools/run_net.py --cfg configs/kinetics/REV_MVIT_B_16x4.yaml     # train + test
    python tools/run_net.py --cfg configs/kinetics/REV_MVIT_B_16x4.yaml \\
        TRAIN.ENABLE False TEST.CHECKPOINT_FILE_PATH rev_mvit_b_16x4.pyth   # evaluate a checkpoint
    torchrun --nproc_per_node 8 tools/run_net.py --cfg ...                  # DDP, one GPU each

KEY VALUE pairs after the options override config keys. Exit status: 0 done; 2 a user mistake
(printed as one `error:` line); 1 a data loader worker died where the loader could not recover,
or a file could not be written (a full or read-only disk), or another process of a torchrun job
stopped first (one `error:` line; the checkpoints are kept and the same command resumes from
the newest); 130 / 143 stopped by Ctrl-C / SIGTERM in training or validation after saving a
checkpoint (the same command resumes); 130 / 143 also for a Ctrl-C / SIGTERM outside them (the
test writes no results then), or a second Ctrl-C in them (one `interrupted` / `interrupted by
SIGTERM` line, naming the newest checkpoint kept; further signals are ignored while the run
closes).

Where the results go: a run that trains keeps its config.yaml, log and checkpoints in OUTPUT_DIR;
every multi-view test (after training, or of a checkpoint alone) writes its config.yaml,
test_results.json, predictions.csv, confusion.png and reliability.png into a new folder of its own,
OUTPUT_DIR/test/<checkpoint name>, or <checkpoint name>-2, -3, ..., so nothing is replaced.
"""

import argparse
import errno
import os
import sys

from revvideo.utils.cli import command_parser, run_interruptibly

# A disk that cannot take the run's files: full, over quota, read-only or not ours.
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(__doc__)
    parser.add_argument(
        "--cfg", dest="cfg_file", required=True, help="YAML config file (required; no default)"
    )
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        help="KEY VALUE pairs overriding config keys, e.g. SOLVER.MAX_EPOCH 10 (default: none)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    # A Ctrl-C or SIGTERM outside training, or training's second Ctrl-C (see
    # revvideo.engine.stopping), is one `interrupted` line naming the checkpoint kept.
    loaded: dict = {}
    return run_interruptibly(
        lambda: _run(build_parser().parse_args(argv), loaded),
        f"{_rank_prefix()}interrupted",
        kept=lambda: _kept(loaded.get("cfg")),
    )


def _kept(cfg) -> str:
    """What a run stopped by a signal keeps: the newest checkpoint of a training run."""
    if cfg is None or not cfg.TRAIN.ENABLE:
        return ""
    from revvideo.checkpoint.training import latest_checkpoint

    newest = latest_checkpoint(cfg.OUTPUT_DIR)
    return (
        f"; the newest checkpoint, {newest}, is kept (the same command goes on from it)"
        if (newest)
        else ""
    )


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))  # set by torchrun


def _rank_prefix() -> str:
    """Under torchrun every process reports its own errors: this says which one speaks."""
    rank = _rank()
    return f"[rank {rank}] " if rank else ""


def _run(args: argparse.Namespace, loaded: dict) -> int:
    # Imported once the arguments are read, so that --help and usage errors answer at once.
    from revvideo.checkpoint.training import latest_checkpoint
    from revvideo.config import load_config
    from revvideo.engine import run
    from revvideo.engine.distributed import another_process_stopped
    from revvideo.engine.fine_tuning import adopt_checkpoint_model
    from revvideo.engine.monitor import setup_logging
    from revvideo.utils.errors import RunStopped, UserError

    setup_logging(_rank())
    prefix = _rank_prefix()
    rank_count = int(os.environ.get("WORLD_SIZE", "1"))
    cfg = None
    try:
        cfg = loaded["cfg"] = load_config(args.cfg_file, args.opts)
        adopt_checkpoint_model(cfg, explicit=args.opts[::2])
        return run(cfg)
    except UserError as err:
        print(f"{prefix}error: {err}", file=sys.stderr)
        return 2
    except RunStopped as err:
        print(f"{prefix}error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        if err.errno not in DISK_ERRORS:
            raise
        newest = latest_checkpoint(cfg.OUTPUT_DIR) if cfg is not None else None
        kept = (
            f"the newest checkpoint, {newest}, is kept" if newest else "no checkpoint was written"
        )
        print(
            f"{prefix}error: cannot write {err.filename or 'a file'}: {err.strerror}; {kept}",
            file=sys.stderr,
        )
        return 1
    except RuntimeError as err:
        if rank_count > 1 and another_process_stopped(err):
            # The process that stopped first printed why; a traceback here would bury it.
            print(f"{prefix}stopped: another process of this run stopped first", file=sys.stderr)
            return 1
        raise
