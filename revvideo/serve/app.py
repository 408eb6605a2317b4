"""The Starlette application of revvideo-serve.

Each upload is streamed (never held whole in memory) into its own folder inside a private
temporary folder (mode 0700), classified on a bounded pool of worker threads, and removed when
its request ends; the private folder goes at shutdown. Requests beyond the workers and the
queue are answered 503 at once. Every error is JSON, `{"error": "<one line>"}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import File, FormParser, parse_options_header
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from revvideo.data.paths import VIDEO_EXTENSIONS
from revvideo.demo.classifier import Classifier
from revvideo.demo.images import IMAGE_EXTENSIONS, is_image
from revvideo.demo.run import classify_entry, printable
from revvideo.utils.errors import CheckpointError, ConfigError, UserError, first_line

logger = logging.getLogger("revvideo.serve")

# The multipart form field that carries the video (the page's file input).
UPLOAD_FIELD = "video"
# The name an upload is known by when the client gives none.
UNNAMED = "upload"
# nginx's status for a client that went away before the answer; it only reaches the log.
CLIENT_CLOSED = 499


@dataclass(frozen=True)
class Limits:
    """What the service takes on: `workers` classifications at once, `queue` more requests
    waiting (uploading or for a worker), uploads of at most `max_upload_bytes`, and answers
    with the `topk` classes."""

    workers: int = 1
    queue: int = 16
    max_upload_bytes: int = 200 * 2**20
    topk: int = 5


class Refused(Exception):
    """A request answered with `status` and the JSON error `message` (one line)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Service:
    """The routes' state: the classifier, its worker threads and the uploads' folder."""

    def __init__(self, classifier: Classifier, limits: Limits) -> None:
        self.classifier = classifier
        self.limits = limits
        self.upload_dir: Path | None = None  # made at startup
        self._executor: ThreadPoolExecutor | None = None
        self._admitted = 0  # requests uploading, waiting for a worker or being classified

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.upload_dir = Path(tempfile.mkdtemp(prefix="revvideo-serve-"))  # mode 0700
        app.state.upload_dir = self.upload_dir
        self._executor = ThreadPoolExecutor(self.limits.workers, thread_name_prefix="classify")
        try:
            yield
        finally:
            self._executor.shutdown(wait=True, cancel_futures=True)
            shutil.rmtree(self.upload_dir, ignore_errors=True)

    async def page(self, request: Request) -> Response:
        return HTMLResponse(PAGE)

    async def health(self, request: Request) -> Response:
        names = self.classifier.class_names
        return JSONResponse({"source": self.classifier.source, "classes": len(names)})

    async def classify(self, request: Request) -> Response:
        capacity = self.limits.workers + self.limits.queue
        if self._admitted >= capacity:
            return _refusal(
                request,
                Refused(503, f"busy: {capacity} requests are already in hand; try again later"),
                {"Retry-After": "1"},
            )
        self._admitted += 1
        folder = Path(tempfile.mkdtemp(dir=self.upload_dir))
        try:
            path, name = await self._receive(request, folder)
            loop = asyncio.get_running_loop()
            entry = await loop.run_in_executor(self._executor, self._classify, path, name)
        except Refused as refused:
            return _refusal(request, refused)
        except ClientDisconnect:
            request.state.outcome = "client disconnected"
            return Response(status_code=CLIENT_CLOSED)
        except Exception as err:
            logger.exception("classifying an upload failed")
            return _refusal(request, Refused(500, f"internal error: {first_line(err)}"))
        finally:
            self._admitted -= 1
            shutil.rmtree(folder, ignore_errors=True)
        request.state.outcome = entry["class"]
        return JSONResponse(entry)

    async def _receive(self, request: Request, folder: Path) -> tuple[Path, str]:
        """The upload of `request` (the body, or its form field UPLOAD_FIELD) streamed into
        `folder`: its file and the name the client gave it (else UNNAMED)."""
        limit = self.limits.max_upload_bytes
        too_large = Refused(413, f"the upload is over the limit of {_size(limit)}")
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise too_large
        content_type, options = parse_options_header(request.headers.get("content-type"))
        multipart = content_type == b"multipart/form-data"
        files: list[File] = []
        config = {"UPLOAD_DIR": str(folder), "UPLOAD_DELETE_TMP": False, "MAX_MEMORY_FILE_SIZE": 0}
        given = request.query_params.get("name")
        try:
            parser = FormParser(
                "multipart/form-data" if multipart else "application/octet-stream",
                on_field=None,
                on_file=files.append,
                boundary=options.get(b"boundary"),
                file_name=os.fsencode(given) if given else None,
                config=config,
            )
            received = 0
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise too_large
                parser.write(chunk)
            if received == 0:
                raise Refused(
                    400,
                    "empty request: send the video as the body or as the form "
                    f"field {UPLOAD_FIELD!r}",
                )
            parser.finalize()
        except FormParserError as err:
            raise Refused(400, f"not a valid multipart form: {err}") from None
        finally:
            for file in files:
                file.close()
        upload = next(
            (f for f in files if not multipart or f.field_name == UPLOAD_FIELD.encode()), None
        )
        if upload is None:
            raise Refused(400, f"the form has no file field {UPLOAD_FIELD!r}")
        # The client's bytes that are not UTF-8 as \xNN escapes, as the demo shows file names.
        name = printable(os.path.basename(os.fsdecode(upload.file_name or b""))) or UNNAMED
        if upload.actual_file_name is None:  # nothing was written: an empty file
            raise Refused(400, f"{name}: empty file")
        stored = Path(os.fsdecode(upload.actual_file_name))
        path = stored.rename(folder / f"{UNNAMED}{_suffix(stored, name)}")
        return path, name

    def _classify(self, path: Path, name: str) -> dict:
        """classify_entry of the upload at `path` (with the timeline of a video for a video
        model), told by the client's `name`; Refused 422 for a file it cannot classify."""
        timeline = self.classifier.image_view is None and not is_image(path)
        try:
            entry = classify_entry(self.classifier, str(path), self.limits.topk, timeline)
        except (CheckpointError, ConfigError):
            raise  # the model's fault, not the upload's
        except UserError as err:
            raise Refused(422, str(err).replace(str(path), name)) from None
        entry["path"] = name
        entry["warnings"] = [warning.replace(str(path), name) for warning in entry["warnings"]]
        return entry


def _suffix(path: Path, name: str) -> str:
    """The extension the upload at `path` is classified under, which its content decides: an
    image's format for a picture the demo reads, else the client's extension (`name`'s) where it
    names a video container, else none (the decoder then probes the content alone)."""
    try:
        with Image.open(path) as image:
            picture = f".{(image.format or '').lower()}"
    except (UnidentifiedImageError, OSError):
        picture = ""
    if picture in IMAGE_EXTENSIONS:
        return picture
    extension = Path(name).suffix.lower()
    return extension if extension in VIDEO_EXTENSIONS else ""


def _size(count: int) -> str:
    return f"{count / 2**20:g} MB"


def _refusal(request: Request, refused: Refused, headers: dict | None = None) -> Response:
    request.state.outcome = f"error: {refused}"
    return JSONResponse({"error": str(refused)}, refused.status, headers)


class RequestLog:
    """Logs one line per HTTP request: method, path, status, bytes received, seconds, and the
    class answered or the error (set by the route as `request.state.outcome`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status, received = 500, 0  # 500: no answer started

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        async def noted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, counted, noted)
        finally:
            outcome = scope.get("state", {}).get("outcome")
            logger.info(
                "%s %s %d %d B %.3f s%s",
                scope["method"],
                scope["path"],
                status,
                received,
                time.perf_counter() - started,
                f" {outcome}" if outcome else "",
            )


PAGE = resources.files("revvideo.serve").joinpath("page.html").read_text(encoding="utf-8")


def build_app(classifier: Classifier, limits: Limits | None = None) -> Starlette:
    """The service for `classifier`: `GET /` the page, `POST /classify` the JSON of an upload,
    `GET /health` the model's source and class count. `app.state.upload_dir` is the private
    folder of the uploads while it runs."""
    service = _Service(classifier, limits or Limits())
    return Starlette(
        routes=[
            Route("/", service.page, methods=["GET"]),
            Route("/classify", service.classify, methods=["POST"]),
            Route("/health", service.health, methods=["GET"]),
        ],
        middleware=[Middleware(RequestLog)],
        lifespan=service.lifespan,
    )
