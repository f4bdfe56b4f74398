"""A pre-layer-norm Transformer encoder-decoder on our own attention layer.

Vaswani et al. (2017) with the layer norm moved in front of each sublayer (Xiong et al.
2020, "pre-LN": x + Sublayer(LayerNorm(x)), and one final LayerNorm per stack), which
trains without a long warm-up. Every attention is `nmt.multihead.MultiHeadAttention`, whose
heads are `nmt.attention.Attention` layers, so `model.score` and `model.attention_mode`
choose the score and the soft/hard normalisation of every head, as they do for the RNN.

Masks: padding in every attention (source keys), padding and causality in decoder
self-attention; masked weights are exactly 0.

Decoding uses the interface of `nmt.model.Seq2Seq` (`encode`, then `decode_step` per
target token), so `nmt.decoding`'s greedy and beam search run it unchanged. The decoder's
self-attention keys and values of earlier target positions are cached in the state, in a
buffer of fixed size (`max_steps` slots, written by position), batch-first so that beam
search reorders it with `tf.gather`: a step computes only the new position.

Alignment: each translation's attention matrix [tt, ts] (plots, alignments, the web page)
is the head-average of the cross-attention of one layer, `model.alignment_layer`; by
default the penultimate layer (the only one in a one-layer model), which Garg et al. (2019,
section 5) found to align best of a 6-layer Transformer, and which measured best here too:
`bench/bench_alignment_layer.py` teacher-forces the shipped `multi30k-de-en-transformer`
(3 layers) and the RNN `multi30k-de-en` on 300 test_2016_flickr references and counts how
often a target word's strongest source word agrees: layer 1 70.6 %, layer 2 (the
penultimate) 77.6 %, layer 3 62.0 % (bench/results/bench_alignment_layer.md).
`attention_heads` returns every layer and head.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from nmt.config import ModelConfig
from nmt.model import Memory, State, TranslationModel, word_dropout_layer
from nmt.multihead import MultiHeadAttention
from nmt.tokenizer import BOS_ID, EOS_ID, PAD_ID


def sinusoidal_positions(positions: tf.Tensor, dim: int) -> tf.Tensor:
    """Vaswani et al. (2017), section 3.5: sin(pos / 10000^(2i/d)) in the first half of the
    features, cos in the second. positions int [...] -> float32 [..., dim]."""
    half = (dim + 1) // 2
    rates = tf.exp(-math.log(10000.0) * tf.range(half, dtype=tf.float32) * 2.0 / dim)
    angles = tf.cast(positions, tf.float32)[..., None] * rates  # [..., half]
    return tf.concat([tf.sin(angles), tf.cos(angles)], axis=-1)[..., :dim]


@keras.saving.register_keras_serializable(package="nmt")
class PositionEmbedding(keras.layers.Layer):
    """Position ids [...] -> vectors [..., dim]: fixed sinusoids, or a learned table of
    `max_positions` rows (later positions reuse the last row)."""

    def __init__(self, kind: str, dim: int, max_positions: int = 512, **kwargs):
        super().__init__(**kwargs)
        if kind not in ("sinusoidal", "learned"):
            raise ValueError(f"Unknown positions {kind!r}. Expected one of "
                             "['sinusoidal', 'learned'].")
        self.kind, self.dim, self.max_positions = kind, dim, max_positions

    def build(self, input_shape=None):
        if self.kind == "learned":
            self.embeddings = self.add_weight(name="embeddings",
                                              shape=(self.max_positions, self.dim),
                                              initializer=keras.initializers.RandomNormal(
                                                  stddev=0.02))
        self.built = True

    def call(self, positions):
        if self.kind == "sinusoidal":
            return tf.cast(sinusoidal_positions(positions, self.dim), self.compute_dtype)
        positions = tf.minimum(positions, self.max_positions - 1)
        return tf.gather(tf.cast(self.embeddings, self.compute_dtype), positions)

    def get_config(self):
        config = super().get_config()
        config.update(kind=self.kind, dim=self.dim, max_positions=self.max_positions)
        return config


class _Sublayers(keras.layers.Layer):
    """What both layer kinds share: attention settings and the feed-forward network."""

    def __init__(self, model_dim: int, heads: int, ffn_dim: int, dropout: float = 0.0,
                 score: str = "scaled_dot", mode: str = "soft", units: int | None = None,
                 temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.model_dim, self.heads, self.ffn_dim, self.dropout_rate = (model_dim, heads,
                                                                        ffn_dim, dropout)
        self.score, self.mode, self.units, self.temperature = score, mode, units, temperature
        self.ffn_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="ffn_norm")
        self.ffn_hidden = keras.layers.Dense(ffn_dim, activation="relu", name="ffn_hidden")
        self.ffn_output = keras.layers.Dense(model_dim, name="ffn_output")
        self.dropout = keras.layers.Dropout(dropout)

    def attention(self, name: str) -> MultiHeadAttention:
        return MultiHeadAttention(self.heads, self.model_dim // self.heads, score=self.score,
                                  mode=self.mode, units=self.units,
                                  temperature=self.temperature, name=name)

    def build_sublayers(self, attentions: list[MultiHeadAttention], norms: list) -> None:
        shape = (None, None, self.model_dim)
        for attention in attentions:
            attention.build(shape, shape)
        for norm in (*norms, self.ffn_norm):
            norm.build(shape)
        self.ffn_hidden.build(shape)
        self.ffn_output.build((None, None, self.ffn_dim))
        self.built = True

    def feed_forward(self, x, training):
        """x + FFN(LayerNorm(x)), FFN(y) = W2 relu(W1 y + b1) + b2 (Vaswani eq. 2)."""
        hidden = self.ffn_hidden(self.ffn_norm(x))
        return x + self.dropout(self.ffn_output(hidden), training=training)

    def get_config(self):
        config = super().get_config()
        config.update(model_dim=self.model_dim, heads=self.heads, ffn_dim=self.ffn_dim,
                      dropout=self.dropout_rate, score=self.score, mode=self.mode,
                      units=self.units, temperature=self.temperature)
        return config


@keras.saving.register_keras_serializable(package="nmt")
class EncoderLayer(_Sublayers):
    """x [batch, ts, d], source_mask [batch, ts] -> x [batch, ts, d]: self-attention, FFN."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.self_attention = self.attention("self_attention")
        self.attention_norm = keras.layers.LayerNormalization(epsilon=1e-6,
                                                              name="attention_norm")

    def build(self, input_shape=None):
        self.build_sublayers([self.self_attention], [self.attention_norm])

    def call(self, x, source_mask, training=False):
        normed = self.attention_norm(x)
        attended, _ = self.self_attention(normed, normed, mask=source_mask, training=training)
        x = x + self.dropout(attended, training=training)
        return self.feed_forward(x, training)


@keras.saving.register_keras_serializable(package="nmt")
class DecoderLayer(_Sublayers):
    """Masked self-attention, cross-attention on the encoder output, FFN; all pre-LN.

    `call` runs all target positions at once (teacher forcing); `step` runs one position
    against the cached keys and values of the earlier ones.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.self_attention = self.attention("self_attention")
        self.cross_attention = self.attention("cross_attention")
        self.self_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="self_norm")
        self.cross_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="cross_norm")

    def build(self, input_shape=None):
        self.build_sublayers([self.self_attention, self.cross_attention],
                             [self.self_norm, self.cross_norm])

    def call(self, x, target_mask, memory_keys, memory_values, source_mask, training=False):
        """x [batch, tt, d], target_mask [batch, tt, tt] (causal and padding), memory_keys
        and memory_values: the cross-attention's `project_keys` of the encoder output,
        source_mask [batch, ts] -> x [batch, tt, d], cross weights [batch, heads, tt, ts]."""
        normed = self.self_norm(x)
        attended, _ = self.self_attention(normed, normed, mask=target_mask, training=training)
        x = x + self.dropout(attended, training=training)
        return self._cross_and_feed_forward(x, memory_keys, memory_values, source_mask,
                                            training)

    def step(self, x, slot, visible, cached_keys, cached_values, memory_keys, memory_values,
             source_mask, training=False):
        """One target position.

        Args:
            x: [batch, 1, d]. slot: [batch, T] True at this position's cache slot.
            visible: [batch, T] True for this and the earlier positions.
            cached_keys, cached_values: this layer's self-attention cache [batch, heads, T,
                pk] and [batch, heads, T, key_dim]. memory_keys, memory_values, source_mask:
                as for `call`.
        Returns:
            x [batch, 1, d], the caches with this position written, cross weights
            [batch, heads, 1, ts].
        """
        normed = self.self_norm(x)
        new_keys, new_values = self.self_attention.project_keys(normed)  # [b, heads, 1, .]
        cached_keys = tf.where(slot[:, None, :, None], new_keys, cached_keys)
        cached_values = tf.where(slot[:, None, :, None], new_values, cached_values)
        attended, _ = self.self_attention.attend(normed, cached_keys, cached_values,
                                                 mask=visible, training=training)
        x = x + self.dropout(attended, training=training)
        x, weights = self._cross_and_feed_forward(x, memory_keys, memory_values, source_mask,
                                                  training)
        return x, cached_keys, cached_values, weights

    def _cross_and_feed_forward(self, x, memory_keys, memory_values, source_mask, training):
        attended, weights = self.cross_attention.attend(self.cross_norm(x), memory_keys,
                                                        memory_values, mask=source_mask,
                                                        training=training)
        x = x + self.dropout(attended, training=training)
        return self.feed_forward(x, training), weights


@keras.saving.register_keras_serializable(package="nmt")
class Transformer(TranslationModel):
    """Pre-LN Transformer encoder-decoder built from a `ModelConfig` (architecture
    "transformer"), with the interface of `nmt.model.Seq2Seq`.

    `call((source, target_in))` returns logits [batch, tt, vocab] and the alignment layer's
    head-averaged cross-attention [batch, tt, ts]; `attention_heads` returns every layer and
    head; `encode` + `decode_step` are what greedy and beam search run.
    """

    def __init__(self, config: ModelConfig | dict, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        self.source_embedding = keras.layers.Embedding(c.src_vocab_size, c.model_dim,
                                                       name="source_embedding")
        self.target_embedding = (self.source_embedding if c.share_embeddings else
                                 keras.layers.Embedding(c.tgt_vocab_size, c.model_dim,
                                                        name="target_embedding"))
        self.source_positions = PositionEmbedding(c.positions, c.model_dim, c.max_positions,
                                                  name="source_positions")
        self.target_positions = PositionEmbedding(c.positions, c.model_dim, c.max_positions,
                                                  name="target_positions")
        sizes = dict(model_dim=c.model_dim, heads=c.heads, ffn_dim=c.ffn_dim, dropout=c.dropout,
                     score=c.score, mode=c.attention_mode, units=c.attention_units,
                     temperature=c.hard_temperature)
        self.encoder_layers = [EncoderLayer(**sizes, name=f"encoder_{index}")
                               for index in range(c.layers)]
        self.decoder_layers = [DecoderLayer(**sizes, name=f"decoder_{index}")
                               for index in range(c.layers)]
        self.encoder_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="encoder_norm")
        self.decoder_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="decoder_norm")
        self.dropout = keras.layers.Dropout(c.dropout)
        self.drop_words = word_dropout_layer(c.word_dropout, sequence=True)
        if not c.tie_embeddings:
            self.output_layer = keras.layers.Dense(c.tgt_vocab_size, name="output")
        self.alignment_layer = (c.alignment_layer if c.alignment_layer is not None
                                else max(c.layers - 2, 0))

    # ----------------------------------------------------------------- building blocks
    def _embed(self, embedding, positions_layer, tokens, positions, training):
        """tokens and positions [batch, t] -> E[token] * sqrt(d) + P[position] [batch, t, d]
        (Vaswani et al. 2017, section 3.4), with word dropout and dropout."""
        vectors = embedding(tokens) * tf.cast(math.sqrt(self.config.model_dim),
                                              self.compute_dtype)
        vectors = self.drop_words(vectors, training=training) + positions_layer(positions)
        return self.dropout(vectors, training=training)

    def encode(self, source, training=False, max_steps=None) -> tuple[Memory, State]:
        """Source ids [batch, ts] -> memory and the decoder's initial state.

        Args:
            source: [batch, ts] ids, PAD-padded.
            max_steps: slots of the self-attention cache, at least the number of
                `decode_step` calls to come (an int, or a scalar tensor); default 2 * ts + 5,
                the translator's default length limit.
        Returns:
            memory {"keys" [batch, layers, heads, ts, pk], "values" [batch, layers, heads,
            ts, key_dim], "mask" [batch, ts]}: each decoder layer's cross-attention keys and
            values, projected once per sentence; state {"position" [batch] int32, "keys"
            [batch, layers, heads, max_steps, pk], "values" [batch, layers, heads,
            max_steps, key_dim]}: the next target position and the self-attention cache.
        """
        mask = tf.not_equal(source, PAD_ID)  # [batch, ts]
        batch, length = tf.shape(source)[0], tf.shape(source)[1]
        positions = tf.broadcast_to(tf.range(length)[None, :], [batch, length])
        states = self._embed(self.source_embedding, self.source_positions, source, positions,
                             training)
        for layer in self.encoder_layers:
            states = layer(states, mask, training=training)
        states = self.encoder_norm(states)  # [batch, ts, d]
        projected = [layer.cross_attention.project_keys(states) for layer in self.decoder_layers]
        memory = {"keys": tf.stack([keys for keys, _ in projected], axis=1),
                  "values": tf.stack([values for _, values in projected], axis=1),
                  "mask": mask}
        steps = 2 * length + 5 if max_steps is None else max_steps
        return memory, self._empty_cache(states, steps)

    def _empty_cache(self, states, steps) -> State:
        """Position 0 and a zero self-attention cache of `steps` slots per layer."""
        batch = tf.shape(states)[0]
        # The score decides what a prepared key holds (pk); ask it with zero positions.
        keys, values = self.decoder_layers[0].self_attention.project_keys(states[:, :0])
        c = self.config
        head_dim = c.model_dim // c.heads
        return {
            "position": tf.zeros([batch], tf.int32),
            "keys": tf.zeros([batch, c.layers, c.heads, steps, keys.shape[-1]], keys.dtype),
            "values": tf.zeros([batch, c.layers, c.heads, steps, head_dim], values.dtype),
        }

    def decode_step(self, tokens, state: State, memory: Memory, training=False):
        """One decoder step: only the new position is computed, the earlier ones are cached.

        Args:
            tokens: previous target ids [batch]. state, memory: as returned by `encode` or
            the previous step (tiled and reordered by beam search).
        Returns:
            logits [batch, vocab], the new state, the alignment layer's head-averaged
            cross-attention weights [batch, ts].
        """
        position = state["position"]  # [batch]
        slots = tf.range(tf.shape(state["keys"])[3])[None, :]  # [1, T]
        # A no-op under XLA; in graph mode it stops a search that outgrows the cache.
        tf.debugging.assert_less(position, tf.shape(state["keys"])[3],
                                 message="decode_step: more steps than encode's max_steps")
        slot, visible = tf.equal(slots, position[:, None]), slots <= position[:, None]
        x = self._embed(self.target_embedding, self.target_positions, tokens[:, None],
                        position[:, None], training)  # [batch, 1, d]
        keys, values, weights = [], [], []
        for index, layer in enumerate(self.decoder_layers):
            x, layer_keys, layer_values, layer_weights = layer.step(
                x, slot, visible, state["keys"][:, index], state["values"][:, index],
                memory["keys"][:, index], memory["values"][:, index], memory["mask"],
                training=training)
            keys.append(layer_keys)
            values.append(layer_values)
            weights.append(layer_weights)
        logits = self._logits(x, training)[:, 0]
        new_state = {"position": position + 1, "keys": tf.stack(keys, axis=1),
                     "values": tf.stack(values, axis=1)}
        alignment = tf.reduce_mean(weights[self.alignment_layer][:, :, 0], axis=1)
        return logits, new_state, alignment

    def _logits(self, x, training):
        """Final layer norm, then the output projection (or E^T when tied): [.., vocab]."""
        features = self.decoder_norm(x)
        if self.config.tie_embeddings:
            embeddings = tf.cast(self.target_embedding.embeddings, features.dtype)
            return tf.matmul(features, embeddings, transpose_b=True)
        return self.output_layer(features)

    # ------------------------------------------------------------------ teacher forcing
    def call(self, inputs, training=False):
        logits, weights = self._decode_all(inputs, training)
        return logits, tf.reduce_mean(weights[self.alignment_layer], axis=1)

    def attention_heads(self, source, target_in) -> tf.Tensor:
        """Cross-attention of every layer and head for a given translation (teacher forced,
        so equal to what `decode_step` computed for it): [batch, layers, heads, tt, ts]."""
        _, weights = self._decode_all((source, target_in), training=False)
        return tf.stack(weights, axis=1)

    def _decode_all(self, inputs, training):
        """All target positions at once: logits [batch, tt, vocab] and, per layer, the
        cross-attention weights [batch, heads, tt, ts]."""
        source, target_in = inputs
        memory, _ = self.encode(source, training=training, max_steps=0)
        batch, length = tf.shape(target_in)[0], tf.shape(target_in)[1]
        positions = tf.broadcast_to(tf.range(length)[None, :], [batch, length])
        causal = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)  # j <= i
        target_mask = causal[None] & tf.not_equal(target_in, PAD_ID)[:, None, :]
        x = self._embed(self.target_embedding, self.target_positions, target_in, positions,
                        training)
        weights = []
        for index, layer in enumerate(self.decoder_layers):
            x, layer_weights = layer(x, target_mask, memory["keys"][:, index],
                                     memory["values"][:, index], memory["mask"],
                                     training=training)
            weights.append(layer_weights)
        return self._logits(x, training), weights

    def build(self, input_shape=None):
        """Create every weight by running a dummy batch (Keras calls this when loading)."""
        self.built = True  # set first: the dummy call below must not come back here
        for layer in self.decoder_layers:  # `encode` projects keys before the first call
            layer.build((None, None, self.config.model_dim))
        dummy = tf.constant([[BOS_ID, EOS_ID]], dtype=tf.int32)
        self.call((dummy, dummy), training=False)
