"""What the command-line fronts share: option mistakes reported like every other user mistake."""

import argparse
import sys


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose option mistakes are one `error:` line (exit status 2), not a
    usage block."""

    def error(self, message: str) -> None:
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def positive_int(text: str) -> int:
    """An option's value that must be a whole number above 0 (argparse `type=`)."""
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)
