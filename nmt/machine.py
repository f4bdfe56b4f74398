"""Facts about this machine, recorded next to every benchmark and study result."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path


def machine_facts() -> dict[str, str | int | None]:
    """CPU model, cores, TensorFlow and Python versions."""
    import tensorflow as tf

    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": os.cpu_count(), "tensorflow": tf.__version__,
            "python": platform.python_version()}
