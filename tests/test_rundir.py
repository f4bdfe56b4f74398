"""nmt.rundir and nmt.metrics_record: the names of a run directory and its metrics record."""

from __future__ import annotations

import json

import pytest

from nmt import rundir
from nmt.errors import CheckpointError
from nmt.metrics_record import RunMetrics


def test_the_layout_names_every_file_once():
    names = [rundir.CONFIG_FILE, *rundir.TOKENIZER_FILES, rundir.BEST_WEIGHTS_FILE,
             rundir.LAST_WEIGHTS_FILE, rundir.METRICS_FILE, rundir.RESUME_DIR, rundir.LOGS_DIR]
    assert names == ["config.json", "source.model", "target.model", "best.weights.h5",
                     "last.weights.h5", "metrics.json", "resume", "logs"]
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
