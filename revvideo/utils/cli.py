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


# Whether processes forked now ignore Ctrl-C: while a command runs (see run_interruptibly).
_forks_ignore_interrupts = False


def run_interruptibly(command: Callable[[], int], interrupted: str = "interrupted") -> int:
    """`command()`'s exit status, where a Ctrl-C at any moment of it, its imports included, is
    the one line `interrupted` on stderr and status 130. A command's `main` is this call, with
    the argument parsing and the heavy imports inside `command`.

    Meanwhile the first Ctrl-C raises KeyboardInterrupt and later ones are ignored, and processes
    forked (data loader workers) ignore it: a terminal sends Ctrl-C to the whole process group,
    and the command stops its workers itself, whereas a worker that stopped on its own could
    print a traceback, or starve the step that training finishes on its first Ctrl-C (training
    handles SIGINT itself meanwhile: revvideo.engine.train.StopRequest). A command that ends
    interrupted, or stopped by a signal, ignores Ctrl-C from then on: all it has left to do is
    close down, which a Ctrl-C would only break into with tracebacks. Otherwise the caller's
    handling is back (a test or notebook that called `main`)."""
    global _forks_ignore_interrupts
    previous = signal.getsignal(signal.SIGINT)
    status = None
    try:
        signal.signal(signal.SIGINT, _interrupt)
        _forks_ignore_interrupts = True
        _register_fork_hook()
        status = command()
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        status = 128 + signal.SIGINT
    finally:
        if status is not None and status > 128:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        else:  # done, or an exception (a usage error's SystemExit) on its way to the caller
            signal.signal(signal.SIGINT, previous)
            _forks_ignore_interrupts = False
    return status


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
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _ignore_interrupts_in_a_command_fork() -> None:
    if _forks_ignore_interrupts:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@functools.cache  # once per process, however many commands run in it (tests call main())
def _register_fork_hook() -> None:
    os.register_at_fork(after_in_child=_ignore_interrupts_in_a_command_fork)
