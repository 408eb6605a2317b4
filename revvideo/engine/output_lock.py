"""One run per OUTPUT_DIR at a time.

The main process holds an exclusive `flock` on OUTPUT_DIR/.run.lock for the whole run and removes
the file at its end; the file names the owner (pid, host, start time) for the message a second run
gets. The kernel drops the lock when its process dies however it dies, so a file left by a killed
run is simply taken over (with a notice), and the leftovers of that run (partial checkpoint files)
are cleaned up.
"""

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from revvideo.checkpoint.training import remove_partial_checkpoints
from revvideo.utils.errors import UserError

logger = logging.getLogger(__name__)

LOCK_FILE = ".run.lock"


def _owner(text: str) -> dict:
    try:
        owner = json.loads(text)
    except ValueError:
        return {}
    return owner if isinstance(owner, dict) else {}


@contextlib.contextmanager
def output_dir_lock(output_dir: Path) -> Iterator[None]:
    """Holds OUTPUT_DIR for this run; UserError naming the owner when another run holds it.

    The lock file is there only while a run holds it: the holder removes it before letting go,
    so a run may lock a file that is gone; it checks that the file it locked is the one at the
    path, and tries again if not.
    """
    path = output_dir / LOCK_FILE
    while True:
        lock = _locked(path)
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(lock.fileno()), os.stat(path)):
                break
        lock.close()
    with lock:
        lock.seek(0)
        previous = _owner(lock.read())
        if previous:
            logger.warning(
                "OUTPUT_DIR %s was left locked by run pid %s on %s, which has ended: taking it over",
                output_dir,
                previous.get("pid", "?"),
                previous.get("host", "?"),
            )
        removed = remove_partial_checkpoints(output_dir)
        if removed:
            logger.info("removed %d partial checkpoint files of an interrupted run", removed)
        lock.seek(0)
        lock.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": started}, lock)
        lock.flush()
        try:
            yield
        finally:
            path.unlink(missing_ok=True)
            fcntl.flock(lock, fcntl.LOCK_UN)


def _locked(path: Path) -> TextIO:
    """`path` opened and locked; UserError naming the owner when another run holds it."""
    try:
        lock = open(path, "a+")  # noqa: SIM115 - held open for the whole run
    except OSError as err:
        raise UserError(f"cannot lock OUTPUT_DIR {path.parent}: {err.strerror or err}") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        owner = _owner(lock.read())
        lock.close()
        raise UserError(
            f"OUTPUT_DIR {path.parent} is in use by another run (pid {owner.get('pid', '?')} "
            f"on {owner.get('host', '?')}, started {owner.get('started', '?')}): wait for it to "
            "end, or choose another OUTPUT_DIR"
        ) from None
    return lock
