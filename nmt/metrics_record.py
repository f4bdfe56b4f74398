"""The metrics record of a training run: what `metrics.json` of a run directory holds.

`RunMetrics` is the one owner of those figures: training states the facts of its data and
model once (`describe`), `nmt.callbacks.RunKeeper` adds every validated epoch (`add_epoch`),
`train` says why it stopped (`stopped_by`), and a resumed run reads the record back
(`from_json`, `trim_to`). `to_json` keeps the key order the file has always had:

    padding_fraction, train_pairs, ... parameters   facts of the data and the model
    epochs            one dict per validated epoch (loss, ppl, val_bleu, wall_time, ...)
    best              the epoch with the best (mean) validation BLEU
    bleu_signature, chrf_signature                  sacreBLEU signatures of the scores
    wall_time         seconds used so far, over every resumed part of the run
    stopped_by        "epochs", "early_stopping" or "time_budget" (once training returned)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nmt import rundir

_FIELDS = ("epochs", "best", "bleu_signature", "chrf_signature", "wall_time", "stopped_by")


@dataclass
class RunMetrics:
    """metrics.json as a record; fields left None are not written."""

    facts: dict[str, Any] = field(default_factory=dict)  # data and model facts, first in file
    epochs: list[dict] | None = None
    best: dict | None = None
    bleu_signature: str | None = None
    chrf_signature: str | None = None
    wall_time: float | None = None
    stopped_by: str | None = None

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> RunMetrics:
        """The record of a metrics.json dict; keys it does not know count as facts."""
        return cls(facts={k: v for k, v in values.items() if k not in _FIELDS},
                   **{k: values[k] for k in _FIELDS if k in values})

    def to_json(self) -> dict[str, Any]:
        values = dict(self.facts)
        values.update({name: getattr(self, name) for name in _FIELDS
                       if getattr(self, name) is not None})
        return values

    def trim_to(self, epoch: int) -> None:
        """Forget epochs after `epoch`, the resume checkpoint's: a kill between writing
        metrics.json and the checkpoint leaves one epoch too many."""
        self.epochs = [e for e in self.epochs or [] if e["epoch"] <= epoch]
        if (self.best or {}).get("epoch", 0) > epoch:
            self.best = max(self.epochs, key=lambda e: e["val_bleu"], default=None)

    def describe(self, **facts: Any) -> None:
        """Set the facts of the data and the model (train_pairs, parameters, ...)."""
        self.facts.update(facts)

    def add_epoch(self, record: dict, scores: dict) -> bool:
        """Append a validated epoch (`epoch_record`); `scores` brings the sacreBLEU
        signatures. Returns True when it is the best epoch so far."""
        self.epochs = [*(self.epochs or []), record]
        improved = self.best is None or record["val_bleu"] > self.best["val_bleu"]
        if improved:
            self.best = record
        self.bleu_signature = scores["bleu_signature"]
        self.chrf_signature = scores["chrf_signature"]
        self.wall_time = record["wall_time"]
        return improved

    def save(self, run_dir: Path) -> Path:
        return rundir.write_metrics(run_dir, self.to_json())


def scalar(value: Any) -> float:
    """A log value as a float (a step's logs have shape [1] under a tf.distribute strategy)."""
    return float(np.reshape(value, -1)[0])


def epoch_record(epoch: int, logs: dict, train_seconds: float, wall_time: float) -> dict:
    """One entry of `epochs`: the epoch's logs as floats, perplexities, speed and times.

    Args:
        epoch: 0-based index of the epoch (the record says `epoch + 1`).
        logs: Keras's epoch logs with the validation scores added.
        train_seconds: seconds of training in this epoch (validation excluded).
        wall_time: seconds used by the run so far.
    """
    record = {"epoch": epoch + 1}
    for key, value in logs.items():
        record[key] = scalar(value)
    record["ppl"] = math.exp(min(record["nll"], 50.0))
    if "val_nll" in record:
        record["val_ppl"] = math.exp(min(record["val_nll"], 50.0))
    record["train_seconds"] = round(train_seconds, 2)
    record["tokens_per_second"] = record["tokens"] / max(train_seconds, 1e-9)
    record["wall_time"] = round(wall_time, 2)
    return record
