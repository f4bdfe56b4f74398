"""Tests for bench/bench_additive.py: the variants' initialisations and their configs."""

import numpy as np
import tensorflow as tf

from bench.bench_additive import VARIANTS, additive_initialisation, variant_config
from nmt.attention import AdditiveScore, Attention


def additive_layer() -> Attention:
    layer = Attention("additive", units=6)
    layer.build((None, None, 4), (None, None, 5))
    return layer


def test_groundhog_starts_with_a_zero_vector_and_tiny_kernels_then_restores_ours():
    original = AdditiveScore.build
    with additive_initialisation("groundhog"):
        assert AdditiveScore.build is not original
        groundhog = additive_layer().scorer
    ours = additive_layer().scorer
    assert not np.any(groundhog.vector.numpy())
    assert np.abs(groundhog.query_kernel.numpy()).max() < 0.01
    assert np.abs(ours.vector.numpy()).max() > 0.01  # glorot again once the block is left
    assert AdditiveScore.build is original


def test_bias_variant_adds_a_bias_inside_the_tanh():
    rng = np.random.default_rng(0)
    query = tf.constant(rng.normal(size=(2, 3, 4)), tf.float32)
    keys = tf.constant(rng.normal(size=(2, 7, 5)), tf.float32)
    with additive_initialisation("bias"):
        layer = additive_layer()
        _, weights = layer(query, keys)
    s = layer.scorer
    hidden = np.tanh((query.numpy() @ s.query_kernel.numpy())[:, :, None, :]
                     + (keys.numpy() @ s.key_kernel.numpy())[:, None, :, :] + s.bias.numpy())
    scores = hidden @ s.vector.numpy()
    expected = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert not hasattr(additive_layer().scorer, "bias")


def test_variant_configs_train_for_fixed_epochs_without_a_budget():
    for name, variant in VARIANTS.items():
        config = variant_config(name, 3, "somewhere", 7)
        assert (config.train.epochs, config.train.time_budget, config.train.seed) == (3, None, 7)
        assert config.model.score == variant["model"]["score"]
        assert config.data.data_dir == "somewhere"
    assert variant_config("additive-lr1e-3", 3, "x", 1).train.learning_rate == 0.001
    assert variant_config("additive-units256", 3, "x", 1).model.attention_units == 256
