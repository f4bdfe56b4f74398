"""Masked, label-smoothed cross-entropy over target tokens."""

from __future__ import annotations

import tensorflow as tf


def token_losses(logits: tf.Tensor, labels: tf.Tensor, mask: tf.Tensor,
                 label_smoothing: float = 0.0) -> dict[str, tf.Tensor]:
    """Summed losses over the unmasked target tokens.

    Args:
        logits: [batch, tt, vocab]. labels: [batch, tt] ids. mask: [batch, tt], True for real
        tokens. label_smoothing: epsilon of Szegedy et al. (2016): the target distribution
        puts 1 - epsilon on the label and spreads epsilon uniformly over the vocabulary.
    Returns:
        dict of float32 scalars: `loss` (smoothed, summed), `nll` (plain negative
        log-likelihood, summed, for perplexity), `correct` (argmax hits), `tokens`.
    """
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)  # float32 even in fp16
    nll = -tf.gather(log_probs, labels, batch_dims=2)  # [batch, tt]
    uniform = -tf.reduce_mean(log_probs, axis=-1)  # cross-entropy with the uniform distribution
    smoothed = (1.0 - label_smoothing) * nll + label_smoothing * uniform
    weights = tf.cast(mask, tf.float32)
    hits = tf.cast(tf.equal(tf.argmax(log_probs, axis=-1, output_type=labels.dtype), labels),
                   tf.float32)
    return {
        "loss": tf.reduce_sum(smoothed * weights),
        "nll": tf.reduce_sum(nll * weights),
        "correct": tf.reduce_sum(hits * weights),
        "tokens": tf.reduce_sum(weights),
    }
