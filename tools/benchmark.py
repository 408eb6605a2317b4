"""`python tools/benchmark.py`: the command `revvideo-benchmark` in the checkout
(revvideo.cli.benchmark, which `--help` describes)."""

import sys

from revvideo.cli.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
