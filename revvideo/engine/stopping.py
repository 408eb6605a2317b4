"""Stop requests (SIGTERM, Ctrl-C) in training, validation and the multi-view test.

Within a `StopRequest`, SIGTERM and SIGINT only set `signal_number`; the loop that holds it
checks it after each batch and stops there: training saves a checkpoint and ends with exit
status 128 + the signal's number, validation ends its epoch without a top-1, the test raises
`revvideo.utils.cli.Interrupted` before writing anything (the command's one line, the same
status). A Ctrl-C after a stop request (a second Ctrl-C, or one after a SIGTERM) raises
KeyboardInterrupt at once, for a user who does not want to wait; later ones are ignored while
the run closes.
"""

import contextlib
import signal
import threading
from collections.abc import Iterator

from revvideo.utils.cli import Interrupted

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Within `with`, SIGTERM and SIGINT only set `signal_number` (the first one's); the loop
    stops when it can (see the module doc). While `held` (or `closing` closes an iterator), an
    abort waits until the block is done.
    """

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self._previous: dict[int, object] = {}
        self._aborted = self._holding_back = False

    def _handle(self, signal_number: int, frame) -> None:
        if self.signal_number is not None and signal_number == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            self._aborted = True
            if not self._holding_back:
                raise KeyboardInterrupt
            return
        if self.signal_number is None:
            self.signal_number = signal_number

    @property
    def requested(self) -> bool:
        return self.signal_number is not None

    @property
    def name(self) -> str:
        """The signal's name, e.g. SIGINT (SIGTERM when another process was stopped)."""
        return signal.Signals(self.signal_number or signal.SIGTERM).name

    def agree(self, any_process: bool) -> bool:
        """Whether any process was asked to stop (`any_process`, from all of them: every
        process must then get the same answer); one that was not takes SIGTERM's part."""
        if any_process and self.signal_number is None:
            self.signal_number = signal.SIGTERM
        return self.signal_number is not None

    def interrupt(self) -> None:
        """Raises Interrupted for the requested signal, where a command ends on it."""
        raise Interrupted(self.signal_number or signal.SIGTERM)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Within, an abort (KeyboardInterrupt) waits until the block is done: for work that
        must end whole, such as writing a set of files, or closing a loader (see `closing`)."""
        aborted_before, holding_before = self._aborted, self._holding_back
        self._holding_back = True
        try:
            yield
        finally:
            self._holding_back = holding_before
        if self._aborted and not aborted_before and not holding_before:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def closing(self, iterator: Iterator) -> Iterator[Iterator]:
        """`iterator` (a generator), closed on leaving. A data loader's workers shut down as it
        closes; a KeyboardInterrupt there, inside torch's destructor, would only print a
        traceback and be lost, so an abort meanwhile takes effect once it is closed."""
        try:
            yield iterator
        finally:
            with self.held():
                iterator.close()

    def __enter__(self) -> "StopRequest":
        # Signals reach the main thread only: elsewhere (a run started in a thread) there is
        # nothing to handle, and the stop is never requested.
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            if not (number == signal.SIGINT and self._aborted):
                signal.signal(number, handler)


def stopping(stop: StopRequest | None, iterator: Iterator) -> contextlib.AbstractContextManager:
    """`stop.closing(iterator)`, or a plain closing where no stop request is held."""
    return stop.closing(iterator) if stop is not None else contextlib.closing(iterator)
