"""`python tools/make_synthetic_dataset.py`: the command `revvideo-make-synthetic-dataset`
in the checkout (revvideo.cli.make_synthetic_dataset, which `--help` describes)."""

import sys

from revvideo.cli.make_synthetic_dataset import main

if __name__ == "__main__":
    sys.exit(main())
