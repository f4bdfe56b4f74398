"""nmt.locking: one training per run directory, one study per study directory."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nmt import study
from nmt.errors import BusyError
from nmt.locking import LOCK_FILE, folder_lock
from tests.helpers import REPO, assert_clean_error, tiny_config

HOLDER = ("import sys, time\nfrom nmt.locking import folder_lock\n"
          "with folder_lock(sys.argv[1], 'run directory', 'wait'):\n"
          "    print('locked', flush=True)\n    time.sleep(600)\n")


@contextlib.contextmanager
def held_by_another_process(folder: Path) -> Iterator[subprocess.Popen]:
    """A second Python process holding `folder`'s lock until the block ends (kill -9)."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], cwd=REPO,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "locked\n"
        yield process
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def test_a_held_lock_is_refused_with_the_holders_pid_and_freed_by_a_kill(tmp_path):
    with held_by_another_process(tmp_path) as holder:
        with pytest.raises(BusyError, match=f"in use by pid {holder.pid} on .*; later"), \
                folder_lock(tmp_path, "run directory", "later"):
            pass
    with folder_lock(tmp_path, "run directory", "later") as lock:  # the OS let go of it
        assert lock == tmp_path / LOCK_FILE
        assert lock.read_text(encoding="utf-8").startswith("pid ")


def test_a_second_trainer_on_a_run_directory_refuses_and_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    config = tmp_path / "config.json"
    config.write_text(tiny_config(epochs=1).to_json(), encoding="utf-8")
    with held_by_another_process(run_dir) as holder:
        result = subprocess.run([sys.executable, "train.py", "--config", str(config),
                                 "--run-dir", str(run_dir), "--quiet"], cwd=REPO,
                                capture_output=True, text=True, timeout=300)
    assert_clean_error(result.returncode, result.stdout, result.stderr,
                       f"run directory {run_dir} is in use by pid {holder.pid}", "--run-dir")
    assert sorted(path.name for path in run_dir.iterdir()) == [LOCK_FILE]


def test_a_second_study_on_a_study_directory_refuses(tmp_path, capsys):
    with held_by_another_process(tmp_path) as holder:
        code = study.main(["--study-dir", str(tmp_path), "--data-dir", str(tmp_path),
                           "--scores", "dot", "--hard-top", "0"])
    out, err = capsys.readouterr()
    assert_clean_error(code, out, err, f"study directory {tmp_path} is in use by pid "
                       f"{holder.pid}", "--study-dir")
    assert sorted(path.name for path in tmp_path.iterdir()) == [LOCK_FILE]
