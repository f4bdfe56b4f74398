"""Training a translator: `train` starts the training loop, a script of named steps.

    open_run         create or reopen the run directory: its config and data (chief)
    make_batches     bucketed training and validation batches (`nmt.training_data`)
    build_trainee    model and optimizer under the strategy and dtype policy, its resume
                     checkpoint and weight average
    restore          a resumed run's weights, optimizer, epoch and metrics record
    make_budget      the wall-time budget, minus what earlier parts of the run used
    make_callbacks   schedule, progress bar, validation and checkpoints (`nmt.callbacks`)
    fit              Keras `fit` over the epochs left
    finish           metrics.json records why training stopped (`nmt.metrics_record`)

This module also holds the optimizer and its learning-rate schedules. `train` writes a run
directory (its layout: `nmt.rundir`): everything `translate.py` needs and everything a
resumed run needs.

With a `tf.distribute` strategy (`nmt.distribute`, `train.py --distribute`) only the chief
reads and writes the run directory; the other workers get the run's config, tokenizers and
resumed state from the chief at start-up and write nothing there.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from nmt.averaging import WeightAverage
from nmt.callbacks import (
    ProgressBar,
    ResumePoint,
    RunKeeper,
    SharedValidation,
    TimeBudget,
    Validation,
    WorkerCheckpoint,
    weights_twin,
)
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
from nmt.errors import ConfigError, DataError
from nmt.locking import LOCK_FILE, folder_lock
from nmt.metrics_record import RunMetrics
from nmt.model import TranslationModel, make_model
from nmt.pipeline import make_dataset
from nmt.rundir import (
    CONFIG_FILE,
    LOGS_DIR,
    RESUME_DIR,
    SOURCE_TOKENIZER_FILE,
    TARGET_TOKENIZER_FILE,
    read_metrics,
    remove_leftovers,
)
from nmt.summaries import AttentionSummaries
from nmt.training_data import (
    CORPUS_LOCATION,
    Batches,
    PreparedData,
    corpus_fingerprint,
    make_batches,
    prepare_data,
    with_vocab_sizes,
)
from nmt.translator import Translator

logger = logging.getLogger(__name__)


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


# ---------------------------------------------------------------------------- train
def train(config: Config, run_dir: str | Path, progress: bool = True,
          strategy: tf.distribute.Strategy | None = None) -> dict:
    """Train (or resume) the run in `run_dir`; returns the final metrics dict.

    `strategy`: a tf.distribute strategy from `nmt.distribute.make_strategy` (None: one
    device). Only the chief reads and writes `run_dir`, holding its lock (`nmt.locking`:
    a second training on it raises BusyError); other workers return {}.
    """
    _check_strategy_options(config, strategy)
    if is_chief(strategy):
        with folder_lock(run_dir, "run directory", "wait until that training ends, or give "
                         "another --run-dir"):
            return _train(config, Path(run_dir), progress, strategy, None)
    scratch = Path(tempfile.mkdtemp(prefix="nmt-worker-"))
    try:
        return _train(config, Path(run_dir), progress, strategy, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _train(config: Config, run_dir: Path, progress: bool,
           strategy: tf.distribute.Strategy | None, scratch: Path | None) -> dict:
    """The training script: one named step per line (`scratch`: a worker's folder)."""
    chief, sync = scratch is None, ChiefBroadcast(strategy)
    config, data = open_run(config, run_dir) if chief else (config, None)
    if sync.active:
        config, data = _setup_from_chief(sync, config, data, run_dir if chief else scratch)
    run = Run(config, run_dir if chief else scratch, chief, strategy, sync, progress)
    batches = make_batches(config, data)
    trainee = build_trainee(run, batches.steps)
    metrics = restore(trainee.resume, run_dir) if chief else RunMetrics()
    # Every worker continues from the chief's (restored or freshly initialised) state.
    sync.variables([*trainee.model.weights, *trainee.model.optimizer.variables,
                    trainee.resume.epoch])
    initial_epoch = int(trainee.resume.epoch.numpy())
    budget = make_budget(run, metrics)
    if chief:
        metrics.describe(**run_facts(data, batches, trainee.model))
    callbacks = make_callbacks(run, data, batches, trainee, metrics, budget)
    fit(run, trainee.model, batches, initial_epoch, callbacks, budget)
    return finish(run, metrics, budget)


@dataclass
class Run:
    """Where and how this process trains, fixed once the run's config is final."""

    config: Config
    folder: Path  # the run directory (chief) or this worker's scratch folder
    chief: bool
    strategy: tf.distribute.Strategy | None
    sync: ChiefBroadcast
    progress: bool


@dataclass
class Trainee:
    """The model being trained and what travels with it."""

    model: TranslationModel  # compiled, with its optimizer
    eval_model: keras.Model  # decodes validation: the model, or a float32 twin of it
    average: WeightAverage | None
    resume: ResumePoint


def _check_strategy_options(config: Config, strategy: tf.distribute.Strategy | None) -> None:
    if config.train.subword_sampling and strategy is not None:
        raise ConfigError("--subword-sampling does not work with --distribute yet: each worker "
                          "would cut different batches; train without one of the two")
    if config.train.ema_decay and strategy is not None:
        raise ConfigError("--ema-decay does not work with --distribute yet: the average lives "
                          "outside the strategy's replicas; train without one of the two")


def is_fresh(run_dir: Path) -> bool:
    """Whether `run_dir` holds nothing yet but the lock file `train` has just taken."""
    return not run_dir.exists() or all(path.name == LOCK_FILE for path in run_dir.iterdir())


def open_run(config: Config, run_dir: Path) -> tuple[Config, PreparedData]:
    """The chief's first step: create or reopen `run_dir` and prepare the data.

    Returns the run's config (a resumed run keeps its saved one, see `_resumed_config`)
    with the tokenizers' vocabulary sizes, validated once and saved as config.json. What a
    killed earlier process left half written is deleted first (`nmt.rundir.remove_leftovers`)."""
    fresh = is_fresh(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for leftover in remove_leftovers(run_dir):
        logger.info("removed %s, left by an interrupted write", leftover)
    saved = run_dir / CONFIG_FILE
    if saved.exists():
        config = _resumed_config(Config.load(saved), config)
    seed_everything(config.train.seed)
    try:
        data = prepare_data(config, run_dir)
    except BaseException:
        if fresh:  # bad input leaves no half-made run directory behind
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    config = with_vocab_sizes(config, data).validate()
    config.save(saved)
    return config, data


def build_trainee(run: Run, steps: int) -> Trainee:
    """The compiled model under the run's strategy and dtype policy, its validation twin,
    weight average and resume checkpoint."""
    config, strategy = run.config, run.strategy
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
        model = make_model(config.model)
        model.build()
        model.label_smoothing = config.train.label_smoothing
        optimizer = make_optimizer(config, steps, summed_gradients=strategy is not None,
                                   loss_scale=policy == "mixed_float16")
        optimizer.build(model.trainable_variables)
        model.compile(optimizer=optimizer, jit_compile=jit_compile)
    # Validation decodes with a float32 copy of the weights made outside the strategy.
    eval_model = weights_twin(model) if run.chief and (policy or strategy is not None) else model
    average = (WeightAverage(model, config.train.ema_decay) if config.train.ema_decay
               else None)
    resume = ResumePoint.create(model, average, run.folder / RESUME_DIR if run.chief else None)
    return Trainee(model, eval_model, average, resume)


def restore(resume: ResumePoint, run_dir: Path) -> RunMetrics:
    """The chief's metrics record: a fresh one, or, when `run_dir` has a resume checkpoint,
    the saved one, after restoring model, optimizer and epoch from the checkpoint."""
    latest = resume.manager.latest_checkpoint
    if not latest:
        return RunMetrics()
    metrics = RunMetrics.from_json(read_metrics(run_dir))
    resume.checkpoint.restore(latest).assert_existing_objects_matched()
    epoch = int(resume.epoch.numpy())
    logger.info("resuming %s after epoch %d", run_dir, epoch)
    metrics.trim_to(epoch)
    return metrics


def make_budget(run: Run, metrics: RunMetrics) -> TimeBudget:
    """The wall-time budget, counting what earlier parts of a resumed run used; every
    worker takes the chief's figures."""
    (used_seconds,) = run.sync.floats([metrics.wall_time or 0.0])
    agree = (lambda seconds: run.sync.floats([seconds])[0]) if run.sync.active else None
    return TimeBudget(run.config.train.time_budget, used_seconds,
                      agree=agree if run.config.train.time_budget else None)


def run_facts(data: PreparedData, batches: Batches, model: keras.Model) -> dict:
    """The facts of a run's data and model that metrics.json states."""
    return {"padding_fraction": batches.padding, "train_pairs": len(data.train),
            "dropped_long_pairs": data.train.dropped,
            "dropped_long_valid_pairs": data.valid.dropped,
            "dropped_empty_pairs": data.empty_pairs_dropped,
            "batches_per_epoch": batches.steps, "parameters": int(model.count_params())}


def make_callbacks(run: Run, data: PreparedData | None, batches: Batches, trainee: Trainee,
                   metrics: RunMetrics, budget: TimeBudget) -> list[keras.callbacks.Callback]:
    """Budget, schedule, progress bar, weight average, the chief's RunKeeper (a worker's
    checkpoint part), shared validation, early stopping and TensorBoard (Keras's scalars,
    then `nmt.summaries`' heatmaps, translations and hyperparameters), in this order."""
    t = run.config.train
    callbacks = [budget]
    if t.lr_schedule == "cosine":
        callbacks.append(CosineOverBudget(t.learning_rate, t.warmup_steps,
                                          t.epochs * batches.steps, budget))
    callbacks.append(ProgressBar(t.epochs, batches.steps, enabled=run.progress and run.chief))
    if trainee.average:
        callbacks.append(trainee.average)
    if run.chief:
        keeper = RunKeeper(run.folder, _validation(run, data, batches, trainee),
                           trainee.resume, metrics, budget, average=trainee.average)
        callbacks.append(keeper)
    else:
        callbacks.append(WorkerCheckpoint(trainee.resume, run.folder))
    if run.sync.active:
        callbacks.append(SharedValidation(run.sync))
    callbacks.append(keras.callbacks.EarlyStopping(monitor="val_bleu", mode="max",
                                                   patience=t.patience))
    if run.chief:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run.folder / LOGS_DIR),
                                                     write_graph=False))
        callbacks.append(AttentionSummaries(run.folder / LOGS_DIR, keeper.validation,
                                            run.config, run.folder.name))
    return callbacks


def _validation(run: Run, data: PreparedData, batches: Batches, trainee: Trainee) -> Validation:
    # One plain graph for every batch shape: XLA would compile each shape anew in every run
    # (and the model may live under a distribution strategy).
    translator = Translator(run.config, trainee.eval_model, data.source_tokenizer,
                            data.target_tokenizer, name=run.folder.name, jit_compile=False)
    loss_sets = ({name: make_dataset(corpus, batches.buckets, shuffle=False)
                  for name, corpus in data.valid_per_corpus.items()}
                 if run.strategy is None else {})
    return Validation(translator, data.valid_sets, run.config.train.valid_beam, loss_sets)


def fit(run: Run, model: keras.Model, batches: Batches, initial_epoch: int,
        callbacks: list[keras.callbacks.Callback], budget: TimeBudget) -> None:
    """Keras `fit` from `initial_epoch` to the configured epochs, unless the time budget was
    spent before; every worker logs its weights' fingerprint afterwards."""
    strategy, epochs = run.strategy, run.config.train.epochs
    # One endless stream cut into epochs of `steps` batches, starting at the resumed epoch (a
    # fresh iterator per epoch over a finite dataset made every second or third epoch about
    # 40 % slower here).
    stream = batches.train_from(initial_epoch)
    if strategy is None:
        inputs = {"x": stream, "steps_per_epoch": batches.steps,
                  "validation_data": batches.valid,
                  "shuffle": False}  # the stream is shuffled already
    else:  # each replica gets its rows of every global batch; epochs of `steps` steps
        inputs = {"x": distribute_batches(strategy, stream),
                  "steps_per_epoch": batches.steps,
                  "shuffle": False,  # the stream is shuffled already
                  "validation_data": distribute_batches(strategy, batches.valid),
                  "validation_steps": int(batches.valid.cardinality())}
    if initial_epoch < epochs and not _budget_spent(budget):
        model.fit(**inputs, epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks,
                  verbose=0)
    if strategy is not None:
        logger.info("weights fingerprint %s (%s)", weights_fingerprint(model),
                    "chief" if run.chief else "worker")


def finish(run: Run, metrics: RunMetrics, budget: TimeBudget) -> dict:
    """The chief records why training stopped and writes metrics.json; returns its dict
    ({} on the other workers)."""
    if not run.chief:
        return {}
    metrics.stopped_by = ("time_budget" if budget.exhausted or _budget_spent(budget)
                          else "early_stopping" if len(metrics.epochs or []) <
                          run.config.train.epochs else "epochs")
    metrics.save(run.folder)
    return metrics.to_json()


def _setup_from_chief(sync: ChiefBroadcast, config: Config, data: PreparedData | None,
                      folder: Path) -> tuple[Config, PreparedData]:
    """Every worker gets the chief's config and tokenizers (the chief has them in the run
    directory, the others write them to their scratch `folder`) and uses that config as it
    is; only the corpus is read from each worker's own location (`CORPUS_LOCATION` of its
    `config`). Raises DataError on every worker if their tokenised corpora differ."""
    names = [CONFIG_FILE, SOURCE_TOKENIZER_FILE, TARGET_TOKENIZER_FILE]
    blobs = [(folder / name).read_bytes() for name in names] if data is not None else None
    blobs = sync.blobs(blobs, len(names))
    if data is None:
        for name, blob in zip(names, blobs, strict=True):
            (folder / name).write_bytes(blob)
        chief_config = Config.load(folder / CONFIG_FILE)
        seed_everything(chief_config.train.seed)
        own_files = dataclasses.replace(chief_config.data, **{
            name: getattr(config.data, name) for name in CORPUS_LOCATION})
        config, data = chief_config, prepare_data(chief_config, folder, text_from=own_files)
    mine = corpus_fingerprint(data)
    (chiefs,) = sync.blobs([mine], 1)
    if sync.any(mine != chiefs):
        raise DataError("the workers' training corpora differ: every worker must read the same "
                        "corpus files (see --data-dir) as the chief")
    return config, data


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and Keras like `keras.utils.set_random_seed`, minus its
    `tf.random.set_seed`: that clears TensorFlow's kernel cache, and with it the
    sentencepiece resources of tokenizers already loaded in this process.

    Private Keras state, on purpose: Keras has no public call that sets its global seed
    without `tf.random.set_seed`, and without it a resumed run in a process that trained
    before draws other batches (tests/test_training.py, same seed gives the same epoch)."""
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator

    global_state.set_global_attribute("global_random_seed", seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)


def _budget_spent(budget: TimeBudget) -> bool:
    return budget.limit is not None and budget.used >= budget.limit


def _resumed_config(saved: Config, requested: Config) -> Config:
    """A resumed run keeps its saved model and data; epochs, budget and patience may change."""
    if saved.model != requested.model and _differs_beyond_vocab(saved, requested):
        logger.warning("run directory exists: resuming with its saved model settings, "
                       "ignoring the model options given now")
    changes = {name: getattr(requested.train, name)
               for name in ("epochs", "time_budget", "patience")}
    return dataclasses.replace(saved, train=dataclasses.replace(saved.train, **changes))


def _differs_beyond_vocab(saved: Config, requested: Config) -> bool:
    a, b = saved.model.__dict__.copy(), requested.model.__dict__.copy()
    for key in ("src_vocab_size", "tgt_vocab_size"):
        a.pop(key)
        b.pop(key)
    return a != b

