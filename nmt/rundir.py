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
    checksums.json       SHA-256 of the weights and tokenizer files, recorded as each is
                         written and checked when a translator loads them
    resume/              tf.train.CheckpointManager: model + optimizer + epoch, for --resume
    logs/                TensorBoard
    .lock                held by the training that writes here (`nmt.locking`)

A shipped model (`nmt.release`, under `checkpoints/`) keeps the first four files,
`metrics.json` and `checksums.json`. A run directory without checksums.json (older runs)
loads unchecked; a file that checksums.json does not name is not checked. A run of the
attention study adds its `result.json` (`nmt.study_runs`). Every file is written atomically
(`nmt.files`). Pure Python: no TensorFlow.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from nmt.errors import CheckpointError
from nmt.files import atomic_path, atomic_write_text
from nmt.locking import LOCK_FILE  # noqa: F401 (a run directory's lock, named here too)

CONFIG_FILE = "config.json"
SOURCE_TOKENIZER_FILE = "source.model"
TARGET_TOKENIZER_FILE = "target.model"
TOKENIZER_FILES = (SOURCE_TOKENIZER_FILE, TARGET_TOKENIZER_FILE)
BEST_WEIGHTS_FILE = "best.weights.h5"
LAST_WEIGHTS_FILE = "last.weights.h5"
WEIGHTS_FILES = {"best": BEST_WEIGHTS_FILE, "last": LAST_WEIGHTS_FILE}
METRICS_FILE = "metrics.json"
CHECKSUMS_FILE = "checksums.json"
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


def remove_leftovers(run_dir: str | Path) -> list[Path]:
    """Delete what an interrupted write left in `run_dir`: temporary files of
    `nmt.files.atomic_path` (`.NAME.<random>.tmp...`) and TensorFlow's half-written resume
    checkpoints (`resume/ckpt-N_temp...`). Call it only while holding the run's lock.
    Returns what it deleted."""
    run_dir = Path(run_dir)
    leftovers = [*run_dir.glob(".*.tmp*"), *(run_dir / RESUME_DIR).glob("*_temp*")]
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return leftovers


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


# -------------------------------------------------------------------------- checksums
def sha256_of(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checksums(folder: str | Path) -> dict[str, dict[str, str]]:
    """checksums.json of `folder`: {"sha256": {name: hex}} and, while a file is being
    replaced, {"replacing": {name: hex of the new file}}; empty dicts if there is none."""
    path = Path(folder) / CHECKSUMS_FILE
    checksums: dict = {"sha256": {}, "replacing": {}}
    if path.exists():
        try:
            checksums.update(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CheckpointError(f"{path} is damaged ({error}); delete it to use the run "
                                  "without checking its files") from error
    return checksums


def _write_checksums(folder: Path, checksums: dict[str, dict[str, str]]) -> None:
    kept = {key: dict(sorted(value.items())) for key, value in checksums.items() if value}
    atomic_write_text(folder / CHECKSUMS_FILE, json.dumps(kept, indent=2) + "\n")


def record_checksums(folder: str | Path, names: Iterable[str]) -> None:
    """Record the SHA-256 of the files `names` of `folder` as they are now."""
    folder = Path(folder)
    checksums = read_checksums(folder)
    for name in names:
        checksums["sha256"][name] = sha256_of(folder / name)
    _write_checksums(folder, checksums)


@contextlib.contextmanager
def checked_write(folder: str | Path, name: str, suffix: str = "") -> Iterator[Path]:
    """`nmt.files.atomic_path` for a file whose SHA-256 checksums.json records.

    The new file's checksum is recorded as "replacing" before the rename and as the file's
    own after it, so a process killed in between leaves a file that still verifies."""
    folder = Path(folder)
    with atomic_path(folder / name, suffix) as temporary:
        yield temporary
        digest = sha256_of(temporary)
        checksums = read_checksums(folder)
        checksums["replacing"][name] = digest
        _write_checksums(folder, checksums)
    checksums["sha256"][name] = checksums["replacing"].pop(name)
    _write_checksums(folder, checksums)


def verify_checksums(folder: str | Path, names: Iterable[str]) -> None:
    """Check the files `names` of `folder` against checksums.json (those it records).

    Raises:
        CheckpointError: naming the first file whose bytes are not the ones written.
    """
    checksums = read_checksums(folder)
    for name in names:
        expected = checksums["sha256"].get(name)
        if expected is None:
            continue
        path = Path(folder) / name
        if sha256_of(path) not in (expected, checksums["replacing"].get(name)):
            raise CheckpointError(f"{path} is damaged: its SHA-256 differs from the one "
                                  f"recorded in {CHECKSUMS_FILE} when it was written; restore "
                                  "it from a copy or train again")
