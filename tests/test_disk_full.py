"""A full disk: one clear error line, nothing half written left behind (needs root: each
test mounts a small tmpfs)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nmt import files
from nmt.errors import StorageError
from tests.helpers import REPO, assert_clean_error, tiny_config

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="mounting a small tmpfs (a disk that fills) needs root")


@contextlib.contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (e.g. "1m") mounted on `folder` for the block."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp" in p.name or "_temp" in p.name]


def test_a_write_that_fills_the_disk_is_one_error_and_leaves_nothing(tmp_path):
    with small_disk(tmp_path / "disk", "1m") as disk:
        (disk / "metrics.json").write_text("old", encoding="utf-8")
        with pytest.raises(StorageError, match=r"cannot write .*metrics\.json: the disk is full"), \
                files.storage_errors(disk / "metrics.json"):
            files.atomic_write_bytes(disk / "metrics.json", bytes(2 * 2**20))
        assert (disk / "metrics.json").read_text(encoding="utf-8") == "old"
        assert sorted(p.name for p in disk.iterdir()) == ["metrics.json"]


def test_training_on_a_full_disk_stops_with_one_line_and_no_temporary_files(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(tiny_config(epochs=2).to_json(), encoding="utf-8")
    with small_disk(tmp_path / "disk", "4m") as disk:
        result = subprocess.run([sys.executable, "train.py", "--config", str(config),
                                 "--run-dir", str(disk / "run"), "--quiet"], cwd=REPO,
                                capture_output=True, text=True, timeout=600)
        assert_clean_error(result.returncode, result.stdout, result.stderr,
                           "cannot write best.weights.h5", "MiB free", "free some space")
        assert leftovers(disk) == []
        assert not (disk / "run" / "best.weights.h5").exists()
        assert (disk / "run" / "config.json").is_file()


PAST_THE_CHECK = """
import os, sys
from pathlib import Path
from nmt import files
from nmt.callbacks import save_weights
from nmt.errors import StorageError
from nmt.model import Seq2Seq
from tests.helpers import tiny_config

files.FREE_SPACE_MARGIN = -2**40  # the free-space check always passes
model = Seq2Seq(tiny_config().model)
model.build()
try:
    save_weights(model, Path(sys.argv[1]) / "best.weights.h5")
except StorageError as error:
    print(error, flush=True)
    # KNOWN DEFECT (to fix): after HDF5 ran out of space, the HDF5 library crashes at
    # interpreter exit (exit 139); leave without its exit handlers.
    os._exit(0)
print("no StorageError", flush=True)
"""


def test_weights_that_fill_the_disk_despite_the_check_are_one_error(tmp_path):
    """Past the free-space check (another writer filled the disk meanwhile): HDF5's
    out-of-space error becomes the same StorageError and its temporary file is removed.
    In a process of its own: HDF5's state after the failed write crashes the process
    that wrote at exit."""
    with small_disk(tmp_path / "disk", "300k") as disk:
        result = subprocess.run([sys.executable, "-c", PAST_THE_CHECK, str(disk)], cwd=REPO,
                                capture_output=True, text=True, timeout=300,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        assert result.returncode == 0, result.stderr[-2000:]
        assert "best.weights.h5: the disk is full" in result.stdout, result.stdout
        assert list(disk.iterdir()) == []
