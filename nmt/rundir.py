"""The run directory: the one place that names its files and reads and writes them.

`train.py` (`nmt.training.train`) writes a run directory; `translate.py`, the server, the
export, the release and the study read it. It holds everything translation needs and
everything a resumed run needs:

    config.json          the `Config` (the model is rebuilt from it alone)
    source.model         sentencepiece models of the two languages
    target.model
    best.weights.h5      weights with the best validation BLEU (no optimizer state)
    last.weights.h5      weights after the last finished epoch
    metrics.json         per-epoch figures, the best epoch, wall time, why training stopped
    resume/              tf.train.CheckpointManager: model + optimizer + epoch, for --resume
    logs/                TensorBoard
    .lock                held by the training that writes here (`nmt.locking`)

A shipped model (`nmt.release`, under `checkpoints/`) keeps the first four files and
`metrics.json`. A run of the attention study adds its `result.json` (`nmt.study_runs`).
Every file is written atomically (`nmt.files`). Pure Python: no TensorFlow.
"""

from __future__ import annotations

import json
from pathlib import Path

from nmt.errors import CheckpointError
from nmt.files import atomic_write_text
from nmt.locking import LOCK_FILE  # noqa: F401 (a run directory's lock, named here too)

CONFIG_FILE = "config.json"
SOURCE_TOKENIZER_FILE = "source.model"
TARGET_TOKENIZER_FILE = "target.model"
TOKENIZER_FILES = (SOURCE_TOKENIZER_FILE, TARGET_TOKENIZER_FILE)
BEST_WEIGHTS_FILE = "best.weights.h5"
LAST_WEIGHTS_FILE = "last.weights.h5"
WEIGHTS_FILES = {"best": BEST_WEIGHTS_FILE, "last": LAST_WEIGHTS_FILE}
METRICS_FILE = "metrics.json"
RESUME_DIR = "resume"
LOGS_DIR = "logs"
# What translation needs besides the weights (and what a release copies, with metrics.json).
MODEL_FILES = (CONFIG_FILE, *TOKENIZER_FILES)


def weights_file(which: str) -> str:
    """The weights file of `which` ("best" or "last", as `--weights` takes it)."""
    try:
        return WEIGHTS_FILES[which]
    except KeyError:
        raise CheckpointError(f"weights: expected one of {list(WEIGHTS_FILES)}, received "
                              f"{which!r}") from None


def is_run_dir(folder: str | Path) -> bool:
    """True when `folder` holds a run's config.json (written first by training)."""
    return (Path(folder) / CONFIG_FILE).is_file()


def missing_files(run_dir: str | Path, names: tuple[str, ...]) -> list[str]:
    """The files of `names` that `run_dir` lacks, in the order given."""
    return [name for name in names if not (Path(run_dir) / name).is_file()]


def read_metrics(run_dir: str | Path) -> dict:
    """metrics.json of `run_dir` ({} if there is none); CheckpointError if it is not JSON."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON ({error}); delete it to resume "
                              "without the earlier epochs' figures") from error


def write_metrics(run_dir: str | Path, metrics: dict) -> Path:
    """Write metrics.json of `run_dir` atomically (indented JSON, newline at the end)."""
    return atomic_write_text(Path(run_dir) / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
