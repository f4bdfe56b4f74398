"""Quiet start-up: TensorFlow's native libraries print before anyone can stop them.

Importing TensorFlow and running its first op write lines such as "oneDNN custom operations
are on", "Could not find cuda drivers", "failed call to cuInit: UNKNOWN ERROR" straight to
file descriptor 2, before absl logging is initialised, so `TF_CPP_MIN_LOG_LEVEL` does not
reach them (tensorflow/tensorflow#100442). A user reads "ERROR" and thinks the install is
broken. `load_tensorflow` points descriptor 2 at a temporary file while TensorFlow starts,
then restores it: nmt's own warnings and errors, written later, reach the terminal as
before. oneDNN's once-per-process line about a data type it does not support ("oneDNN
supports DT_BOOL only on platforms with AVX-512", at ERROR level, so TF_CPP_MIN_LOG_LEVEL=2
shows it) is provoked while descriptor 2 is captured, so it never reaches the terminal. If
starting TensorFlow fails, what it wrote is replayed, so no real error is lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

STDERR_FD = 2


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[None]:
    """Send everything written to file descriptor 2 inside the block (by C++ libraries or
    Python) to a temporary file; restore descriptor 2 afterwards and, if the block raised,
    copy what was written back to stderr before the exception goes on."""
    sys.stderr.flush()
    saved = os.dup(STDERR_FD)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), STDERR_FD)
        try:
            yield
        except BaseException:
            _restore(saved)
            capture.seek(0)
            os.write(STDERR_FD, capture.read())
            raise
        else:
            _restore(saved)


def _restore(saved: int) -> None:
    sys.stderr.flush()
    os.dup2(saved, STDERR_FD)
    os.close(saved)


@contextlib.contextmanager
def tensorflow_starting(verbose: bool = False) -> Iterator[None]:
    """Import TensorFlow inside this block. Unless `verbose`, what it writes meanwhile is
    dropped (`native_stderr_captured`), and its C++ log level is set to ERROR first, unless the
    user chose one: TensorFlow's C++ logging reads `TF_CPP_MIN_LOG_LEVEL` when it is imported,
    so it must be set before, not after (train.py imports TensorFlow to make its strategy)."""
    if verbose:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with native_stderr_captured():
        yield


def load_tensorflow(verbose: bool = False) -> None:
    """Import TensorFlow and initialise the devices; silently unless
    `verbose`. Later TensorFlow log lines below ERROR are filtered too: its Python logger's
    and absl's, which otherwise reach the root logger that nmt's commands set to INFO for
    their own progress lines (every checkpoint save logs "Sharding callback duration")."""
    with tensorflow_starting(verbose):
        _start_tensorflow()
    if not verbose:
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")
        logging.getLogger("absl").setLevel(logging.ERROR)


def _start_tensorflow() -> None:
    with _without_matplotlib():
        import tensorflow as tf
    # Not tensorflow-text: `nmt.tokenizer` imports it, as quietly, when an in-graph
    # tokenizer is first needed (training, export); a translation needs none.

    # The first op initialises the devices (the cuInit line). A transpose of booleans also
    # makes oneDNN log, now instead of at the first real graph, its once-per-process
    # "oneDNN supports DT_BOOL only on platforms with AVX-512" ERROR line (on AVX-512 CPUs
    # too: it is printed for the first dtype its kernels do not take, whatever the CPU).
    tf.transpose(tf.constant([[True]])).numpy()


@contextlib.contextmanager
def _without_matplotlib() -> Iterator[None]:
    """Importing TensorFlow imports Keras, and Keras imports matplotlib.pyplot when it can,
    for image-gallery helpers that nmt never calls (guarded by `except ImportError`): half a
    second of every start. Inside the block matplotlib cannot be imported; afterwards it can
    again (`nmt.plotting` imports it when plots are asked for)."""
    if "matplotlib" in sys.modules:  # already loaded: nothing to save
        yield
        return
    sys.modules["matplotlib"] = None  # makes `import matplotlib...` raise ImportError
    try:
        yield
    finally:
        for name in [name for name in sys.modules if name.split(".")[0] == "matplotlib"]:
            if sys.modules[name] is None:
                del sys.modules[name]
