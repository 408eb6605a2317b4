"""SIGTERM in a command is one line as Ctrl-C is; a test stopped by one writes nothing."""

import os
import signal

import pytest

from revvideo.data.loader import VideoLoader
from revvideo.engine import run
from revvideo.utils.cli import Interrupted, run_interruptibly

from .helpers import evaluation_cfg


@pytest.fixture
def signals_restored():
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    yield
    for number, handler in handlers.items():
        signal.signal(number, handler)


def test_sigterm_in_a_command_is_one_line_naming_it_and_what_was_kept(capsys, signals_restored):
    def command():
        signal.raise_signal(signal.SIGTERM)
        pytest.fail("SIGTERM did not stop the command")

    status = run_interruptibly(command, "interrupted (x)", kept=lambda: "; y is kept")
    assert status == 143
    assert capsys.readouterr().err == "interrupted by SIGTERM (x); y is kept\n"
    # Closing down: further signals are ignored.
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN


def test_ctrl_c_in_a_command_is_its_line_and_what_was_kept(capsys, signals_restored):
    def command():
        signal.raise_signal(signal.SIGINT)
        pytest.fail("Ctrl-C did not stop the command")

    assert run_interruptibly(command, kept=lambda: "; y is kept") == 130
    assert capsys.readouterr().err == "interrupted; y is kept\n"


def test_a_command_done_gives_the_caller_its_handlers_back(signals_restored):
    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    assert run_interruptibly(lambda: 0) == 0
    assert {number: signal.getsignal(number) for number in before} == before


def test_a_process_forked_by_a_command_ignores_ctrl_c_and_dies_of_sigterm(signals_restored):
    def command():
        pid = os.fork()
        if pid == 0:
            ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            default = signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
            os._exit(0 if ignored and default else 1)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    assert run_interruptibly(command) == 0


def test_a_stopped_test_makes_no_folder_and_the_next_one_takes_its_name(
    tiny_dataset, tmp_path, checkpoint, monkeypatch, signals_restored
):
    output = tmp_path / "out"
    cfg = evaluation_cfg(tiny_dataset, output, checkpoint, TEST__BATCH_SIZE=2)
    iterate = VideoLoader.__iter__

    def iterate_and_stop(self):
        for batch in iterate(self):
            if self.name == "test":
                signal.raise_signal(signal.SIGTERM)  # to the test's StopRequest
            yield batch

    with monkeypatch.context() as patched:
        patched.setattr(VideoLoader, "__iter__", iterate_and_stop)
        with pytest.raises(Interrupted) as raised:
            run(cfg.clone())
    assert raised.value.signal_number == signal.SIGTERM
    assert not output.exists()  # the run made it and wrote nothing

    assert run(cfg.clone()) == 0
    assert [path.name for path in (output / "test").iterdir()] == ["trained"]
