"""`python tools/convert_checkpoint.py`: the command `revvideo-convert-checkpoint` in the checkout
(revvideo.cli.convert_checkpoint, which `--help` describes)."""

import sys

from revvideo.cli.convert_checkpoint import main

if __name__ == "__main__":
    sys.exit(main())
