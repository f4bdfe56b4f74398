"""nmt.losses.token_losses against a numpy reference: values and gradient."""

import numpy as np
import pytest
import tensorflow as tf

from nmt.losses import token_losses


def numpy_reference(logits: np.ndarray, labels: np.ndarray, mask: np.ndarray,
                    epsilon: float) -> dict[str, float]:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    smoothed = (1 - epsilon) * nll - epsilon * log_probs.mean(axis=-1)
    hits = (log_probs.argmax(axis=-1) == labels).astype(np.float64)
    return {"loss": (smoothed * mask).sum(), "nll": (nll * mask).sum(),
            "correct": (hits * mask).sum(), "tokens": mask.sum()}


@pytest.mark.parametrize("epsilon", [0.0, 0.1])
def test_smoothed_loss_and_its_gradient_match_numpy(epsilon):
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(3, 5, 7))
    labels = rng.integers(0, 7, size=(3, 5))
    mask = np.ones((3, 5), bool)
    mask[1, 3:], mask[2, 1:] = False, False
    variable = tf.Variable(logits.astype(np.float32))
    with tf.GradientTape() as tape:
        sums = token_losses(variable, tf.constant(labels, tf.int32), tf.constant(mask), epsilon)
    expected = numpy_reference(logits, labels, mask, epsilon)
    for key, value in expected.items():
        assert float(sums[key]) == pytest.approx(value, rel=1e-5), key
    # d loss / d logits = (softmax - q) on real tokens, q the smoothed target distribution
    softmax = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    target = np.full(logits.shape, epsilon / 7)
    np.put_along_axis(target, labels[..., None], 1 - epsilon + epsilon / 7, axis=-1)
    np.testing.assert_allclose(tape.gradient(sums["loss"], variable).numpy(),
                               (softmax - target) * mask[..., None], atol=1e-6)


def test_bfloat16_logits_are_scored_in_float32():
    logits = tf.constant([[[1.0, 2.0, 0.5]]], tf.bfloat16)
    sums = token_losses(logits, tf.constant([[1]]), tf.constant([[True]]), 0.1)
    assert all(value.dtype == tf.float32 for value in sums.values())
