"""The service of the demo's tiny colour classifier, on a real uvicorn server on a free port."""

import socket
import time

import pytest
import torch
from demo.conftest import single_thread, trained, videos, write_colour_video  # noqa: F401

from revvideo.demo.classifier import load_classifier
from revvideo.serve import BackgroundServer, Limits, build_app

# Small enough for an oversized upload to be cheap, large enough for every test video.
MAX_UPLOAD_BYTES = 2**20
LIMITS = Limits(workers=2, queue=8, max_upload_bytes=MAX_UPLOAD_BYTES, topk=3)


@pytest.fixture(autouse=True)
def one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def classifier(trained):  # noqa: F811
    return load_classifier(trained[0], None, torch.device("cpu"))


@pytest.fixture(scope="module")
def server(classifier):
    """(url, the private upload folder) of the service, running for the module's tests."""
    app = build_app(classifier, LIMITS)
    with BackgroundServer(app) as running:
        yield running.url, app.state.upload_dir


@pytest.fixture(scope="session")
def long_video(tmp_path_factory):
    """6 s: 2 s of red, then green, then blue."""
    path = tmp_path_factory.mktemp("long") / "red_green_blue.mp4"
    return write_colour_video(path, "red", "green", "blue")


def wait_until(condition, seconds=10.0):
    """Whether `condition()` came true within `seconds` (polled)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def raw_request(url, head, body=b""):
    """A socket to the server of `url` that has sent the request line and headers `head`
    (without the blank line) and `body`."""
    host, port = url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=10)
    connection.sendall(head.encode() + b"\r\n\r\n" + body)
    return connection
