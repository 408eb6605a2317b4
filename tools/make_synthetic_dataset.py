"""Writes the synthetic motion dataset (see revvideo.data.synthetic) into a folder.

python tools/make_synthetic_dataset.py data/synthetic [--seed 0] [--classes up,down,...]
"""

import sys

from revvideo.data.synthetic import main

if __name__ == "__main__":
    sys.exit(main())
