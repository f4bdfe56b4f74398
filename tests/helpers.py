"""Shared test helpers: paths, the tiny config, and readers of a run directory.

The fixtures built on them (`multi30k_dir`, `tiny_run`) live in `tests/conftest.py`, where
pytest finds them without an import.
"""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The real Multi30k files sit next to the project's root (shared/corpora/multi30k/).
MULTI30K = REPO.parent / "shared" / "corpora" / "multi30k"


def tiny_config(**train_overrides):
    """A small de-en config that trains in well under a minute on 2 cores."""
    from nmt.config import Config

    train = {"epochs": 3, "batch_tokens": 1024, "learning_rate": 3e-3, "lr_schedule": "constant",
             "warmup_steps": 0, "label_smoothing": 0.1, "seed": 7, "jit_compile": False,
             "patience": 5, "bucket_boundaries": [12, 16, 24, 32, 48], "time_budget": None,
             "mixed_precision": False}
    train.update(train_overrides)
    return Config.from_dict({
        "data": {"src": "de", "tgt": "en", "data_dir": str(MULTI30K), "train_limit": 1500,
                 "valid_limit": 100, "src_vocab_size": 600, "tgt_vocab_size": 600,
                 "max_length": 48},
        "model": {"embedding_dim": 32, "encoder_units": 32, "decoder_units": 64,
                  "attention_units": 32, "score": "general", "dropout": 0.1,
                  "tie_embeddings": False},
        "train": train,
    })


def read_metrics(run_dir: Path) -> dict:
    """A run directory's metrics.json."""
    return json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))


def checkpoint_values(run_dir: Path) -> dict[str, int]:
    """Epoch and optimizer step stored in the latest resume/ checkpoint."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(run_dir / "resume"))
    keys = reader.get_variable_to_shape_map()
    (epoch,) = [k for k in keys if k.startswith("epoch/")]
    (steps,) = [k for k in keys if k.startswith("optimizer/") and "iterations" in k]
    return {"epoch": int(reader.get_tensor(epoch)), "steps": int(reader.get_tensor(steps))}


def assert_clean_error(code, out, err, *fragments):
    """A command failed with exit code 2 and one `error: ...` line naming every fragment."""
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    message = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(message) == 1, err
    for fragment in fragments:
        assert fragment in message[0]


def step_through(model, source, target_in, max_steps: int | None = None):
    """`decode_step` over every target position of a teacher-forced batch: logits
    [b, tt, V] and weights [b, tt, ts]. `max_steps`: the decoder-step buffer a Transformer
    allocates in `encode` (default: the target length; the RNN ignores it)."""
    import numpy as np

    memory, state = model.encode(source, max_steps=max_steps or target_in.shape[1])
    all_logits, all_weights = [], []
    for position in range(target_in.shape[1]):
        logits, state, weights = model.decode_step(target_in[:, position], state, memory)
        all_logits.append(np.asarray(logits))
        all_weights.append(np.asarray(weights))
    return np.stack(all_logits, axis=1), np.stack(all_weights, axis=1)
