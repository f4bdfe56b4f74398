"""Safe file writes: a temporary file next to the target, renamed into place when complete.

Every file that a reader may open while it is being written (run directories, study
results, plots, downloaded corpora, bench results) goes through `atomic_path`, so a reader
sees either the old content or all of the new, never half a file, and an interrupted write
leaves no temporary file behind. The file is flushed to disk before the rename and the
folder after it, so a power cut leaves the old file or the new one, never an empty one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from nmt.errors import StorageError

# What the user can do about a failed write, by its errno.
_ADVICE = {
    errno.ENOSPC: "the disk is full; free some space and run it again",
    errno.EDQUOT: "the disk quota is used up; free some space and run it again",
    errno.EROFS: "the file system is read-only; choose another folder",
    errno.EACCES: "permission denied; choose a folder you may write to",
    errno.EPERM: "operation not permitted; choose a folder you may write to",
    errno.ENOTDIR: "part of the path is a file, not a folder",
}
# Free space that a write leaves for everything else (logs, metrics.json, the system).
FREE_SPACE_MARGIN = 16 * 2**20


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a fresh temporary path in `path`'s folder; write the file there.

    When the block ends normally the temporary file is flushed to disk (fsync), renamed
    to `path` (`os.replace`, atomic on one file system) and the rename flushed too (fsync
    of the folder); when it raises, the temporary file is removed and `path` keeps its old
    content. The temporary name is
    `.NAME.<random>.tmp<suffix>`: give `suffix` when the writer needs a particular ending
    (Keras weights must end in `.weights.h5`). The file gets the usual umask permissions.

    Args:
        path: the file to write; its folder is created if missing.
        suffix: ending of the temporary name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp{suffix}")
    try:
        yield temporary
        with open(temporary, "rb") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
        fsync_folder(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def fsync_folder(folder: str | Path) -> None:
    """Flush `folder`'s entries (a rename or a new file in it) to disk."""
    descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` so that `path` holds either its old content or all of the new."""
    path = Path(path)
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def storage_error(error: OSError, what: str | Path | None = None) -> StorageError:
    """One line for a failed write: what could not be written, why, and what to do.

    Args:
        error: the OSError (its errno picks the advice; ENOSPC, EROFS, EACCES...).
        what: the file or folder (default: the error's own file name).
    """
    what = what or error.filename or "a file"
    reason = _ADVICE.get(error.errno, error.strerror or str(error))
    return StorageError(f"cannot write {what}: {reason}")


@contextlib.contextmanager
def storage_errors(what: str | Path | None = None) -> Iterator[None]:
    """Turn an OSError of a full, read-only or forbidden disk inside the block into a
    StorageError naming `what` (default: the error's file); other errors pass unchanged."""
    try:
        yield
    except OSError as error:
        if error.errno in _ADVICE:
            raise storage_error(error, what) from error
        if disk_is_full(str(error)):  # HDF5 puts the errno in its message only
            raise storage_error(OSError(errno.ENOSPC, "full"), what) from error
        raise


def disk_is_full(message: str) -> bool:
    """True when an error message (HDF5's, TensorFlow's) says that the disk is full."""
    return "No space left on device" in message or "errno = 28" in message


def check_free_space(folder: str | Path, needed_bytes: int, what: str) -> None:
    """Refuse a write of about `needed_bytes` into `folder` that would fill its disk.

    Raises:
        StorageError: when less than `needed_bytes` plus `FREE_SPACE_MARGIN` is free.
    """
    free = shutil.disk_usage(folder).free
    if free < needed_bytes + FREE_SPACE_MARGIN:
        raise StorageError(f"cannot write {what}: {free / 2**20:.1f} MiB free in {folder}, "
                           f"it needs about {(needed_bytes + FREE_SPACE_MARGIN) / 2**20:.1f} "
                           "MiB; free some space and run it again")
