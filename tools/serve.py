"""`python tools/serve.py`: the command `revvideo-serve` in the checkout (revvideo.cli.serve,
which `--help` describes)."""

import sys

from revvideo.cli.serve import main

if __name__ == "__main__":
    sys.exit(main())
