"""What the command-line fronts share: one-line option errors, and Ctrl-C and SIGTERM."""

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose option mistakes are one `error:` line (exit status 2), not a
    usage block."""

    def error(self, message: str) -> None:
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def command_parser(doc: str) -> OneLineErrorParser:
    """The parser of a command whose docstring `doc` is its help: the first line, a blank line,
    then the rest, shown as written."""
    return OneLineErrorParser(
        description=doc.splitlines()[0],
        epilog=doc.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def positive_int(text: str) -> int:
    """An option's value that must be a whole number above 0 (argparse `type=`)."""
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


class Interrupted(KeyboardInterrupt):
    """The stop signal `signal_number` (SIGINT or SIGTERM) ending a command."""

    def __init__(self, signal_number: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = int(signal_number)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_in_command = False  # read by forked children: see _quiet_fork


def run_interruptibly(
    command: Callable[[], int],
    interrupted: str = "interrupted",
    kept: Callable[[], str] | None = None,
) -> int:
    """`command()`'s exit status. SIGINT or SIGTERM ends it with 128 + the signal's number and
    one stderr line: `interrupted` (`interrupted by SIGTERM` for SIGTERM), then what `kept()` says.
    Parse arguments and import heavy modules inside `command`, so that a signal there is this too.

    The first signal raises Interrupted and later ones are ignored, for good once the status is
    above 128; otherwise the caller's handlers come back. Forked children ignore Ctrl-C meanwhile:
    the command stops them."""
    global _in_command
    previous = {number: signal.getsignal(number) for number in _STOP_SIGNALS}
    status = None
    try:
        for number in _STOP_SIGNALS:
            signal.signal(number, _interrupt)
        _in_command = True
        status = command()
    except KeyboardInterrupt as stop:
        number = getattr(stop, "signal_number", signal.SIGINT)
        line = interrupted
        if number != signal.SIGINT:
            line = line.replace("interrupted", f"interrupted by {signal.Signals(number).name}", 1)
        print(f"{line}{_said(kept)}", file=sys.stderr)
        status = 128 + number
    finally:
        _in_command = False
        stopped = status is not None and status > 128  # closing down, which a signal would break
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_IGN if stopped else handler)
    return status


def _said(kept: Callable[[], str] | None) -> str:
    """What `kept()` says; nothing where it fails (the line must still come out)."""
    try:
        return kept() if kept is not None else ""
    except Exception:
        return ""


@contextlib.contextmanager
def interrupts_ignored() -> Iterator[None]:
    """Within, Ctrl-C is ignored, and so it is in processes spawned here: their parent stops them."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupt(signal_number: int, frame: object) -> None:
    for number in _STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    raise Interrupted(signal_number)


def _quiet_fork() -> None:
    """In a child forked by a command: Ctrl-C ignored, SIGTERM fatal (pools end workers with it)."""
    if _in_command:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_quiet_fork)
