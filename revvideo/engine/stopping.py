"""Stop requests (SIGTERM, Ctrl-C) that training, validation and the test honour after a batch."""

import contextlib
import signal
import threading
from collections.abc import Iterator

from revvideo.utils.cli import Interrupted

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Within `with`, the first SIGTERM or SIGINT only sets `signal_number`, for the loop to stop
    at its next batch. A Ctrl-C after it aborts (KeyboardInterrupt) at once, or as the `held`
    block ends; later signals are ignored. Outside the main thread no signal ever arrives."""

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self._previous: dict[int, object] = {}
        self._holding = self._abort_pending = False

    def _handle(self, signal_number: int, frame: object) -> None:
        if self.signal_number is None:
            self.signal_number = signal_number
        elif signal_number == signal.SIGINT:
            self._previous[signal.SIGINT] = signal.SIG_IGN  # also while the run closes
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            self._abort_pending = self._holding
            if not self._holding:
                raise KeyboardInterrupt

    @property
    def requested(self) -> bool:
        return self.signal_number is not None

    @property
    def name(self) -> str:
        """The requested signal's name, e.g. SIGINT."""
        return signal.Signals(self.signal_number).name

    def agree(self, any_process: bool) -> bool:
        """Whether to stop, given whether any process was asked to (the same on all of them); a
        process that was not asked takes SIGTERM as its signal."""
        if any_process and self.signal_number is None:
            self.signal_number = signal.SIGTERM
        return self.signal_number is not None

    def interrupt(self) -> None:
        """Raises Interrupted for the requested signal."""
        raise Interrupted(self.signal_number)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Within, an abort waits until the block ends: for work that must end whole."""
        outer, self._holding = self._holding, True
        try:
            yield
        finally:
            self._holding = outer
        if self._abort_pending and not outer:
            self._abort_pending = False
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def closing(self, iterator: Iterator) -> Iterator[Iterator]:
        """`iterator` (a generator), closed on leaving within `held`: a KeyboardInterrupt as a
        data loader's workers shut down would be lost in torch's destructor."""
        try:
            yield iterator
        finally:
            with self.held():
                iterator.close()

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


def stopping(stop: StopRequest | None, iterator: Iterator) -> contextlib.AbstractContextManager:
    """`stop.closing(iterator)`, or a plain closing where no stop request is held."""
    return stop.closing(iterator) if stop is not None else contextlib.closing(iterator)
