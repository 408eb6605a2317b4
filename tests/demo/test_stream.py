"""classify.py --stream and Classifier.stream: a video piped in at real time, faster than real
time, stalling or cut mid-packet; a model slower than the source; sources that cannot be read."""

import contextlib
import functools
import http.server
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace

import av
import pytest
import torch
from PIL import Image
from torch import nn

from revvideo.data import decoding
from revvideo.data.synthetic import write_video
from revvideo.demo.classifier import load_classifier

from .conftest import ROOT, colour_frames, run_main

BLOCKS = ("red", "green", "blue", "red", "blue", "green") * 2
SECONDS = 2.0 * len(BLOCKS)  # 30 frames of each block at 15 fps


@pytest.fixture(scope="module")
def piped(tmp_path_factory):
    """A 24 s video of colour blocks as MPEG-TS: its path, its bytes and, after each packet,
    (bytes so far, seconds of video so far)."""
    folder = tmp_path_factory.mktemp("stream")
    mp4 = folder / "blocks.mp4"
    write_video(str(mp4), colour_frames(BLOCKS, height=32, width=40), 15, "libx264")
    buffer = io.BytesIO()
    marks = []
    with av.open(str(mp4)) as source, av.open(buffer, "w", format="mpegts") as ts:
        stream = source.streams.video[0]
        copy = ts.add_stream_from_template(stream)
        seen = 0.0
        for packet in source.demux(stream):
            if packet.dts is None:
                continue
            seen = max(seen, float(packet.pts * stream.time_base) + 1 / 15)
            packet.stream = copy
            ts.mux(packet)
            marks.append((buffer.getbuffer().nbytes, seen))
    data = buffer.getvalue()
    marks[-1] = (len(data), SECONDS)  # the muxer's last bytes come at the close
    path = folder / "blocks.ts"
    path.write_bytes(data)
    return path, data, marks


@pytest.fixture(scope="module")
def classifier(trained):
    return load_classifier(trained[0], None, torch.device("cpu"))


class Feeder(threading.Thread):
    """Writes `data` into `pipe` (a binary file) as its `marks` say, `speed` x real time (0:
    at once), pausing `stall` (seconds of video, pause) once; stops at byte `until` and closes
    the pipe. `sent` is [(monotonic time, seconds of video sent)]."""

    def __init__(self, pipe, data, marks, speed=1.0, stall=None, until=None):
        super().__init__(daemon=True)
        self.pipe, self.data, self.marks = pipe, data, marks
        self.speed, self.stall, self.until = speed, stall, until or len(data)
        self.sent = [(time.monotonic(), 0.0)]

    def run(self):
        began = time.monotonic()
        written = 0
        try:
            for offset, seconds in self.marks:
                if self.speed:
                    time.sleep(max(0.0, began + seconds / self.speed - time.monotonic()))
                if self.stall and seconds >= self.stall[0]:
                    time.sleep(self.stall[1])
                    began += self.stall[1]
                    self.stall = None
                try:
                    self.pipe.write(self.data[written : min(offset, self.until)])
                    self.pipe.flush()
                except BrokenPipeError:
                    return  # the reader has ended
                written = min(offset, self.until)
                self.sent.append((time.monotonic(), seconds))
                if written == self.until:
                    break
        finally:
            with contextlib.suppress(BrokenPipeError):
                self.pipe.close()

    def seconds_sent_by(self, moment):
        return max(seconds for when, seconds in self.sent if when <= moment)


COMMAND = [sys.executable, str(ROOT / "demo/classify.py"), "-", "--stream", "--checkpoint"]


def stream_tool(checkpoint, *args):
    return subprocess.Popen(
        [*COMMAND, str(checkpoint), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )


def timed_lines(stream):
    """[(monotonic time, line)] of a process's output, read as it comes."""
    lines = []

    def read():
        for line in stream:
            lines.append((time.monotonic(), line.decode()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return lines, reader


def window_lines(lines):
    return [line for _, line in lines if " s  " in line and "latency" in line]


def test_a_pipe_at_real_time_gets_its_first_line_long_before_the_end(trained, piped):
    _, data, marks = piped
    half = next(offset for offset, seconds in marks if seconds >= SECONDS / 2)
    tool = stream_tool(trained[0])
    feeder = Feeder(tool.stdin, data, marks, until=half)
    lines, reader = timed_lines(tool.stdout)
    feeder.start()
    assert tool.wait(timeout=120) == 0, tool.stderr.read().decode()
    reader.join()

    windows = window_lines(lines)
    first_seen = feeder.seconds_sent_by(lines[0][0])
    assert first_seen < 0.4 * SECONDS, (first_seen, lines[:2])
    starts = [float(line.split("-")[0]) for line in windows]
    assert starts == sorted(starts) and starts[0] == 0.0
    assert starts[-1] == pytest.approx(SECONDS / 2 - 0.53, abs=0.6)
    # At real time each line follows its frames closely.
    assert max(float(line.split("latency ")[1].split()[0]) for line in windows) < 2.0
    summary = lines[len(windows)][1]
    assert summary.startswith("- ended: ") and "windows scored" in summary
    # The summary's segments follow the blocks: red, green, blue, red, blue, green.
    segments = [line.split()[2] for _, line in lines[len(windows) + 1 :]]
    assert segments[:6] == list(BLOCKS[:6])


def test_a_stream_that_stalls_then_ends_mid_packet(trained, piped):
    _, data, marks = piped
    cut = next(offset for offset, seconds in marks if seconds >= 0.75 * SECONDS) + 50
    tool = stream_tool(trained[0], "--json")
    feeder = Feeder(tool.stdin, data, marks, speed=0, stall=(SECONDS / 2, 1.5), until=cut)
    lines, reader = timed_lines(tool.stdout)
    feeder.start()
    assert tool.wait(timeout=120) == 0, tool.stderr.read().decode()
    reader.join()
    assert b"Traceback" not in tool.stderr.read()

    *windows, summary = [json.loads(line) for _, line in lines]
    # Faster than real time, the source waits for the model: no window is skipped.
    assert summary["skipped"] == 0 and all(window["skipped"] == 0 for window in windows)
    assert summary["windows"] == len(windows) and summary["stopped"] is None
    assert windows[-1]["end"] == pytest.approx(0.75 * SECONDS, abs=0.6)
    assert [segment["class"] for segment in summary["segments"]][:6] == list(BLOCKS[:6])


def test_ctrl_c_ends_a_stream_with_its_summary(trained, piped):
    _, data, marks = piped
    tool = stream_tool(trained[0])
    feeder = Feeder(tool.stdin, data, marks)
    lines, reader = timed_lines(tool.stdout)
    feeder.start()
    while len(window_lines(lines)) < 3 and tool.poll() is None:
        time.sleep(0.05)
    tool.send_signal(signal.SIGINT)
    assert tool.wait(timeout=60) == 0
    reader.join()

    scored = len(window_lines(lines))
    summary = next(line for _, line in lines if " windows scored" in line)
    assert summary.startswith(f"- stopped by Ctrl-C: {scored} windows scored, ")
    assert b"Traceback" not in tool.stderr.read()


def test_a_url_streams_like_the_file_it_serves(classifier, piped):
    path, _, _ = piped
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(path.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{path.name}"
        served = classifier.stream(url)
        windows = list(served)
    finally:
        server.shutdown()
    local = list(classifier.stream(str(path)))

    assert served.warnings == [] and served.skipped == 0
    assert [w.start for w in windows] == [w.start for w in local]
    for window, twin in zip(windows, local, strict=True):
        torch.testing.assert_close(window.probabilities, twin.probabilities, atol=1e-6, rtol=0)


def test_a_network_source_that_stalls_ends_after_its_timeout(classifier, piped, monkeypatch):
    """A server that sends half the video, then nothing: the windows of that half, then the
    end, said in a warning."""
    _, data, _ = piped
    monkeypatch.setattr(decoding, "_NETWORK_TIMEOUT", 1.0)
    listener = socket.create_server(("127.0.0.1", 0))
    stalled = threading.Event()

    def serve():
        connection, _ = listener.accept()
        connection.recv(4096)
        connection.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\n"
            + f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data[: len(data) // 2]
        )
        stalled.wait(30)
        connection.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        stream = classifier.stream(f"http://127.0.0.1:{listener.getsockname()[1]}/live.ts")
        windows = list(stream)
    finally:
        stalled.set()
        listener.close()

    assert windows[-1].end == pytest.approx(SECONDS / 2, abs=1.0)
    assert len(stream.warnings) == 1
    assert stream.warnings[0].startswith("nothing arrived for 1 s after ")


class Slow(nn.Module):
    """`model`, taking `seconds` more per forward pass."""

    def __init__(self, model, seconds):
        super().__init__()
        self.model, self.seconds = model, seconds

    def forward(self, clips):
        time.sleep(self.seconds)
        return self.model(clips)


def test_a_model_slower_than_the_source_skips_windows_not_time(classifier, piped, tmp_path):
    """Windows every 0.27 s at real time, 0.5 s to score each: windows are skipped, and every
    line comes within two scorings of its frames, plus the second of video that FFmpeg's probe
    delivers at once (a window of it is due up to a second later than it arrives). Queued
    without skipping, the last of the 22 windows would come 11 s after the first."""
    _, data, marks = piped
    fifo = tmp_path / "live.ts"
    os.mkfifo(fifo)
    six_seconds = next(offset for offset, seconds in marks if seconds >= 6.0)

    def feed():
        with open(fifo, "wb") as pipe:
            Feeder(pipe, data, marks, until=six_seconds).run()

    threading.Thread(target=feed, daemon=True).start()
    slow = replace(classifier, model=Slow(classifier.model, 0.5))
    stream = slow.stream(str(fifo))
    windows = list(stream)

    assert stream.skipped > 0
    assert stream.skipped == sum(window.skipped for window in windows)
    assert len(windows) + stream.skipped == pytest.approx(6.0 / 0.267, abs=2)
    probe = int(decoding._LIVE_PROBE["analyzeduration"]) / 1e6
    assert max(window.latency for window in windows) < probe + 2 * 0.5 + 0.25
    assert [w.start for w in windows] == sorted(w.start for w in windows)


def test_stream_windows_are_the_timeline_windows(classifier, piped):
    path, _, _ = piped
    timeline = classifier.timeline(str(path))
    stream = classifier.stream(str(path))
    streamed = {round(window.start, 6): window for window in stream}

    assert stream.warnings == [] and stream.skipped == 0
    common = [window for window in timeline.windows if round(window.start, 6) in streamed]
    assert len(common) >= len(timeline.windows) - 1  # all but the timeline's end-aligned one
    for window in common:
        twin = streamed[round(window.start, 6)]
        assert twin.end == pytest.approx(window.end, abs=1e-6)
        torch.testing.assert_close(twin.probabilities, window.probabilities, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("missing.ts", "missing.ts: cannot open: No such file or directory"),
        (".", ".: a directory, not a video source"),
        ("/dev/null", "/dev/null: cannot open: "),
        ("http://127.0.0.1:9/live.ts", "http://127.0.0.1:9/live.ts: cannot open: "),
        ("notes.txt", "notes.txt: text, not a video"),
    ],
)
def test_a_source_that_cannot_be_read_is_one_line(
    trained, capsys, tmp_path, monkeypatch, source, expected
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not a video\n" * 100)
    status, out, err = run_main(capsys, source, "--stream", "--checkpoint", trained[0])
    assert status == 1 and out == ""
    assert len(err) == 1 and err[0].startswith(f"error: {expected}")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (b"", "error: -: cannot open: "),
        (os.urandom(200_000), "error: -: cannot open: "),
        (None, "error: -: stdin is a terminal: pipe a video into it"),
    ],
)
def test_stdin_that_is_not_a_video_is_one_line(trained, given, expected):
    if given is None:
        _, terminal = os.openpty()
        tool = subprocess.run(
            [*COMMAND, str(trained[0])], stdin=terminal, capture_output=True, timeout=120
        )
    else:
        tool = subprocess.run(
            [*COMMAND, str(trained[0])], input=given, capture_output=True, timeout=120
        )
    lines = tool.stderr.decode().splitlines()
    assert tool.returncode == 1 and len(lines) == 1 and lines[0].startswith(expected), lines


def test_a_stream_writes_the_subtitles_and_plot_of_what_was_seen(trained, piped, tmp_path, capsys):
    path, _, _ = piped
    srt, plot = tmp_path / "live.srt", tmp_path / "live.png"
    status, out, err = run_main(
        capsys, path, "--stream", "--checkpoint", trained[0], "--srt", srt, "--timeline-plot", plot
    )

    assert status == 0, err
    lines = out.splitlines()
    segments = [line for line in lines if line.startswith("  ") and " s  " in line]
    assert lines[-2:] == [f"  wrote {srt}", f"  wrote {plot}"]
    assert srt.read_text().count(" --> ") == len(segments) >= 6
    with Image.open(plot) as image:
        assert image.format == "PNG"


def test_stream_refuses_what_is_for_files(trained, capsys):
    status, _, err = run_main(capsys, "-", "--stream", "--output", "x.mp4")
    assert status == 2 and err == ["error: --output is for video files, not --stream"]
    status, _, err = run_main(capsys, "a.ts", "b.ts", "--stream")
    assert status == 2 and err == ["error: --stream reads one source, got 2 inputs"]


@pytest.mark.parametrize("source", ["-", "rtsp://camera.local/live"])
def test_a_live_source_without_stream_says_so(trained, capsys, source):
    status, _, err = run_main(capsys, source, "--checkpoint", trained[0])
    assert status == 1 and err == [f"error: {source}: a live source: read it with --stream"]
