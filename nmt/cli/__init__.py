"""The command-line programs: `nmt-translate` (`translate.py`) and `nmt-train` (`train.py`).

Each parses and checks its arguments before TensorFlow is imported, so bad input fails in a
fraction of a second with one line on stderr, and then loads TensorFlow quietly.
"""

import argparse
import logging
import os
import sys
from typing import NoReturn


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error: `error: <what is wrong> (see <prog> --help)`."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def exit_at_once(code: int) -> NoReturn:
    """End the process with `code`, skipping the interpreter's teardown.

    Tearing down an interpreter that has loaded TensorFlow took 0.85 s after a one-sentence
    `translate.py` had finished (2-core AVX512-BF16 machine), a fifth of its cold start.
    What the command wrote is flushed first, and its files are closed by then (outputs are
    written to a temporary file and renamed), so nothing is lost; atexit handlers do not run.
    Only for a program's last line: `main()` itself returns, for callers in Python."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be written
            pass
    os._exit(code)
