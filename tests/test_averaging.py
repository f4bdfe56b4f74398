"""The exponential moving average of the weights: numbers against numpy, the swap, and a run
that validates and saves the average while its resume checkpoint keeps the raw weights."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from nmt.averaging import WeightAverage
from nmt.config import Config
from nmt.model import Seq2Seq
from nmt.training import train
from nmt.translator import Translator
from tests.helpers import checkpoint_values, tiny_config


def small_model() -> keras.Model:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(2)])
    return model


def values(variables) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in variables]


def test_average_matches_a_numpy_reference():
    model, decay = small_model(), 0.9
    average = WeightAverage(model, decay)
    reference = values(model.trainable_variables)
    rng = np.random.default_rng(0)
    for step in range(30):
        for weight in model.trainable_variables:
            weight.assign(rng.normal(size=weight.shape).astype(np.float32))
        average.update()
        d = min(decay, (1 + step) / (10 + step))
        reference = [d * r + (1 - d) * w for r, w in zip(reference,
                                                         values(model.trainable_variables),
                                                         strict=True)]
    for shadow, expected in zip(average.shadows, reference, strict=True):
        np.testing.assert_allclose(shadow.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert int(average.updates.numpy()) == 30


def test_swapped_holds_the_average_and_then_restores_the_raw_weights():
    model = small_model()
    average = WeightAverage(model, 0.5)
    for weight in model.trainable_variables:
        weight.assign(weight + 1.0)
    average.update()
    raw, averaged = values(model.trainable_variables), values(average.shadows)
    assert not all(np.allclose(r, a) for r, a in zip(raw, averaged, strict=True))
    with pytest.raises(RuntimeError):
        with average.swapped():
            for weight, expected in zip(model.trainable_variables, averaged, strict=True):
                np.testing.assert_array_equal(weight.numpy(), expected)
            with average.swapped():  # nested: still the average, and no double swap
                np.testing.assert_array_equal(model.trainable_variables[0].numpy(), averaged[0])
            np.testing.assert_array_equal(model.trainable_variables[0].numpy(), averaged[0])
            raise RuntimeError("the raw weights must come back even after an error")
    for weight, expected in zip(model.trainable_variables, raw, strict=True):
        np.testing.assert_array_equal(weight.numpy(), expected)
    for shadow, expected in zip(average.shadows, averaged, strict=True):
        np.testing.assert_array_equal(shadow.numpy(), expected)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_decay_out_of_range_is_refused(decay):
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(small_model(), decay)


def test_run_saves_the_average_and_resumes_from_the_raw_weights(tmp_path, multi30k_dir):
    run_dir = tmp_path / "run"
    train(tiny_config(epochs=2, ema_decay=0.9), run_dir, progress=False)
    metrics = train(tiny_config(epochs=3, ema_decay=0.9), run_dir, progress=False)  # resumes
    steps = metrics["batches_per_epoch"]
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    assert metrics["epochs"][-1]["loss"] < metrics["epochs"][0]["loss"] - 0.3
    assert checkpoint_values(run_dir) == {"epoch": 3, "steps": 3 * steps}
    assert Config.load(run_dir / "config.json").train.ema_decay == 0.9

    reader = tf.train.load_checkpoint(str(run_dir / "resume"))
    updates = reader.get_tensor("average/updates/.ATTRIBUTES/VARIABLE_VALUE")
    assert int(updates) == 3 * steps  # the average resumed, not restarted

    last = Translator.load(run_dir, weights="last.weights.h5").model
    raw = Seq2Seq(Config.load(run_dir / "config.json").model)
    raw.build()
    tf.train.Checkpoint(model=raw).restore(
        tf.train.latest_checkpoint(str(run_dir / "resume"))).expect_partial()
    for index, weight in enumerate(last.trainable_variables):
        shadow = reader.get_tensor(f"average/shadows/{index}/.ATTRIBUTES/VARIABLE_VALUE")
        np.testing.assert_allclose(weight.numpy(), shadow, rtol=1e-6, atol=1e-7)
    differences = [np.abs(a.numpy() - b.numpy()).max()
                   for a, b in zip(last.trainable_variables, raw.trainable_variables,
                                   strict=True)]
    assert max(differences) > 1e-3  # the saved weights are the average, not the raw ones
