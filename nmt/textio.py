"""Reading sentences for translation: files and streams, strict UTF-8, line numbers in errors."""

from __future__ import annotations

import os
import select
from collections.abc import Iterator
from pathlib import Path

from nmt.errors import NmtError


def decode_line(raw: bytes, line_number: int, source: str) -> str:
    """One line of UTF-8 without its line ending; bad bytes name the file and line."""
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as error:
        raise NmtError(f"{source}, line {line_number}: not valid UTF-8 "
                       f"(byte {error.start + 1}: {raw[error.start:error.start + 1]!r})") from error


def read_sentences(path: str | Path) -> list[str]:
    """All lines of a text file (a trailing newline does not add an empty sentence)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as error:
        raise NmtError(f"input file not found: {path}") from error
    except OSError as error:
        raise NmtError(f"cannot read {path}: {error.strerror}") from error
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [decode_line(raw, number, str(path)) for number, raw in enumerate(lines, start=1)]


def stream_batches(fd: int, batch_size: int, source: str = "standard input",
                   ) -> Iterator[list[str]]:
    """Lines from a file descriptor, grouped into batches of what is already available.

    A batch is handed out as soon as no further complete line is waiting (or it is full),
    so a pipe gets large batches while a person typing gets an answer per line.
    """
    pending = b""
    lines: list[str] = []
    line_number = 0
    while True:
        waiting = bool(select.select([fd], [], [], 0)[0])
        if lines and (len(lines) >= batch_size or not waiting):
            yield lines
            lines = []
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            line_number += 1
            lines.append(decode_line(raw, line_number, source))
    if pending:
        line_number += 1
        lines.append(decode_line(pending, line_number, source))
    for start in range(0, len(lines), batch_size):
        yield lines[start:start + batch_size]
