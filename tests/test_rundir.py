"""nmt.rundir and nmt.metrics_record: the names of a run directory and its metrics record."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from nmt import files, rundir
from nmt.errors import CheckpointError
from nmt.metrics_record import RunMetrics


def test_the_layout_names_every_file_once():
    names = [rundir.CONFIG_FILE, *rundir.TOKENIZER_FILES, rundir.BEST_WEIGHTS_FILE,
             rundir.LAST_WEIGHTS_FILE, rundir.METRICS_FILE, rundir.RESUME_DIR, rundir.LOGS_DIR,
             rundir.CHECKSUMS_FILE, rundir.LOCK_FILE]
    assert names == ["config.json", "source.model", "target.model", "best.weights.h5",
                     "last.weights.h5", "metrics.json", "resume", "logs", "checksums.json",
                     ".lock"]
    for name in names:  # the module docstring describes each of them
        assert name in rundir.__doc__
    assert rundir.weights_file("best") == "best.weights.h5"
    assert rundir.weights_file("last") == "last.weights.h5"
    with pytest.raises(CheckpointError, match="expected one of"):
        rundir.weights_file("middle")


def test_missing_files_and_run_directories(tmp_path):
    assert not rundir.is_run_dir(tmp_path)
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    assert rundir.is_run_dir(tmp_path)
    assert rundir.missing_files(tmp_path, rundir.MODEL_FILES) == ["source.model", "target.model"]


def test_metrics_round_trip_and_bad_json(tmp_path):
    assert rundir.read_metrics(tmp_path) == {}
    rundir.write_metrics(tmp_path, {"wall_time": 1.5})
    assert (tmp_path / "metrics.json").read_text(encoding="utf-8") == (
        '{\n  "wall_time": 1.5\n}\n')
    assert rundir.read_metrics(tmp_path) == {"wall_time": 1.5}
    (tmp_path / "metrics.json").write_text("{", encoding="utf-8")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        rundir.read_metrics(tmp_path)


def _epoch(number: int, bleu: float) -> dict:
    return {"epoch": number, "val_bleu": bleu, "wall_time": 10.0 * number}


def test_the_record_keeps_the_key_order_of_metrics_json(tmp_path):
    record = RunMetrics()
    record.describe(padding_fraction=0.2, train_pairs=10)
    scores = {"bleu_signature": "b", "chrf_signature": "c"}
    assert record.add_epoch(_epoch(1, 5.0), scores)
    assert not record.add_epoch(_epoch(2, 4.0), scores)
    record.stopped_by = "epochs"
    record.save(tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert list(saved) == ["padding_fraction", "train_pairs", "epochs", "best",
                           "bleu_signature", "chrf_signature", "wall_time", "stopped_by"]
    assert saved["best"] == _epoch(1, 5.0) and saved["wall_time"] == 20.0
    assert RunMetrics.from_json(saved).to_json() == saved


def test_a_resumed_record_forgets_epochs_after_the_checkpoint():
    record = RunMetrics.from_json({"train_pairs": 10, "epochs": [_epoch(1, 5.0), _epoch(2, 6.0),
                                                                 _epoch(3, 7.0)],
                                   "best": _epoch(3, 7.0)})
    record.trim_to(2)
    assert [e["epoch"] for e in record.epochs] == [1, 2]
    assert record.best == _epoch(2, 6.0) and record.facts == {"train_pairs": 10}


# ------------------------------------------------------------------------ checksums
def test_a_checked_write_records_the_files_sha256_and_a_damaged_file_is_named(tmp_path):
    with rundir.checked_write(tmp_path, "best.weights.h5", suffix=".weights.h5") as temporary:
        temporary.write_bytes(b"weights" * 1000)
    recorded = rundir.read_checksums(tmp_path)["sha256"]
    assert recorded == {"best.weights.h5": hashlib.sha256(b"weights" * 1000).hexdigest()}
    assert "replacing" not in json.loads((tmp_path / "checksums.json").read_text())
    rundir.verify_checksums(tmp_path, ["best.weights.h5", "source.model"])  # unnamed: unchecked
    with open(tmp_path / "best.weights.h5", "r+b") as file:  # damage a few bytes inside
        file.seek(3000)
        file.write(b"\x00" * 100)
    with pytest.raises(CheckpointError, match=r"best\.weights\.h5 is damaged.*checksums\.json"):
        rundir.verify_checksums(tmp_path, ["best.weights.h5"])


def test_a_run_without_checksums_loads_unchecked(tmp_path):
    (tmp_path / "best.weights.h5").write_bytes(b"anything")
    rundir.verify_checksums(tmp_path, ["best.weights.h5"])
    (tmp_path / "checksums.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match="checksums.json is damaged"):
        rundir.verify_checksums(tmp_path, ["best.weights.h5"])


def test_a_kill_right_after_the_rename_leaves_a_file_that_verifies(tmp_path, monkeypatch):
    with rundir.checked_write(tmp_path, "last.weights.h5") as temporary:
        temporary.write_bytes(b"epoch 1")
    real_replace = os.replace

    def replace_then_die(source, target):
        real_replace(source, target)
        if str(target).endswith("last.weights.h5"):
            raise KeyboardInterrupt  # stands in for kill -9 before checksums.json is final

    monkeypatch.setattr(files.os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt), \
            rundir.checked_write(tmp_path, "last.weights.h5") as temporary:
        temporary.write_bytes(b"epoch 2")
    assert (tmp_path / "last.weights.h5").read_bytes() == b"epoch 2"
    rundir.verify_checksums(tmp_path, ["last.weights.h5"])


def test_leftovers_of_interrupted_writes_are_removed(tmp_path):
    kept = [tmp_path / "best.weights.h5", tmp_path / "resume" / "ckpt-2.index"]
    leftovers = [tmp_path / ".best.weights.h5.0123456789ab.tmp.weights.h5",
                 tmp_path / ".metrics.json.0123456789ab.tmp",
                 tmp_path / "resume" / "ckpt-3_temp" / "part-00000-of-00001.index"]
    for path in (*kept, *leftovers):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    removed = rundir.remove_leftovers(tmp_path)
    assert sorted(removed) == sorted([*leftovers[:2], tmp_path / "resume" / "ckpt-3_temp"])
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == sorted(kept)
