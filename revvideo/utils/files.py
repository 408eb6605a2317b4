"""Files that appear whole or not at all, and write failures that say why."""

import contextlib
import errno
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from revvideo.utils.errors import UserError

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class WriteError(UserError):
    """A file that could not be written: the message names it, the reason, and what was kept."""


def is_hidden(name: str) -> bool:
    """Whether a file or folder name is hidden (starts with "."): what systems and tools leave
    beside one's files (.DS_Store, .git, .thumbnails, macOS's ._a.mp4), and partial files."""
    return name.startswith(".")


def partial_path(path: str | os.PathLike) -> Path:
    """Where `path` is written before it is complete: hidden, so that listings skip it; one per
    process, so that two writers never share it; ending in `path`'s suffix, because writers
    (PyAV, matplotlib) choose the format from it."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")


@contextlib.contextmanager
def written_whole(path: str | os.PathLike, size: Callable[[], int] | None = None) -> Iterator[Path]:
    """Yields a path to write `path`'s contents to; when the block ends without error, that file
    reaches the disk and is renamed to `path`, which until then keeps what it held.

    On any error or interrupt the partial file is removed. An OSError, or a writer's error
    raised while handling one (torch.save's zip writer), becomes a WriteError naming the
    reason; for a full disk, the room the file needed: `size()` if given (for writers that stop
    at the first failed write), else what had been written.
    """
    path = Path(path)
    partial = partial_path(path)
    try:
        yield partial
        _sync(partial)
        os.replace(partial, path)
        _sync(path.parent)
    except BaseException as err:
        written = partial.stat().st_size if partial.exists() else 0
        # A failed cleanup (read-only folder) must not hide the write's own error.
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        cause = _os_error(err)
        if cause is None:
            raise
        raise WriteError(_failure(path, cause, size() if size else written)) from err


def _sync(path: Path) -> None:
    # A folder is synced too: the rename is durable only once its entry reaches the disk.
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _os_error(err: BaseException | None) -> OSError | None:
    while err is not None and not isinstance(err, OSError):
        err = err.__cause__ or err.__context__
    return err


def _failure(path: Path, cause: OSError, needed: int) -> str:
    if cause.errno in _DISK_FULL:
        free = shutil.disk_usage(_existing_folder(path)).free
        reason = f"the disk is full (the file needs {_mib(needed)}, {_mib(free)} free)"
    else:
        reason = cause.strerror or str(cause)
    kept = f"; {path} is unchanged" if path.exists() else ""
    return f"cannot write {path}: {reason}{kept}"


def _existing_folder(path: Path) -> Path:
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"
