"""VideoLoader: a DataLoader over a VideoDataset that outlives bad videos and crashed workers."""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler

from revvideo.data.dataset import FallbackVideo, SkippedVideo, VideoDataset
from revvideo.data.transforms import Normalize
from revvideo.utils.errors import DataError

logger = logging.getLogger(__name__)

# Worker deaths tolerated in one epoch before the loader gives up with a DataError.
MAX_WORKER_RESTARTS = 5

# torch's messages for a dead worker: "DataLoader worker (pid 12) is killed by signal: ..." and
# "DataLoader worker (pid(s) 12, 13) exited unexpectedly".
_DEAD_WORKER = re.compile(r"DataLoader worker \(pid(?:\(s\))? ([\d, ]+)\) (.*)")


def dead_loader_worker(err: BaseException) -> tuple[set[int], str] | None:
    """(process ids, how they ended) when `err` is torch's report of dead DataLoader workers."""
    match = _DEAD_WORKER.search(str(err)) if isinstance(err, RuntimeError) else None
    if match is None:
        return None
    pids = {int(pid) for pid in match.group(1).replace(",", " ").split()}
    # torch goes on with advice about num_workers and shared memory; the first sentence says it.
    return pids, match.group(2).split(". ")[0].strip().rstrip(".")


class ShardSampler(Sampler[int]):
    """Indices rank, rank + world, ... : each rank its share, every video exactly once overall.

    Unlike DistributedSampler it never pads a shard with repeated videos, which would count
    them twice in a multi-view test.
    """

    def __init__(self, num_videos: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = range(rank, num_videos, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class ClassBalancedSampler(Sampler[int]):
    """Videos drawn with replacement, each with weight 1 / (videos of its class): every class
    is drawn equally often in expectation.

    An epoch draws len(labels) videos, rounded up to a multiple of `world_size`, from a
    generator seeded with `seed` + the epoch (`set_epoch`), alike on every rank; rank r takes
    draws r, r + world_size, ... (as DistributedSampler shards). The k-th repeat of video i in
    an epoch is yielded as i + k * len(labels), which VideoDataset makes as video i with random
    choices of its own (another clip, other augmentations).
    """

    def __init__(
        self, labels: Sequence[int], rank: int = 0, world_size: int = 1, seed: int = 0
    ) -> None:
        labels = torch.as_tensor(labels, dtype=torch.long)
        self.weights = 1.0 / torch.bincount(labels)[labels].double()
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch = 0
        self.num_samples = math.ceil(len(labels) / world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        draws = torch.multinomial(
            self.weights, self.num_samples * self.world_size, replacement=True, generator=generator
        ).tolist()
        repeats = Counter()
        keys = []
        for index in draws:
            keys.append(index + repeats[index] * len(self.weights))
            repeats[index] += 1
        return iter(keys[self.rank :: self.world_size])

    def __len__(self) -> int:
        return self.num_samples


def collate_videos(items: Sequence[dict]) -> dict:
    """Video items -> a batch whose rows are clips (views flattened into the batch dimension).

    "video": float32 (B, 3, T, H, W), or uint8 test views for a GPU (pass it through
    VideoLoader.model_input); "label", "video_index", "view_index": int64 (B,);
    "skipped", "fallbacks": every SkippedVideo and FallbackVideo of the items. Items without
    views add only to those.
    """
    used = [item for item in items if len(item["view_index"])]
    counts = torch.tensor([len(item["view_index"]) for item in used], dtype=torch.long)
    if len(used) == 1:
        video = used[0]["video"]
    elif used:
        # default_collate stacks straight into shared memory inside a worker process.
        video = torch.utils.data.default_collate([item["video"] for item in used]).flatten(0, 1)
    else:
        video = torch.empty(0)
    return {
        "video": video,
        "label": torch.tensor([item["label"] for item in used]).repeat_interleave(counts),
        "video_index": torch.tensor([item["video_index"] for item in used]).repeat_interleave(
            counts
        ),
        "view_index": torch.cat([item["view_index"] for item in used])
        if used
        else torch.empty(0, dtype=torch.long),
        "skipped": [skip for item in items for skip in item["skipped"]],
        "fallbacks": [video for item in items for video in item["fallbacks"]],
    }


class _ResumableBatchSampler(BatchSampler):
    """A BatchSampler that can be told to yield a given list of batches (the rest of an epoch)."""

    remaining: list[list[int]] | None = None

    def __iter__(self) -> Iterator[list[int]]:
        if self.remaining is not None:
            return iter(self.remaining)
        return super().__iter__()


class VideoLoader(DataLoader):
    """Batches of clips from a VideoDataset (see collate_videos for the batch layout).

    Unusable videos are skipped: listed in each batch's "skipped", in `skipped` and `summary()`,
    and logged once per epoch. A worker that dies (a decoder crash) skips the video it was
    decoding, and new workers go on from the first batch not delivered. Videos decord could not
    read are counted by fault in `fallbacks`, each fault logged once. A worker death that torch
    reports outside iteration (from its SIGCHLD handler) is a RuntimeError that
    `dead_loader_worker` recognises.
    """

    def __init__(
        self,
        dataset: VideoDataset,
        sampler: Sampler[int],
        videos_per_batch: int,
        *,
        normalize: Normalize,
        drop_last: bool = False,
        num_workers: int = 0,
        pin_memory: bool = False,
        name: str = "",
    ) -> None:
        self._batches = _ResumableBatchSampler(sampler, videos_per_batch, drop_last)
        self._progress = dataset.track_progress(num_workers) if num_workers else None
        self.name = name
        self.normalize = normalize
        self._skipped: dict[int, SkippedVideo] = {}
        self._fallbacks: dict[str, set[int]] = {}
        self._first_batch = 0
        super().__init__(
            dataset,
            batch_sampler=self._batches,
            num_workers=num_workers,
            collate_fn=collate_videos,
            pin_memory=pin_memory,
            # Workers' seeds come from here, so that starting an epoch never draws from the
            # global generator (dropout, mixup). Training items seed themselves (VideoDataset).
            generator=torch.Generator().manual_seed(0),
        )

    def model_input(self, video: torch.Tensor, device: torch.device) -> torch.Tensor:
        """A batch's "video" on `device`, normalised as the model takes it."""
        return self.normalize.model_input(video, device)

    def set_epoch(self, epoch: int, first_batch: int = 0) -> None:
        """Call before each epoch: reshuffles the training order (the sampler's `set_epoch`)
        and seeds the epoch's items (VideoDataset). The next iteration starts at `first_batch`
        (a run resumed mid-epoch), without loading the batches before it."""
        if hasattr(self._batches.sampler, "set_epoch"):
            self._batches.sampler.set_epoch(epoch)
        self.dataset.epoch = epoch
        self._first_batch = first_batch

    @property
    def skipped(self) -> list[SkippedVideo]:
        """Videos skipped (training) or left unscored (test) in the current or last epoch."""
        return list(self._skipped.values())

    @property
    def fallbacks(self) -> dict[str, int]:
        """How many videos were read with PyAV because decord could not read them, by fault."""
        return {fault: len(videos) for fault, videos in self._fallbacks.items()}

    def summary(self) -> str:
        """One line naming this epoch's skipped videos and why, or "" if there were none."""
        if not self._skipped:
            return ""
        verb = "replaced by other videos" if self.dataset.training else "not scored"
        listed = "; ".join(f"{skip.path}: {skip.reason}" for skip in self._skipped.values())
        return (
            f"{self.name}: {len(self._skipped)} of {len(self.dataset)} videos could not be "
            f"used and were {verb}: {listed}"
        )

    def __iter__(self) -> Iterator[dict]:
        self._skipped = {}
        self.dataset.excluded = set()
        batches = [list(batch) for batch in BatchSampler.__iter__(self._batches)]
        delivered, self._first_batch = self._first_batch, 0
        restarts = 0
        while delivered < len(batches):
            self._batches.remaining = batches[delivered:]
            try:
                for batch in super().__iter__():
                    delivered += 1
                    self._note_skipped(batch["skipped"])
                    self._note_fallbacks(batch["fallbacks"])
                    if len(batch["label"]):
                        yield batch
                    elif self.dataset.training:
                        raise DataError(self._nothing_decodes_message(batch["skipped"]))
            except RuntimeError as err:
                restarts += 1
                self._recover_from_dead_worker(err, restarts)
            finally:
                self._batches.remaining = None
        if self._skipped:
            logger.warning(self.summary())

    def _note_skipped(self, skipped: list[SkippedVideo]) -> None:
        for skip in skipped:
            if skip.video_index not in self._skipped:
                self._skipped[skip.video_index] = skip
                logger.warning("%s: skipping %s: %s", self.name, skip.path, skip.reason)

    def _note_fallbacks(self, fallbacks: list[FallbackVideo]) -> None:
        for video in fallbacks:
            # Numbers written N: one defect met on videos of many sizes is one fault.
            fault = re.sub(r"\d+(\.\d+)?", "N", video.fault)
            if fault not in self._fallbacks:
                self._fallbacks[fault] = set()
                logger.warning(
                    "%s: %s: %s; read with PyAV, as is every video decord fails on in this way "
                    "(logged once)",
                    self.name,
                    video.path,
                    video.fault,
                )
            self._fallbacks[fault].add(video.video_index)

    def _recover_from_dead_worker(self, err: RuntimeError, restarts: int) -> None:
        """Marks the video a dead worker was decoding as skipped; re-raises any other error."""
        death = dead_loader_worker(err)
        if death is None or self._progress is None:
            raise err
        dead_pids, how = death
        crashed = [
            self._progress[2 * worker + 1]
            for worker in range(len(self._progress) // 2)
            if self._progress[2 * worker] in dead_pids and self._progress[2 * worker + 1] >= 0
        ]
        for index in crashed:
            self.dataset.excluded.add(index)
            reason = f"the decoder crashed the loader worker ({how})"
            self._note_skipped([SkippedVideo(index, self.dataset.path(index), reason)])
        if restarts > MAX_WORKER_RESTARTS:
            where = f" while decoding {self.dataset.path(crashed[0])}" if crashed else ""
            raise DataError(
                f"{self.name}: loader workers died {restarts} times this epoch, last {how}"
                f"{where}; if memory ran out, lower DATA_LOADER.NUM_WORKERS"
            ) from None
        logger.warning("%s: a loader worker died (%s); restarting the workers", self.name, how)

    def _nothing_decodes_message(self, skipped: list[SkippedVideo]) -> str:
        last = skipped[-1]
        return (
            f"{self.name}: {len(skipped)} videos in a row could not be used, the last "
            f"{last.path}: {last.reason} (check DATA.PATH_TO_DATA_DIR and DATA.PATH_PREFIX)"
        )
