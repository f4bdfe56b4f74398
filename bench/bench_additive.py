#!/usr/bin/env python
"""Why does `additive` attention lag behind `dot` in the attention study? (issue 22)

    python bench/bench_additive.py --data-dir ../shared/corpora/multi30k --epochs 3

Trains the study's RNN (`configs/attention-study.json`, with the cosine schedule and 150
warm-up steps it had when these results were measured) for a fixed number of epochs, not a
wall-clock budget, once per variant below, so that the comparison does not depend on what
else runs on the machine. Per epoch it reports greedy validation BLEU and how sharp the
validation translations' attention is (`val_attention_entropy`, `val_attention_max` in each
run's metrics.json); after training, for the additive variants, how saturated the score's
tanh units are and how large its vector v is. Writes bench/results/bench_additive.*.

Variants: `dot` (the study's best soft score), `additive` (our default initialisation:
glorot-uniform W1, W2 and v), `additive-groundhog` (Bahdanau et al.'s released code,
GroundHog: v = 0 and W1, W2 ~ N(0, 0.001^2)), `additive-units256` (attention_units equal to
the decoder size, Joey NMT's default), `additive-lr1e-3` (a third of the study's rate).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, RESULTS, write_results  # noqa: E402

VARIANTS: dict[str, dict] = {
    "dot": {"model": {"score": "dot"}},
    "additive": {"model": {"score": "additive"}},
    "additive-groundhog": {"model": {"score": "additive"}, "init": "groundhog"},
    "additive-units256": {"model": {"score": "additive", "attention_units": 256}},
    "additive-lr1e-3": {"model": {"score": "additive"}, "train": {"learning_rate": 0.001}},
    "additive-bias": {"model": {"score": "additive"}, "init": "bias"},
}


@contextlib.contextmanager
def additive_initialisation(name: str | None):
    """Swap `AdditiveScore`'s weights while a model is built or loaded (None: ours).

    "groundhog": v = 0, W1 and W2 ~ N(0, 0.001^2). "bias": ours plus a bias b ~ N(0, 1)
    inside the tanh, v . tanh(W1 q + W2 k + b): where b is not 0, tanh's curvature makes
    the score bilinear in q and k from the start, like `general`."""
    import keras

    from nmt.attention import AdditiveScore

    if name is None:
        yield
        return
    original = AdditiveScore.build, AdditiveScore.prepare_keys
    if name == "groundhog":
        AdditiveScore.build = _groundhog_build
    else:
        assert name == "bias", name

        def build(self, layer, query_dim, key_dim):
            original[0](self, layer, query_dim, key_dim)
            self.bias = layer.add_weight(
                name="additive_bias", shape=(self.units or query_dim,),
                initializer=keras.initializers.RandomNormal(stddev=1.0))

        def prepare_keys(self, keys):
            return original[1](self, keys) + self.bias  # W2 k + b: [batch, ts, units]

        AdditiveScore.build, AdditiveScore.prepare_keys = build, prepare_keys
    try:
        yield
    finally:
        AdditiveScore.build, AdditiveScore.prepare_keys = original


def _groundhog_build(self, layer, query_dim, key_dim):
    import keras

    units = self.units or query_dim
    small = keras.initializers.RandomNormal(stddev=0.001)
    self.query_kernel = layer.add_weight(name="additive_query_kernel",
                                         shape=(query_dim, units), initializer=small)
    self.key_kernel = layer.add_weight(name="additive_key_kernel", shape=(key_dim, units),
                                       initializer=small)
    self.vector = layer.add_weight(name="additive_vector", shape=(units,), initializer="zeros")


def variant_config(name: str, epochs: int, data_dir: str, seed: int):
    """The study's base config with the variant's changes, `epochs` epochs and no budget."""
    from nmt.config import Config

    values = Config.load(REPO / "configs" / "attention-study.json").to_dict()
    for section in ("model", "train"):
        values[section].update(VARIANTS[name].get(section, {}))
    # The schedule these results were measured with (the study's config then), kept so that
    # the bench stays comparable with bench/results/bench_additive.json.
    values["train"].update(epochs=epochs, time_budget=None, patience=epochs, seed=seed,
                           lr_schedule="cosine", warmup_steps=150)
    values["data"]["data_dir"] = data_dir
    return Config.from_dict(values)


def train_variant(name: str, run_dir: Path, epochs: int, data_dir: str, seed: int) -> dict:
    """Train (or resume, or skip when finished) one variant; returns its metrics.json."""
    from nmt.training import train

    metrics_file = run_dir / "metrics.json"
    if metrics_file.is_file() and json.loads(metrics_file.read_text()).get("stopped_by"):
        return json.loads(metrics_file.read_text())
    with additive_initialisation(VARIANTS[name].get("init")):
        return train(variant_config(name, epochs, data_dir, seed), run_dir, progress=False)


def saturation(run_dir: Path, data_dir: str, sentences: int = 256) -> dict:
    """For an additive run: the root mean square of the tanh's inputs W1 q + W2 k (near 0,
    tanh is linear and the score v.W2 k no longer depends on the query), the share of tanh
    units beyond |0.99|, the norm of v, and the spread of the scores within a row; on
    teacher-forced validation sentences with the last weights."""
    import tensorflow as tf

    from nmt.data import load_split
    from nmt.tokenizer import PAD_ID
    from nmt.translator import Translator

    translator = Translator.load(run_dir, weights="last.weights.h5")
    model, config = translator.model, translator.config
    if config.model.score != "additive":
        return {}
    sources, targets = load_split("multi30k", "valid", "de", "en", "data", data_dir,
                                  progress=False)
    source, target = translator.teacher_forcing_batch(sources[:sentences], targets[:sentences])
    memory, state = model.encode(source)
    states = model.decoder_states(target, state)
    scorer = model.attention.scorer
    query = tf.matmul(states, scorer.query_kernel)
    inputs = (query[:, :, None, :] + memory["keys"][:, None, :, :]).numpy()
    hidden = np.tanh(inputs)
    scores = np.einsum("bqsu,u->bqs", hidden, scorer.vector.numpy())
    real = memory["mask"].numpy()[:, None, :] & (target != PAD_ID)[:, :, None]
    words = target != PAD_ID
    return {"preactivation_rms": float(np.sqrt(np.mean(inputs[real] ** 2))),
            "query_rms": float(np.sqrt(np.mean(query.numpy()[words] ** 2))),
            "key_rms": float(np.sqrt(np.mean(memory["keys"].numpy()[memory["mask"].numpy()]
                                             ** 2))),
            "saturated": float((np.abs(hidden) > 0.99)[real].mean()),
            "v_norm": float(np.linalg.norm(scorer.vector.numpy())),
            "score_spread": float(np.nanmean(_row_std(scores, real)))}


def _row_std(scores: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Standard deviation of each row's scores over its real source positions."""
    masked = np.where(real, scores, np.nan)
    rows = real.any(axis=-1)
    return np.nanstd(masked[rows], axis=-1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="local Multi30k folder")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--run-root", default="runs/bench-additive",
                        help="one run directory per variant (resumed when run again)")
    args = parser.parse_args(argv)
    results, rows = {}, []
    for name in args.variants:
        run_dir = Path(args.run_root) / name
        metrics = train_variant(name, run_dir, args.epochs, args.data_dir, args.seed)
        epochs = [{key: record.get(key) for key in (
            "epoch", "val_bleu", "val_attention_entropy", "val_attention_max", "loss",
            "tokens_per_second", "learning_rate")} for record in metrics["epochs"]]
        with additive_initialisation(VARIANTS[name].get("init")):
            results[name] = {"epochs": epochs, **saturation(run_dir, args.data_dir)}
        after = results[name]
        for record in epochs:
            last = record is epochs[-1] and "saturated" in after
            rows.append([name, record["epoch"], record["val_bleu"],
                         record["val_attention_entropy"], record["val_attention_max"],
                         record["loss"], after["preactivation_rms"] if last else "",
                         f"{100 * after['saturated']:.0f} %" if last else ""])
        print(name, json.dumps(results[name]), flush=True)
    headers = ["variant", "epoch", "val BLEU (greedy)", "attention entropy (nats)",
               "max weight", "train loss", "tanh input RMS", "tanh units beyond 0.99"]
    write_results("bench_additive", {"epochs": args.epochs, "seed": args.seed,
                                     "variants": results}, headers, rows, RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
