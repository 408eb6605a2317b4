"""Serves a classifier over HTTP: a page to drop a video on, and a JSON endpoint.

    python tools/serve.py                                   # the quick start's model, port 8000
    python tools/serve.py --checkpoint output/mine --port 8080 --workers 2
    curl --data-binary @video.mp4 'http://127.0.0.1:8000/classify?name=video.mp4'
    curl -F video=@video.mp4 http://127.0.0.1:8000/classify

GET / is a page where a video dropped or picked is classified: its top classes as bars, and for
a video whose timeline has more than one segment, the segments along it. POST /classify takes
the video as the request body (?name= gives its file name) or as the multipart form field
"video", and answers the JSON entry of `classify.py --json` for it, with the timeline of a
video when the model is a video model (as `classify.py --timeline`); "path" is the upload's
file name. GET /health answers the model's source and number of classes.

Uploads are streamed into a private temporary folder (mode 0700) and removed after their
request, the folder at exit. Errors are JSON {"error": "<one line>"}: 400 an empty body or a
form without "video", 413 an upload over --max-upload-mb, 422 a file that is not a video (or
image) the model can classify, 503 when --workers are busy and --queue requests already wait.
The content decides what an upload is; the name's extension only hints at a video's container.
One line per request on stderr: method, path, status, bytes received, seconds, and the class
answered or the error.

Exit status: 2 a mistake in the options or the checkpoint, or an address that cannot be listened
on (one `error:` line); 130 stopped by Ctrl-C, 143 by SIGTERM (one `interrupted` line), after
the requests under way (at most 5 s).
"""

import argparse
import logging
import sys

from revvideo.utils.cli import command_parser, positive_int, run_interruptibly


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number, 0 to 65535, got {text!r}")
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected 0 or a positive integer, got {text!r}")
    return int(text)


def _megabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected a positive number of MB, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(__doc__)
    parser.add_argument(
        "--checkpoint",
        help="checkpoint file, run folder, release name or exported model (.onnx on onnxruntime, "
        ".pt2) (default: the newest checkpoint of the quick start, "
        "configs/synthetic/REV_MVIT_XS.yaml, run from the repository's root)",
    )
    parser.add_argument(
        "--cfg", help="YAML config of the model (default: the config stored in the checkpoint)"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; 0.0.0.0 opens it to the network (default: %(default)s)",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=8000,
        help="port to listen on; 0: a free one (default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="videos classified at once, each on a thread (default: %(default)s)",
    )
    parser.add_argument(
        "--queue",
        type=_count,
        default=16,
        help="requests that may wait beyond --workers; more are answered 503 (default: "
        "%(default)s)",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=_megabytes,
        default=200.0,
        help="largest upload in MB (2**20 bytes); larger ones are answered 413 (default: %(default)g)",
    )
    parser.add_argument(
        "--device", help="cpu, cuda, cuda:1, mps, ... (default: cuda if available, else cpu)"
    )
    parser.add_argument(
        "--topk", type=positive_int, default=5, help="classes answered (default: %(default)s)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_interruptibly(lambda: _serve(build_parser().parse_args(argv)))


def _serve(args: argparse.Namespace) -> int:
    from revvideo.demo.classifier import load_classifier
    from revvideo.demo.run import checkpoint_source, pick_device
    from revvideo.serve import Limits, build_app, listening_socket, uvicorn_server
    from revvideo.utils.errors import UserError

    # The model first: a checkpoint that cannot be used is said before the port is taken.
    try:
        classifier = load_classifier(
            checkpoint_source(args.checkpoint), args.cfg, pick_device(args.device)
        )
        sock = listening_socket(args.host, args.port)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("revvideo.serve").setLevel(logging.INFO)
    limits = Limits(args.workers, args.queue, int(args.max_upload_mb * 2**20), args.topk)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(
        f"serving {classifier.source} ({len(classifier.class_names)} classes) on "
        f"http://{shown}:{port}/ ({args.workers} workers); Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    uvicorn_server(build_app(classifier, limits)).run(sockets=[sock])
    return 0
