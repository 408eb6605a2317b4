"""SIGTERM in a command is one line as Ctrl-C is; what a killed run leaves of its result files
is cleaned up by the next run in OUTPUT_DIR, and nothing else."""

import json
import os
import signal

import pytest

from revvideo.engine.output_lock import output_dir_lock
from revvideo.engine.outputs import RECORD_FILE, TEST_DIR, _digest
from revvideo.utils.cli import run_interruptibly


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


def test_the_next_run_removes_what_a_killed_one_left_of_its_results_and_nothing_else(tmp_path):
    output = tmp_path
    (output / ".test_results.json.4194303.tmp.json").write_text("half")
    (output / ".curves.png.4194303.tmp.png").write_bytes(b"half")
    (output / ".notes.txt.12.tmp.txt").write_text("a user's")  # not a run's name: kept
    (output / "predictions.csv").write_text("a user's own")
    evaluations = output / TEST_DIR
    # Killed while testing: its config written, no results.
    unfinished = evaluations / "ckpt"
    unfinished.mkdir(parents=True)
    (unfinished / "config.yaml").write_text("TRAIN: {}\n")
    (unfinished / ".predictions.csv.4194303.tmp.csv").write_text("half")
    (unfinished / RECORD_FILE).write_text(  # the record the run wrote
        json.dumps({"config.yaml": _digest(unfinished / "config.yaml")})
    )
    finished = evaluations / "ckpt-2"
    finished.mkdir()
    (finished / "test_results.json").write_text("{}")
    (finished / RECORD_FILE).write_text("{}")
    users = evaluations / "mine"  # a user's folder: no record of a run
    users.mkdir()
    (users / "config.yaml").write_text("mine")

    with output_dir_lock(output):
        pass

    assert sorted(p.name for p in output.iterdir()) == [
        ".notes.txt.12.tmp.txt", ".run.lock", "predictions.csv", TEST_DIR,
    ]  # fmt: skip
    assert sorted(p.name for p in evaluations.iterdir()) == ["ckpt-2", "mine"]
    assert (users / "config.yaml").read_text() == "mine"
