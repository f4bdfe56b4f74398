"""Greedy and beam search over the model's single decoding step, batched in the graph.

Both run a `tf.while_loop` over time steps for the whole batch (finished hypotheses are
masked: they only emit PAD at no cost) and return the attention weights of what they
chose, for plots and alignments. Both are plain functions of `(model, source, ...)`; wrap
them in `tf.function` (as `nmt.translator` does) to run them as one graph.

Given `max_steps` (at least every sentence's `max_length`; a Python int, or a tensor that
XLA can fold to a constant), every loop variable has a fixed shape, so the search also
compiles with XLA (`jit_compile=True`):
outputs are then `max_steps` wide, PAD and zero after each hypothesis. Without it the time
axis grows to the longest hypothesis. Beam search keeps its history as one chosen token and
one back-pointer per step and follows the pointers once at the end, instead of reordering
the whole history at every step.
"""

from __future__ import annotations

import tensorflow as tf

from nmt.attention import NEG_INF
from nmt.tokenizer import BOS_ID, EOS_ID, PAD_ID


def length_penalty(lengths: tf.Tensor, alpha: float | tf.Tensor) -> tf.Tensor:
    """GNMT length penalty (Wu et al. 2016, eq. 14): ((5 + |Y|) / 6) ** alpha."""
    return tf.pow((5.0 + tf.cast(lengths, tf.float32)) / 6.0, alpha)


def log_normaliser(logits: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The row maxima m and log(sum(exp(logits - m))) of logits [rows, vocab], in float32
    whatever the model's compute dtype: a token's log-probability is (logit - m) - that, as
    a log-softmax computes it, without writing out the whole [rows, vocab] result."""
    logits = tf.cast(logits, tf.float32)
    maxima = tf.reduce_max(logits, axis=-1, keepdims=True)
    return maxima, tf.math.log(tf.reduce_sum(tf.exp(logits - maxima), axis=-1, keepdims=True))


def best_tokens(logits: tf.Tensor, count: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The `count` most probable tokens of each row of logits [rows, vocab] and their
    float32 log-probabilities, both [rows, count], best first (lower id first on ties)."""
    values, tokens = tf.math.top_k(tf.cast(logits, tf.float32), k=count)
    maxima, normaliser = log_normaliser(logits)
    return (values - maxima) - normaliser, tokens


def greedy_search(model, source: tf.Tensor, max_length: tf.Tensor,
                  max_steps: int | tf.Tensor | None = None) -> dict[str, tf.Tensor]:
    """Pick the most probable token at every step.

    Args:
        model: a `nmt.model.TranslationModel`. source: [batch, ts] ids (EOS-terminated, PAD-padded).
        max_length: the most target tokens to produce (EOS included): a scalar, or one
            limit per sentence [batch] so that a sentence's output does not depend on the
            other sentences in its batch.
        max_steps: a static bound on `max_length` (see the module docstring), or None.
    Returns:
        tokens [batch, tt] (EOS then PAD), weights [batch, tt, ts], scores [batch] (sum of
        token log-probabilities), lengths [batch] (tokens up to and including EOS).
    """
    # The longest output bounds the steps, so a model with a cache per target position
    # (nmt.transformer) allocates it once.
    memory, state = model.encode(source, training=False,
                                 max_steps=_cache_steps(max_length, max_steps))
    batch = tf.shape(source)[0]
    max_lengths = tf.broadcast_to(tf.cast(max_length, tf.int32), [batch])
    if max_steps is None:
        return _greedy_dropping_finished(model, memory, state, max_lengths, source)

    def step(time, previous, state, finished, scores, tokens, weights):
        logits, state, step_weights = model.decode_step(previous, state, memory)
        chosen = tf.argmax(logits, axis=-1, output_type=tf.int32)
        chosen = tf.where(finished, PAD_ID, chosen)
        # The chosen logit is the row's maximum: its log-probability is -log_normaliser.
        gain = -log_normaliser(logits)[1][:, 0]
        scores += tf.where(finished, 0.0, gain)
        step_weights = tf.where(finished[:, None], 0.0, step_weights)
        finished |= tf.equal(chosen, EOS_ID) | (time + 1 >= max_lengths)
        return (time + 1, chosen, state, finished, scores, tokens.write(time, chosen),
                weights.write(time, step_weights))

    loop_vars = (tf.constant(0), tf.fill([batch], BOS_ID), state, tf.zeros([batch], tf.bool),
                 tf.zeros([batch]), _steps_array(tf.int32, max_steps, source.shape[:1]),
                 _steps_array(tf.float32, max_steps, source.shape))
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


def _greedy_dropping_finished(model, memory, state, max_lengths: tf.Tensor,
                              source: tf.Tensor) -> dict[str, tf.Tensor]:
    """`greedy_search` without static shapes: a sentence leaves the batch once it ends, so
    later steps decode only the sentences still running (a batch of 64 sorted by source
    length spends about 30 % of its row-steps on finished sentences otherwise). Each step
    writes its tokens and attention at the sentences' own rows of the full batch."""
    batch, width = tf.shape(source)[0], tf.shape(source)[1]

    def step(time, previous, state, memory, rows, limits, scores, tokens, weights):
        logits, state, step_weights = model.decode_step(previous, state, memory)
        chosen = tf.argmax(logits, axis=-1, output_type=tf.int32)
        # The chosen logit is the row's maximum: its log-probability is -log_normaliser.
        scores = tf.tensor_scatter_nd_add(scores, rows[:, None], -log_normaliser(logits)[1][:, 0])
        tokens = tokens.write(time, tf.scatter_nd(rows[:, None], chosen, [batch]))
        weights = weights.write(time, tf.scatter_nd(rows[:, None], step_weights, [batch, width]))
        running = tf.where(~(tf.equal(chosen, EOS_ID) | (time + 1 >= limits)))[:, 0]
        rows_left = _keep(running, tf.size(rows), (chosen, state, memory, rows, limits))
        return (time + 1, *rows_left, scores, tokens, weights)

    loop_vars = (tf.constant(0), tf.fill([batch], BOS_ID), state, memory, tf.range(batch),
                 max_lengths, tf.zeros([batch]), _steps_array(tf.int32, None, source.shape[:1]),
                 _steps_array(tf.float32, None, source.shape))
    *_, scores, tokens, weights = tf.while_loop(
        lambda _t, _p, _s, _m, rows, *_: tf.size(rows) > 0,
        step, loop_vars, shape_invariants=_rows_free(loop_vars))
    tokens = tf.transpose(tokens.stack())  # [batch, tt]
    return {"tokens": tokens, "weights": tf.transpose(weights.stack(), [1, 0, 2]),
            "scores": scores, "lengths": _lengths(tokens)}


def beam_search(model, source: tf.Tensor, max_length: tf.Tensor, beam_size: int,
                alpha: float | tf.Tensor = 0.0, max_steps: int | tf.Tensor | None = None
                ) -> dict[str, tf.Tensor]:
    """Keep the `beam_size` best prefixes per sentence; rank by GNMT-normalised score.

    Finished hypotheses stay in the beam and may only be extended by PAD at no cost, so
    the search ends when every hypothesis of every sentence has emitted EOS (or at
    `max_length`). With `alpha` 0 the ranking is the plain sum of log-probabilities.
    `max_steps`: as for `greedy_search`.

    Returns:
        tokens [batch, beam, tt], weights [batch, beam, tt, ts], scores [batch, beam]
        (log-probability / length penalty), log_probs [batch, beam], lengths [batch, beam];
        hypotheses sorted best first.
    """
    # The longest output bounds the steps, so a model with a cache per target position
    # (nmt.transformer) allocates it once.
    memory, state = model.encode(source, training=False,
                                 max_steps=_cache_steps(max_length, max_steps))
    batch, k = tf.shape(source)[0], beam_size
    max_lengths = tf.broadcast_to(tf.cast(max_length, tf.int32), [batch])[:, None]
    # Every sentence gets k copies of its memory and state: batch-major [batch * k, ...].
    memory = tf.nest.map_structure(lambda t: tf.repeat(t, k, axis=0), memory)
    state = tf.nest.map_structure(lambda t: tf.repeat(t, k, axis=0), state)
    # Only the first copy is alive at the start, so step 1 does not pick k equal prefixes.
    log_probs = tf.tile(tf.concat([[0.0], tf.fill([k - 1], NEG_INF)], 0)[None], [batch, 1])
    if max_steps is None:
        return _beam_dropping_finished(model, memory, state, max_lengths, log_probs, alpha, k,
                                       source)
    base = tf.range(batch)[:, None] * k  # row offset of each sentence's beam

    def step(time, previous, state, finished, log_probs, lengths, history):
        logits, state, step_weights = model.decode_step(tf.reshape(previous, [-1]), state,
                                                        memory)
        origin, chosen, log_probs, lengths, was_finished = _extend_beams(
            logits, finished, log_probs, lengths, alpha, k)
        finished = was_finished | tf.equal(chosen, EOS_ID) | (time + 1 >= max_lengths)
        rows = tf.reshape(base + origin, [-1])  # which old hypothesis each new one extends
        state = tf.nest.map_structure(lambda t: tf.gather(t, rows), state)
        history = _record(history, time, tf.reshape(chosen, [-1]), rows,
                          _chosen_weights(step_weights, rows, was_finished))
        return time + 1, chosen, state, finished, log_probs, lengths, history

    loop_vars = (tf.constant(0), tf.fill([batch, k], BOS_ID), state, tf.zeros([batch, k], tf.bool),
                 log_probs, tf.zeros([batch, k], tf.int32), _history(source, k, max_steps))
    time, _, _, _, log_probs, lengths, history = tf.while_loop(
        lambda time, _p, _s, finished, *_: ~tf.reduce_all(finished),
        step, loop_vars, shape_invariants=_batch_free(loop_vars))
    tokens, weights = _backtrack(history, time, batch * k, max_steps)  # [tt, batch * k, ...]
    return _best_first(tokens, weights, log_probs, lengths, alpha, k, tf.shape(source)[1])


def _beam_dropping_finished(model, memory, state, max_lengths, log_probs, alpha, k: int,
                            source: tf.Tensor) -> dict[str, tf.Tensor]:
    """`beam_search` without static shapes: a sentence leaves the batch once all its
    hypotheses have ended (see `_greedy_dropping_finished`). Each step's record is written
    at the hypotheses' rows of the full batch; a sentence that has left stays put there
    (PAD, its own row as the back-pointer), and its scores and lengths are kept."""
    batch, width = tf.shape(source)[0], tf.shape(source)[1]
    total, beam_offsets = batch * k, tf.range(k)[None, :]

    def step(time, previous, state, memory, sentences, limits, finished, log_probs, lengths,
             all_log_probs, all_lengths, history):
        logits, state, step_weights = model.decode_step(tf.reshape(previous, [-1]), state,
                                                        memory)
        origin, chosen, log_probs, lengths, was_finished = _extend_beams(
            logits, finished, log_probs, lengths, alpha, k)
        finished = was_finished | tf.equal(chosen, EOS_ID) | (time + 1 >= limits)
        rows = tf.reshape(tf.range(tf.shape(sentences)[0])[:, None] * k + origin, [-1])
        state = tf.nest.map_structure(lambda t: tf.gather(t, rows), state)
        full_rows = tf.reshape(sentences[:, None] * k + beam_offsets, [-1, 1])
        history = _record(
            history, time, tf.scatter_nd(full_rows, tf.reshape(chosen, [-1]), [total]),
            tf.tensor_scatter_nd_update(tf.range(total), full_rows,
                                        tf.reshape(sentences[:, None] * k + origin, [-1])),
            tf.scatter_nd(full_rows, _chosen_weights(step_weights, rows, was_finished),
                          [total, width]))
        all_log_probs = tf.tensor_scatter_nd_update(all_log_probs, sentences[:, None], log_probs)
        all_lengths = tf.tensor_scatter_nd_update(all_lengths, sentences[:, None], lengths)
        running = tf.where(~tf.reduce_all(finished, axis=1))[:, 0]
        running_rows = tf.reshape(running[:, None] * k + tf.cast(beam_offsets, tf.int64), [-1])
        hypotheses = _keep(running_rows, tf.size(finished), (state, memory))
        sentences_left = _keep(running, tf.size(sentences),
                               (chosen, sentences, limits, finished, log_probs, lengths))
        chosen, sentences, limits, finished, log_probs, lengths = sentences_left
        return (time + 1, chosen, *hypotheses, sentences, limits, finished, log_probs, lengths,
                all_log_probs, all_lengths, history)

    lengths = tf.zeros([batch, k], tf.int32)
    loop_vars = (tf.constant(0), tf.fill([batch, k], BOS_ID), state, memory, tf.range(batch),
                 max_lengths, tf.zeros([batch, k], tf.bool), log_probs, lengths, log_probs,
                 lengths, _history(source, k, None))
    time, *_, log_probs, lengths, history = tf.while_loop(
        lambda _t, _p, _s, _m, sentences, *_: tf.size(sentences) > 0,
        step, loop_vars, shape_invariants=_rows_free(loop_vars))
    tokens, weights = _backtrack(history, time, total, None)  # [tt, batch * k, ...]
    return _best_first(tokens, weights, log_probs, lengths, alpha, k, width)


def _keep(running: tf.Tensor, count: tf.Tensor, structures: tuple) -> tuple:
    """`structures` (nests of tensors [count, ...]) cut to their rows `running` [kept], or
    as they are when every row runs on: most steps end no sentence, and copying the
    attention memory for nothing would cost about a tenth of a step."""
    def cut():
        return tf.nest.map_structure(lambda values: tf.gather(values, running), structures)
    return tf.cond(tf.size(running, out_type=count.dtype) < count, cut, lambda: structures)


def _extend_beams(logits, finished, log_probs, lengths, alpha, k: int) -> tuple:
    """One beam step's choice for n sentences: from the logits [n * k, vocab] of their
    hypotheses, which finished [n, k] and their log_probs and lengths [n, k], the k best
    extensions of each sentence. Returns origin (the hypothesis each extends) and chosen
    (its token) [n, k], their log_probs and lengths [n, k], and whether the hypothesis
    extended had finished [n, k].

    Each hypothesis's own k best tokens hold the k best extensions of the whole beam (adding
    its score and dividing by its length penalty keeps a row's order), so the beam is ranked
    among k x k candidates instead of k x vocab."""
    n = tf.shape(finished)[0]
    count = min(k, logits.shape[-1] or k)
    token_scores, tokens = best_tokens(logits, count)  # [n * k, count]
    token_scores = tf.reshape(token_scores, [n, k, count])
    tokens = tf.reshape(tokens, [n, k * count])
    # A finished hypothesis continues only with PAD, at no cost.
    pad_only = tf.concat([[0.0], tf.fill([count - 1], NEG_INF)], 0)
    token_scores = tf.where(finished[:, :, None], pad_only, token_scores)
    tokens = tf.where(tf.repeat(finished, count, axis=1), PAD_ID, tokens)
    candidates = log_probs[:, :, None] + token_scores  # [n, k, count]
    new_lengths = lengths[:, :, None] + tf.cast(~finished, tf.int32)[:, :, None]
    ranking = candidates / length_penalty(new_lengths, alpha)
    _, best = tf.math.top_k(tf.reshape(ranking, [n, -1]), k=k)  # [n, k]
    origin, chosen = best // count, tf.gather(tokens, best, batch_dims=1)
    return (origin, chosen, tf.gather(tf.reshape(candidates, [n, -1]), best, batch_dims=1),
            tf.gather(new_lengths[:, :, 0], origin, batch_dims=1),
            tf.gather(finished, origin, batch_dims=1))


def _chosen_weights(step_weights: tf.Tensor, rows: tf.Tensor, was_finished: tf.Tensor):
    """The attention [n * k, ts] of each new hypothesis: its origin's (`rows` [n * k]) of
    this step's `step_weights` [n * k, ts], zero where the origin had finished [n, k]."""
    chosen = tf.gather(step_weights, rows)
    return tf.where(tf.reshape(was_finished, [-1])[:, None], 0.0, chosen)


def _best_first(tokens, weights, log_probs, lengths, alpha, k: int, source_length) -> dict:
    """The beams' hypotheses from `_backtrack` (tokens [tt, batch * k], weights
    [tt, batch * k, ts]) and their log_probs and lengths [batch, k] as `beam_search`'s
    output: [batch, k, ...], sorted by normalised score, best first (stable on ties)."""
    batch = tf.shape(log_probs)[0]
    scores = log_probs / length_penalty(lengths, alpha)
    order = tf.argsort(scores, axis=-1, direction="DESCENDING", stable=True)
    tokens = tf.reshape(tf.transpose(tokens), [batch, k, -1])
    weights = tf.reshape(tf.transpose(weights, [1, 0, 2]),
                         [batch, k, tf.shape(weights)[0], source_length])
    return {
        "tokens": tf.gather(tokens, order, batch_dims=1),
        "weights": tf.gather(weights, order, batch_dims=1),
        "scores": tf.gather(scores, order, batch_dims=1),
        "log_probs": tf.gather(log_probs, order, batch_dims=1),
        "lengths": tf.gather(lengths, order, batch_dims=1),
    }


def _history(source: tf.Tensor, beam_size: int, max_steps: int | tf.Tensor | None) -> tuple:
    """Empty per-step records of a beam search over `source` [batch, ts]: chosen tokens
    [batch * beam], back-pointers [batch * beam] and attention weights [batch * beam, ts]."""
    rows = None if source.shape[0] is None else source.shape[0] * beam_size
    return (_steps_array(tf.int32, max_steps, [rows]), _steps_array(tf.int32, max_steps, [rows]),
            _steps_array(tf.float32, max_steps, [rows, source.shape[1]]))


def _record(history: tuple, time: tf.Tensor, chosen: tf.Tensor, rows: tf.Tensor,
            weights: tf.Tensor) -> tuple:
    """`history` with step `time` written: the token each hypothesis chose [batch * beam],
    the old hypothesis it extends [batch * beam] and its attention [batch * beam, ts]."""
    tokens, parents, attention = history
    return tokens.write(time, chosen), parents.write(time, rows), attention.write(time, weights)


def _backtrack(history: tuple, steps: tf.Tensor, rows: tf.Tensor,
               max_steps: int | tf.Tensor | None) -> tuple[tf.Tensor, tf.Tensor]:
    """Follow the back-pointers from the last step to the first.

    Returns:
        tokens [tt, rows] and attention weights [tt, rows, ts] of every final hypothesis;
        tt is `max_steps` when given (PAD and zeros after `steps`), otherwise `steps`.
    """
    tokens, parents, attention = history
    size = steps if max_steps is None else max_steps
    out_tokens = tf.TensorArray(tf.int32, size=size, element_shape=tokens.element_shape)
    out_attention = tf.TensorArray(tf.float32, size=size, element_shape=attention.element_shape)

    def follow(time, current, out_tokens, out_attention):
        out_tokens = out_tokens.write(time, tf.gather(tokens.read(time), current))
        out_attention = out_attention.write(time, tf.gather(attention.read(time), current))
        return time - 1, tf.gather(parents.read(time), current), out_tokens, out_attention

    _, _, out_tokens, out_attention = tf.while_loop(
        lambda time, *_: time >= 0, follow,
        (steps - 1, tf.range(rows), out_tokens, out_attention))
    return out_tokens.stack(), out_attention.stack()


def _cache_steps(max_length: tf.Tensor, max_steps: int | tf.Tensor | None) -> int | tf.Tensor:
    """Decoding steps to come: the static `max_steps` when given (a static cache shape under
    XLA), otherwise the longest `max_length`."""
    if max_steps is not None:
        return max_steps
    return tf.reduce_max(tf.cast(max_length, tf.int32))


def _steps_array(dtype: tf.DType, max_steps: int | tf.Tensor | None,
                 element_shape) -> tf.TensorArray:
    """One entry per time step: `max_steps` of them (static), or growing as needed."""
    if max_steps is None:
        return tf.TensorArray(dtype, size=0, dynamic_size=True, element_shape=element_shape)
    return tf.TensorArray(dtype, size=max_steps, element_shape=element_shape)


def _batch_free(loop_vars):
    """Shape invariants with every dimension but the last unknown (batch and time vary)."""
    return _invariants(loop_vars, lambda shape: [None] * (shape.rank - 1) + [shape[-1]])


def _rows_free(loop_vars):
    """Shape invariants with the first dimension unknown: the rows still decoding shrink."""
    return _invariants(loop_vars, lambda shape: [None, *shape[1:]])


def _invariants(loop_vars, free):
    """Shape invariants of `loop_vars`: any shape for a TensorArray, a scalar's own, and
    `free(shape)` for every other tensor."""
    def invariant(value):
        if isinstance(value, tf.TensorArray):
            return tf.TensorShape(None)
        shape = tf.TensorShape(value.shape)
        return shape if shape.rank in (None, 0) else tf.TensorShape(free(shape))
    return tf.nest.map_structure(invariant, loop_vars, expand_composites=False)


def _lengths(tokens: tf.Tensor) -> tf.Tensor:
    """Number of tokens up to and including the first EOS (all non-PAD tokens)."""
    return tf.reduce_sum(tf.cast(tf.not_equal(tokens, PAD_ID), tf.int32), axis=-1)
