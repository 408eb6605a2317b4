"""`python tools/export.py`: the command `revvideo-export` in the checkout (revvideo.cli.export,
which `--help` describes)."""

import sys

from revvideo.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
