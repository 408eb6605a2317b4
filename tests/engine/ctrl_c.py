"""Runs a command-line front as `python SCRIPT ARGUMENTS...` does, with Ctrl-C pressed at a
chosen moment: SIGINT sent to the whole process group, as a terminal sends it (the data loader
workers get it too); or SIGTERM sent to the command's process, as `kill PID` does. Started in a
session of its own by tests/engine/test_interrupts.py:

    python ctrl_c.py MOMENT SCRIPT [ARGUMENTS...]

MOMENT: `import`, as torch or PyAV (the first heavy import) starts to load; `test`, once the test's first batch is scored and
again as the loader's workers shut down; `step`, in the middle of the first training step;
`step-twice`, the same and again as the epoch's loader workers shut down; `measure`, while the
benchmark waits for its first measuring process; `validation` / `validation-sigterm`, Ctrl-C /
SIGTERM once the first validation batch is loaded; `test-sigterm`, SIGTERM once the first test
batch is loaded. For the last three, a batch of that split asked for after the signal prints
`<split> went on after the stop` on stderr. The
moment is reached by the command itself, never by a timer, so the same thing happens on any
machine however loaded.
"""

import os
import runpy
import signal
import sys


def ctrl_c() -> None:
    os.killpg(0, signal.SIGINT)


def sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def once_loaded(split: str, send) -> None:
    """`send()` as the first batch of `split` leaves its loader (the command then holds it); a
    further batch asked for is reported on stderr."""
    from revvideo.data.loader import VideoLoader

    iterate = VideoLoader.__iter__

    def iterate_and_signal(self):
        batches = iterate(self)
        if self.name != split:
            return batches
        return _signalled(batches, split, send)

    VideoLoader.__iter__ = iterate_and_signal


def _signalled(batches, split, send):
    sent = False
    try:
        for batch in batches:
            if sent:
                print(f"{split} went on after the stop", file=sys.stderr)
            else:
                send()
                sent = True
            yield batch
    finally:
        batches.close()


def at_import() -> None:
    class InterruptHeavyImport:
        def find_spec(self, name, path=None, target=None):
            if name in ("torch", "av"):
                sys.meta_path.remove(self)
                ctrl_c()
            return None  # the usual finders load it

    sys.meta_path.insert(0, InterruptHeavyImport())


def in_test() -> None:
    from torch.utils.data import dataloader

    from revvideo.engine.metrics import VideoScores

    add = VideoScores.add
    shutdown = dataloader._MultiProcessingDataLoaderIter._shutdown_workers

    def add_then_interrupt(self, *arguments):
        add(self, *arguments)
        ctrl_c()

    def interrupt_then_shut_down(self):
        ctrl_c()
        shutdown(self)

    VideoScores.add = add_then_interrupt
    dataloader._MultiProcessingDataLoaderIter._shutdown_workers = interrupt_then_shut_down


def in_step() -> None:
    from revvideo.engine.train import Trainer

    forward_backward = Trainer._forward_backward
    batches = []

    def interrupt_the_first(self, *arguments):
        batches.append(None)
        if len(batches) == 1:
            ctrl_c()
        return forward_backward(self, *arguments)

    Trainer._forward_backward = interrupt_the_first


def in_step_and_worker_shutdown() -> None:
    from torch.utils.data import dataloader

    in_step()
    shutdown = dataloader._MultiProcessingDataLoaderIter._shutdown_workers

    def interrupt_then_shut_down(self):
        ctrl_c()
        shutdown(self)

    dataloader._MultiProcessingDataLoaderIter._shutdown_workers = interrupt_then_shut_down


def in_measurement() -> None:
    from concurrent.futures import Future

    result = Future.result

    def interrupt_then_wait(self, *arguments):
        Future.result = result
        ctrl_c()
        return result(self, *arguments)

    Future.result = interrupt_then_wait


if __name__ == "__main__":
    moment, script, *arguments = sys.argv[1:]
    moments = {
        "import": at_import,
        "test": in_test,
        "step": in_step,
        "step-twice": in_step_and_worker_shutdown,
        "measure": in_measurement,
        "validation": lambda: once_loaded("val", ctrl_c),
        "validation-sigterm": lambda: once_loaded("val", sigterm),
        "test-sigterm": lambda: once_loaded("test", sigterm),
    }
    moments[moment]()
    sys.argv = [script, *arguments]
    runpy.run_path(script, run_name="__main__")
