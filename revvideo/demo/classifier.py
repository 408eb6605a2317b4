"""A trained model with what it needs to classify a file: clip geometry, normalisation, names.

Clips are cut and normalised by the test pipeline's own code (revvideo.data: one decoding pass,
K clips spread over the whole video x S crops along its long side), and the views' softmax
scores are combined as the multi-view test combines them (revvideo.engine.VideoScores). A
checkpoint's calibration temperature (its `"temperature"` entry) divides each view's logits
before the softmax; a classifier with a `min_confidence` answers UNKNOWN when the top combined
probability is below it.

Image models (one-frame clips, such as the ImageNet releases) classify a still image from its
ImageNet test view (images.py); given a video, they classify K frames spread evenly over it
(K = 1 by default: the middle frame), each seen as an image. Video models refuse still images:
a clip of one repeated picture is not what they were trained on.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from fvcore.common.config import CfgNode
from PIL import Image
from torch import nn

import revvideo.models
from revvideo.checkpoint import (
    Release,
    checkpoint_file,
    fetch_release,
    find_release,
)
from revvideo.data.clip_sampling import clip_duration, frame_times
from revvideo.data.dataset import TestClips
from revvideo.data.decoding import (
    FrameClock,
    LiveVideo,
    PyAVVideo,
    VideoDecodeError,
    VideoReader,
    clips_as_decoded,
    open_video,
)
from revvideo.data.transforms import MultiViewCrops, Normalize
from revvideo.demo.images import FrameClips, ImageView, read_image, short_side_for
from revvideo.demo.live import LiveStream
from revvideo.demo.timeline import Timeline, Window, segments_of, window_starts
from revvideo.deploy import Exported, read_exported
from revvideo.deploy.exported import SUFFIXES as EXPORTED_SUFFIXES
from revvideo.engine.metrics import VideoScores
from revvideo.models import load_trained
from revvideo.utils.errors import CheckpointError, DataError

# Views per forward pass: bounds memory whatever the number of views.
VIEWS_PER_BATCH = 8
# The answer when the top probability is below the classifier's min_confidence.
UNKNOWN = "unknown"


@dataclass
class Classifier:
    """An eval-mode model on `device` and the test settings it was trained for.

    `temperature` (the checkpoint's calibration; None: it stores none, logits as they are)
    divides the logits before the softmax. `min_confidence` (None, or 0 < P <= 1) is the top
    probability below which `answer` says UNKNOWN.
    """

    model: nn.Module
    class_names: list[str]
    num_frames: int
    clip_duration: Fraction  # seconds a clip spans
    crop_size: int
    normalize: Normalize  # DATA.MEAN / DATA.STD of the training data
    views: tuple[int, int]  # default (temporal clips, spatial crops)
    ensemble_method: str
    device: torch.device
    source: str  # the checkpoint file or release name, named when its model fails
    # Image models only (one-frame clips): how a picture, or a video frame, becomes their view.
    image_view: ImageView | None = None
    temperature: float | None = None
    min_confidence: float | None = None

    def __post_init__(self) -> None:
        if self.min_confidence is not None and not 0 < self.min_confidence <= 1:
            raise ValueError(f"min_confidence must be in (0, 1], got {self.min_confidence!r}")

    @classmethod
    def from_cfg(
        cls,
        cfg: CfgNode,
        model: nn.Module,
        names: list[str],
        device: torch.device,
        source: str | os.PathLike,
    ) -> Classifier:
        data = cfg.DATA
        return cls(
            model=model.to(device).eval(),
            class_names=names,
            num_frames=data.NUM_FRAMES,
            clip_duration=_clip_length(data.NUM_FRAMES, data.SAMPLING_RATE, data.TARGET_FPS),
            crop_size=data.TEST_CROP_SIZE,
            normalize=Normalize(data.MEAN, data.STD),
            views=(cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS),
            ensemble_method=data.ENSEMBLE_METHOD,
            device=device,
            source=str(source),
            image_view=_image_view(data.NUM_FRAMES, data.TEST_CROP_SIZE),
        )

    @classmethod
    def from_release(cls, release: Release, device: torch.device) -> Classifier:
        builder = getattr(revvideo.models, release.builder)
        # Fetched first, so that a release that cannot be downloaded names the demo's option;
        # the builder then finds it cached.
        fetch_release(release, option="--checkpoint")
        return cls(
            model=builder(release.num_classes, weights=release.name).to(device).eval(),
            class_names=release.class_names(),
            num_frames=release.num_frames,
            clip_duration=clip_duration(
                release.num_frames, release.sampling_rate, release.target_fps
            ),
            crop_size=release.crop_size,
            normalize=Normalize(release.mean, release.std),
            views=release.views,
            ensemble_method="sum",
            device=device,
            source=release.name,
            image_view=_image_view(release.num_frames, release.crop_size, release.test_short_side),
        )

    @classmethod
    def from_exported(cls, exported: Exported, device: torch.device, source: Path) -> Classifier:
        """The model exported to `source` (see revvideo.deploy), read for `device`."""
        settings = exported.metadata
        return cls(
            model=exported.model,
            class_names=settings.class_names,
            num_frames=settings.num_frames,
            clip_duration=_clip_length(
                settings.num_frames, settings.sampling_rate, settings.target_fps
            ),
            crop_size=settings.crop_size,
            normalize=Normalize(settings.mean, settings.std),
            views=settings.views,
            ensemble_method=settings.ensemble_method,
            device=device,
            source=str(source),
            image_view=_image_view(settings.num_frames, settings.crop_size),
            temperature=settings.temperature,
        )

    def test_clips(self, clips: int, crops: int) -> TestClips:
        # On a GPU, uint8 views are normalised there (see MultiViewCrops).
        on_gpu = self.device.type == "cuda"
        crop = MultiViewCrops(self.crop_size, crops, None if on_gpu else self.normalize)
        if self.image_view is not None:
            return FrameClips(self.image_view, self.clip_duration, clips, crop)
        return TestClips(self.num_frames, self.clip_duration, clips, crop)

    @torch.inference_mode()
    def probabilities(self, views: torch.Tensor) -> torch.Tensor:
        """Softmax scores (V, classes) of V clips (V, 3, T, H, W), of logits / temperature.

        Raises CheckpointError if the model's output is not finite: every video would get
        meaningless scores, so the checkpoint, not the video, is what cannot be used.
        """
        scores = []
        for batch in views.split(VIEWS_PER_BATCH):
            logits = self.model(self.normalize.model_input(batch, self.device)).float()
            if not logits.isfinite().all():
                raise CheckpointError(
                    f"the model gives non-finite scores: the weights of {self.source} are broken"
                )
            scores.append((logits / (self.temperature or 1.0)).softmax(dim=1).cpu())
        return torch.cat(scores)

    def timeline(self, path: str, stride: float | None = None) -> Timeline:
        """Windows one clip long every `stride` seconds (default: half a clip) over the whole
        video at `path`, scored in batches of VIEWS_PER_BATCH centre crops, and their segments
        (see revvideo.demo.timeline). The video is decoded forward once, holding only the
        frames of the windows under way, so memory does not grow with its length.

        A video shorter than a clip gets one window over what there is; a damaged one ends
        where its frames stop; each is said in `warnings`. Raises DataError (one line) for a
        file without a frame to score. An image model's windows are single frames.
        """
        stride = self._stride(stride)
        try:
            video = PyAVVideo(path)
        except VideoDecodeError as err:
            raise DataError(f"{path}: {err}") from None
        try:
            windows, warnings = self._score_windows(video, path, stride)
        finally:
            video.close()
        length = float(self.clip_duration)
        return Timeline(windows, segments_of(windows, self.class_names, length), warnings)

    def stream(self, source: str, stride: float | None = None) -> LiveStream:
        """The windows of a live `source` (see revvideo.data.decoding.LiveVideo: "-" for
        stdin, a URL, a capture device) one clip long every `stride` seconds (default: half a
        clip), each scored as soon as its frames have arrived (see revvideo.demo.live). Raises
        DataError (one line) for a source that cannot be opened."""
        stride = self._stride(stride)
        try:
            video = LiveVideo(source)
        except VideoDecodeError as err:
            raise DataError(f"{source}: {err}") from None
        starts = (index * stride for index in itertools.count())
        clips = clips_as_decoded(video, starts, self._clip_times, self._window_side)
        return LiveStream(
            video, clips, lambda frames: self._window_scores([frames])[0], self.clip_duration
        )

    def _stride(self, stride: float | None) -> float:
        """`stride`, checked, or half a clip."""
        if stride is not None and not 0 < stride < math.inf:
            raise ValueError(f"stride must be a positive number of seconds, got {stride!r}")
        return stride or float(self.clip_duration) / 2

    def _clip_times(self, start: float) -> list[float]:
        return frame_times(Fraction(start), self.clip_duration, self.num_frames)

    @property
    def _window_side(self) -> int | None:
        """The short side a window's frames are decoded at: the crop's, or an image model's
        own (its view resizes them)."""
        return None if self.image_view is not None else self.crop_size

    def _window_scores(self, clips: list[list[np.ndarray]]) -> torch.Tensor:
        """Probabilities (N, classes) of N clips of frames (H, W, 3) at `_window_side`: their
        centre crops, or an image model's view of each one-frame clip."""
        if self.image_view is not None:
            pictures = [Image.fromarray(np.ascontiguousarray(frame)) for (frame,) in clips]
            return self.probabilities(torch.cat([self.image_view.model_view(p) for p in pictures]))
        crop = MultiViewCrops(
            self.crop_size, 1, None if self.device.type == "cuda" else self.normalize
        )
        frames = torch.from_numpy(np.stack([frame for clip in clips for frame in clip]))
        rows = list(range(len(frames)))
        per_clip = [rows[first : first + self.num_frames] for first in rows[:: self.num_frames]]
        return self.probabilities(crop(frames, per_clip))

    def _score_windows(
        self, video: PyAVVideo, path: str, stride: float
    ) -> tuple[list[Window], list[str]]:
        length = float(self.clip_duration)
        warnings = []
        if video.duration < length:
            warnings.append(
                f"{path}: shorter than a window ({video.duration:.2f} s < {length:.2f} s): one "
                "window, its last frame filling the rest"
            )
        starts = window_starts(video.duration, length, stride)
        windows: list[Window] = []
        batch: list[tuple[float, float, list[np.ndarray]]] = []

        def score_batch() -> None:
            scores = self._window_scores([frames for *_, frames in batch]) if batch else []
            for (start, end, _), probabilities in zip(batch, scores, strict=True):
                windows.append(Window(start, end, probabilities))
            batch.clear()

        clips = clips_as_decoded(video, starts, self._clip_times, self._window_side)
        try:
            for start, seen, frames in clips:
                batch.append((start, min(start + length, seen, video.duration), frames))
                if len(batch) == VIEWS_PER_BATCH:
                    score_batch()
        except VideoDecodeError as err:
            score_batch()  # the windows up to the damage
            if not windows:
                raise DataError(f"{path}: {err}") from None
            warnings.append(f"{path}: {err}; timeline of its first {windows[-1].end:.2f} s")
        score_batch()
        return windows, warnings

    def answer(self, probabilities: torch.Tensor) -> str:
        """The class of combined scores (classes,): the most probable, or UNKNOWN when its
        probability is below `min_confidence`."""
        best = int(probabilities.argmax())
        if self.min_confidence is not None and probabilities[best] < self.min_confidence:
            return UNKNOWN
        return self.class_names[best]


def _clip_length(num_frames: int, sampling_rate: int, target_fps: int) -> Fraction:
    """Seconds a clip spans; an image model's "clip" is one frame, whatever its sampling rate."""
    return clip_duration(num_frames, 1 if num_frames == 1 else sampling_rate, target_fps)


def _image_view(num_frames: int, crop_size: int, short_side: int | None = None) -> ImageView | None:
    """The view of an image model (one-frame clips; `short_side` by default the ImageNet
    ratio's); None for a video model."""
    if num_frames != 1:
        return None
    return ImageView(short_side or short_side_for(crop_size), crop_size)


def load_classifier(
    checkpoint: str | os.PathLike,
    cfg_file: str | os.PathLike | None,
    device: torch.device,
    min_confidence: float | None = None,
) -> Classifier:
    """The model in `checkpoint` (a file, a run folder or a release name; see
    revvideo.checkpoint.checkpoint_file), built from `cfg_file` or else from the config stored
    in the checkpoint (a release brings its own), with its calibration temperature if it stores
    one, answering UNKNOWN below `min_confidence` (see Classifier). An exported model (.onnx,
    .pt2: see revvideo.deploy) brings its settings and runs on onnxruntime or torch.export.

    Class names: see revvideo.classes.resolve_class_names (the checkpoint's, else the config's
    dataset's, else Kinetics-400's for 400 classes). Raises UserError (one line) for every
    unusable input.
    """
    release = find_release(checkpoint) if isinstance(checkpoint, str) else None
    if release is not None and cfg_file is None:
        return replace(Classifier.from_release(release, device), min_confidence=min_confidence)
    path = checkpoint_file(checkpoint, "--checkpoint")
    if path.suffix in EXPORTED_SUFFIXES:
        if cfg_file is not None:
            raise CheckpointError(f"{path} is an exported model with its own settings: drop --cfg")
        classifier = Classifier.from_exported(read_exported(path, device), device, path)
        return replace(classifier, min_confidence=min_confidence)
    trained = load_trained(path, cfg_file)
    return replace(
        Classifier.from_cfg(trained.cfg, trained.model, trained.class_names, device, path),
        temperature=trained.temperature,
        min_confidence=min_confidence,
    )


@dataclass
class VideoResult:
    """Multi-view scores of one video file (or of a still image: one view, no duration)."""

    path: str
    probabilities: torch.Tensor  # (classes,): the views' scores combined
    views: tuple[int, int]
    seconds: float  # decoding and inference
    duration: float  # seconds of video classified (the part that decodes); 0 for an image
    warnings: list[str] = field(default_factory=list)

    def top(self, k: int, names: Sequence[str]) -> list[tuple[str, float]]:
        return top_classes(self.probabilities, names, k)


def top_classes(
    probabilities: torch.Tensor, names: Sequence[str], k: int
) -> list[tuple[str, float]]:
    """The `k` (at most all) most probable classes as (name, probability), best first."""
    values, indices = probabilities.topk(min(k, len(probabilities)))
    return [(names[i], p) for i, p in zip(indices.tolist(), values.tolist(), strict=True)]


class _DecodablePart:
    """The first `duration` seconds of a video, as a reader for TestClips.

    Later times (a clip is longer than a short part) show the frame at `duration`, as past the
    end of a video, so that decoding stops there instead of reaching the damage beyond.
    """

    def __init__(self, video: VideoReader, duration: float) -> None:
        self.duration = duration
        self._video = video

    def read_frames(
        self, times: Sequence[float], short_side: int | None = None
    ) -> tuple[torch.Tensor, list[int]]:
        return self._video.read_frames([min(time, self.duration) for time in times], short_side)


def _decodable_duration(path: str) -> float:
    """Seconds from the start of the video stream to the last frame that decodes (0 if none),
    on the clock the readers of revvideo.data.decoding use."""
    last_time = 0.0
    with av.open(path) as container:
        stream = container.streams.video[0]
        clock = FrameClock(stream)
        try:
            for frame in container.decode(stream):
                last_time = clock.time_of(frame)
        except av.FFmpegError:
            pass  # Damaged from here on: what decoded so far is what there is.
    return last_time


def _decode_views(path: str, make_clips: Callable[[float, float | None], TestClips]):
    """Views of `path`, the seconds they cover and warnings; `make_clips(seconds, frame_rate)`
    cuts a video of that length and frame rate (None when the stream states none). A video
    whose frames stop early is cut to the part that decodes."""
    try:
        video = open_video(path)
        try:
            try:
                return make_clips(video.duration, video.frame_rate)(video), video.duration, []
            except VideoDecodeError as err:
                usable = _decodable_duration(path)
                if usable <= 0:
                    raise
                warning = f"{path}: {err}; classified from its first {usable:.2f} s, which decode"
                clips = make_clips(usable, video.frame_rate)
                return clips(_DecodablePart(video, usable)), usable, [warning]
        finally:
            video.close()
    except VideoDecodeError as err:
        raise DataError(f"{path}: {err}") from None


def distinct_clips(duration: float, clip_length: float, frame_rate: float | None) -> int | None:
    """How many clips of `clip_length` seconds can start at different frames of a video of
    `duration` seconds at `frame_rate` (None when it is not known): more clips spread over it
    would repeat frames, adding nothing."""
    if frame_rate is None:
        return None
    spare = max(0.0, duration - clip_length)
    return math.floor(spare * frame_rate + 1e-6) + 1


def classify_video(
    classifier: Classifier, path: str, views: tuple[int, int] | None = None
) -> VideoResult:
    """Scores `path` on `views` (K temporal clips, S crops; default: the classifier's).

    K is at most one clip per frame a clip can start at (see distinct_clips): a short video
    gets fewer, said in a warning when `views` was asked. Raises DataError (one line) for a
    file that cannot be classified; a video whose frames stop early is classified from the
    part that decodes, with a warning.
    """
    started = time.perf_counter()
    asked = views
    views = views or classifier.views
    used = views

    def make_clips(duration: float, frame_rate: float | None) -> TestClips:
        nonlocal used
        most = distinct_clips(duration, float(classifier.clip_duration), frame_rate)
        used = (views[0] if most is None else min(views[0], most), views[1])
        return classifier.test_clips(*used)

    frames, duration, warnings = _decode_views(path, make_clips)
    if asked is not None and used != views:
        warnings.append(
            f"{path}: --views {views[0]}x{views[1]}: its frames make only {used[0]} different "
            f"clips: classified on {used[0]}x{used[1]} views"
        )
    if duration < classifier.clip_duration:
        warnings.append(
            f"{path}: shorter than a clip ({duration:.2f} s < {float(classifier.clip_duration):.2f}"
            " s): its last frame fills the rest"
        )
    probabilities = classifier.probabilities(frames)
    scores = VideoScores(1, probabilities.shape[1], classifier.ensemble_method)
    scores.add(probabilities, torch.zeros(len(probabilities), dtype=torch.long))
    return VideoResult(
        path=path,
        probabilities=scores.normalized()[0].float(),
        views=used,
        seconds=time.perf_counter() - started,
        duration=duration,
        warnings=warnings,
    )


def classify_image(classifier: Classifier, path: str) -> VideoResult:
    """Scores the still image `path` on its one view (see images.ImageView).

    Raises DataError (one line) for a file that is not a readable image, or when the classifier
    is a video model.
    """
    started = time.perf_counter()
    if classifier.image_view is None:
        raise DataError(
            f"{path}: a still image, but {classifier.source} classifies "
            f"{classifier.num_frames}-frame video clips: give it videos, or classify images with "
            "an image model (e.g. --checkpoint rev_vit_b_in1k)"
        )
    view = classifier.image_view.model_view(read_image(path))
    return VideoResult(
        path=path,
        probabilities=classifier.probabilities(view)[0],
        views=(1, 1),
        seconds=time.perf_counter() - started,
        duration=0.0,
    )
