"""Where a run's files go in OUTPUT_DIR, so that none replaces a file the run did not write.

A run that trains keeps its config.yaml, log, curves and checkpoints in OUTPUT_DIR, and writes
its test results (test_results.json, predictions.csv, confusion.png) there too, over files of
those names only where a run wrote them: each file written through `written_by_the_run` is
recorded, name and SHA-256 of its content, in the folder's RECORD_FILE, and a file whose content
is not the one recorded (a user's own, or one edited since) is never replaced. The test results
then go to a new folder instead, as an evaluation's do; a training run whose OUTPUT_DIR holds
another config.yaml stops before writing anything (revvideo.engine.run.check_config_file).

An evaluation-only run (TRAIN.ENABLE False) writes its config, log and results into a new folder
of its own, OUTPUT_DIR/test/<checkpoint stem>, or <stem>-2, -3, ... where that name is taken
(even by an empty folder): each evaluation keeps its results, and nothing else in OUTPUT_DIR is
written. A failed or interrupted evaluation removes its folder again.
"""

import contextlib
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

from revvideo.utils.errors import UserError
from revvideo.utils.files import written_whole

logger = logging.getLogger(__name__)

RECORD_FILE = ".run_files.json"
TEST_DIR = "test"


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _records(folder: Path) -> dict[str, str]:
    try:
        records = json.loads((folder / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return records if isinstance(records, dict) else {}


def written_by_a_run(folder: Path, name: str) -> bool:
    """Whether folder/name holds what a run wrote there (recorded in RECORD_FILE)."""
    path = folder / name
    recorded = _records(folder).get(name)
    try:
        return recorded is not None and path.is_file() and _digest(path) == recorded
    except OSError:
        return False


def free_for_the_run(folder: Path, name: str) -> bool:
    """Whether the run may write folder/name: nothing is there, or what a run wrote."""
    return not os.path.lexists(folder / name) or written_by_a_run(folder, name)


def adopt(folder: Path, name: str) -> None:
    """Records folder/name as the run's, as it is: for a file a run wrote before runs recorded
    their files (the caller has made sure of that)."""
    _record(folder, name)


def _record(folder: Path, name: str) -> None:
    records = _records(folder)
    records[name] = _digest(folder / name)
    with written_whole(folder / RECORD_FILE) as partial:
        partial.write_text(json.dumps(records, indent=1, sort_keys=True))


@contextlib.contextmanager
def written_by_the_run(folder: Path, name: str) -> Iterator[Path]:
    """`written_whole(folder / name)` (a temporary path to write to), recorded as the run's
    once written. UserError, before anything is written, where folder/name holds a file the
    run did not write: callers choose another place first, this is the last guard."""
    if not free_for_the_run(folder, name):
        raise UserError(f"{folder / name} was not written by a run here: it is kept")
    with written_whole(folder / name) as partial:
        yield partial
    _record(folder, name)


def new_folder(output_dir: Path, stem: str) -> Path:
    """A new, empty folder OUTPUT_DIR/test/<stem>, or <stem>-N with the lowest N from 2 on
    whose name is free: created here, so that no two runs ever share one."""
    parent = output_dir / TEST_DIR
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for number in range(1, 10_000):
            folder = parent / (stem if number == 1 else f"{stem}-{number}")
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            return folder
    except OSError as err:
        raise UserError(f"cannot make a folder in {parent}: {err.strerror or err}") from None
    raise UserError(f"{parent} holds 9999 folders named {stem}-N: clear some out")


def remove_leftovers(output_dir: Path) -> int:
    """Removes what runs killed in OUTPUT_DIR left of the files written here: partial files
    (revvideo.utils.files.partial_path) beside the files of a run, and evaluation folders
    without results (only what the run wrote into them). Only call this while holding
    OUTPUT_DIR (revvideo.engine.output_lock), when no run can be at work; returns how many."""
    removed = 0
    folders = [output_dir]
    if (output_dir / TEST_DIR).is_dir():
        folders += [folder for folder in (output_dir / TEST_DIR).iterdir() if folder.is_dir()]
    for folder in folders:
        for partial in folder.glob(".*.*.tmp*"):
            match = _PARTIAL.fullmatch(partial.name)
            if match and match["name"] in RUN_FILE_NAMES:
                with contextlib.suppress(OSError):
                    partial.unlink()
                    removed += 1
        evaluation = folder.parent == output_dir / TEST_DIR
        if evaluation and not (folder / _FINISHED).exists() and (folder / RECORD_FILE).exists():
            remove_folder(folder)
            removed += 1
    return removed


# The files runs write here (revvideo.engine: run, train, evaluate, monitor), and the names of
# their partial files (revvideo.utils.files.partial_path: .NAME.PID.tmpSUFFIX).
RUN_FILE_NAMES = frozenset(
    {
        "config.yaml",
        "curves.png",
        "log.jsonl",
        "test_results.json",
        "predictions.csv",
        "confusion.png",
        RECORD_FILE,
    }
)
_PARTIAL = re.compile(r"\.(?P<name>.+)\.\d+\.tmp(?:\.[^.]*)?")
# The last of an evaluation's files to take its name (revvideo.engine.evaluate._write_files).
_FINISHED = "test_results.json"


def remove_folder(folder: Path) -> None:
    """Removes a new folder (new_folder) again, with what the run wrote into it, when its
    run failed or was interrupted; anything else there stays, and so does the folder."""
    for name in list(_records(folder)):
        if written_by_a_run(folder, name):
            with contextlib.suppress(OSError):
                (folder / name).unlink()
    with contextlib.suppress(OSError):
        (folder / RECORD_FILE).unlink()
    for empty in (folder, folder.parent):
        with contextlib.suppress(OSError):
            empty.rmdir()
