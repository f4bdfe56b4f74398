"""One owner per folder: an exclusive lock on `FOLDER/.lock` held while a process writes there.

A training holds its run directory's lock (`nmt.training.train`, the chief only under
tf.distribute) and the attention study holds its study directory's (`nmt.study.run_study`),
so a second trainer on the same folder stops at once with one line naming the first
instead of rolling its metrics back and mixing weights. The lock is `fcntl.flock`: the
operating system releases it when the process ends, however it ends (kill -9 included), so
a stale `.lock` file never blocks anyone; the file only says who holds it. Pure Python.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from nmt.errors import BusyError

LOCK_FILE = ".lock"


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str, advice: str,
                name: str = LOCK_FILE) -> Iterator[Path]:
    """Hold the exclusive lock of `folder` (created if missing) for the block.

    Args:
        folder: the run or study directory.
        what: what the folder is, for the message ("run directory").
        advice: what the user can do instead, for the message.
        name: the lock file's name (the study's workers claim runs with `.claim-<run>`).

    Yields:
        The lock file, which names this process ("pid 123 on host") while it holds it.

    Raises:
        BusyError: another process holds the lock; the message names it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with open(path, "a+", encoding="utf-8") as file:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            owner = file.read().strip() or "another process"
            raise BusyError(f"{what} {folder} is in use by {owner} (it holds {path}); "
                            f"{advice}") from None
        file.seek(0)
        file.truncate()
        file.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        file.flush()
        yield path
