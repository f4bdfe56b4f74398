"""XLA's persistent compilation cache: the compiled search programs are kept on disk.

Compiling the search for one batch shape takes about as long as translating a thousand
sentences (`nmt.compiled_search`), so `translate.py` asks TensorFlow to keep every program it
compiles in a cache folder and to load it from there in later runs
(`--tf_xla_persistent_cache_directory`, read from `TF_XLA_FLAGS` when TensorFlow starts);
`train.py` and the study do the same for a `train.jit_compile` training step.
The cache is opt-in: `NMT_XLA_CACHE=DIR` keeps programs in DIR, `NMT_XLA_CACHE=on` in
`$XDG_CACHE_HOME/nmt/xla` (default `~/.cache/nmt/xla`), with one subfolder per TensorFlow
version; unset or `off`, nothing is kept. It is off by default because TensorFlow 2.21 reads
every cached program first as text and logs the failed attempt ("E0000 ... Error parsing
text-format tensorflow.XlaSerializedCacheEntry") on stderr on every cache hit, from C++,
after start-up, where `nmt.quiet` cannot hide it. Deleting the folder is always safe.
Imports no TensorFlow: this must run before it starts.
"""

from __future__ import annotations

import logging
import os
from importlib import metadata
from pathlib import Path

logger = logging.getLogger(__name__)

ENVIRONMENT_VARIABLE = "NMT_XLA_CACHE"
FLAG = "--tf_xla_persistent_cache_directory"


def cache_directory() -> Path | None:
    """Where compiled programs are kept for this TensorFlow version; None when turned off."""
    chosen = (os.environ.get(ENVIRONMENT_VARIABLE) or "").strip()
    if chosen.lower() in ("", "0", "off", "no", "false"):
        return None
    if chosen.lower() not in ("1", "on", "yes", "true"):
        root = Path(chosen)
    else:
        home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        root = Path(home) / "nmt" / "xla"
    try:
        version = metadata.version("tensorflow")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return root / f"tensorflow-{version}"


def enable_xla_cache() -> Path | None:
    """Point TensorFlow's XLA cache at `cache_directory()` (unless `TF_XLA_FLAGS` names one
    already, or the folder cannot be made); call before TensorFlow is imported. Returns the
    folder in use, or None."""
    flags = os.environ.get("TF_XLA_FLAGS", "")
    if FLAG in flags:
        return None
    directory = cache_directory()
    if directory is None:
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a read-only home: compile every time, as without a cache
        logger.info("no XLA cache: cannot create %s (%s)", directory, error.strerror)
        return None
    os.environ["TF_XLA_FLAGS"] = f"{flags} {FLAG}={directory}".strip()
    return directory
