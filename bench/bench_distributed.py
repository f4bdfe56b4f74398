#!/usr/bin/env python
"""Training throughput of `train.py --distribute multi-worker` with 1 and 2 local workers.

    python bench/bench_distributed.py --data-dir ../shared/corpora/multi30k

Each setting is a real cluster of `train.py` processes on 127.0.0.1 (free ports, a TF_CONFIG
each, GPUs hidden) training the same config with the same global batch, from scratch, for
`--epochs` epochs. Throughput is read from the chief's metrics.json: target tokens per second
of training time (validation excluded) over the epochs after the first, which also pays for
start-up and tracing. Writes bench/results/bench_distributed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, RESULTS, write_results  # noqa: E402
from nmt.rundir import METRICS_FILE  # noqa: E402

DEFAULT_CONFIG = REPO / "configs" / "multi30k-de-en.json"
NOTE = """\
Both settings run on this one machine: {cores} cores shared by every worker. Two workers
split each global batch in half, but each has about half the cores, and they add a gradient
all-reduce over loopback gRPC per step, so two local workers cannot be faster than one here:
the table shows what the distributed path costs (collectives, duplicated input pipelines,
two processes competing for the same cores), not how it scales. Scaling needs workers on
separate machines or GPUs, where each replica brings its own compute and the all-reduce
crosses a real network; neither can be measured on a single {cores}-core machine."""


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def run_cluster(config_path: Path, folder: Path, workers: int, timeout: float) -> dict:
    """Train with `workers` local processes; return the chief's metrics and the wall time."""
    addresses = [f"127.0.0.1:{port}" for port in free_ports(workers)]
    processes = []
    start = time.perf_counter()
    for index in range(workers):
        tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "CUDA_VISIBLE_DEVICES": "",
               "TF_CPP_MIN_LOG_LEVEL": "2"}
        log = open(folder / f"worker{index}.log", "w")  # noqa: SIM115 (closed below)
        process = subprocess.Popen(
            [sys.executable, "train.py", "--config", str(config_path), "--run-dir",
             str(folder / f"run{index}"), "--quiet", "--distribute", "multi-worker"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        processes.append((process, log))
    deadline = time.monotonic() + timeout
    try:
        for process, _ in processes:
            process.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for process, log in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    wall = time.perf_counter() - start
    if any(process.returncode != 0 for process, _ in processes):
        tail = (folder / "worker0.log").read_text()[-3000:]
        raise RuntimeError(f"{workers}-worker run failed (exit codes "
                           f"{[p.returncode for p, _ in processes]}):\n{tail}")
    metrics = json.loads((folder / "run0" / METRICS_FILE).read_text(encoding="utf-8"))
    return {"metrics": metrics, "wall_seconds": wall}


def summarise(workers: int, result: dict) -> dict:
    epochs = result["metrics"]["epochs"]
    steady = epochs[1:] or epochs
    tokens = sum(e["tokens"] for e in steady)
    seconds = sum(e["train_seconds"] for e in steady)
    batches = result["metrics"]["batches_per_epoch"]
    return {"workers": workers, "replicas": workers, "epochs": len(epochs),
            "batches_per_epoch": batches,
            "target_tokens_per_second": tokens / max(seconds, 1e-9),
            "steps_per_second": batches * len(steady) / max(seconds, 1e-9),
            "first_epoch_seconds": epochs[0]["train_seconds"],
            "first_epoch_tokens": epochs[0]["tokens"],
            "final_loss": epochs[-1]["loss"], "wall_seconds": result["wall_seconds"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--data-dir", help="local Multi30k folder (no download)")
    parser.add_argument("--epochs", type=int, default=3,
                        help="epochs per setting (the first is excluded from tokens/s)")
    parser.add_argument("--train-limit", type=int, default=6000,
                        help="training pairs used (the whole corpus takes long on 2 cores)")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per setting")
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny model and corpus slice: proves the script works")
    parser.add_argument("--results-dir", default=str(RESULTS))
    args = parser.parse_args(argv)

    from nmt.config import Config

    config = Config.load(args.config)
    if args.data_dir:
        config.data.data_dir = str(Path(args.data_dir).resolve())
    config.data.train_limit, config.data.valid_limit = args.train_limit, 100
    t = config.train
    t.epochs, t.time_budget, t.patience, t.valid_beam = args.epochs, None, args.epochs, 1
    if args.tiny:
        config.data.train_limit, config.data.valid_limit = 600, 20
        config.data.src_vocab_size = config.data.tgt_vocab_size = 500
        config.data.max_length = 48
        config.model.embedding_dim, config.model.encoder_units = 32, 32
        config.model.decoder_units, config.model.attention_units = 64, 32
        t.epochs = t.patience = 2
        t.batch_tokens, t.bucket_boundaries = 1024, [12, 16, 24, 32, 48]
    config.validate()
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as folder:
        config_path = Path(folder) / "config.json"
        config.save(config_path)
        for workers in [int(w) for w in args.workers.split(",")]:
            setting = Path(folder) / f"workers{workers}"
            setting.mkdir()
            runs.append(summarise(workers, run_cluster(config_path, setting, workers,
                                                       args.timeout)))
    base = runs[0]["target_tokens_per_second"]
    for run in runs:
        run["speedup"] = run["target_tokens_per_second"] / base
    cores = os.cpu_count()
    payload = {"config": config.to_dict(), "runs": runs, "tiny": args.tiny,
               "note": " ".join(NOTE.format(cores=cores).split())}
    rows = [[r["workers"], r["replicas"], round(r["target_tokens_per_second"]),
             round(r["steps_per_second"], 2), f"{r['speedup']:.2f}x",
             round(r["first_epoch_seconds"], 1), round(r["final_loss"], 3)] for r in runs]
    json_path, md_path = write_results(
        "bench_distributed", payload,
        ["workers", "replicas", "target tokens/s", "steps/s", "vs 1 worker",
         "first epoch s", "final loss"], rows, Path(args.results_dir))
    with open(md_path, "a", encoding="utf-8") as md:
        md.write("\n" + NOTE.format(cores=cores) + "\n")
    print(md_path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
