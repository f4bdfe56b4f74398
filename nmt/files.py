"""Safe file writes: a temporary file next to the target, renamed into place when complete.

Every file that a reader may open while it is being written (run directories, study
results, plots, downloaded corpora, bench results) goes through `atomic_path`, so a reader
sees either the old content or all of the new, never half a file, and an interrupted write
leaves no temporary file behind.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a fresh temporary path in `path`'s folder; write the file there.

    When the block ends normally the temporary file is flushed to disk (fsync) and renamed
    to `path` (`os.replace`, atomic on one file system); when it raises, the temporary file
    is removed and `path` keeps its old content. The temporary name is
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
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` so that `path` holds either its old content or all of the new."""
    path = Path(path)
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))
