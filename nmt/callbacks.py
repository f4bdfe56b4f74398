"""The callbacks of a training run: progress, time budget, validation and checkpoints.

`nmt.training.train` assembles them; `RunKeeper` is the chief's end of every epoch
(validation BLEU/chrF, best and last weights, metrics.json, resume checkpoint), the other
workers take part through `WorkerCheckpoint` and `SharedValidation`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from nmt.attention import weight_statistics
from nmt.averaging import WeightAverage
from nmt.distribute import ChiefBroadcast
from nmt.errors import StorageError
from nmt.evaluation import corpus_scores
from nmt.files import check_free_space, disk_is_full, storage_errors
from nmt.metrics_record import RunMetrics, epoch_record, scalar
from nmt.model import make_model
from nmt.rundir import (
    BEST_WEIGHTS_FILE,
    LAST_WEIGHTS_FILE,
    RESUME_DIR,
    checked_write,
    remove_leftovers,
)
from nmt.translator import Translation, Translator

logger = logging.getLogger(__name__)


class ProgressBar(keras.callbacks.Callback):
    """A bar per epoch with loss, target tokens per second and ETA; a summary line after."""

    def __init__(self, epochs: int, steps: int, stream=sys.stderr, enabled: bool = True):
        super().__init__()
        self.epochs, self.steps, self.stream, self.enabled = epochs, steps, stream, enabled

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
        if self.enabled:
            self.stream.write(f"epoch {epoch + 1}/{self.epochs}\n")
            self.bar = keras.utils.Progbar(self.steps, stateful_metrics=["loss", "tok/s"])

    def on_train_batch_end(self, batch, logs=None):
        if self.enabled:
            tokens, loss = scalar(logs["tokens"]), scalar(logs["loss"])
            rate = tokens / max(time.perf_counter() - self.start, 1e-9)
            self.bar.update(batch + 1, [("loss", loss), ("tok/s", round(rate))])


class TimeBudget(keras.callbacks.Callback):
    """Stop training (after the current batch) once `minutes` of wall time are used.

    `agree` (several workers): maps this worker's elapsed seconds to the chief's, fetched
    before every batch, so that every worker stops after the same batch."""

    def __init__(self, minutes: float | None, already_used_seconds: float = 0.0, agree=None):
        super().__init__()
        self.limit = None if minutes is None else minutes * 60.0
        self.used = already_used_seconds
        self.exhausted = False
        self.agree, self.agreed = agree, None

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return self.used + time.perf_counter() - self.start

    def clock(self) -> float:
        """The elapsed seconds that decisions use: the chief's when workers agree on it."""
        return self.elapsed() if self.agreed is None else self.agreed

    def on_train_batch_begin(self, batch, logs=None):
        if self.agree is not None:
            self.agreed = self.agree(self.elapsed())

    def on_train_batch_end(self, batch, logs=None):
        if self.limit is not None and self.clock() >= self.limit:
            self.exhausted = True
            self.model.stop_training = True


@dataclass
class Validation:
    """What the chief decodes and scores after every epoch.

    `valid_sets`: corpus name -> (sources, references), BLEU/chrF with beam `beam` (1:
    greedy); `loss_sets`: corpus name -> batched dataset, a validation loss per corpus
    (several corpora only)."""

    translator: Translator
    valid_sets: dict[str, tuple[list[str], list[str]]]
    beam: int = 1
    loss_sets: dict[str, tf.data.Dataset] = field(default_factory=dict)
    samples: int = 3  # sentences of the first corpus kept for TensorBoard (`nmt.summaries`)
    # the last epoch's translations of those sentences, with their references
    last_samples: list[tuple[Translation, str]] = field(default_factory=list)

    def score(self, model: keras.Model, logs: dict) -> dict:
        """BLEU/chrF (and with several corpora the loss) of each validation corpus into
        `logs`; `val_bleu`/`val_chrf` are the means over the corpora (model selection).
        Returns the scores of the last corpus (for their sacreBLEU signatures)."""
        if self.translator.model is not model:  # a float32 twin outside the strategy
            self.translator.model.set_weights(model.get_weights())
        scores, bleus, chrfs = {}, [], []
        for name, (sources, references) in self.valid_sets.items():
            translations = self.translator.translate(sources, beam=self.beam, batch_size=128)
            hypotheses = [t.text for t in translations]
            if not bleus:  # the first corpus
                self.last_samples = list(zip(translations[:self.samples],
                                             references[:self.samples], strict=True))
                logs.update(attention_logs(translations))
            scores = corpus_scores(hypotheses, references)
            if len(self.valid_sets) > 1:
                logs[f"val_{name}_bleu"], logs[f"val_{name}_chrf"] = (scores["bleu"],
                                                                      scores["chrf"])
            bleus.append(scores["bleu"])
            chrfs.append(scores["chrf"])
        logs["val_bleu"], logs["val_chrf"] = float(np.mean(bleus)), float(np.mean(chrfs))
        for name, dataset in self.loss_sets.items():
            result = model.evaluate(dataset, verbose=0, return_dict=True)
            logs[f"val_{name}_loss"] = scalar(result["loss"])
            logs[f"val_{name}_ppl"] = math.exp(min(scalar(result["nll"]), 50.0))
        return scores


def attention_logs(translations: list[Translation]) -> dict[str, float]:
    """`val_attention_entropy` (nats) and `val_attention_max` (the mean weight on the
    most-attended source piece) of validation translations, for metrics.json and
    TensorBoard: how attention sharpens epoch by epoch. Empty when nothing was produced."""
    entropy, largest, rows = weight_statistics([t.attention for t in translations])
    if not rows:
        return {}
    return {"val_attention_entropy": entropy, "val_attention_max": largest}


@dataclass
class ResumePoint:
    """The resume checkpoint: model, optimizer, finished epochs (and the weight average).

    `manager` is None on the workers other than the chief, which save to a scratch folder."""

    checkpoint: tf.train.Checkpoint
    epoch: tf.Variable  # int64 scalar: epochs finished
    manager: tf.train.CheckpointManager | None
    size: int = 0  # bytes of the variables it saves (the free space a save checks for)

    @classmethod
    def create(cls, model: keras.Model, average: WeightAverage | None,
               folder: Path | None) -> ResumePoint:
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        extra = {"average": average.checkpoint_items()} if average else {}
        checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=epoch,
                                         **extra)
        manager = (tf.train.CheckpointManager(checkpoint, folder, max_to_keep=1)
                   if folder is not None else None)
        size = variables_bytes([*model.weights, *model.optimizer.variables])
        return cls(checkpoint, epoch, manager, size)

    def save(self, epoch: int, folder: Path | None = None) -> None:
        """Record that 0-based `epoch` is finished and save; with `folder`, into a
        throw-away manager there (a worker's part of the chief's save)."""
        self.epoch.assign(epoch + 1)
        manager = self.manager
        if folder is not None:
            manager = tf.train.CheckpointManager(self.checkpoint, folder, max_to_keep=1)
        where = Path(manager.directory)
        what = f"the resume checkpoint in {where}"
        check_free_space(where.parent, self.size, what)
        try:
            with storage_errors(what):
                manager.save(checkpoint_number=epoch + 1)
        except Exception as error:
            remove_leftovers(where.parent)  # no half-written ckpt-N_temp stays behind
            if isinstance(error, tf.errors.OpError) and disk_is_full(error.message):
                raise StorageError(f"cannot write {what}: the disk is full; free some space "
                                   "and run it again") from error
            raise


class RunKeeper(keras.callbacks.Callback):
    """After each epoch: validation BLEU/chrF, best and last weights, metrics.json, resume
    checkpoint. Puts `val_bleu`/`val_chrf` into the logs for EarlyStopping and TensorBoard."""

    def __init__(self, run_dir: Path, validation: Validation, resume: ResumePoint,
                 metrics: RunMetrics, budget: TimeBudget, average: WeightAverage | None = None):
        super().__init__()
        self.run_dir, self.validation, self.resume = run_dir, validation, resume
        self.metrics, self.budget, self.average = metrics, budget, average

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        train_seconds = time.perf_counter() - self.epoch_start
        # Validation and the saved weights use the averaged weights; the resume checkpoint
        # below keeps the raw ones that training continues from.
        with self.average.swapped() if self.average else contextlib.nullcontext():
            improved, record = self._validate_and_save(epoch, logs, train_seconds)
        self.resume.save(epoch)
        valid_sets = self.validation.valid_sets
        per_corpus = "".join(f"  {name} BLEU {record[f'val_{name}_bleu']:.2f}"
                             for name in valid_sets if len(valid_sets) > 1)
        logger.info("epoch %d  loss %.3f  ppl %.2f  val_ppl %.2f  BLEU %.2f  chrF %.2f%s  "
                    "%.0f tok/s  %s%s", epoch + 1, record["loss"], record["ppl"],
                    record.get("val_ppl", float("nan")), record["val_bleu"], record["val_chrf"],
                    per_corpus, record["tokens_per_second"], _clock(record["wall_time"]),
                    "  (best)" if improved else "")

    def _validate_and_save(self, epoch: int, logs: dict, train_seconds: float
                           ) -> tuple[bool, dict]:
        """Validation BLEU/chrF, best and last weights, metrics.json."""
        scores = self.validation.score(self.model, logs)
        record = epoch_record(epoch, logs, train_seconds, self.budget.elapsed())
        improved = self.metrics.add_epoch(record, scores)
        if improved:
            save_weights(self.model, self.run_dir / BEST_WEIGHTS_FILE)
        save_weights(self.model, self.run_dir / LAST_WEIGHTS_FILE)
        self.metrics.save(self.run_dir)
        return improved, record


class WorkerCheckpoint(keras.callbacks.Callback):
    """A non-chief worker's part in the chief's end-of-epoch checkpoint: every worker must
    take part in a save (it reads variables aggregated across workers), so the others save
    to a scratch directory and delete it, as TensorFlow's multi-worker guide does."""

    def __init__(self, resume: ResumePoint, scratch: Path):
        super().__init__()
        self.resume, self.scratch = resume, scratch

    def on_epoch_end(self, epoch, logs=None):
        folder = self.scratch / RESUME_DIR
        self.resume.save(epoch, folder)
        shutil.rmtree(folder, ignore_errors=True)


class SharedValidation(keras.callbacks.Callback):
    """Puts the chief's validation BLEU and chrF into every worker's logs, so that early
    stopping takes the same decision on every worker."""

    def __init__(self, sync: ChiefBroadcast):
        super().__init__()
        self.sync = sync

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["val_bleu"], logs["val_chrf"] = self.sync.floats(
                [float(logs.get("val_bleu", 0.0)), float(logs.get("val_chrf", 0.0))])


def save_weights(model: keras.Model, path: Path) -> None:
    """Model weights only (no optimizer state), written to a temporary name then renamed,
    with their SHA-256 in the run's checksums.json (`nmt.rundir.checked_write`).

    Raises:
        StorageError: not enough free space, or a full, read-only or forbidden disk.
    """
    # A compiled model's save_weights also stores Adam's moments (3x the size), so copy
    # the weights into an uncompiled twin and save that.
    twin = weights_twin(model)
    twin.set_weights(model.get_weights())
    # HDF5 out of space has crashed the process (exit 139): check the space first.
    check_free_space(path.parent, variables_bytes(twin.weights), path.name)
    with storage_errors(path), checked_write(path.parent, path.name,
                                             suffix=".weights.h5") as temporary:
        twin.save_weights(temporary)


def variables_bytes(variables: list) -> int:
    """Bytes of the values of `variables` (about what a checkpoint of them takes)."""
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)


_TWINS: dict[int, keras.Model] = {}


def weights_twin(model: keras.Model) -> keras.Model:
    """An uncompiled float32 model of `model`'s config, built once per training run."""
    if id(model) not in _TWINS:
        twin = make_model(model.config)
        twin.build()
        _TWINS.clear()  # one training run at a time
        _TWINS[id(model)] = twin
    return _TWINS[id(model)]


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s"
