"""revvideo-serve as a command: the model loaded before the port is taken, one `error:` line for
what cannot be served, and Ctrl-C stopping a running server."""

import os
import re
import signal
import socket
import subprocess
import sys

import httpx
from demo.conftest import ROOT

from revvideo.cli import serve


def _run(capsys, *args):
    status = serve.main([str(arg) for arg in args])
    return status, capsys.readouterr().err.splitlines()


def test_a_missing_checkpoint_is_one_error_line(capsys, tmp_path):
    status, err = _run(capsys, "--checkpoint", tmp_path / "missing.pyth", "--port", 0)
    assert status == 2
    assert err == [f"error: checkpoint {tmp_path / 'missing.pyth'} does not exist"]


def test_a_port_in_use_is_one_error_line(capsys, trained):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        status, err = _run(capsys, "--checkpoint", trained[0], "--port", port)
    assert status == 2
    assert err == [f"error: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_the_command_serves_until_ctrl_c(trained):
    command = [sys.executable, str(ROOT / "tools" / "serve.py"), "--checkpoint", str(trained[0])]
    process = subprocess.Popen(
        [*command, "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    try:
        first = process.stderr.readline()
        url = re.search(r"on (http://127\.0\.0\.1:\d+)/", first).group(1)
        assert httpx.get(f"{url}/health", timeout=30).json()["classes"] == 3
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGINT
    assert re.search(r"GET /health 200 0 B [\d.]+ s\n", err)
    assert err.endswith("interrupted\n")
