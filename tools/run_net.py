"""Train and test a video model from a config (PySlowFast's tools/run_net.py conventions).

    python tools/run_net.py --cfg configs/synthetic/REV_MVIT_XS.yaml        # the quick start
    python tools/run_net.py --cfg configs/kinetics/REV_MVIT_B_16x4.yaml     # train + test
    python tools/run_net.py --cfg configs/kinetics/REV_MVIT_B_16x4.yaml \\
        TRAIN.ENABLE False TEST.CHECKPOINT_FILE_PATH rev_mvit_b_16x4.pyth   # evaluate a checkpoint
    torchrun --nproc_per_node 8 tools/run_net.py --cfg ...                  # DDP, one GPU each

KEY VALUE pairs after the options override config keys. Exit status: 0 done; 2 a user mistake
(printed as one `error:` line); 1 a data loader worker died where the loader could not recover
(one `error:` line; the same command resumes from the newest checkpoint); 130 / 143 stopped by
Ctrl-C / SIGTERM after saving a checkpoint (the same command resumes).
"""

import argparse
import os
import signal
import sys

from revvideo.config import load_config
from revvideo.data.loader import dead_loader_worker
from revvideo.engine import run
from revvideo.engine.monitor import setup_logging
from revvideo.utils.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", dest="cfg_file", required=True, help="YAML config file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))  # set by torchrun
    setup_logging(rank)
    # Under torchrun every process reports its own errors; say which one speaks.
    prefix = f"[rank {rank}] " if rank else ""
    try:
        return run(load_config(args.cfg_file, args.opts))
    except UserError as err:
        print(f"{prefix}error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        death = dead_loader_worker(err)
        if death is None:
            raise
        print(
            f"{prefix}error: a data loader worker died ({death[1]}) while the model was running; "
            "the checkpoints in OUTPUT_DIR are kept and the same command resumes from the newest "
            "(if memory ran out, lower DATA_LOADER.NUM_WORKERS)",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(f"{prefix}interrupted", file=sys.stderr)
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
