"""What the command-line fronts share: option mistakes reported like every other user mistake,
and Ctrl-C."""

import argparse
import contextlib
import functools
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


def positive_int(text: str) -> int:
    """An option's value that must be a whole number above 0 (argparse `type=`)."""
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def run_interruptibly(command: Callable[[], int], interrupted: str = "interrupted") -> int:
    """`command()`'s exit status, where a Ctrl-C at any moment of it, its imports included, is
    the one line `interrupted` on stderr and status 130. A command's `main` is this call, with
    the argument parsing and the heavy imports inside `command`."""
    try:
        _interrupt_once()
        status = command()
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        status = 128 + signal.SIGINT
    if status > 128:  # interrupted, or stopped by a signal: the rest is closing down
        _ignore_interrupts()
    return status


def _interrupt_once() -> None:
    """From now on in this process, the first Ctrl-C (SIGINT) raises KeyboardInterrupt, which
    the command reports as one `interrupted` line, and later ones are ignored (_ignore_interrupts).
    Processes forked from now on (data loader workers) ignore it: a terminal sends Ctrl-C to the
    whole process group, and the command stops its workers itself, whereas a worker that stopped
    on its own could print a traceback, or starve the step that training finishes on its first
    Ctrl-C. Training handles SIGINT itself meanwhile (revvideo.engine.train.StopRequest)."""
    signal.signal(signal.SIGINT, _interrupt)
    _forked_processes__ignore_interrupts()


def _ignore_interrupts() -> None:
    """No more Ctrl-C in this process, once a command is interrupted or stopped by a signal: all
    it has left to do is what that sets off (data loader workers shutting down, files closing,
    the interpreter's exit), which a Ctrl-C would only break into with tracebacks."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def interrupts_ignored() -> Iterator[None]:
    """Within, Ctrl-C is ignored; processes started here inherit that (Python then installs no
    handler of its own), so that they stop when their parent says so, without a traceback from
    the middle of their imports."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupt(signal_number: int, frame: object) -> None:
    _ignore_interrupts()
    raise KeyboardInterrupt


@functools.cache  # once per process, however many commands run in it (tests call main())
def _forked_processes__ignore_interrupts() -> None:
    os.register_at_fork(after_in_child=_ignore_interrupts)
