"""How fast the deployed model answers (tools/benchmark.py --section deploy), for the quick start's
Rev-MViT-XS with random weights (the same speed as trained ones), saved once as a temporary
checkpoint:

- the service (revvideo-serve) started in this process on a free port with --deploy-workers
  workers: requests/s and latency (median, p90) of POST /classify of a 2 s 320x240 video, with
  each of --deploy-clients concurrent clients posting --deploy-requests times each, after one
  untimed request per client; each answer includes the video's timeline, as the service gives;
- the model's forward on --batch random clips, eager PyTorch against the ONNX export
  (revvideo.deploy.export_checkpoint) on onnxruntime, each in a fresh process: clips/s, the
  median of --repeats timings of DEPLOY_STEPS forwards each, after one untimed round.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from revvideo.benchmark.models import Bench, in_fresh_process
from revvideo.benchmark.settings import Settings
from revvideo.benchmark.timeline import MODELS, class_blocks_video
from revvideo.checkpoint import model_entries, save_checkpoint
from revvideo.config import load_config
from revvideo.demo.classifier import load_classifier
from revvideo.deploy import export_checkpoint
from revvideo.deploy.exported import deploy_module
from revvideo.models import build_model
from revvideo.utils.table import format_table

VIDEO_SECONDS = 2.0
# Forward passes per timing of the runtimes.
DEPLOY_STEPS = 20


def run_deploy(settings: Settings, device: torch.device) -> dict:
    """{"server": a row per number of clients, "runtimes": eager PyTorch and onnxruntime}."""
    for name in ("onnxruntime", "uvicorn", "httpx"):
        deploy_module(name, "the deploy section")
    with tempfile.TemporaryDirectory(prefix="revvideo-benchmark-deploy-") as folder:
        checkpoint = _random_checkpoint(Path(folder) / "rev_mvit_xs.pyth")
        video = Path(folder) / "video.mp4"
        class_blocks_video(str(video), VIDEO_SECONDS)
        server = [
            _server_row(checkpoint, video, clients, settings, device)
            for clients in settings.deploy_clients
        ]
        runtimes = _runtime_rows(checkpoint, Path(folder) / "model.onnx", settings, device)
    return {"server": server, "runtimes": runtimes}


def _random_checkpoint(path: Path) -> Path:
    """The quick start's model with random weights, saved with its config at `path`."""
    torch.manual_seed(0)
    cfg = load_config(next(iter(MODELS.values())))
    names = [f"class {index}" for index in range(cfg.MODEL.NUM_CLASSES)]
    save_checkpoint(path, build_model(cfg), **model_entries(cfg, names, source="random"))
    return path


def _server_row(
    checkpoint: Path, video: Path, clients: int, settings: Settings, device: torch.device
) -> dict:
    """`clients` threads each posting `video` settings.deploy_requests times to a fresh service."""
    # The deploy extra's modules, checked by run_deploy: the other sections run without them.
    import httpx

    from revvideo.serve import BackgroundServer, Limits, build_app

    classifier = load_classifier(checkpoint, None, device)
    app = build_app(classifier, Limits(workers=settings.deploy_workers))
    body = video.read_bytes()
    latencies: list[float] = []
    ready = threading.Barrier(clients + 1)
    failures: list[str] = []

    def client(url: str) -> None:
        with httpx.Client(base_url=url, timeout=600) as session:
            session.post("/classify", content=body).raise_for_status()  # untimed
            ready.wait()
            for _ in range(settings.deploy_requests):
                started = time.perf_counter()
                answer = session.post("/classify", content=body)
                latencies.append(time.perf_counter() - started)
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code} {answer.text}")

    with BackgroundServer(app) as running:
        threads = [threading.Thread(target=client, args=(running.url,)) for _ in range(clients)]
        for thread in threads:
            thread.start()
        ready.wait()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"the service failed {len(failures)} requests: {failures[0]}")
    return {
        "clients": clients,
        "workers": settings.deploy_workers,
        "requests": len(latencies),
        "requests_per_s": len(latencies) / seconds,
        "median_s": statistics.median(latencies),
        "p90_s": float(np.percentile(latencies, 90)),
    }


def _runtime_rows(
    checkpoint: Path, onnx_file: Path, settings: Settings, device: torch.device
) -> list[dict]:
    """Clips/s of the checkpoint's model in eager PyTorch and of its ONNX export on
    onnxruntime, each in a fresh process (onnxruntime's idle threads spin, which would slow
    PyTorch's beside them)."""
    report = export_checkpoint(checkpoint, onnx_file)
    runtimes = {"eager PyTorch": checkpoint, "onnxruntime": onnx_file}
    rows = [
        in_fresh_process(_runtime_row, name, model_file, settings, str(device))
        for name, model_file in runtimes.items()
    ]
    rows[1]["x_eager"] = rows[1]["clips_per_s"] / rows[0]["clips_per_s"]
    rows[1]["export_difference"] = report.difference
    return rows


def _runtime_row(runtime: str, model_file: Path, settings: Settings, device: str) -> dict:
    """Clips/s of the model in `model_file` (a checkpoint: eager PyTorch; .onnx: onnxruntime) on
    --batch random clips, the median of --repeats timings of DEPLOY_STEPS forwards, in this
    (fresh) process."""
    classifier = load_classifier(model_file, None, torch.device(device))
    sample = (3, classifier.num_frames, classifier.crop_size, classifier.crop_size)
    bench = Bench(settings, classifier.device, sample)
    torch.manual_seed(0)
    clips = bench.clip(settings.batch)
    with torch.inference_mode():
        seconds = bench.timed(lambda: [classifier.model(clips) for _ in range(DEPLOY_STEPS)])
    return {
        "runtime": runtime,
        "batch": settings.batch,
        "clips_per_s": settings.batch * DEPLOY_STEPS / seconds,
    }


def print_deploy(result: dict, device: torch.device) -> None:
    threads = torch.get_num_threads()
    print(
        f"\nrevvideo-serve ({device}, {threads} threads): POST /classify of a {VIDEO_SECONDS:g} s "
        "video (its result and timeline), the quick start's Rev-MViT-XS"
    )
    print(
        format_table(
            result["server"],
            [
                ("clients", "clients", "d"),
                ("workers", "workers", "d"),
                ("requests", "requests", "d"),
                ("requests_per_s", "requests/s", ".2f"),
                ("median_s", "median s", ".3f"),
                ("p90_s", "p90 s", ".3f"),
            ],
        )
    )
    print(f"\nthe model's forward ({device}, {threads} threads), eager against onnxruntime")
    print(
        format_table(
            result["runtimes"],
            [
                ("runtime", "runtime", "s"),
                ("batch", "batch", "d"),
                ("clips_per_s", "clips/s", ".2f"),
                ("x_eager", "x eager", ".2f"),
            ],
        )
    )
    difference = result["runtimes"][1]["export_difference"]
    print(f"largest logit difference of the export on a random clip: {difference:.2e}")
