"""What the command-line fronts share: option mistakes reported like every other user mistake,
and Ctrl-C."""

import argparse
import functools
import os
import signal
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


def interrupt_once() -> None:
    """From now on in this process, the first Ctrl-C (SIGINT) raises KeyboardInterrupt, which
    the command reports as one `interrupted` line, and later ones are ignored (ignore_interrupts).
    Processes forked from now on (data loader workers) ignore it: a terminal sends Ctrl-C to the
    whole process group, and the command stops its workers itself, whereas a worker that stopped
    on its own could print a traceback, or starve the step that training finishes on its first
    Ctrl-C. Call it first thing in a command, inside the `try` that reports KeyboardInterrupt;
    training handles SIGINT itself meanwhile (revvideo.engine.train.StopRequest)."""
    signal.signal(signal.SIGINT, _interrupt)
    _forked_processes_ignore_interrupts()


def ignore_interrupts() -> None:
    """No more Ctrl-C in this process, once a command is interrupted or stopped by a signal: all
    it has left to do is what that sets off (data loader workers shutting down, files closing,
    the interpreter's exit), which a Ctrl-C would only break into with tracebacks."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _interrupt(signal_number: int, frame: object) -> None:
    ignore_interrupts()
    raise KeyboardInterrupt


@functools.cache  # once per process, however many commands run in it (tests call main())
def _forked_processes_ignore_interrupts() -> None:
    os.register_at_fork(after_in_child=ignore_interrupts)
