"""Training on several devices or machines with `tf.distribute`, and mixed precision.

`train.py --distribute` picks one of `STRATEGIES`:

    none          one device, no strategy (the default)
    mirrored      tf.distribute.MirroredStrategy: every local GPU (the CPU when there is none)
    multi-worker  tf.distribute.MultiWorkerMirroredStrategy over the machines that the standard
                  TF_CONFIG environment variable lists; one process per machine

Everything that makes several replicas train exactly like one is here:

* The global batch is the one a single device would train on (`train.batch_tokens`), split
  across replicas (`distribute_batches`): every worker builds the same bucketed, shuffled
  stream of global batches from the same seed and takes its replicas' rows of each. So every
  worker runs the same number of steps per epoch (collectives never wait for a worker that ran
  out of data), the replicas of a step see disjoint rows, and a run on N replicas sees the same
  data in the same order as a run on one. Rows are padded up to a multiple of the replica count
  with all-padding sentences, which carry no target tokens and so add nothing to the loss.
* The loss of a replica is its summed token loss divided by the token count of the whole
  global batch (`Seq2Seq.train_step` all-reduces the count with `global_sums`), so the
  replicas' gradients add up to the gradient of the global batch's token mean. The train step
  sums the gradients over the replicas itself (`sum_gradients`), before the optimizer clips
  them: Keras's TensorFlow optimizers clip each replica's share and all-reduce afterwards,
  which clips the wrong thing (`ReplicaSummedAdam`).
* The chief (task 0) is the only process that reads or writes the run directory. At start-up
  it broadcasts the run's config, its tokenizer models and, when resuming, the restored model,
  optimizer and epoch to the other workers over the same collective channel as the gradients
  (`ChiefBroadcast`), so the other workers need neither a shared file system nor a copy of the
  run directory; they need the corpus only. They write nothing but a scratch directory that
  they delete: the checkpoint of their part of each save (every worker must take part in a
  save, since saving reads variables aggregated across workers).
* Decisions taken from a clock or from validation BLEU (time budget, cosine schedule, early
  stopping) use the chief's figures on every worker, so all workers stop at the same step.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from nmt.errors import ConfigError
from nmt.precision import native_bfloat16
from nmt.tokenizer import PAD_ID

logger = logging.getLogger(__name__)

STRATEGIES = ("none", "mirrored", "multi-worker")
# A collective op that waits longer than this fails (a worker died or hangs). It must exceed
# the longest stretch a worker can wait for the chief: the chief's validation BLEU at the end
# of every epoch. TensorFlow's health check reports a dead peer sooner (about 30-40 s).
DEFAULT_COLLECTIVE_TIMEOUT = 600.0


class WorkerLost(Exception):
    """A collective op failed: another worker died, hung or restarted."""


# ------------------------------------------------------------------------- strategy
def make_strategy(name: str, collective_timeout: float | None = DEFAULT_COLLECTIVE_TIMEOUT
                  ) -> tf.distribute.Strategy | None:
    """The strategy for `train.py --distribute NAME`; None for "none".

    Call it first thing: MultiWorkerMirroredStrategy must be created before TensorFlow runs
    any op in the process.
    """
    if name not in STRATEGIES:
        raise ConfigError(f"--distribute: expected one of {list(STRATEGIES)}, received {name!r}")
    if name == "none":
        return None
    tf.get_logger().setLevel(logging.WARNING)  # one INFO line per collective otherwise
    if name == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
        logger.info("MirroredStrategy over %s", ", ".join(strategy.extended.worker_devices))
        return strategy
    tf_config = cluster_spec_from_environment()
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=collective_timeout)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except RuntimeError as error:  # TensorFlow already ran an op in this process
        raise ConfigError(f"--distribute multi-worker: {error}; create the strategy (call "
                          "nmt.distribute.make_strategy) before anything else uses "
                          "TensorFlow") from error
    task = tf_config["task"]
    logger.info("MultiWorkerMirroredStrategy: %s %d of a cluster of %d workers, %d replicas "
                "in sync%s", task["type"], task["index"], worker_count(strategy),
                strategy.num_replicas_in_sync, " (chief)" if is_chief(strategy) else "")
    return strategy


def cluster_spec_from_environment() -> dict:
    """TF_CONFIG, checked: a cluster of "chief"/"worker" addresses and this process's task."""
    text = os.environ.get("TF_CONFIG")
    example = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}')
    if not text:
        raise ConfigError("--distribute multi-worker needs the TF_CONFIG environment variable, "
                          f"e.g. TF_CONFIG='{example}' (index 1 on the second host)")
    try:
        tf_config = json.loads(text)
        cluster, task = tf_config["cluster"], tf_config["task"]
        workers = list(cluster.get("chief", [])) + list(cluster.get("worker", []))
        count = len(cluster.get(task["type"], []))
        ok = bool(workers) and task["type"] in ("chief", "worker") and 0 <= task["index"] < count
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise ConfigError(f"TF_CONFIG is not a valid cluster description ({error}); expected "
                          f"e.g. {example}") from error
    if not ok:
        raise ConfigError(f"TF_CONFIG: task {task!r} is not a chief or worker of the cluster "
                          f"{cluster!r}")
    return tf_config


def worker_count(strategy: tf.distribute.Strategy | None) -> int:
    """Processes (machines) training together; 1 without a multi-worker strategy."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    spec = resolver.cluster_spec().as_dict()
    return max(1, len(spec.get("chief", [])) + len(spec.get("worker", [])))


def is_chief(strategy: tf.distribute.Strategy | None) -> bool:
    """Whether this process writes the run directory: task "chief", else worker 0."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = bool(resolver.cluster_spec().as_dict().get("chief"))
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def replicas(strategy: tf.distribute.Strategy | None) -> int:
    return 1 if strategy is None else strategy.num_replicas_in_sync


def strategy_scope(strategy: tf.distribute.Strategy | None):
    return contextlib.nullcontext() if strategy is None else strategy.scope()


# ----------------------------------------------------------------------------- data
def distribute_batches(strategy: tf.distribute.Strategy, dataset: tf.data.Dataset,
                       repeat: bool = True) -> tf.distribute.DistributedDataset:
    """Split every global batch `((source, target_in), target_out)` of `dataset` across
    the replicas of `strategy`: replica r gets rows r*b .. (r+1)*b - 1 of each batch.

    Each worker's input pipeline (`InputContext.input_pipeline_id`) builds the whole stream
    of global batches, which is identical on every worker (same corpus, same seed), and
    keeps the rows of its own replicas. Repeated forever when `repeat`, so that Keras's
    `steps_per_epoch` can cut epochs of the same length on every worker.
    """
    total = strategy.num_replicas_in_sync

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = total // context.num_input_pipelines
        first = context.input_pipeline_id * local

        def split(inputs, target_out):
            source, target_in = inputs
            parts = [_replica_rows(t, total)[first:first + local]
                     for t in (source, target_in, target_out)]
            return tf.data.Dataset.from_tensor_slices(((parts[0], parts[1]), parts[2]))

        stream = dataset.repeat() if repeat else dataset
        stream = stream.flat_map(split)
        options = tf.data.Options()  # each worker has chosen its rows already
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return stream.with_options(options).prefetch(tf.data.AUTOTUNE)

    return strategy.distribute_datasets_from_function(dataset_fn)


def _replica_rows(batch: tf.Tensor, count: int) -> tf.Tensor:
    """[rows, length] -> [count, ceil(rows / count), length], padded with all-PAD rows."""
    rows = tf.shape(batch)[0]
    missing = (count - rows % count) % count
    batch = tf.pad(batch, [[0, missing], [0, 0]], constant_values=PAD_ID)
    return tf.reshape(batch, [count, -1, tf.shape(batch)[1]])


# ------------------------------------------------------------------------ optimizer
class ReplicaSummedAdam(keras.optimizers.Adam):
    """Adam for gradients that the train step has already summed over all replicas.

    Keras 3's TensorFlow optimizers clip gradients (`global_clipnorm`) before they
    all-reduce them, so under a strategy each replica's share would be clipped, not the
    global gradient, and a loss-scaling optimizer would test each replica's share for
    inf/NaN on its own (workers could then disagree on skipping a step). The train step
    therefore sums first; this optimizer must not sum again.
    """

    gradients_summed_by_caller = True

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)


if not hasattr(keras.optimizers.Adam, "_all_reduce_sum_gradients"):  # pragma: no cover
    raise ImportError(f"Keras {keras.__version__} no longer all-reduces gradients in "
                      "Optimizer._all_reduce_sum_gradients; nmt.distribute.ReplicaSummedAdam "
                      "needs updating")


def sums_gradients_itself(optimizer) -> bool:
    """Whether `optimizer` (or the one a LossScaleOptimizer wraps) leaves gradients as given."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return bool(getattr(inner, "gradients_summed_by_caller", False))


# ------------------------------------------------------------------------ train step
def replicas_in_sync() -> int:
    """Replicas training together, read inside a train or test step; 1 without a strategy."""
    replica = tf.distribute.get_replica_context()
    return replica.num_replicas_in_sync if replica is not None else 1


def check_optimizer(optimizer: keras.optimizers.Optimizer) -> None:
    """On several replicas: ValueError unless `optimizer` leaves the summing of gradients to
    the train step (`sum_gradients`), which must come before clipping."""
    if replicas_in_sync() > 1 and not sums_gradients_itself(optimizer):
        raise ValueError("training on several replicas needs an optimizer that does not "
                         "all-reduce gradients again: nmt.distribute.ReplicaSummedAdam")


def global_sums(sums: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """The sums over all replicas' shares of the global batch (one all-reduce of scalars),
    without gradient: each replica differentiates only its own share."""
    if replicas_in_sync() == 1:
        return sums
    names = sorted(sums)
    totals = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, tf.stop_gradient(tf.stack([sums[n] for n in names])))
    return dict(zip(names, tf.unstack(totals), strict=True))


def sum_gradients(gradients: list[tf.Tensor]) -> list[tf.Tensor]:
    """This replica's gradients [shapes of the variables] summed over all replicas."""
    if replicas_in_sync() == 1:
        return gradients
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, gradients)


def replica_share(total: tf.Tensor) -> tf.Tensor:
    """A replica's 1/replicas share of a global figure: what it adds to a metric, so that
    Keras's cross-replica reads (sums over replicas) give the global figure."""
    replicas = replicas_in_sync()
    return total / replicas if replicas > 1 else total


def step_logs(means: dict[str, tf.Tensor], shares: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """A step's logs: `means` of the global batch as they are (equal on every replica) and
    the `replica_share`s of global sums scaled back to the sums. Scalars, or [1] with
    several workers: Keras averages a step's logs across workers with
    strategy.reduce(MEAN, axis=0), which needs an axis (and returns scalars)."""
    replicas = replicas_in_sync()
    logs = {**means, **{name: value * replicas if replicas > 1 else value
                        for name, value in shares.items()}}
    if worker_count(tf.distribute.get_strategy()) > 1:
        logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
    return logs


class PrebuiltModel(keras.Model):
    """A `keras.Model` that `fit` and `evaluate` do not build again from a batch once it and
    its optimizer are built (as `Seq2Seq.build` and training do before `fit`)."""

    # A private Keras hook, overridden because no public setting reaches it: under a
    # tf.distribute strategy, fit() and evaluate() always pull one batch to build the model
    # symbolically and pass the nested per-replica batch to strategy.reduce, which fails under
    # MultiWorkerMirroredStrategy ("... PerReplica ... to a Tensor"). Without this override
    # tests/test_distribute.py::test_two_workers_finish_with_identical_weights fails.
    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        optimizer = getattr(self, "optimizer", None)
        if self.built and (optimizer is None or optimizer.built):
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


# -------------------------------------------------------------------- mixed precision
@contextlib.contextmanager
def dtype_policy(name: str | None):
    """Keras's global dtype policy set to `name` (e.g. "mixed_float16") inside the block:
    layers take the policy in force when they are created and keep it."""
    previous = keras.config.dtype_policy()
    if name:
        keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def mixed_policy(strategy: tf.distribute.Strategy | None) -> str:
    """The 16-bit Keras policy for the devices that train: `mixed_float16` on GPUs (tensor
    cores; needs loss scaling), `mixed_bfloat16` on CPUs (float32's range, so no loss
    scaling; oneDNN runs it natively where the CPU has AVX512-BF16 or AMX)."""
    devices = (strategy.extended.worker_devices if strategy is not None else
               [d.name for d in tf.config.list_logical_devices()])
    if any("GPU" in device.upper() for device in devices):
        return "mixed_float16"
    if not cpu_has_native_bfloat16():
        logger.warning("--mixed-precision on a CPU without AVX512-BF16 or AMX: bfloat16 is "
                       "emulated here and may train slower than float32")
    return "mixed_bfloat16"


def cpu_has_native_bfloat16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the CPU flags list bfloat16 instructions (Linux); True when unknown, so that
    other systems get no false warning."""
    return native_bfloat16(cpuinfo) is not False


# ------------------------------------------------------------------ chief broadcast
class ChiefBroadcast:
    """Values of the chief's first replica, delivered to every worker by one collective
    all-reduce (the chief contributes its value, every other replica zeros).

    Without a multi-worker cluster every method returns its input. Every worker must call
    the same methods in the same order with values of the same shapes and dtypes.
    """

    def __init__(self, strategy: tf.distribute.Strategy | None):
        self.strategy = strategy
        self.active = worker_count(strategy) > 1
        self._functions = {}

    def tensors(self, values: list) -> list[tf.Tensor]:
        """The chief's value of each tensor."""
        if not self.active:
            return [tf.convert_to_tensor(v) for v in values]
        return self._all_reduce([tf.convert_to_tensor(v) for v in values], chief_only=True)

    def any(self, flag: bool) -> bool:
        """True on every worker if `flag` is True on any worker."""
        if not self.active:
            return bool(flag)
        (total,) = self._all_reduce([tf.constant(float(flag), tf.float32)], chief_only=False)
        return bool(total.numpy() > 0)

    def _all_reduce(self, values: list[tf.Tensor], chief_only: bool) -> list[tf.Tensor]:
        # One traced function per kind of call (all workers trace them in the same order).
        key = (chief_only, tuple((v.dtype, v.shape.rank) for v in values))
        if key not in self._functions:
            strategy = self.strategy

            def replica_fn(values):
                context = tf.distribute.get_replica_context()
                if chief_only:
                    first = tf.equal(context.replica_id_in_sync_group, 0)
                    values = [tf.where(first, v, tf.zeros_like(v)) for v in values]
                else:  # a tensor computed on this replica, not the captured input itself
                    values = [tf.identity(v) for v in values]
                groups: dict[tf.DType, list[int]] = {}  # one all-reduce per dtype
                for index, value in enumerate(values):
                    groups.setdefault(value.dtype, []).append(index)
                reduced = list(values)
                for indices in groups.values():
                    sums = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                              [values[i] for i in indices])
                    for index, value in zip(indices, sums, strict=True):
                        reduced[index] = value
                return reduced

            self._functions[key] = tf.function(
                lambda values: strategy.run(replica_fn, args=(values,)), reduce_retracing=True)
        try:
            result = self._functions[key](values)
        except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                tf.errors.CancelledError, tf.errors.AbortedError) as error:
            raise WorkerLost(str(error).strip().splitlines()[0]) from error
        return [self.strategy.experimental_local_results(r)[0] for r in result]

    def floats(self, values: list[float]) -> list[float]:
        if not self.active:
            return list(values)
        (result,) = self.tensors([tf.constant(values, tf.float64)])
        return [float(v) for v in result.numpy()]

    def blobs(self, blobs: list[bytes] | None, count: int) -> list[bytes]:
        """The chief's `count` byte strings (other workers pass None)."""
        if not self.active:
            return list(blobs)
        sizes = [len(b) for b in blobs] if blobs is not None else [0] * count
        (sizes,) = self.tensors([tf.constant(sizes, tf.int64)])
        sizes = [int(s) for s in sizes.numpy()]
        payload = (np.frombuffer(b"".join(blobs), np.uint8).astype(np.int32)
                   if blobs is not None else np.zeros(sum(sizes), np.int32))
        (data,) = self.tensors([payload])
        data = data.numpy().astype(np.uint8).tobytes()
        offsets = np.cumsum([0, *sizes])
        return [data[offsets[i]:offsets[i + 1]] for i in range(count)]

    def variables(self, variables: list) -> None:
        """Assign the chief's value to each variable (model, optimizer, epoch) everywhere."""
        if not self.active:
            return
        values = self.tensors([tf.convert_to_tensor(v) for v in variables])
        for variable, value in zip(variables, values, strict=True):
            variable.assign(value)


def is_worker_failure(error: BaseException) -> bool:
    """Whether `error` says a collective op failed because another worker is gone."""
    return isinstance(error, (WorkerLost, tf.errors.UnavailableError,
                              tf.errors.DeadlineExceededError, tf.errors.CancelledError,
                              tf.errors.AbortedError))


def weights_fingerprint(model: keras.Model) -> str:
    """sha256 (16 hex digits) of the model's weights: equal on workers that are in sync."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight, dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]
