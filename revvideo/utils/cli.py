"""What the command-line fronts share: option mistakes reported like every other user mistake,
and Ctrl-C and SIGTERM."""

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


class Interrupted(KeyboardInterrupt):
    """A stop signal (SIGINT or SIGTERM) that ends a command: `signal_number` says which. A
    KeyboardInterrupt, so that whatever cleans up after a Ctrl-C cleans up after it too."""

    def __init__(self, signal_number: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = int(signal_number)


# Whether processes forked now ignore Ctrl-C: while a command runs (see run_interruptibly).
_forks_ignore_interrupts = False
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run_interruptibly(
    command: Callable[[], int],
    interrupted: str = "interrupted",
    kept: Callable[[], str] | None = None,
) -> int:
    """`command()`'s exit status, where a Ctrl-C or a SIGTERM at any moment of it, its imports
    included, is one line on stderr and status 128 + the signal's number (130, 143): for Ctrl-C
    the line `interrupted`, for SIGTERM the same naming the signal (`interrupted by SIGTERM`);
    either followed by `kept()`, when given, which says what the command kept (e.g. "; the
    newest checkpoint, X, is kept"). A command's `main` is this call, with the argument parsing
    and the heavy imports inside `command`.

    Meanwhile the first stop signal raises Interrupted (a KeyboardInterrupt) and later ones are
    ignored, and processes forked (data loader workers) ignore Ctrl-C and take SIGTERM as
    before the command: a terminal sends Ctrl-C to the whole process group, and the command
    stops its workers itself, whereas a worker that stopped on its own could print a traceback,
    or starve the step that training finishes on its first Ctrl-C (training, validation and the
    test handle both signals themselves meanwhile: revvideo.engine.stopping.StopRequest). A
    command that ends interrupted, or stopped by a signal, ignores both from then on: all it has
    left to do is close down, which a signal would only break into with tracebacks. Otherwise
    the caller's handling is back (a test or notebook that called `main`)."""
    global _forks_ignore_interrupts
    previous = {number: signal.getsignal(number) for number in _STOP_SIGNALS}
    status = None
    try:
        for number in _STOP_SIGNALS:
            signal.signal(number, _interrupt)
        _forks_ignore_interrupts = True
        _register_fork_hook()
        status = command()
    except KeyboardInterrupt as stop:
        number = getattr(stop, "signal_number", signal.SIGINT)
        line = interrupted
        if number != signal.SIGINT:
            name = signal.Signals(number).name
            line = line.replace("interrupted", f"interrupted by {name}", 1)
        print(f"{line}{_said(kept)}", file=sys.stderr)
        status = 128 + number
    finally:
        if status is not None and status > 128:
            for number in _STOP_SIGNALS:
                signal.signal(number, signal.SIG_IGN)
        else:  # done, or an exception (a usage error's SystemExit) on its way to the caller
            for number, handler in previous.items():
                signal.signal(number, handler)
            _forks_ignore_interrupts = False
    return status


def _said(kept: Callable[[], str] | None) -> str:
    """What `kept()` says; nothing where it fails (the line must still come out)."""
    if kept is None:
        return ""
    try:
        return kept()
    except Exception:
        return ""


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
    for number in _STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    raise Interrupted(signal_number)


def _ignore_interrupts_in_a_command_fork() -> None:
    if _forks_ignore_interrupts:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # A worker forked outside a StopRequest dies of SIGTERM, as before the command ran
        # (multiprocessing pools end their workers with it); never raises the command's line.
        if signal.getsignal(signal.SIGTERM) is _interrupt:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


@functools.cache  # once per process, however many commands run in it (tests call main())
def _register_fork_hook() -> None:
    os.register_at_fork(after_in_child=_ignore_interrupts_in_a_command_fork)
