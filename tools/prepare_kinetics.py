"""`python tools/prepare_kinetics.py`: the command `revvideo-prepare-kinetics` in the checkout
(revvideo.cli.prepare_kinetics, which `--help` describes)."""

import sys

from revvideo.cli.prepare_kinetics import main

if __name__ == "__main__":
    sys.exit(main())
