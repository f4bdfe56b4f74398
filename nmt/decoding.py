"""Greedy and beam search over the model's single decoding step, batched in the graph.

Both run a `tf.while_loop` over time steps for the whole batch (finished hypotheses are
masked: they only emit PAD at no cost) and return the attention weights of what they
chose, for plots and alignments. Both are plain functions of `(model, source, ...)`; wrap
them in `tf.function` (as `nmt.translator` does) to run them as one graph.
"""

from __future__ import annotations

import tensorflow as tf

from nmt.attention import NEG_INF
from nmt.tokenizer import BOS_ID, EOS_ID, PAD_ID


def length_penalty(lengths: tf.Tensor, alpha: float | tf.Tensor) -> tf.Tensor:
    """GNMT length penalty (Wu et al. 2016, eq. 14): ((5 + |Y|) / 6) ** alpha."""
    return tf.pow((5.0 + tf.cast(lengths, tf.float32)) / 6.0, alpha)


def greedy_search(model, source: tf.Tensor, max_length: tf.Tensor) -> dict[str, tf.Tensor]:
    """Pick the most probable token at every step.

    Args:
        model: a `nmt.model.TranslationModel`. source: [batch, ts] ids (EOS-terminated, PAD-padded).
        max_length: the most target tokens to produce (EOS included): a scalar, or one
            limit per sentence [batch] so that a sentence's output does not depend on the
            other sentences in its batch.
    Returns:
        tokens [batch, tt] (EOS then PAD), weights [batch, tt, ts], scores [batch] (sum of
        token log-probabilities), lengths [batch] (tokens up to and including EOS).
    """
    # The longest output bounds the steps, so a model with a cache per target position
    # (nmt.transformer) allocates it once.
    memory, state = model.encode(source, training=False,
                                 max_steps=tf.reduce_max(tf.cast(max_length, tf.int32)))
    batch = tf.shape(source)[0]
    max_lengths = tf.broadcast_to(tf.cast(max_length, tf.int32), [batch])

    def step(time, previous, state, finished, scores, tokens, weights):
        logits, state, step_weights = model.decode_step(previous, state, memory)
        log_probs = tf.nn.log_softmax(logits, axis=-1)
        chosen = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
        chosen = tf.where(finished, PAD_ID, chosen)
        gain = tf.gather(log_probs, chosen, batch_dims=1)
        scores += tf.where(finished, 0.0, gain)
        step_weights = tf.where(finished[:, None], 0.0, step_weights)
        finished |= tf.equal(chosen, EOS_ID) | (time + 1 >= max_lengths)
        return (time + 1, chosen, state, finished, scores, tokens.write(time, chosen),
                weights.write(time, step_weights))

    loop_vars = (tf.constant(0), tf.fill([batch], BOS_ID), state, tf.zeros([batch], tf.bool),
                 tf.zeros([batch]), tf.TensorArray(tf.int32, size=0, dynamic_size=True),
                 tf.TensorArray(tf.float32, size=0, dynamic_size=True))
    _, _, _, _, scores, tokens, weights = tf.while_loop(
        lambda time, _p, _s, finished, *_: ~tf.reduce_all(finished),
        step, loop_vars, shape_invariants=_batch_free(loop_vars))
    tokens = tf.transpose(tokens.stack())  # [batch, tt]
    return {
        "tokens": tokens,
        "weights": tf.transpose(weights.stack(), [1, 0, 2]),
        "scores": scores,
        "lengths": _lengths(tokens),
    }


def beam_search(model, source: tf.Tensor, max_length: tf.Tensor, beam_size: int,
                alpha: float | tf.Tensor = 0.0) -> dict[str, tf.Tensor]:
    """Keep the `beam_size` best prefixes per sentence; rank by GNMT-normalised score.

    Finished hypotheses stay in the beam and may only be extended by PAD at no cost, so
    the search ends when every hypothesis of every sentence has emitted EOS (or at
    `max_length`). With `alpha` 0 the ranking is the plain sum of log-probabilities.

    Returns:
        tokens [batch, beam, tt], weights [batch, beam, tt, ts], scores [batch, beam]
        (log-probability / length penalty), log_probs [batch, beam], lengths [batch, beam];
        hypotheses sorted best first.
    """
    # The longest output bounds the steps, so a model with a cache per target position
    # (nmt.transformer) allocates it once.
    memory, state = model.encode(source, training=False,
                                 max_steps=tf.reduce_max(tf.cast(max_length, tf.int32)))
    batch, k = tf.shape(source)[0], beam_size
    max_lengths = tf.broadcast_to(tf.cast(max_length, tf.int32), [batch])[:, None]
    source_length = tf.shape(source)[1]
    # Every sentence gets k copies of its memory and state: batch-major [batch * k, ...].
    memory = tf.nest.map_structure(lambda t: tf.repeat(t, k, axis=0), memory)
    state = tf.nest.map_structure(lambda t: tf.repeat(t, k, axis=0), state)
    # Only the first copy is alive at the start, so step 1 does not pick k equal prefixes.
    log_probs = tf.tile(tf.concat([[0.0], tf.fill([k - 1], NEG_INF)], 0)[None], [batch, 1])
    base = tf.range(batch)[:, None] * k  # row offset of each sentence's beam

    def step(time, previous, state, finished, log_probs, lengths, tokens, weights):
        logits, state, step_weights = model.decode_step(tf.reshape(previous, [-1]), state,
                                                        memory)
        vocab = tf.shape(logits)[-1]
        token_log_probs = tf.reshape(tf.nn.log_softmax(logits, axis=-1), [batch, k, vocab])
        # A finished hypothesis continues only with PAD, at no cost.
        pad_only = tf.one_hot(PAD_ID, vocab, on_value=0.0, off_value=NEG_INF)
        token_log_probs = tf.where(finished[:, :, None], pad_only, token_log_probs)
        candidates = log_probs[:, :, None] + token_log_probs  # [batch, k, vocab]
        new_lengths = lengths[:, :, None] + tf.cast(~finished, tf.int32)[:, :, None]
        ranking = candidates / length_penalty(new_lengths, alpha)
        _, best = tf.math.top_k(tf.reshape(ranking, [batch, -1]), k=k)  # [batch, k]
        origin, chosen = best // vocab, tf.cast(best % vocab, tf.int32)
        rows = tf.reshape(base + origin, [-1])  # which old hypothesis each new one extends
        log_probs = tf.gather(tf.reshape(candidates, [batch, -1]), best, batch_dims=1)
        lengths = tf.gather(new_lengths[:, :, 0], origin, batch_dims=1)
        was_finished = tf.gather(finished, origin, batch_dims=1)
        finished = was_finished | tf.equal(chosen, EOS_ID) | (time + 1 >= max_lengths)
        state = tf.nest.map_structure(lambda t: tf.gather(t, rows), state)
        step_weights = tf.reshape(tf.gather(step_weights, rows), [batch, k, -1])
        step_weights = tf.where(was_finished[:, :, None], 0.0, step_weights)
        tokens = tf.gather(tokens, rows, axis=1)  # history [time, batch * k] follows its beam
        weights = tf.gather(weights, rows, axis=1)
        tokens = tf.concat([tokens, tf.reshape(chosen, [1, -1])], axis=0)
        weights = tf.concat([weights, tf.reshape(step_weights, [1, batch * k, -1])], axis=0)
        return time + 1, chosen, state, finished, log_probs, lengths, tokens, weights

    loop_vars = (tf.constant(0), tf.fill([batch, k], BOS_ID), state, tf.zeros([batch, k], tf.bool),
                 log_probs, tf.zeros([batch, k], tf.int32),
                 tf.zeros([0, batch * k], tf.int32), tf.zeros([0, batch * k, source_length]))
    _, _, _, _, log_probs, lengths, tokens, weights = tf.while_loop(
        lambda time, _p, _s, finished, *_: ~tf.reduce_all(finished),
        step, loop_vars, shape_invariants=_batch_free(loop_vars))
    scores = log_probs / length_penalty(lengths, alpha)
    order = tf.argsort(scores, axis=-1, direction="DESCENDING", stable=True)
    time = tf.shape(tokens)[0]
    tokens = tf.reshape(tf.transpose(tokens), [batch, k, time])
    weights = tf.reshape(tf.transpose(weights, [1, 0, 2]), [batch, k, time, source_length])
    return {
        "tokens": tf.gather(tokens, order, batch_dims=1),
        "weights": tf.gather(weights, order, batch_dims=1),
        "scores": tf.gather(scores, order, batch_dims=1),
        "log_probs": tf.gather(log_probs, order, batch_dims=1),
        "lengths": tf.gather(lengths, order, batch_dims=1),
    }


def _batch_free(loop_vars):
    """Shape invariants with every dimension but the last unknown (batch and time vary)."""
    def free(value):
        if isinstance(value, tf.TensorArray):
            return tf.TensorShape(None)
        shape = tf.TensorShape(value.shape)
        if shape.rank in (None, 0):
            return shape
        return tf.TensorShape([None] * (shape.rank - 1) + [shape[-1]])
    return tf.nest.map_structure(free, loop_vars, expand_composites=False)


def _lengths(tokens: tf.Tensor) -> tf.Tensor:
    """Number of tokens up to and including the first EOS (all non-PAD tokens)."""
    return tf.reduce_sum(tf.cast(tf.not_equal(tokens, PAD_ID), tf.int32), axis=-1)
