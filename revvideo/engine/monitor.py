"""What a person watches: console lines, a progress bar, log.jsonl and tensorboard scalars.

Only the main process writes files and draws the bar. Every log.jsonl line is one JSON object
with a "kind" ("step", "epoch", "test") and "step", the number of optimizer steps done.
"""

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from revvideo.utils.files import written_whole

LOG_FILE = "log.jsonl"
TENSORBOARD_DIR = "tensorboard"


class _TqdmHandler(logging.StreamHandler):
    """Prints log lines above a running progress bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


def setup_logging(rank: int) -> None:
    """For command-line tools: INFO lines from the main process on stdout (above any progress
    bar); other processes only warn, on stderr, naming their rank."""
    handler = _TqdmHandler(sys.stdout if rank == 0 else sys.stderr)
    prefix = f"[rank {rank}] " if rank else ""
    handler.setFormatter(logging.Formatter(f"{prefix}%(message)s"))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def read_log(output_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(output_dir) / LOG_FILE
    if not path.is_file():
        return []
    with open(path) as lines:
        return [json.loads(line) for line in lines if line.strip()]


class RunLog:
    """log.jsonl and tensorboard scalars of one run (a no-op on processes other than rank 0).

    `resume_step`: None appends to the existing log (testing only); S continues training from
    a checkpoint taken after S optimizer steps (0: a new run), dropping what an earlier run
    logged after it, so the log reads as one uninterrupted run.
    """

    def __init__(self, output_dir: str | Path, resume_step: int | None, enabled: bool) -> None:
        self.enabled = enabled
        self.path = Path(output_dir) / LOG_FILE
        self._writer = None
        if not enabled:
            return
        purge_step = None
        if resume_step is not None:
            kept = [record for record in read_log(output_dir) if record["step"] <= resume_step]
            with written_whole(self.path) as partial:
                partial.write_text("".join(json.dumps(record) + "\n" for record in kept))
            # Tensorboard hides the events an earlier run wrote from this step on.
            purge_step = resume_step + 1
        from torch.utils.tensorboard import SummaryWriter  # slow import, main process only

        self._writer = SummaryWriter(str(Path(output_dir) / TENSORBOARD_DIR), purge_step=purge_step)

    def write(self, kind: str, step: int, **values: Any) -> None:
        """One log.jsonl line; numeric values also become tensorboard scalars `kind/name`."""
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, **values}
        with open(self.path, "a") as file:
            file.write(json.dumps(record) + "\n")
        for name, value in values.items():
            is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if is_number and math.isfinite(value):
                self._writer.add_scalar(f"{kind}/{name}", value, step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def progress_bar(
    total: int, description: str, enabled: bool, initial: int = 0, unit: str = "step"
) -> tqdm:
    """A bar on interactive terminals of the main process (ETA from tqdm); silent otherwise."""
    return tqdm(
        total=total,
        initial=initial,
        desc=description,
        disable=None if enabled else True,
        dynamic_ncols=True,
        leave=False,
        unit=unit,
    )
