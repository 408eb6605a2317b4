"""Each test starts with the stop-signal handlers of the test process. The tests of the deploy
extra are not collected where it is not installed (the GPU machines' environment)."""

import importlib.util
import signal

import pytest

collect_ignore = [
    folder
    for folder, module in (("deploy", "onnxruntime"), ("serve", "starlette"))
    if importlib.util.find_spec(module) is None
]


@pytest.fixture(autouse=True)
def stop_signal_handlers_restored():
    # A command run in this process that ends by a signal ignores SIGINT and SIGTERM from then
    # on, as a closing command should; processes forked by a later test would inherit that.
    saved = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)
