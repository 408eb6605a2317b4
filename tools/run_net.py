"""`python tools/run_net.py`: the command `revvideo-train` in the checkout
(revvideo.cli.run_net, which `--help` describes)."""

import sys

from revvideo.cli.run_net import main

if __name__ == "__main__":
    sys.exit(main())
