"""The command-line programs: `nmt-translate` (`translate.py`) and `nmt-train` (`train.py`).

Each parses and checks its arguments before TensorFlow is imported, so bad input fails in a
fraction of a second with one line on stderr, and then loads TensorFlow quietly.
"""

import argparse


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error: `error: <what is wrong> (see <prog> --help)`."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")
