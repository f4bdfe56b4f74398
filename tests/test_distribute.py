"""Distributed training (`train.py --distribute`) and mixed precision.

Real multi-worker runs: worker processes of `train.py --distribute multi-worker` on
127.0.0.1 with free ports, a TF_CONFIG each, no GPU and bounded time (killed, and the test
failed with their output, when over). One pair trains undisturbed; another pair is
SIGKILLed mid-run and restarted. The numerical check that 2 replicas take the same step as 1
runs in a fresh process too, because TensorFlow's logical CPU devices must be configured
before TensorFlow starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from bench import bench_distributed
from bench.bench_distributed import free_ports
from nmt.attention import Attention
from nmt.cli import train as train_cli
from nmt.config import Config
from nmt.distribute import (
    ReplicaSummedAdam,
    _replica_rows,
    cluster_spec_from_environment,
    cpu_has_native_bfloat16,
    dtype_policy,
    make_strategy,
    mixed_policy,
    sums_gradients_itself,
    weights_fingerprint,
)
from nmt.errors import ConfigError
from nmt.rundir import LAST_WEIGHTS_FILE
from nmt.tokenizer import PAD_ID
from nmt.training import make_optimizer, train
from nmt.translator import Translator
from tests.helpers import (
    REPO,
    checkpoint_values,
    read_metrics,
    tiny_config,
)

WORKER_TIMEOUT = 300  # seconds for one launch of a worker pair
FINGERPRINT = re.compile(r"weights fingerprint ([0-9a-f]{16}) \((chief|worker)\)")


def small_config(**train_overrides) -> Config:
    """tiny_config on 600 pairs (16 batches an epoch) and 20 validation sentences."""
    config = tiny_config(**train_overrides)
    config.data.train_limit, config.data.valid_limit = 600, 20
    return config


class Cluster:
    """`train.py --distribute multi-worker` processes on 127.0.0.1, one run dir each."""

    def __init__(self, folder: Path, config: Config, workers: int = 2):
        self.folder, self.workers = folder, workers
        self.config_path = folder / "config.json"
        self.config_path.write_text(config.to_json())
        self.addresses = [f"127.0.0.1:{port}" for port in free_ports(workers)]
        self.tmp = folder / "tmp"  # TMPDIR of the workers: their scratch folders go here
        self.tmp.mkdir(exist_ok=True)
        self.launches = 0

    def run_dir(self, index: int) -> Path:
        return self.folder / f"run{index}"

    def start(self) -> list[tuple[subprocess.Popen, Path]]:
        self.launches += 1
        processes = []
        for index in range(self.workers):
            tf_config = {"cluster": {"worker": self.addresses},
                         "task": {"type": "worker", "index": index}}
            env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "CUDA_VISIBLE_DEVICES": "",
                   "TF_CPP_MIN_LOG_LEVEL": "2", "TMPDIR": str(self.tmp)}
            log_path = self.folder / f"launch{self.launches}-worker{index}.log"
            with open(log_path, "w") as log:
                process = subprocess.Popen(
                    [sys.executable, "train.py", "--config", str(self.config_path),
                     "--run-dir", str(self.run_dir(index)), "--quiet", "--distribute",
                     "multi-worker", "--collective-timeout", "60"],
                    cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            processes.append((process, log_path))
        return processes


def wait_all(processes, timeout: float = WORKER_TIMEOUT) -> list[str]:
    """Wait for every process (killing all of them past `timeout`); return their logs."""
    deadline = time.monotonic() + timeout
    try:
        for process, _ in processes:
            process.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        stop(processes)
        logs = "\n".join(f"--- {path.name}\n{path.read_text()[-3000:]}" for _, path in processes)
        pytest.fail(f"workers still running after {timeout} s\n{logs}")
    return [path.read_text() for _, path in processes]


def stop(processes) -> None:
    for process, _ in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


def fingerprints(log: str) -> list[tuple[str, str]]:
    return FINGERPRINT.findall(log)


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# ==================================================================== configuration
def test_multi_worker_needs_a_valid_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        make_strategy("multi-worker")
    for bad in ("not json", '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", '
                '"index": 1}}', '{"task": {"type": "worker", "index": 0}}'):
        monkeypatch.setenv("TF_CONFIG", bad)
        with pytest.raises(ConfigError, match="TF_CONFIG"):
            cluster_spec_from_environment()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["h1:2222", "h2:2222"]},
                                                "task": {"type": "worker", "index": 1}}))
    assert cluster_spec_from_environment()["task"]["index"] == 1
    with pytest.raises(ConfigError, match="--distribute"):
        make_strategy("parameter-server")
    assert make_strategy("none") is None


def test_train_script_reports_a_missing_tf_config_in_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    code = train_cli.main(["--distribute", "multi-worker", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --distribute multi-worker needs the TF_CONFIG")
    assert not (tmp_path / "run").exists()


def test_mixed_precision_and_distribution_choose_the_optimizer():
    plain = make_optimizer(tiny_config(), 10)
    assert type(plain) is keras.optimizers.Adam and not sums_gradients_itself(plain)
    summed = make_optimizer(tiny_config(mixed_precision=True), 10, summed_gradients=True,
                            loss_scale=True)
    assert isinstance(summed, keras.optimizers.LossScaleOptimizer)
    assert isinstance(summed.inner_optimizer, ReplicaSummedAdam) and sums_gradients_itself(summed)
    assert summed.inner_optimizer.global_clipnorm == tiny_config().train.clip_norm


# ============================================================================== data
def test_replica_rows_split_every_row_once_and_pad_with_empty_rows():
    batch = tf.reshape(tf.range(1, 5 * 3 + 1), [5, 3])
    parts = _replica_rows(batch, 2)  # 5 rows -> 2 replicas x 3 rows, one all-PAD row
    assert parts.shape == (2, 3, 3)
    rows = tf.reshape(parts, [6, 3]).numpy()
    np.testing.assert_array_equal(rows[:5], batch.numpy())
    assert (rows[5] == PAD_ID).all()
    assert _replica_rows(batch, 1).shape == (1, 5, 3)


class ReplicaSummedSGD(keras.optimizers.SGD):
    """Plain SGD for the train step's pre-summed gradients: its step is the gradient, so
    unlike Adam it shows a gradient of the wrong scale."""

    gradients_summed_by_caller = True

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)


def replica_equivalence(out_path: str) -> None:
    """In a fresh process: 3 training steps (dropout 0) on the same global batches, on one
    device and on a 2-replica MirroredStrategy over 2 logical CPUs fed by
    `distribute_batches`, with the training optimizer (Adam, clipping active) and with
    plain SGD. Writes weight differences and logs to `out_path`."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import tempfile

    from nmt.pipeline import Buckets, make_dataset
    from nmt.training_data import prepare_data, with_vocab_sizes

    config = small_config(clip_norm=0.05)
    config.model.dropout = 0.0
    with tempfile.TemporaryDirectory() as folder:
        data = prepare_data(config, Path(folder))
    config = with_vocab_sizes(config, data)
    buckets = Buckets.from_budget(config.train.bucket_boundaries, config.data.max_length,
                                  config.train.batch_tokens)
    batches = list(make_dataset(data.train, buckets, shuffle=True, seed=3).take(3))
    (source, target_in), target_out = batches[0]  # 7 rows: 2 replicas get 4 + 3 and a pad row
    batches[0] = ((source[:7], target_in[:7]), target_out[:7])
    dataset = tf.data.Dataset.from_tensors(batches[0])
    for batch in batches[1:]:
        dataset = dataset.concatenate(tf.data.Dataset.from_tensors(batch))

    optimizers = {
        "adam": lambda summed: make_optimizer(config, 3, summed_gradients=summed),
        "sgd": lambda summed: ReplicaSummedSGD(0.5) if summed else keras.optimizers.SGD(0.5),
    }
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    summary = {"replicas": mirrored.num_replicas_in_sync, "clip_norm": config.train.clip_norm}
    for optimizer_name, make in optimizers.items():
        results = _train_steps(config, batches, dataset, make, mirrored)
        one, two, initial = (results["one"]["weights"], results["two"]["weights"],
                             results["initial"])
        summary["gradient_norm"] = results["gradient_norm"]
        summary[optimizer_name] = {
            "max_difference": max(float(np.abs(a - b).max())
                                  for a, b in zip(one, two, strict=True)),
            "max_change": max(float(np.abs(a - b).max())
                              for a, b in zip(one, initial, strict=True)),
            "logs": {name: results[name]["logs"] for name in ("one", "two")},
        }
    Path(out_path).write_text(json.dumps(summary))


def _train_steps(config, batches, dataset, make_optimizer_for, mirrored) -> dict:
    from nmt.distribute import distribute_batches
    from nmt.losses import token_losses
    from nmt.model import Seq2Seq

    results, initial = {}, None
    for name, strategy in (("one", None), ("two", mirrored)):
        with strategy.scope() if strategy else contextlib.nullcontext():
            model = Seq2Seq(config.model)
            model.build()
            model.label_smoothing = config.train.label_smoothing
            model.compile(optimizer=make_optimizer_for(strategy is not None), jit_compile=False)
        if initial is None:
            initial = model.get_weights()
            with tf.GradientTape() as tape:
                (source, target_in), target_out = batches[0]
                logits, _ = model((source, target_in))
                sums = token_losses(logits, target_out, target_out != PAD_ID, 0.1)
                loss = sums["loss"] / sums["tokens"]
            norm = tf.linalg.global_norm(tape.gradient(loss, model.trainable_variables))
            results["gradient_norm"] = float(norm)
            history = model.fit(dataset, epochs=1, verbose=0)
        else:
            model.set_weights(initial)
            history = model.fit(distribute_batches(strategy, dataset), steps_per_epoch=3,
                                epochs=1, verbose=0, shuffle=False)
        results[name] = {"weights": model.get_weights(),
                         "logs": {k: float(v[0]) for k, v in history.history.items()}}
    results["initial"] = initial
    return results


def test_two_replicas_take_the_same_steps_as_one(tmp_path):
    out = tmp_path / "equivalence.json"
    script = ("import sys; from tests.test_distribute import replica_equivalence; "
              "replica_equivalence(sys.argv[1])")
    completed = subprocess.run([sys.executable, "-c", script, str(out)], cwd=REPO,
                               env={**os.environ, "CUDA_VISIBLE_DEVICES": "",
                                    "TF_CPP_MIN_LOG_LEVEL": "2"},
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["replicas"] == 2
    # The gradient norm exceeds the clip norm, so the Adam steps compared include clipping
    # (of the summed gradient); SGD's step is the gradient itself, so it also shows a
    # gradient of the wrong scale, which Adam would largely hide.
    assert result["gradient_norm"] > 2 * result["clip_norm"]
    for optimizer in ("adam", "sgd"):
        run = result[optimizer]
        assert run["max_change"] > 1e-3, optimizer  # the steps moved the weights...
        assert run["max_difference"] < 1e-5, (optimizer, run)  # ...the same on 1 and 2
        one, two = run["logs"]["one"], run["logs"]["two"]
        assert one["tokens"] == two["tokens"]  # the padding row added no tokens
        for name in ("loss", "nll", "accuracy"):
            assert np.isclose(one[name], two[name], rtol=1e-5), (optimizer, name, one, two)


# =================================================================== mixed precision
@pytest.mark.parametrize("policy, dtype", [("mixed_float16", tf.float16),
                                           ("mixed_bfloat16", tf.bfloat16)])
def test_attention_normalises_in_float32_under_mixed_precision(policy, dtype):
    with dtype_policy(policy):
        layer = Attention(score="general", name="attention")
    assert keras.config.dtype_policy().name == "float32"  # restored
    query = tf.cast(tf.random.normal([2, 3, 8]), dtype)
    keys = tf.cast(tf.random.normal([2, 5, 6]), dtype)
    mask = tf.constant([[True] * 5, [True, True, False, False, False]])
    context, weights = layer(query, keys, mask=mask)
    assert weights.dtype == tf.float32 and context.dtype == dtype
    np.testing.assert_allclose(tf.reduce_sum(weights, -1).numpy(), 1.0, rtol=1e-6)
    assert (weights.numpy()[1, :, 2:] == 0).all()


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_masked_softmax_of_extreme_float16_scores_has_no_nan(mode):
    layer = Attention(score="dot", mode=mode)
    big = np.finfo(np.float16).max  # 65504: -1e9 or -inf masking would overflow float16
    scores = tf.constant([[[big, -big, big, 0.0]], [[-big, -big, -big, -big]]], tf.float16)
    mask = tf.constant([[True, True, False, True], [False, False, False, False]])
    weights = layer.normalise(scores, mask, training=True).numpy()
    assert weights.dtype == np.float32 and np.isfinite(weights).all()
    np.testing.assert_allclose(weights[0].sum(), 1.0, rtol=1e-6)
    assert weights[0, 0, 0] == pytest.approx(1.0) and weights[0, 0, 2] == 0
    assert (weights[1] == 0).all()  # a fully masked row gives zeros, not NaN


def test_mixed_precision_is_bfloat16_on_cpus_and_float16_on_gpus():
    class FakeStrategy:  # only the device list is read
        def __init__(self, devices):
            self.extended = type("Extended", (), {"worker_devices": devices})()

    assert mixed_policy(FakeStrategy(["/job:worker/replica:0/task:0/device:CPU:0"])) \
        == "mixed_bfloat16"
    assert mixed_policy(FakeStrategy(["/job:localhost/replica:0/task:0/device:GPU:0",
                                      "/job:localhost/replica:0/task:0/device:GPU:1"])) \
        == "mixed_float16"
    expected = "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16"
    assert mixed_policy(None) == expected  # this machine's own devices


def test_bfloat16_support_is_read_from_the_cpu_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 fma\n")
    assert cpu_has_native_bfloat16(cpuinfo)
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 amx_bf16 amx_tile\n")
    assert cpu_has_native_bfloat16(cpuinfo)
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    assert not cpu_has_native_bfloat16(cpuinfo)
    assert cpu_has_native_bfloat16(tmp_path / "missing")  # unknown: no false warning


def test_mixed_precision_training_on_cpu(tmp_path, multi30k_dir):
    run_dir = tmp_path / "run"
    metrics = train(small_config(epochs=2, mixed_precision=True), run_dir, progress=False)
    losses = [record["loss"] for record in metrics["epochs"]]
    assert np.isfinite(losses).all() and losses[1] < losses[0] - 0.3
    assert np.isfinite([record["val_loss"] for record in metrics["epochs"]]).all()
    assert keras.config.dtype_policy().name == "float32"  # the policy did not leak
    assert Config.load(run_dir / "config.json").train.mixed_precision is True
    translator = Translator.load(run_dir, LAST_WEIGHTS_FILE)  # float32 weights, default policy
    assert all(w.dtype == np.float32 for w in translator.model.get_weights())
    assert translator.translate(["Ein Hund läuft."], beam=2)[0].text is not None


# ===================================================================== multi-worker
@pytest.fixture(scope="module")
def two_workers(tmp_path_factory, multi30k_dir):
    """Two workers train small_config for 2 epochs undisturbed."""
    cluster = Cluster(tmp_path_factory.mktemp("two_workers"), small_config(epochs=2))
    processes = cluster.start()
    logs = wait_all(processes)
    return cluster, [process.returncode for process, _ in processes], logs


def test_two_workers_finish_with_identical_weights(two_workers):
    cluster, codes, logs = two_workers
    assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
    (chief,), (worker,) = fingerprints(logs[0]), fingerprints(logs[1])
    assert chief[1] == "chief" and worker[1] == "worker"
    assert chief[0] == worker[0]
    # ...and they are the weights the chief saved.
    model = Translator.load(cluster.run_dir(0), LAST_WEIGHTS_FILE).model
    assert weights_fingerprint(model) == chief[0]


def test_two_workers_lower_the_loss_over_the_global_batch(two_workers):
    cluster, _, _ = two_workers
    metrics = read_metrics(cluster.run_dir(0))
    first, second = metrics["epochs"]
    assert second["loss"] < first["loss"] - 0.3
    assert metrics["stopped_by"] == "epochs"
    assert checkpoint_values(cluster.run_dir(0)) == {"epoch": 2,
                                                     "steps": 2 * metrics["batches_per_epoch"]}


def test_only_the_chief_writes_a_run_directory(two_workers):
    cluster, _, logs = two_workers
    chief_files = files_in(cluster.run_dir(0))
    for name in ("config.json", "source.model", "target.model", "best.weights.h5",
                 "last.weights.h5", "metrics.json", "resume/checkpoint"):
        assert name in chief_files, chief_files
    assert any(name.startswith("logs/") for name in chief_files)
    assert files_in(cluster.run_dir(1)) == []  # the worker wrote nothing of its own
    assert files_in(cluster.tmp) == []  # and removed its scratch folder
    assert "worker finished" in logs[1]


@pytest.fixture(scope="module")
def killed_pair(tmp_path_factory, multi30k_dir):
    """A pair (3 epochs) whose worker 1 is SIGKILLed once the chief's first checkpoint
    exists; then both are started again with the same TF_CONFIG and run directories."""
    cluster = Cluster(tmp_path_factory.mktemp("killed_pair"), small_config(epochs=3))
    processes = cluster.start()
    chief_dir = cluster.run_dir(0)
    try:
        deadline = time.monotonic() + WORKER_TIMEOUT
        while not (chief_dir / "resume" / "checkpoint").exists():
            if any(process.poll() is not None for process, _ in processes):
                pytest.fail("a worker ended early:\n" + processes[0][1].read_text()[-3000:])
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint in time:\n" + processes[0][1].read_text()[-3000:])
            time.sleep(0.05)
        processes[1][0].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        first_logs = wait_all(processes, timeout=150)  # the chief notices and exits
        detection_seconds = time.monotonic() - killed_at
    finally:
        stop(processes)
    codes = [process.returncode for process, _ in processes]
    after_kill = read_metrics(chief_dir)
    checkpoint_after_kill = checkpoint_values(chief_dir)
    processes = cluster.start()
    second_logs = wait_all(processes)
    return {"cluster": cluster, "codes": codes, "first_logs": first_logs,
            "detection_seconds": detection_seconds, "after_kill": after_kill,
            "checkpoint_after_kill": checkpoint_after_kill, "second_logs": second_logs,
            "second_codes": [process.returncode for process, _ in processes]}


def test_surviving_worker_exits_with_an_error_when_its_peer_dies(killed_pair):
    codes, logs = killed_pair["codes"], killed_pair["first_logs"]
    assert codes[1] == -signal.SIGKILL
    assert codes[0] == 3, logs[0][-3000:]
    errors = [line for line in logs[0].splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "lost contact with another worker" in errors[0]
    assert killed_pair["detection_seconds"] < 120  # not the 600 s default timeout


def test_restarted_pair_resumes_from_the_chiefs_checkpoint(killed_pair):
    cluster, logs = killed_pair["cluster"], killed_pair["second_logs"]
    assert killed_pair["second_codes"] == [0, 0], "\n".join(log[-3000:] for log in logs)
    after_kill = killed_pair["after_kill"]
    done = len(after_kill["epochs"])
    assert 1 <= done < 3
    steps = after_kill["batches_per_epoch"]
    assert killed_pair["checkpoint_after_kill"] == {"epoch": done, "steps": done * steps}
    assert f"after epoch {done}" in logs[0]
    metrics = read_metrics(cluster.run_dir(0))
    assert [record["epoch"] for record in metrics["epochs"]] == [1, 2, 3]
    assert metrics["epochs"][:done] == after_kill["epochs"]  # continued, not redone
    assert checkpoint_values(cluster.run_dir(0)) == {"epoch": 3, "steps": 3 * steps}
    assert metrics["epochs"][-1]["loss"] < metrics["epochs"][0]["loss"]
    (chief,), (worker,) = fingerprints(logs[0]), fingerprints(logs[1])
    assert chief[0] == worker[0]  # the restarted worker got the chief's state
    assert files_in(cluster.run_dir(1)) == []


# ============================================================================ bench
def test_bench_distributed_tiny_reports_both_settings(tmp_path, multi30k_dir):
    code = bench_distributed.main(["--tiny", "--data-dir", str(multi30k_dir),
                                   "--results-dir", str(tmp_path)])
    assert code == 0
    payload = json.loads((tmp_path / "bench_distributed.json").read_text(encoding="utf-8"))
    table = (tmp_path / "bench_distributed.md").read_text(encoding="utf-8")
    one, two = payload["runs"]
    assert (one["workers"], two["workers"]) == (1, 2)
    assert one["replicas"] == 1 and two["replicas"] == 2
    for run in (one, two):
        assert run["target_tokens_per_second"] > 0 and run["epochs"] >= 2
    # The same global batches, split two ways: the first epoch's token count is the same.
    assert one["first_epoch_tokens"] == two["first_epoch_tokens"]
    assert table.startswith("| workers | replicas | target tokens/s")
    assert "2 cores" in table  # the honest note on what one machine can show
