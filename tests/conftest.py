"""Shared test setup: quiet TensorFlow, the Multi30k mirror, an XLA cache of the session's
own and two tiny models trained once per session (pytest hands these fixtures to any test
that names them)."""

import os
from pathlib import Path

import pytest

from tests.helpers import MULTI30K, tiny_config  # imports no TensorFlow

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # must be set before tensorflow is imported

pytest_plugins = ["tests.browser"]  # the `browser` fixture: a headless Chromium


@pytest.fixture(scope="session")
def multi30k_dir() -> Path:
    if not (MULTI30K / "train.de.gz").exists():
        pytest.fail(f"the Multi30k mirror is missing at {MULTI30K}; tests need it")
    return MULTI30K


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, multi30k_dir) -> Path:
    """Run directory of a tiny de-en model trained on 1,500 real pairs (shared, read-only)."""
    from nmt.training import train

    run_dir = tmp_path_factory.mktemp("tiny_run")
    train(tiny_config(), run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, multi30k_dir) -> Path:
    """A tiny model trained long enough to end its hypotheses with EOS (about 25 s).

    Train it before loading any translator in a module: training reseeds TensorFlow, which
    invalidates every tokenizer loaded earlier (see test_translator_survives_reseeding)."""
    from nmt.training import train

    config = tiny_config(epochs=8, learning_rate=5e-3, patience=8)
    config.data.valid_limit = 20  # validation BLEU after every epoch: keep it cheap
    run_dir = tmp_path_factory.mktemp("trained_run")
    train(config, run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="session", autouse=True)
def xla_cache() -> None:
    """translate.py processes started by tests keep no compiled searches on disk (a user's
    NMT_XLA_CACHE is ignored here); tests/test_xla_cache.py turns the cache on itself."""
    os.environ["NMT_XLA_CACHE"] = "off"
