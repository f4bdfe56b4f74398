"""Attention with a scoring function chosen by name, soft or hard.

The layer runs the three classic stages, one after the other:

1. score every key against the query            (a score from the `SCORES` registry)
2. normalise the scores into weights            (masked softmax, or a one-hot choice)
3. return the weighted sum of the values        (weights @ values)

Adding a score means writing one small class with `build`, optionally `prepare_keys`,
and `__call__`, and decorating it with `@register_score("name")`; nothing else: the names
listed below, in `Attention`'s docstring and in `train.py --score --help` come from `SCORES`.

Scores: {scores}.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

SCORES: dict[str, type[Score]] = {}
MODES = ("soft", "hard")
# Masked scores are pushed down by a large finite negative (never -inf, which turns into NaN
# gradients). Scores are normalised in float32, so one value serves every dtype policy.
NEG_INF = -1e9


def register_score(name: str):
    """Class decorator that adds a score class to `SCORES` under `name`."""

    def decorator(cls: type[Score]) -> type[Score]:
        SCORES[name] = cls
        cls.name = name
        return cls

    return decorator


def check_score(name: str) -> type[Score]:
    """The score class registered as `name`; ValueError naming the registered ones otherwise.

    The one place a score name is validated: the layer and the config ask here."""
    if name not in SCORES:
        raise ValueError(f"Unknown attention score {name!r}. Expected one of {sorted(SCORES)}.")
    return SCORES[name]


def check_mode(mode: str) -> str:
    """`mode` if it is one of `MODES`; ValueError otherwise."""
    if mode not in MODES:
        raise ValueError(f"Unknown attention mode {mode!r}. Expected one of {list(MODES)}.")
    return mode


def score_names() -> str:
    """The registered score names in registration order: "dot, scaled_dot, ..."."""
    return ", ".join(SCORES)


class Score:
    """A scoring function: `scores[b, i, j]` says how well key j matches query i.

    `build` creates the score's weights on the owning layer (so Keras tracks and saves
    them); `prepare_keys` does the query-independent work on the keys once per source
    sentence (a decoder step then only pays for the query side); `__call__` scores.
    """

    name = "score"
    needs_equal_dims = False  # True when q and k are compared without a learned map

    def __init__(self, units: int | None = None):
        self.units = units

    def build(self, layer: keras.layers.Layer, query_dim: int, key_dim: int) -> None:
        if self.needs_equal_dims and query_dim != key_dim:
            raise ValueError(f"score {self.name!r} needs equal query and key sizes; "
                             f"received query size {query_dim} and key size {key_dim}")

    def prepare_keys(self, keys: tf.Tensor) -> tf.Tensor:
        """keys [batch, ts, dk] -> whatever `__call__` takes as keys [batch, ts, ...]."""
        return keys

    def __call__(self, query: tf.Tensor, keys: tf.Tensor) -> tf.Tensor:
        """query [batch, tq, dq], prepared keys [batch, ts, ...] -> scores [batch, tq, ts]."""
        raise NotImplementedError


@register_score("dot")
class DotScore(Score):
    """Luong et al. (2015), eq. 8 'dot': score(q, k) = q . k"""

    needs_equal_dims = True

    def __call__(self, query, keys):
        return tf.matmul(query, keys, transpose_b=True)


@register_score("scaled_dot")
class ScaledDotScore(Score):
    """Vaswani et al. (2017), eq. 1: score(q, k) = q . k / sqrt(d), keeping logits O(1)."""

    needs_equal_dims = True

    def prepare_keys(self, keys):
        return keys / tf.sqrt(tf.cast(tf.shape(keys)[-1], keys.dtype))

    def __call__(self, query, keys):
        return tf.matmul(query, keys, transpose_b=True)


@register_score("general")
class GeneralScore(Score):
    """Luong et al. (2015), eq. 8 'general': score(q, k) = q^T W k, W of shape [dq, dk]."""

    def build(self, layer, query_dim, key_dim):
        self.kernel = layer.add_weight(name="general_kernel", shape=(query_dim, key_dim),
                                       initializer="glorot_uniform")

    def prepare_keys(self, keys):
        kernel = tf.cast(self.kernel, keys.dtype)  # float16 under a mixed precision policy
        return tf.matmul(keys, kernel, transpose_b=True)  # W k: [batch, ts, dq]

    def __call__(self, query, keys):
        return tf.matmul(query, keys, transpose_b=True)


@register_score("cosine")
class CosineScore(Score):
    """Graves et al. (2014) content addressing: score(q, k) = s * cos(q, k), s learned.

    A plain cosine lies in [-1, 1], so its softmax over 20-30 source positions is almost
    flat. The scale s starts at 10 (Henry et al. 2020 suggest about log2(L^2 - L), which
    is 9-11 for Multi30k's 10-40 token sentences): a cosine gap of 0.3 then already gives
    a 20:1 weight ratio, while training can still sharpen or soften it. Because q and k
    are normalised, multiplying either by a positive number changes nothing.
    """

    needs_equal_dims = True
    initial_scale = 10.0

    def build(self, layer, query_dim, key_dim):
        super().build(layer, query_dim, key_dim)
        self.scale = layer.add_weight(name="cosine_scale", shape=(),
                                      initializer=keras.initializers.Constant(self.initial_scale))

    def prepare_keys(self, keys):
        return tf.math.l2_normalize(keys, axis=-1)

    def __call__(self, query, keys):
        query = tf.math.l2_normalize(query, axis=-1)
        return tf.cast(self.scale, query.dtype) * tf.matmul(query, keys, transpose_b=True)


@register_score("additive")
class AdditiveScore(Score):
    """Bahdanau et al. (2015), eq. 6 (the MLP score): score(q, k) = v . tanh(W1 q + W2 k)."""

    def build(self, layer, query_dim, key_dim):
        units = self.units or query_dim
        self.query_kernel = layer.add_weight(name="additive_query_kernel",
                                             shape=(query_dim, units), initializer="glorot_uniform")
        self.key_kernel = layer.add_weight(name="additive_key_kernel", shape=(key_dim, units),
                                           initializer="glorot_uniform")
        self.vector = layer.add_weight(name="additive_vector", shape=(units,),
                                       initializer="glorot_uniform")

    def prepare_keys(self, keys):
        return tf.matmul(keys, tf.cast(self.key_kernel, keys.dtype))  # W2 k: [batch, ts, units]

    def __call__(self, query, keys):
        query = tf.matmul(query, tf.cast(self.query_kernel, query.dtype))  # W1 q: [b, tq, u]
        hidden = tf.tanh(query[:, :, None, :] + keys[:, None, :, :])  # [batch, tq, ts, units]
        return tf.einsum("bqsu,u->bqs", hidden, tf.cast(self.vector, hidden.dtype))


@keras.saving.register_keras_serializable(package="nmt")
class Attention(keras.layers.Layer):
    """Key-value attention whose scoring function is chosen by name.

    Args:
        score: a name in `SCORES`: {scores}.
        mode: "soft" returns the softmax-weighted average of all values; "hard" attends to
            exactly one position: the argmax of the scores at inference, a Gumbel-softmax
            sample in training with straight-through gradients (Jang et al. 2017).
        units: hidden size of scores that have one (additive); defaults to the query size.
        temperature: Gumbel-softmax temperature for hard training. 1.0 (the default) keeps
            the surrogate gradient as smooth as plain softmax; lower values make the
            backward pass closer to the one-hot forward pass but noisier.
        seed: seed of the Gumbel noise.

    Call:
        query [batch, tq, dq], keys [batch, ts, dk], values [batch, ts, dv] (default: keys),
        mask [batch, ts] boolean, True for a real source token; or [batch, tq, ts], True
        where query i may see key j (a causal mask in decoder self-attention).
    Returns:
        context [batch, tq, dv] and weights [batch, tq, ts]; each weight row sums to 1 over
        the unmasked positions and is exactly 0 at masked ones. The weights are float32 under
        any dtype policy: scores are normalised in float32 (a float16 softmax over long rows
        loses the small weights and its masking constant would overflow), and the context is
        computed in the values' dtype.
    """

    def __init__(self, score: str = "additive", mode: str = "soft", units: int | None = None,
                 temperature: float = 1.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        score_class = check_score(score)
        check_mode(mode)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, received {temperature}")
        self.score = score
        self.mode = mode
        self.units = units
        self.temperature = temperature
        self.seed = seed
        self.scorer = score_class(units=units)
        self.seed_generator = keras.random.SeedGenerator(seed) if mode == "hard" else None
        self.supports_masking = True  # `mask` is the source mask; see compute_mask

    def compute_mask(self, *args, **kwargs):
        return None  # the source mask does not apply to the [batch, tq, ...] outputs

    def build(self, query_shape, keys_shape, values_shape=None):
        self.scorer.build(self, int(query_shape[-1]), int(keys_shape[-1]))
        self.built = True

    def compute_output_shape(self, query_shape, keys_shape, values_shape=None):
        """Shapes of (context [batch, tq, dv], weights [batch, tq, ts]); dv = dk without values."""
        values_shape = keys_shape if values_shape is None else values_shape
        batch, tq = query_shape[0], query_shape[1]
        return (batch, tq, values_shape[-1]), (batch, tq, keys_shape[1])

    def compute_output_spec(self, query, keys, values=None, mask=None, training=False):
        # Keras would give every output the compute dtype; the weights are always float32.
        context_shape, weights_shape = self.compute_output_shape(
            query.shape, keys.shape, None if values is None else values.shape)
        values = keys if values is None else values
        return (keras.KerasTensor(context_shape, dtype=values.dtype),
                keras.KerasTensor(weights_shape, dtype="float32"))

    def call(self, query, keys, values=None, mask=None, training=False):
        values = keys if values is None else values
        return self.attend(query, self.prepare_keys(keys), values, mask=mask, training=training)

    def prepare_keys(self, keys: tf.Tensor) -> tf.Tensor:
        """The query-independent part of scoring; a decoder computes it once per sentence."""
        return self.scorer.prepare_keys(keys)

    def attend(self, query, prepared_keys, values, mask=None, training=False):
        """The three stages, given keys already passed through `prepare_keys`."""
        # 1. Score every key against every query.
        scores = self.scorer(query, prepared_keys)  # [batch, tq, ts]
        # 2. Normalise the scores into weights.
        weights = self.normalise(scores, mask, training)  # [batch, tq, ts]
        # 3. Weighted sum of the values.
        context = tf.matmul(tf.cast(weights, values.dtype), values)  # [batch, tq, dv]
        return context, weights

    def normalise(self, scores, mask=None, training=False):
        """Masked softmax (soft) or a one-hot choice (hard); masked weights are exactly 0.

        Always in float32, whatever the dtype of `scores`. `mask`: [batch, ts] or
        [batch, tq, ts]."""
        scores = tf.cast(scores, tf.float32)
        if mask is not None:
            mask = tf.cast(mask, tf.bool)
            if mask.shape.rank == 2:
                mask = mask[:, None, :]  # [batch, 1, ts]: the same keys for every query
            scores = tf.where(mask, scores, NEG_INF)
        if self.mode == "soft":
            weights = tf.nn.softmax(scores, axis=-1)
        elif training:
            weights = self._gumbel_straight_through(scores)
        else:
            weights = tf.one_hot(tf.argmax(scores, axis=-1), tf.shape(scores)[-1],
                                 dtype=scores.dtype)
        if mask is not None:
            weights *= tf.cast(mask, weights.dtype)  # exact zeros, even for an all-masked row
        return weights

    def _gumbel_straight_through(self, scores):
        """One-hot sample forward, Gumbel-softmax gradient backward."""
        uniform = keras.random.uniform(tf.shape(scores), minval=1e-9, maxval=1.0,
                                       dtype=scores.dtype, seed=self.seed_generator)
        gumbel = -tf.math.log(-tf.math.log(uniform))
        soft = tf.nn.softmax((scores + gumbel) / self.temperature, axis=-1)
        hard = tf.one_hot(tf.argmax(soft, axis=-1), tf.shape(scores)[-1], dtype=soft.dtype)
        return soft + tf.stop_gradient(hard - soft)

    def get_config(self):
        config = super().get_config()
        config.update(score=self.score, mode=self.mode, units=self.units,
                      temperature=self.temperature, seed=self.seed)
        return config


def attention_entropy(weights: tf.Tensor) -> tf.Tensor:
    """Entropy in nats of each weight row [..., ts] -> [...]; 0 for one-hot rows."""
    return -tf.reduce_sum(tf.math.xlogy(weights, weights), axis=-1)


def weight_statistics(matrices: Sequence[np.ndarray]) -> tuple[float, float, int]:
    """How sharp attention is, over every row of some weight matrices [tt, ts] (rows of
    different sentences may differ in length; empty matrices are skipped).

    Returns (mean entropy in nats, mean largest weight, number of rows); NaN, NaN, 0 when
    there are no rows. Hard attention at inference gives 0 and 1."""
    rows = [row for m in matrices if np.size(m) for row in np.asarray(m, np.float64)]
    if not rows:
        return float("nan"), float("nan"), 0
    # Zeros after a shorter row change neither its entropy (xlogy(0, 0) = 0) nor its maximum.
    table = keras.utils.pad_sequences(rows, padding="post", dtype="float64", value=0.0)
    entropies = attention_entropy(tf.constant(table)).numpy()
    return float(entropies.mean()), float(table.max(axis=-1).mean()), len(rows)


def _name_the_scores(text: str | None) -> str | None:
    """`text` with "{scores}" replaced by the registered names (None stays None: python -OO)."""
    return text and text.replace("{scores}", score_names())


__doc__ = _name_the_scores(__doc__)
Attention.__doc__ = _name_the_scores(Attention.__doc__)
