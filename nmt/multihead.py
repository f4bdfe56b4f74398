"""Multi-head attention on our own `nmt.attention.Attention` layer.

Vaswani et al. (2017), section 3.2.2: MultiHead(Q, K, V) = Concat(head_1..head_h) W^O with
head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V). Here each head's `Attention` is
`nmt.attention.Attention` with a score chosen by name, so every score in `SCORES` works
inside a Transformer: `scaled_dot` is the standard one, `dot` drops the scaling, `general`
and `additive` learn their maps per head, `cosine` learns its temperature per head (as in
Swin Transformer v2, Liu et al. 2022), and `mode="hard"` attends to one position per head.
A score added to the registry works here with no other change.

The stages, per head: project the query, keys and values; score, normalise and sum with
the head's `Attention` (masked weights exactly 0); then concatenate the heads and project.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from nmt.attention import Attention, check_mode, check_score


@keras.saving.register_keras_serializable(package="nmt")
class MultiHeadAttention(keras.layers.Layer):
    """`heads` attention heads of size `key_dim`, each an `nmt.attention.Attention`.

    Args:
        heads: number of heads. key_dim: features per head (query, key and value).
        score, mode, units, temperature: as for `nmt.attention.Attention`, for every head;
            each head has weights of its own (e.g. its `general` kernel, `cosine` scale).
        seed: seed of the hard-mode Gumbel noise (head i uses seed + i).

    Call:
        query [batch, tq, dq], keys [batch, ts, dk], values [batch, ts, dv] (default: keys),
        mask [batch, ts] or [batch, tq, ts] boolean (True = attend).
    Returns:
        output [batch, tq, dq] and weights [batch, heads, tq, ts] (float32; exactly 0 at
        masked positions).

    A decoder runs the key side once per source sentence (or once per new target position)
    with `project_keys` and the query side every step with `attend`; `call` is both.
    """

    def __init__(self, heads: int, key_dim: int, score: str = "scaled_dot",
                 mode: str = "soft", units: int | None = None, temperature: float = 1.0,
                 seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        check_score(score)
        check_mode(mode)
        if heads < 1 or key_dim < 1:
            raise ValueError(f"heads and key_dim must be >= 1, received heads={heads}, "
                             f"key_dim={key_dim}")
        self.heads, self.key_dim = heads, key_dim
        self.score, self.mode, self.units = score, mode, units
        self.temperature, self.seed = temperature, seed
        self.attentions = [
            Attention(score=score, mode=mode, units=units, temperature=temperature,
                      seed=None if seed is None else seed + index, name=f"head_{index}")
            for index in range(heads)
        ]
        self.supports_masking = True

    def compute_mask(self, *args, **kwargs):
        return None

    def build(self, query_shape, keys_shape, values_shape=None):
        values_shape = keys_shape if values_shape is None else values_shape
        heads_shape = (None, self.heads, self.key_dim)
        self.query_projection = keras.layers.EinsumDense(
            "btd,dhk->bthk", output_shape=heads_shape, bias_axes="hk", name="query")
        self.key_projection = keras.layers.EinsumDense(
            "btd,dhk->bthk", output_shape=heads_shape, bias_axes="hk", name="key")
        self.value_projection = keras.layers.EinsumDense(
            "btd,dhk->bthk", output_shape=heads_shape, bias_axes="hk", name="value")
        self.output_projection = keras.layers.EinsumDense(
            "bthk,hkd->btd", output_shape=(None, int(query_shape[-1])), bias_axes="d",
            name="output")
        self.query_projection.build(tuple(query_shape))
        self.key_projection.build(tuple(keys_shape))
        self.value_projection.build(tuple(values_shape))
        self.output_projection.build((None, None, self.heads, self.key_dim))
        for attention in self.attentions:
            attention.build((None, None, self.key_dim), (None, None, self.key_dim))
        self.built = True

    def call(self, query, keys, values=None, mask=None, training=False):
        prepared_keys, head_values = self.project_keys(keys, values)
        return self.attend(query, prepared_keys, head_values, mask=mask, training=training)

    def project_keys(self, keys: tf.Tensor, values: tf.Tensor | None = None
                     ) -> tuple[tf.Tensor, tf.Tensor]:
        """The query-independent work: keys [batch, ts, dk], values [batch, ts, dv] ->
        each head's prepared keys [batch, heads, ts, pk] and values [batch, heads, ts, key_dim]
        (pk: what the head's score keeps per key, e.g. `units` for additive)."""
        values = keys if values is None else values
        head_keys = self.key_projection(keys)  # [batch, ts, heads, key_dim]
        prepared = tf.stack([attention.prepare_keys(head_keys[:, :, index])
                             for index, attention in enumerate(self.attentions)], axis=1)
        head_values = tf.transpose(self.value_projection(values), [0, 2, 1, 3])
        return prepared, head_values

    def attend(self, query: tf.Tensor, prepared_keys: tf.Tensor, head_values: tf.Tensor,
               mask: tf.Tensor | None = None, training=False) -> tuple[tf.Tensor, tf.Tensor]:
        """query [batch, tq, dq] against `project_keys`'s outputs -> output [batch, tq, dq],
        weights [batch, heads, tq, ts]."""
        head_queries = self.query_projection(query)  # [batch, tq, heads, key_dim]
        contexts, weights = [], []
        for index, attention in enumerate(self.attentions):
            # score, normalise and weighted sum: the three stages of our layer, per head
            context, head_weights = attention.attend(
                head_queries[:, :, index], prepared_keys[:, index], head_values[:, index],
                mask=mask, training=training)
            contexts.append(context)  # [batch, tq, key_dim]
            weights.append(head_weights)  # [batch, tq, ts]
        output = self.output_projection(tf.stack(contexts, axis=2))  # [batch, tq, dq]
        return output, tf.stack(weights, axis=1)

    def compute_output_shape(self, query_shape, keys_shape, values_shape=None):
        batch, tq = query_shape[0], query_shape[1]
        return tuple(query_shape), (batch, self.heads, tq, keys_shape[1])

    def compute_output_spec(self, query, keys, values=None, mask=None, training=False):
        output_shape, weights_shape = self.compute_output_shape(query.shape, keys.shape)
        return (keras.KerasTensor(output_shape, dtype=self.compute_dtype),
                keras.KerasTensor(weights_shape, dtype="float32"))

    def get_config(self):
        config = super().get_config()
        config.update(heads=self.heads, key_dim=self.key_dim, score=self.score, mode=self.mode,
                      units=self.units, temperature=self.temperature, seed=self.seed)
        return config
