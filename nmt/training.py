"""Training a translator: data, tokenizers, model, schedule, callbacks, run directory.

A run directory holds everything `translate.py` needs and everything a resumed run needs:

    config.json          the `Config` (the model is rebuilt from it alone)
    source.model         sentencepiece models of the two languages
    target.model
    best.weights.h5      weights with the best validation BLEU (no optimizer state)
    last.weights.h5      weights after the last finished epoch
    metrics.json         per-epoch figures and wall time
    resume/              tf.train.CheckpointManager: model + optimizer + epoch, for --resume
    logs/                TensorBoard

With a `tf.distribute` strategy (`nmt.distribute`, `train.py --distribute`) only the chief
reads and writes the run directory; the other workers get the run's config, tokenizers and
resumed state from the chief at start-up and write nothing there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from nmt import data as corpus_data
from nmt.averaging import WeightAverage
from nmt.config import Config
from nmt.distribute import (
    ChiefBroadcast,
    ReplicaSummedAdam,
    distribute_batches,
    dtype_policy,
    is_chief,
    mixed_policy,
    replicas,
    strategy_scope,
    weights_fingerprint,
)
from nmt.errors import CheckpointError, ConfigError, DataError
from nmt.evaluation import corpus_scores
from nmt.files import atomic_write_text
from nmt.model import Seq2Seq
from nmt.pipeline import (
    Buckets,
    TokenizedCorpus,
    make_dataset,
    make_sampled_dataset,
    tokenize_corpus,
)
from nmt.tokenizer import SubwordTokenizer, train_sentencepiece
from nmt.translator import (
    BEST_WEIGHTS_FILE,
    CONFIG_FILE,
    LAST_WEIGHTS_FILE,
    METRICS_FILE,
    SOURCE_TOKENIZER_FILE,
    TARGET_TOKENIZER_FILE,
    Translator,
)

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ data
@dataclass
class PreparedData:
    """Tokenised training and validation data plus the raw validation text for BLEU."""

    source_tokenizer: SubwordTokenizer
    target_tokenizer: SubwordTokenizer
    train: TokenizedCorpus
    valid: TokenizedCorpus
    valid_sources: list[str]
    valid_references: list[str]
    empty_pairs_dropped: int
    train_sources: list[str] = field(default_factory=list)  # raw text, for subword sampling
    train_targets: list[str] = field(default_factory=list)
    # corpus name -> (sources, references) of its validation set; several with --corpus a+b
    valid_sets: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    # corpus name -> its tokenised validation set, for a loss per corpus (several corpora only)
    valid_per_corpus: dict[str, TokenizedCorpus] = field(default_factory=dict)


def load_text(config: Config) -> tuple[list[str], list[str], dict[str, tuple[list[str], list[str]]],
                                      int]:
    """Training sentences (the union of the corpora, or plain files) and each corpus's
    validation sentences, empty pairs out.

    Returns:
        (train sources, train targets, corpus name -> (valid sources, valid targets),
        number of empty pairs dropped). Plain validation files are named "valid".
    """
    d = config.data
    if d.valid_src is None and d.train_src:
        raise DataError("a plain-text training corpus needs --valid-src and --valid-tgt too")
    train_src, train_tgt, valid, empty = [], [], {}, 0
    if d.train_src:
        train_src, train_tgt = corpus_data.read_parallel(d.train_src, d.train_tgt)
        train_src, train_tgt = train_src[:d.train_limit], train_tgt[:d.train_limit]
    else:
        for name in corpus_data.corpus_names(d.corpus):
            folder = corpus_data.data_dir_for(d.data_dir, name, d.corpus)
            src, tgt = corpus_data.load_split(name, "train", d.src, d.tgt, d.cache_dir, folder)
            train_src += src[:d.train_limit]
            train_tgt += tgt[:d.train_limit]
            if d.valid_src is None:
                valid[name] = corpus_data.load_split(name, "valid", d.src, d.tgt, d.cache_dir,
                                                     folder)
    if d.valid_src:
        valid = {"valid": corpus_data.read_parallel(d.valid_src, d.valid_tgt)}
    train_src, train_tgt, empty = corpus_data.drop_empty_pairs(train_src, train_tgt)
    if not train_src:
        raise DataError("the training corpus has no non-empty sentence pairs")
    for name, (src, tgt) in list(valid.items()):
        src, tgt, dropped = corpus_data.drop_empty_pairs(src[:d.valid_limit], tgt[:d.valid_limit])
        if not src:
            raise DataError(f"the validation corpus ({name}) has no non-empty sentence pairs")
        valid[name], empty = (src, tgt), empty + dropped
    return train_src, train_tgt, valid, empty


def prepare_data(config: Config, run_dir: Path) -> PreparedData:
    """Load text, train (or reload) the tokenizers in `run_dir`, tokenise everything once."""
    train_src, train_tgt, valid_text, empty = load_text(config)
    tokenizers = []
    for lines, name, size in ((train_src, SOURCE_TOKENIZER_FILE, config.data.src_vocab_size),
                              (train_tgt, TARGET_TOKENIZER_FILE, config.data.tgt_vocab_size)):
        path = run_dir / name
        if not path.exists():
            train_sentencepiece(lines, path, size, seed=config.train.seed)
        tokenizers.append(SubwordTokenizer.load(path))
    source_tokenizer, target_tokenizer = tokenizers
    config.model.src_vocab_size = source_tokenizer.vocab_size
    config.model.tgt_vocab_size = target_tokenizer.vocab_size
    max_length = config.data.max_length
    train = tokenize_corpus(train_src, train_tgt, source_tokenizer, target_tokenizer, max_length)
    valid_src = [line for src, _ in valid_text.values() for line in src]
    valid_tgt = [line for _, tgt in valid_text.values() for line in tgt]
    valid = tokenize_corpus(valid_src, valid_tgt, source_tokenizer, target_tokenizer, max_length)
    if len(train) == 0:
        raise DataError(f"every training pair is longer than data.max_length={max_length} "
                        "subword tokens; raise --max-length")
    per_corpus = {}
    if len(valid_text) > 1:
        per_corpus = {name: tokenize_corpus(src, tgt, source_tokenizer, target_tokenizer,
                                            max_length) for name, (src, tgt) in valid_text.items()}
    return PreparedData(source_tokenizer, target_tokenizer, train, valid, valid_src, valid_tgt,
                        empty, train_src, train_tgt, valid_text, per_corpus)


# -------------------------------------------------------------------------- schedule
@keras.saving.register_keras_serializable(package="nmt")
class WarmupInverseSqrt(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then decay with 1/sqrt(step) (Vaswani et al. 2017, eq. 3)."""

    def __init__(self, learning_rate: float, warmup_steps: int):
        self.learning_rate, self.warmup_steps = learning_rate, warmup_steps

    def __call__(self, step):
        step = tf.cast(step, tf.float32) + 1.0
        warmup = tf.cast(max(self.warmup_steps, 1), tf.float32)
        return self.learning_rate * tf.minimum(step / warmup, tf.sqrt(warmup / step))

    def get_config(self):
        return {"learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps}


def make_optimizer(config: Config, steps_per_epoch: int, summed_gradients: bool = False,
                   loss_scale: bool = False) -> keras.optimizers.Optimizer:
    """Adam with global gradient-norm clipping and the configured schedule.

    `cosine` keeps a plain learning-rate variable that `CosineOverBudget` sets before
    every step, because its decay follows the time budget as well as the step count.
    `summed_gradients`: under a tf.distribute strategy the train step sums the replicas'
    gradients itself (`nmt.distribute.ReplicaSummedAdam`). `loss_scale` (float16 mixed
    precision) wraps the optimizer in Keras's dynamic LossScaleOptimizer.
    """
    t = config.train
    if t.lr_schedule == "inverse_sqrt":
        rate = WarmupInverseSqrt(t.learning_rate, t.warmup_steps)
    else:
        rate = t.learning_rate
    adam = ReplicaSummedAdam if summed_gradients else keras.optimizers.Adam
    optimizer = adam(rate, global_clipnorm=t.clip_norm)
    if loss_scale:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def cosine_rate(peak: float, warmup_steps: int, step: int, progress: float,
                floor: float = 0.02) -> float:
    """Linear warm-up over `warmup_steps`, then cosine decay from `peak` at `progress` 0 to
    `floor * peak` at `progress` 1 (the share of the run done, clipped to 0..1)."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = min(max(progress, 0.0), 1.0)
    return peak * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


class CosineOverBudget(keras.callbacks.Callback):
    """Sets the learning rate before each step from the run's progress: the larger of the
    share of steps done (epochs x batches per epoch) and the share of the time budget used.
    A time-limited run therefore anneals fully by the end of its budget on any machine."""

    def __init__(self, peak: float, warmup_steps: int, total_steps: int,
                 budget: TimeBudget):
        super().__init__()
        self.peak, self.warmup_steps = peak, warmup_steps
        self.total_steps, self.budget = max(total_steps, 1), budget

    def progress(self, step: int) -> float:
        done = step / self.total_steps
        if self.budget.limit:
            done = max(done, self.budget.clock() / self.budget.limit)
        return done

    def on_train_batch_begin(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        rate = cosine_rate(self.peak, self.warmup_steps, step, self.progress(step))
        self.model.optimizer.learning_rate.assign(rate)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate.numpy())


# ------------------------------------------------------------------------- callbacks
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
            tokens, loss = _scalar(logs["tokens"]), _scalar(logs["loss"])
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


class RunKeeper(keras.callbacks.Callback):
    """After each epoch: validation BLEU/chrF, best and last weights, metrics.json, resume
    checkpoint. Puts `val_bleu`/`val_chrf` into the logs for EarlyStopping and TensorBoard."""

    def __init__(self, run_dir: Path, translator: Translator,
                 valid_sets: dict[str, tuple[list[str], list[str]]],
                 manager: tf.train.CheckpointManager, epoch_variable: tf.Variable, metrics: dict,
                 budget: TimeBudget, beam: int = 1, average: WeightAverage | None = None,
                 loss_sets: dict[str, tf.data.Dataset] | None = None):
        super().__init__()
        self.average = average
        self.run_dir, self.translator = run_dir, translator
        self.valid_sets, self.loss_sets = valid_sets, loss_sets or {}
        self.manager, self.epoch_variable = manager, epoch_variable
        self.metrics, self.budget, self.beam = metrics, budget, beam

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        train_seconds = time.perf_counter() - self.epoch_start
        # Validation and the saved weights use the averaged weights; the resume checkpoint
        # below keeps the raw ones that training continues from.
        with self.average.swapped() if self.average else contextlib.nullcontext():
            improved, record = self._validate_and_save(epoch, logs, train_seconds)
        self.epoch_variable.assign(epoch + 1)
        self.manager.save(checkpoint_number=epoch + 1)
        per_corpus = "".join(f"  {name} BLEU {record[f'val_{name}_bleu']:.2f}"
                             for name in self.valid_sets if len(self.valid_sets) > 1)
        logger.info("epoch %d  loss %.3f  ppl %.2f  val_ppl %.2f  BLEU %.2f  chrF %.2f%s  "
                    "%.0f tok/s  %s%s", epoch + 1, record["loss"], record["ppl"],
                    record.get("val_ppl", float("nan")), record["val_bleu"], record["val_chrf"],
                    per_corpus, record["tokens_per_second"], _clock(record["wall_time"]),
                    "  (best)" if improved else "")

    def _score_corpora(self, logs: dict) -> dict:
        """BLEU/chrF (and with several corpora the loss) of each validation corpus into
        `logs`; `val_bleu`/`val_chrf` are the means over the corpora (model selection)."""
        scores = {}
        for name, (sources, references) in self.valid_sets.items():
            hypotheses = [t.text for t in self.translator.translate(sources, beam=self.beam,
                                                                    batch_size=128)]
            scores = corpus_scores(hypotheses, references)
            if len(self.valid_sets) > 1:
                logs[f"val_{name}_bleu"], logs[f"val_{name}_chrf"] = (scores["bleu"],
                                                                      scores["chrf"])
            logs.setdefault("_bleus", []).append(scores["bleu"])
            logs.setdefault("_chrfs", []).append(scores["chrf"])
        logs["val_bleu"] = float(np.mean(logs.pop("_bleus")))
        logs["val_chrf"] = float(np.mean(logs.pop("_chrfs")))
        for name, dataset in self.loss_sets.items():
            result = self.model.evaluate(dataset, verbose=0, return_dict=True)
            logs[f"val_{name}_loss"] = _scalar(result["loss"])
            logs[f"val_{name}_ppl"] = math.exp(min(_scalar(result["nll"]), 50.0))
        return scores

    def _validate_and_save(self, epoch: int, logs: dict, train_seconds: float
                           ) -> tuple[bool, dict]:
        """Validation BLEU/chrF, best and last weights, metrics.json."""
        if self.translator.model is not self.model:  # a float32 twin outside the strategy
            self.translator.model.set_weights(self.model.get_weights())
        scores = self._score_corpora(logs)
        record = _epoch_record(epoch, logs, train_seconds, self.budget.elapsed())
        history = self.metrics.setdefault("epochs", [])
        history.append(record)
        best = self.metrics.get("best")
        improved = best is None or record["val_bleu"] > best["val_bleu"]
        if improved:
            self.metrics["best"] = record
            _save_weights_atomically(self.model, self.run_dir / BEST_WEIGHTS_FILE)
        _save_weights_atomically(self.model, self.run_dir / LAST_WEIGHTS_FILE)
        self.metrics["bleu_signature"] = scores["bleu_signature"]
        self.metrics["chrf_signature"] = scores["chrf_signature"]
        self.metrics["wall_time"] = record["wall_time"]
        atomic_write_text(self.run_dir / METRICS_FILE, json.dumps(self.metrics, indent=2) + "\n")
        return improved, record


class WorkerCheckpoint(keras.callbacks.Callback):
    """A non-chief worker's part in the chief's end-of-epoch checkpoint: every worker must
    take part in a save (it reads variables aggregated across workers), so the others save
    to a scratch directory and delete it, as TensorFlow's multi-worker guide does."""

    def __init__(self, checkpoint: tf.train.Checkpoint, epoch_variable: tf.Variable,
                 scratch: Path):
        super().__init__()
        self.checkpoint, self.epoch_variable, self.scratch = checkpoint, epoch_variable, scratch

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_variable.assign(epoch + 1)
        folder = self.scratch / "resume"
        tf.train.CheckpointManager(self.checkpoint, folder, max_to_keep=1).save(
            checkpoint_number=epoch + 1)
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


def _scalar(value) -> float:
    """A log value as a float (a step's logs have shape [1] under a tf.distribute strategy)."""
    return float(np.reshape(value, -1)[0])


def _epoch_record(epoch: int, logs: dict, train_seconds: float, wall_time: float) -> dict:
    record = {"epoch": epoch + 1}
    for key, value in logs.items():
        record[key] = _scalar(value)
    record["ppl"] = math.exp(min(record["nll"], 50.0))
    if "val_nll" in record:
        record["val_ppl"] = math.exp(min(record["val_nll"], 50.0))
    record["train_seconds"] = round(train_seconds, 2)
    record["tokens_per_second"] = record["tokens"] / max(train_seconds, 1e-9)
    record["wall_time"] = round(wall_time, 2)
    return record


def _save_weights_atomically(model: keras.Model, path: Path) -> None:
    """Model weights only (no optimizer state), written to a temporary name then renamed."""
    # A compiled model's save_weights also stores Adam's moments (3x the size), so copy
    # the weights into an uncompiled twin and save that.
    twin = _weights_twin(model)
    twin.set_weights(model.get_weights())
    tmp = path.with_name(path.name.replace(".weights.h5", ".tmp.weights.h5"))
    twin.save_weights(tmp, overwrite=True)
    os.replace(tmp, path)


_TWINS: dict[int, keras.Model] = {}


def _weights_twin(model: keras.Model) -> keras.Model:
    if id(model) not in _TWINS:
        twin = Seq2Seq(model.config)
        twin.build()
        _TWINS.clear()  # one training run at a time
        _TWINS[id(model)] = twin
    return _TWINS[id(model)]


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s"


# ---------------------------------------------------------------------------- train
def train(config: Config, run_dir: str | Path, progress: bool = True,
          strategy: tf.distribute.Strategy | None = None) -> dict:
    """Train (or resume) the run in `run_dir`; returns the final metrics dict.

    `strategy`: a tf.distribute strategy from `nmt.distribute.make_strategy` (None: one
    device). Only the chief reads and writes `run_dir`; other workers return {}.
    """
    chief = is_chief(strategy)
    scratch = None if chief else Path(tempfile.mkdtemp(prefix="nmt-worker-"))
    try:
        return _train(config, Path(run_dir), progress, strategy, scratch)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _train(config: Config, run_dir: Path, progress: bool,
           strategy: tf.distribute.Strategy | None, scratch: Path | None) -> dict:
    if config.train.subword_sampling and strategy is not None:
        raise ConfigError("--subword-sampling does not work with --distribute yet: each worker "
                          "would cut different batches; train without one of the two")
    if config.train.ema_decay and strategy is not None:
        raise ConfigError("--ema-decay does not work with --distribute yet: the average lives "
                          "outside the strategy's replicas; train without one of the two")
    chief, sync = scratch is None, ChiefBroadcast(strategy)
    if chief:
        run_dir.mkdir(parents=True, exist_ok=True)
        saved = run_dir / CONFIG_FILE
        if saved.exists():
            config = _resumed_config(Config.load(saved), config)
        seed_everything(config.train.seed)
        data = prepare_data(config, run_dir)
        config.validate().save(saved)
    if sync.active:
        config, data = _setup_from_chief(sync, config, data if chief else None,
                                         run_dir if chief else scratch)

    buckets = Buckets.from_budget(config.train.bucket_boundaries, config.data.max_length,
                                  config.train.batch_tokens)
    # Batches in a pass over the best segmentations: the epoch length, sampled cuts or not.
    steps = buckets.batches_per_epoch(data.train.lengths, drop_remainder=True)
    if steps == 0:
        raise DataError(f"the training set ({len(data.train)} pairs) gives no full batch of "
                        f"--batch-tokens {config.train.batch_tokens}; lower it")
    alpha = config.train.subword_sampling
    if alpha:
        train_set = make_sampled_dataset(data.train_sources, data.train_targets,
                                         data.source_tokenizer, data.target_tokenizer, buckets,
                                         alpha, config.data.max_length, config.train.seed)
        logger.info("subword sampling: every pass re-cuts the training pairs (alpha %g)", alpha)
    else:
        train_set = make_dataset(data.train, buckets, shuffle=True, seed=config.train.seed)
    valid_set = make_dataset(data.valid, buckets, shuffle=False)
    padding = buckets.padding_fraction(data.train.source.row_lengths().numpy(),
                                       data.train.target.row_lengths().numpy() - 1)
    logger.info("%d training pairs (%d too long dropped, %d empty dropped), %d validation "
                "pairs (%d too long for the validation loss; BLEU uses all); %d batches per "
                "epoch, padding %.1f%%", len(data.train), data.train.dropped,
                data.empty_pairs_dropped, len(data.valid), data.valid.dropped, steps,
                100 * padding)

    policy = mixed_policy(strategy) if config.train.mixed_precision else None
    if policy:
        logger.info("mixed precision: Keras policy %s (weights, softmax and loss in float32)",
                    policy)
    jit_compile = config.train.jit_compile
    if jit_compile and replicas(strategy) > 1:
        # Keras would hand XLA the whole step of all replicas, collectives included, which
        # TensorFlow's XLA bridge cannot compile (variables on several devices, collectives).
        logger.warning("--jit-compile is ignored with %d replicas: XLA cannot compile a "
                       "step that spans replicas", replicas(strategy))
        jit_compile = False
    with dtype_policy(policy), strategy_scope(strategy):
        model = Seq2Seq(config.model)
        model.build()
        model.label_smoothing = config.train.label_smoothing
        optimizer = make_optimizer(config, steps, summed_gradients=strategy is not None,
                                   loss_scale=policy == "mixed_float16")
        optimizer.build(model.trainable_variables)
        model.compile(optimizer=optimizer, jit_compile=jit_compile)
    # Validation decodes with a float32 copy of the weights made outside the strategy.
    eval_model = _weights_twin(model) if chief and (policy or strategy is not None) else model

    average = (WeightAverage(model, config.train.ema_decay) if config.train.ema_decay
               else None)
    epoch_variable = tf.Variable(0, dtype=tf.int64, trainable=False)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_variable,
                                     **({"average": average.checkpoint_items()} if average else {}))
    manager = (tf.train.CheckpointManager(checkpoint, run_dir / "resume", max_to_keep=1)
               if chief else None)
    metrics = _load_metrics(run_dir) if chief and manager.latest_checkpoint else {}
    if chief and manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        logger.info("resuming %s after epoch %d", run_dir, int(epoch_variable.numpy()))
        metrics["epochs"] = [e for e in metrics.get("epochs", [])
                             if e["epoch"] <= int(epoch_variable.numpy())]
        # A kill between writing metrics.json and the checkpoint leaves one epoch too many.
        if metrics.get("best", {}).get("epoch", 0) > int(epoch_variable.numpy()):
            metrics["best"] = max(metrics["epochs"], key=lambda e: e["val_bleu"], default=None)
    # Every worker continues from the chief's (restored or freshly initialised) state.
    sync.variables([*model.weights, *optimizer.variables, epoch_variable])
    initial_epoch = int(epoch_variable.numpy())
    (used_seconds,) = sync.floats([metrics.get("wall_time", 0.0)])
    if chief:
        metrics.update(padding_fraction=padding, train_pairs=len(data.train),
                       dropped_long_pairs=data.train.dropped,
                       dropped_long_valid_pairs=data.valid.dropped,
                       dropped_empty_pairs=data.empty_pairs_dropped,
                       batches_per_epoch=steps, parameters=int(model.count_params()))

    agree = (lambda seconds: sync.floats([seconds])[0]) if sync.active else None
    budget = TimeBudget(config.train.time_budget, used_seconds,
                        agree=agree if config.train.time_budget else None)
    callbacks = [budget]
    if config.train.lr_schedule == "cosine":
        callbacks.append(CosineOverBudget(config.train.learning_rate, config.train.warmup_steps,
                                          config.train.epochs * steps, budget))
    callbacks.append(ProgressBar(config.train.epochs, steps, enabled=progress and chief))
    if average:
        callbacks.append(average)
    if chief:
        translator = Translator(config, eval_model, data.source_tokenizer,
                                data.target_tokenizer, name=run_dir.name)
        loss_sets = ({name: make_dataset(corpus, buckets, shuffle=False)
                      for name, corpus in data.valid_per_corpus.items()}
                     if strategy is None else {})
        callbacks.append(RunKeeper(run_dir, translator, data.valid_sets, manager,
                                   epoch_variable, metrics, budget,
                                   beam=config.train.valid_beam, average=average,
                                   loss_sets=loss_sets))
    else:
        callbacks.append(WorkerCheckpoint(checkpoint, epoch_variable, scratch))
    if sync.active:
        callbacks.append(SharedValidation(sync))
    callbacks.append(keras.callbacks.EarlyStopping(monitor="val_bleu", mode="max",
                                                   patience=config.train.patience))
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs"),
                                                     write_graph=False))
    if strategy is None:
        # One endless stream cut into epochs of `steps` batches: a fresh iterator per epoch
        # over the finite dataset made every second or third epoch about 40 % slower here.
        inputs = {"x": train_set if alpha else train_set.repeat(), "steps_per_epoch": steps,
                  "validation_data": valid_set,
                  "shuffle": False}  # make_dataset shuffled already
    else:  # each replica gets its rows of every global batch; epochs of `steps` steps
        inputs = {"x": distribute_batches(strategy, train_set), "steps_per_epoch": steps,
                  "shuffle": False,  # make_dataset shuffled already
                  "validation_data": distribute_batches(strategy, valid_set),
                  "validation_steps": int(valid_set.cardinality())}
    if initial_epoch < config.train.epochs and not _budget_spent(budget):
        model.fit(**inputs, epochs=config.train.epochs, initial_epoch=initial_epoch,
                  callbacks=callbacks, verbose=0)
    if strategy is not None:
        logger.info("weights fingerprint %s (%s)", weights_fingerprint(model),
                    "chief" if chief else "worker")
    if not chief:
        return {}
    metrics["stopped_by"] = ("time_budget" if budget.exhausted or _budget_spent(budget)
                             else "early_stopping" if len(metrics.get("epochs", [])) <
                             config.train.epochs else "epochs")
    atomic_write_text(run_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    return metrics


def _setup_from_chief(sync: ChiefBroadcast, config: Config, data: PreparedData | None,
                      folder: Path) -> tuple[Config, PreparedData]:
    """Every worker gets the chief's config and tokenizers (the chief has them in the run
    directory, the others write them to their scratch `folder`); each keeps its own corpus
    location. Raises DataError on every worker if their tokenised corpora differ."""
    names = [CONFIG_FILE, SOURCE_TOKENIZER_FILE, TARGET_TOKENIZER_FILE]
    blobs = [(folder / name).read_bytes() for name in names] if data is not None else None
    blobs = sync.blobs(blobs, len(names))
    if data is None:
        for name, blob in zip(names, blobs, strict=True):
            (folder / name).write_bytes(blob)
        chief_config = Config.load(folder / CONFIG_FILE)
        for name in ("data_dir", "cache_dir", "train_src", "train_tgt", "valid_src",
                     "valid_tgt"):
            setattr(chief_config.data, name, getattr(config.data, name))
        config = chief_config
        seed_everything(config.train.seed)
        data = prepare_data(config, folder)
    mine = _corpus_fingerprint(data)
    (chiefs,) = sync.blobs([mine], 1)
    if sync.any(mine != chiefs):
        raise DataError("the workers' training corpora differ: every worker must read the same "
                        "corpus files (see --data-dir) as the chief")
    return config, data


def _corpus_fingerprint(data: PreparedData) -> bytes:
    digest = hashlib.sha256()
    for corpus in (data.train, data.valid):
        for ragged in (corpus.source, corpus.target):
            digest.update(ragged.flat_values.numpy().tobytes())
            digest.update(ragged.row_splits.numpy().tobytes())
    return digest.digest()


def seed_everything(seed: int) -> None:
    """Seed Python and numpy: every Keras initializer and seed generator of the model draws
    its seed from Python's `random` when it is created.

    Not `keras.utils.set_random_seed`: its `tf.random.set_seed` clears TensorFlow's kernel
    cache, and with it the sentencepiece resources of tokenizers already loaded in this
    process. Training needs neither TensorFlow's global seed nor Keras's global seed
    generator (which that function also resets): every random op has its own seed (tf.data
    shuffle, the layers' seed generators); tests/test_model.py checks it."""
    random.seed(seed)
    np.random.seed(seed)


def _budget_spent(budget: TimeBudget) -> bool:
    return budget.limit is not None and budget.used >= budget.limit


def _resumed_config(saved: Config, requested: Config) -> Config:
    """A resumed run keeps its saved model and data; epochs, budget and patience may change."""
    for name in ("epochs", "time_budget", "patience"):
        setattr(saved.train, name, getattr(requested.train, name))
    if saved.model != requested.model and _differs_beyond_vocab(saved, requested):
        logger.warning("run directory exists: resuming with its saved model settings, "
                       "ignoring the model options given now")
    return saved


def _differs_beyond_vocab(saved: Config, requested: Config) -> bool:
    a, b = saved.model.__dict__.copy(), requested.model.__dict__.copy()
    for key in ("src_vocab_size", "tgt_vocab_size"):
        a.pop(key)
        b.pop(key)
    return a != b


def _load_metrics(run_dir: Path) -> dict:
    path = run_dir / METRICS_FILE
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON ({error}); delete it to resume "
                              "without the earlier epochs' figures") from error
