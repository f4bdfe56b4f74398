"""Shared test setup: quiet TensorFlow, the Multi30k mirror and a tiny model trained once per
session (pytest hands these fixtures to any test that names them)."""

import os
from pathlib import Path

import pytest

from tests.helpers import MULTI30K, tiny_config  # imports no TensorFlow

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # must be set before tensorflow is imported


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
