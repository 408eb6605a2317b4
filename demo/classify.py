"""Classify video files or images with a trained model: `python demo/classify.py video.mp4 [--help]`.

The options and exit status are described in revvideo/demo/cli.py, which reads them before
anything heavy (torch, the models) is imported.
"""

import sys

from revvideo.demo.cli import main

if __name__ == "__main__":
    sys.exit(main())
