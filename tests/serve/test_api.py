"""POST /classify, GET / and /health as a client meets them: real videos at once, garbage, empty
and oversized bodies, forms, a client that goes away mid-upload, and a full queue."""

import io
import socket
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import torch
from PIL import Image
from torch import nn

from revvideo.demo.classifier import load_classifier
from revvideo.deploy import export_checkpoint
from revvideo.serve import BackgroundServer, Limits, build_app, listening_socket
from serve.conftest import LIMITS, MAX_UPLOAD_BYTES, raw_request, wait_until


def _post(url, path, name=None):
    content = Path(path).read_bytes()
    params = {"name": name or Path(path).name}
    return httpx.post(f"{url}/classify", content=content, params=params, timeout=60)


def _error(response, status):
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and "\n" not in body["error"]
    return body["error"]


def test_four_concurrent_videos_get_their_classes(server, videos):
    url, _ = server
    colours = ["red", "green", "blue", "red"]
    with ThreadPoolExecutor(len(colours)) as pool:
        responses = list(pool.map(lambda colour: _post(url, videos[colour]), colours))
    for colour, response in zip(colours, responses, strict=True):
        assert response.status_code == 200, response.text
        entry = response.json()
        assert entry["class"] == colour == entry["top_k"][0]["class"]
        assert entry["path"] == Path(videos[colour]).name
        assert len(entry["top_k"]) == 3
        assert sum(item["probability"] for item in entry["top_k"]) == pytest.approx(1, abs=1e-4)
        assert entry["timeline"]["segments"][0]["class"] == colour


def test_a_long_video_gets_its_timeline(server, long_video):
    response = _post(server[0], long_video)
    assert response.status_code == 200, response.text
    segments = response.json()["timeline"]["segments"]
    assert [segment["class"] for segment in segments] == ["red", "green", "blue"]
    assert segments[-1]["end"] == pytest.approx(6.0, abs=0.1)


def test_a_multipart_upload_is_classified(server, videos):
    url, _ = server
    with open(videos["blue"], "rb") as file:
        response = httpx.post(
            f"{url}/classify", files={"video": ("my clip.avi", file, "video/x-msvideo")}, timeout=60
        )
    assert response.status_code == 200, response.text
    assert response.json()["class"] == "blue" and response.json()["path"] == "my clip.avi"


def test_a_file_name_that_is_not_utf8_is_shown_escaped(server, videos):
    disposition = b'Content-Disposition: form-data; name="video"; filename="\xffred.mp4"'
    body = b"--b\r\n" + disposition + b"\r\n\r\n" + Path(videos["red"]).read_bytes()
    response = httpx.post(
        f"{server[0]}/classify",
        content=body + b"\r\n--b--\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=b"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.json()["path"] == "\\xffred.mp4" and response.json()["class"] == "red"


def test_a_form_without_the_video_field_is_400(server, videos):
    with open(videos["red"], "rb") as file:
        response = httpx.post(f"{server[0]}/classify", files={"clip": file}, timeout=60)
    assert "'video'" in _error(response, 400)


def test_random_bytes_are_a_json_error_naming_why(server):
    garbage = bytes(range(256)) * 64
    response = httpx.post(
        f"{server[0]}/classify", content=garbage, params={"name": "x.mp4"}, timeout=60
    )
    error = _error(response, 422)
    assert error.startswith("x.mp4: ") and "cannot open" in error


def test_the_content_decides_not_the_name(server, videos):
    url, _ = server
    picture = io.BytesIO()
    Image.new("RGB", (64, 48), (220, 30, 30)).save(picture, format="PNG")
    response = httpx.post(
        f"{url}/classify", content=picture.getvalue(), params={"name": "clip.mp4"}, timeout=60
    )
    assert "a still image" in _error(response, 422)
    response = _post(url, videos["green"], name="green.jpg")
    assert response.status_code == 200 and response.json()["class"] == "green"


def test_an_empty_body_is_400(server):
    assert "empty" in _error(httpx.post(f"{server[0]}/classify", timeout=60), 400)


def test_an_oversized_body_is_413(server):
    url, _ = server
    body = b"\0" * (MAX_UPLOAD_BYTES + 1)
    assert "limit of 1 MB" in _error(httpx.post(f"{url}/classify", content=body, timeout=60), 413)
    # Without a Content-Length, the bytes streamed are counted.
    chunks = (b"\0" * 2**16 for _ in range(2 * MAX_UPLOAD_BYTES // 2**16))
    assert "limit" in _error(httpx.post(f"{url}/classify", content=chunks, timeout=60), 413)
    assert httpx.get(f"{url}/health").status_code == 200


def test_a_client_gone_mid_upload_leaves_the_server_up_and_no_file(server, videos):
    url, upload_dir = server
    head = (
        "POST /classify HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream"
        f"\r\nContent-Length: {MAX_UPLOAD_BYTES}"
    )
    raw_request(url, head, Path(videos["red"]).read_bytes()[:10_000]).close()
    assert wait_until(lambda: not any(upload_dir.iterdir())), list(upload_dir.iterdir())
    response = _post(url, videos["red"])
    assert response.status_code == 200 and response.json()["class"] == "red"
    assert list(upload_dir.iterdir()) == []


def test_the_upload_folder_is_private(server):
    assert stat.S_IMODE(server[1].stat().st_mode) == 0o700


def test_the_page_has_an_upload_input(server):
    response = httpx.get(server[0])
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert '<input type="file" id="video" name="video"' in response.text
    assert "http://" not in response.text and "https://" not in response.text  # offline


def test_health_names_the_model(server, trained):
    answer = httpx.get(f"{server[0]}/health").json()
    assert answer == {"source": str(trained[0]), "classes": 3}


class _Held(nn.Module):
    """A model that waits for `release` once `entered` is set: a worker kept busy."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.entered, self.release = threading.Event(), threading.Event()

    def forward(self, clips):
        self.entered.set()
        self.release.wait(30)
        return self.model(clips)


def test_a_full_queue_is_503_and_the_upload_folder_goes_at_shutdown(classifier, videos):
    held = _Held(classifier.model)
    app = build_app(replace(classifier, model=held), Limits(workers=1, queue=0))
    with BackgroundServer(app) as running, ThreadPoolExecutor(1) as pool:
        first = pool.submit(_post, running.url, videos["red"])
        assert held.entered.wait(30)
        assert "busy" in _error(_post(running.url, videos["green"]), 503)
        held.release.set()
        assert first.result().status_code == 200
        assert _post(running.url, videos["green"]).json()["class"] == "green"
    assert not app.state.upload_dir.exists()  # removed at shutdown


def test_the_listening_socket_is_tcp_for_nodelay():
    """asyncio sets TCP_NODELAY only on sockets whose proto is TCP: without it, each answer on a
    kept-alive connection waits 40 ms for a delayed ACK."""
    with listening_socket("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP


def test_an_exported_model_is_served_alike(trained, videos, tmp_path):
    onnx_file = export_checkpoint(trained[0], tmp_path / "model.onnx").path
    app = build_app(load_classifier(onnx_file, None, torch.device("cpu")), LIMITS)
    colours = ["red", "blue"]
    with BackgroundServer(app) as running, ThreadPoolExecutor(len(colours)) as pool:
        responses = list(pool.map(lambda colour: _post(running.url, videos[colour]), colours))
    assert [response.json()["class"] for response in responses] == colours
