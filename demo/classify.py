"""`python demo/classify.py`: the command `revvideo-classify` in the checkout
(revvideo.cli.classify, which `--help` describes)."""

import sys

from revvideo.cli.classify import main

if __name__ == "__main__":
    sys.exit(main())
