#!/usr/bin/env python
"""Training throughput of the released config on real Multi30k batches: XLA on and off,
float32 and mixed precision.

    python bench/bench_train.py --data-dir ../shared/corpora/multi30k

Every bucket shape is compiled and run once before timing (warm-up), then a fixed number of
real training steps is timed. Reports target tokens/s (real tokens, padding excluded),
sentences/s, the padding fraction, the machine's measured matmul peak and the model's
estimated FLOPs per target token, i.e. the fraction of the hardware the step uses (against
the float32 peak, or the 16-bit peak for mixed precision).
Writes bench/results/bench_train.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, RESULTS, write_results  # noqa: E402

DEFAULT_CONFIG = REPO / "configs" / "multi30k-de-en.json"


def matmul_peak(size: int = 2048, repeats: int = 10, dtype: str = "float32") -> float:
    """GFLOP/s of a large tf.matmul in `dtype` (the machine's practical peak)."""
    import tensorflow as tf

    a = tf.cast(tf.random.normal([size, size]), dtype)
    b = tf.cast(tf.random.normal([size, size]), dtype)
    matmul = tf.function(lambda x, y: tf.matmul(x, y))
    matmul(a, b).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        result = matmul(a, b)
    result.numpy()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def flops_per_target_token(model_config, source_per_target: float, source_length: float) -> float:
    """Forward+backward FLOPs per target token (matmuls only; backward = 2x forward)."""
    c = model_config
    gru = lambda inputs, units: 2 * 3 * units * (inputs + units)  # noqa: E731
    encoder = 0.0
    inputs = c.embedding_dim
    for _ in range(c.encoder_layers):
        encoder += 2 * gru(inputs, c.encoder_units)
        inputs = 2 * c.encoder_units
    keys = 2 * c.encoder_units
    decoder_inputs = c.embedding_dim + (c.decoder_units if c.input_feeding else 0)
    decoder = gru(decoder_inputs, c.decoder_units)
    decoder += (c.decoder_layers - 1) * gru(c.decoder_units, c.decoder_units)
    attention = 2 * source_length * (c.decoder_units + keys)  # scores + weighted sum
    if c.score == "additive":
        attention += 2 * c.decoder_units * c.attention_units + 2 * source_length * c.attention_units
        encoder += 2 * keys * c.attention_units
    elif c.score == "general":
        encoder += 2 * keys * c.decoder_units
    feed = c.embedding_dim if c.tie_embeddings else c.decoder_units
    output = 2 * (c.decoder_units + keys) * feed + 2 * feed * c.tgt_vocab_size
    forward = encoder * source_per_target + decoder + attention + output
    return 3.0 * forward


def measure(config, data, jit: bool, mixed: bool, steps: int) -> dict:
    """Warm up every bucket shape, then time `steps` training steps."""
    import numpy as np

    step, timed, facts = warmed_up_step(config, data, jit, mixed, steps)
    tokens = sum(int(np.count_nonzero(b[1])) for b in timed)
    sentences = sum(int(b[1].shape[0]) for b in timed)
    start = time.perf_counter()
    for batch in timed:
        logs = step(iter([batch]))
    float(logs["loss"])
    seconds = time.perf_counter() - start
    return {"jit_compile": jit, "precision": facts["precision"], "steps": len(timed),
            "seconds": seconds,
            "target_tokens_per_second": tokens / seconds,
            "sentences_per_second": sentences / seconds,
            "warm_up_seconds": facts["warm_up_seconds"],
            "compiled_shapes": facts["compiled_shapes"]}


def warmed_up_step(config, data, jit: bool, mixed: bool, steps: int) -> tuple:
    """The training step of `config` (as train.py builds it, with `jit` and `mixed`
    precision), run once on every bucket shape; returns it, `steps` real batches to time it
    on, and {"precision", "warm_up_seconds", "compiled_shapes"}."""
    import keras
    import tensorflow as tf

    from nmt.distribute import dtype_policy, mixed_policy
    from nmt.model import Seq2Seq
    from nmt.pipeline import Buckets, make_dataset
    from nmt.training import make_optimizer

    keras.utils.set_random_seed(config.train.seed)
    buckets = Buckets.from_budget(config.train.bucket_boundaries, config.data.max_length,
                                  config.train.batch_tokens)
    dataset = make_dataset(data.train, buckets, shuffle=True, seed=config.train.seed)
    policy = mixed_policy(None) if mixed else None
    with dtype_policy(policy):
        model = Seq2Seq(config.model)
        model.build()
        model.label_smoothing = config.train.label_smoothing
        optimizer = make_optimizer(config, int(dataset.cardinality()),
                                   loss_scale=policy == "mixed_float16")
    model.compile(optimizer=optimizer, jit_compile=jit)
    model.make_train_function()
    step = model.train_function
    batches = list(dataset.take(max(steps, 1) + 50))
    seen = set()
    warm_start = time.perf_counter()
    for batch in batches:  # one step per distinct shape compiles everything
        shape = tuple(batch[0][0].shape)
        if shape not in seen:
            seen.add(shape)
            step(iter([batch]))
    for length, size in zip(buckets.lengths, buckets.batch_sizes, strict=True):
        if (size, length) not in seen:
            dummy = tf.ones([size, length], tf.int32)
            step(iter([((dummy, dummy), dummy)]))
    shapes = seen | {(s, n) for n, s in zip(buckets.lengths, buckets.batch_sizes, strict=True)}
    return step, batches[:steps], {"precision": policy or "float32",
                                   "warm_up_seconds": time.perf_counter() - warm_start,
                                   "compiled_shapes": len(shapes)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--data-dir", help="local Multi30k folder (no download)")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per setting")
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny model and corpus slice: proves the script works")
    parser.add_argument("--xla", default="on,off",
                        help="comma-separated settings of jit_compile to measure")
    parser.add_argument("--precision", default="mixed,float32",
                        help="comma-separated: mixed (16-bit compute) and/or float32")
    parser.add_argument("--results-dir", default=str(RESULTS))
    args = parser.parse_args(argv)
    settings = [(jit, mixed) for mixed in _choices(args.precision, {"mixed": True,
                                                                      "float32": False})
                for jit in _choices(args.xla, {"on": True, "off": False})]

    from nmt.pipeline import Buckets
    from nmt.training_data import prepare_data, with_vocab_sizes

    config = bench_config(args.config, args.data_dir, args.tiny)
    if args.tiny:
        args.steps = min(args.steps, 5)
    with tempfile.TemporaryDirectory() as run_dir:
        data = prepare_data(config, Path(run_dir))
    config = with_vocab_sizes(config, data)
    buckets = Buckets.from_budget(config.train.bucket_boundaries, config.data.max_length,
                                  config.train.batch_tokens)
    source_lengths = data.train.source.row_lengths().numpy()
    target_lengths = data.train.target.row_lengths().numpy() - 1
    padding = buckets.padding_fraction(source_lengths, target_lengths)
    size = 512 if args.tiny else 2048
    peak = matmul_peak(size)
    peak_16 = matmul_peak(size, dtype="bfloat16") if any(m for _, m in settings) else None
    flops = flops_per_target_token(config.model, source_lengths.mean() / target_lengths.mean(),
                                   float(source_lengths.mean()))
    runs = [measure(config, data, jit, mixed, args.steps) for jit, mixed in settings]
    for run in runs:
        run_peak = peak if run["precision"] == "float32" else peak_16
        run["hardware_fraction"] = run["target_tokens_per_second"] * flops / (run_peak * 1e9)
    payload = {"config": config.to_dict(), "padding_fraction": padding,
               "matmul_peak_gflops": peak, "matmul_peak_bfloat16_gflops": peak_16,
               "flops_per_target_token": flops, "runs": runs, "tiny": args.tiny}
    rows = [["on" if r["jit_compile"] else "off", r["precision"],
             round(r["target_tokens_per_second"]),
             round(r["sentences_per_second"], 1), f"{100 * padding:.1f} %",
             f"{100 * r['hardware_fraction']:.1f} %", round(r["warm_up_seconds"], 1)]
            for r in runs]
    json_path, md_path = write_results(
        "bench_train", payload,
        ["XLA", "precision", "target tokens/s", "sentences/s", "padding", "of matmul peak",
         "warm-up s"],
        rows, Path(args.results_dir))
    print(md_path.read_text())
    bf16 = f", bfloat16 {peak_16:.0f} GFLOP/s" if peak_16 else ""
    print(f"matmul peak {peak:.0f} GFLOP/s{bf16}; model {flops / 1e6:.1f} MFLOP per target "
          "token")
    return 0


def bench_config(path: str, data_dir: str | None, tiny: bool):
    """The config to measure: `path`, reading `data_dir` when given; with `tiny`, a small
    model on a 600-pair slice with 500-piece vocabularies."""
    from nmt.config import Config

    config = Config.load(path)
    if data_dir:
        config.data.data_dir = data_dir
    if tiny:
        config.data.train_limit, config.data.valid_limit = 600, 50
        config.data.src_vocab_size = config.data.tgt_vocab_size = 500
        config.model.embedding_dim, config.model.encoder_units = 32, 32
        config.model.decoder_units, config.model.attention_units = 64, 32
        config.train.batch_tokens = 512
    return config


def _choices(text: str, allowed: dict[str, bool]) -> list[bool]:
    """Comma-separated names from `allowed`, as their values; a clear error otherwise."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        raise SystemExit(f"error: expected a comma-separated list of {', '.join(allowed)}, "
                         f"got {text!r}")
    return [allowed[name] for name in names]


if __name__ == "__main__":
    sys.exit(main())
