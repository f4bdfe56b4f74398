"""The recurrent encoder-decoder with selectable attention, and its single decoding step.

Encoder: embedding + bidirectional GRU (or LSTM) layers. Decoder: embedding + GRU (or LSTM)
layers + the `Attention` layer + Luong's attentional hidden state h~ = tanh(Wc [h; c]) +
output layer.

Without input feeding the decoder runs its GRUs over the whole target sequence at once and
attends for all positions in one batched matmul; with input feeding (Luong et al. 2015,
section 3.3) h~ of step t-1 is part of the input at step t, so training steps through time
with the same `decode_step` that greedy and beam search use.

`TranslationModel` holds what every architecture shares (training step, metrics, config);
`make_model` builds the one `ModelConfig.architecture` names (the Transformer lives in
`nmt.transformer`).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from nmt import distribute
from nmt.attention import Attention
from nmt.config import ModelConfig
from nmt.losses import token_losses
from nmt.tokenizer import BOS_ID, EOS_ID, PAD_ID

# {"hidden": [batch, layers, units], "feed": [batch, feed_dim]}, and with LSTM cells
# "cell": [batch, layers, units]
State = dict
Memory = dict  # {"keys": prepared keys [batch, ts, ...], "values": [batch, ts, dv], "mask"}

# Subtracted from every logit when translating in bfloat16 (`Seq2Seq.shift_output_logits`):
# the shipped models' largest logit per step lies between 8.7 and 13.1 in 80 % of steps
# (median 11), so the candidates a search weighs come out near 0, where bfloat16 is finest.
# In the three shipped recurrent models it cut the test_2016_flickr translations that differ
# from float32 from 58-76 to 34-53 (beam 5, batch 64).
BFLOAT16_LOGIT_SHIFT = 11.0


@keras.saving.register_keras_serializable(package="nmt")
class Encoder(keras.layers.Layer):
    """Source token ids [batch, ts] -> states [batch, ts, 2*units] and final [batch, 2*units]
    (the last hidden states of both directions; an LSTM's memory cells are not passed on)."""

    def __init__(self, vocab_size: int, embedding_dim: int, units: int, num_layers: int = 1,
                 dropout: float = 0.0, word_dropout: float = 0.0, cell: str = "gru", **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.embedding_dim = vocab_size, embedding_dim
        self.units, self.num_layers, self.dropout_rate = units, num_layers, dropout
        self.word_dropout_rate, self.cell = word_dropout, cell
        self.drop_words = word_dropout_layer(word_dropout, sequence=True)
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")
        recurrent = {"gru": keras.layers.GRU, "lstm": keras.layers.LSTM}[cell]
        self.rnns = [
            keras.layers.Bidirectional(
                recurrent(units, return_sequences=True, return_state=True),
                name=f"bi{cell}_{index}")
            for index in range(num_layers)
        ]
        self.dropout = keras.layers.Dropout(dropout)

    def call(self, tokens, training=False):
        mask = tf.not_equal(tokens, PAD_ID)  # [batch, ts]
        states = self.dropout(self.drop_words(self.embedding(tokens), training=training),
                              training=training)
        for rnn in self.rnns:
            outputs, *finals = rnn(states, mask=mask, training=training)
            states = self.dropout(outputs, training=training)  # [batch, ts, 2*units]
        # GRU: [forward h, backward h]; LSTM: [forward h, forward c, backward h, backward c]
        forward, backward = finals[0], finals[len(finals) // 2]
        return states, tf.concat([forward, backward], axis=-1), mask

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, embedding_dim=self.embedding_dim,
                      units=self.units, num_layers=self.num_layers, dropout=self.dropout_rate,
                      word_dropout=self.word_dropout_rate, cell=self.cell)
        return config


def word_dropout_layer(rate: float, sequence: bool) -> keras.layers.Layer:
    """Drops whole word embeddings ([batch, time, dim] or, for one step, [batch, dim]) in
    training; an identity when `rate` is 0, so models without it keep their weight layout."""
    if not rate:
        return keras.layers.Identity()
    return keras.layers.Dropout(rate, noise_shape=(None, None, 1) if sequence else (None, 1))


class TranslationModel(distribute.PrebuiltModel):
    """What every encoder-decoder shares: its `ModelConfig`, the training and test steps
    (token-level loss, label smoothing, metrics) and Keras serialisation.

    A subclass provides `call((source, target_in)) -> (logits [batch, tt, vocab], weights
    [batch, tt, ts])`, `encode(source, training, max_steps) -> (memory, state)`,
    `decode_step(tokens, state, memory, training) -> (logits, state, weights [batch, ts])`
    and `build()`.
    """

    def __init__(self, config: ModelConfig | dict, **kwargs):
        super().__init__(**kwargs)
        if isinstance(config, dict):
            config = ModelConfig(**config)
        config.validate()
        self.config = config
        self.label_smoothing = 0.0  # set by training; not part of the architecture
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.nll_tracker = keras.metrics.Mean(name="nll")
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")
        self.token_counter = keras.metrics.Sum(name="tokens")

    # ------------------------------------------------------------------------ training
    def train_step(self, data):
        """One step on this replica's share of the global batch (see `nmt.distribute`).

        The loss is the token mean over the whole global batch: this replica's summed token
        loss over the token count of all replicas. The replicas' gradients are summed here,
        before the optimizer clips them (or, with loss scaling, tests them for inf/NaN).
        """
        (source, target_in), target_out = data
        distribute.check_optimizer(self.optimizer)
        with tf.GradientTape() as tape:
            sums, totals = self._token_sums(source, target_in, target_out, training=True)
            loss = sums["loss"] / tf.maximum(totals["tokens"], 1.0)
            scaled_loss = self.optimizer.scale_loss(loss)  # loss scaling in mixed precision
        gradients = distribute.sum_gradients(tape.gradient(scaled_loss, self.trainable_variables))
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables, strict=True))
        return self._update_metrics(totals)

    def test_step(self, data):
        (source, target_in), target_out = data
        _, totals = self._token_sums(source, target_in, target_out, training=False)
        return self._update_metrics(totals)

    def _token_sums(self, source, target_in, target_out, training):
        """Summed token loss, nll, correct and token count of this replica's rows, and of the
        whole global batch (the second dict; the first when there is one replica)."""
        logits, _ = self((source, target_in), training=training)
        sums = token_losses(logits, target_out, tf.not_equal(target_out, PAD_ID),
                            self.label_smoothing)
        return sums, distribute.global_sums(sums)

    def _update_metrics(self, totals):
        """Token-weighted running means of the global batch's `totals`: loss, nll (log
        perplexity), accuracy; and the token count."""
        tokens = totals["tokens"]
        share = distribute.replica_share(tokens)
        self.loss_tracker.update_state(totals["loss"] / tf.maximum(tokens, 1.0), share)
        self.nll_tracker.update_state(totals["nll"] / tf.maximum(tokens, 1.0), share)
        self.accuracy_tracker.update_state(totals["correct"] / tf.maximum(tokens, 1.0), share)
        self.token_counter.update_state(share)
        means = {metric.name: metric.result()
                 for metric in (self.loss_tracker, self.nll_tracker, self.accuracy_tracker)}
        return distribute.step_logs(means, {"tokens": self.token_counter.result()})

    @property
    def metrics(self):
        return [self.loss_tracker, self.nll_tracker, self.accuracy_tracker, self.token_counter]

    def get_config(self):
        config = super().get_config()
        config.update(config=self.config.__dict__.copy())
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        model_config = ModelConfig(**config.pop("config"))
        return cls(model_config, **config)

    # ------------------------------------------------------------------ translating
    def prepare_for_translation(self) -> list[str]:
        """Precompute what searches with fixed weights can reuse (`Translator.load` calls
        it); returns the names of the tables made. None here; see `Seq2Seq`."""
        return []

    def forget_translation_tables(self) -> list[str]:
        """Drop the tables of `prepare_for_translation` (a SavedModel export would store
        them as constants); returns the names of the tables dropped."""
        return []


@keras.saving.register_keras_serializable(package="nmt")
class Seq2Seq(TranslationModel):
    """Recurrent encoder-decoder built from a `ModelConfig`.

    `call((source, target_in))` returns logits [batch, tt, vocab] and attention weights
    [batch, tt, ts]; `encode` + `decode_step` are the pieces decoding builds on.
    """

    def __init__(self, config: ModelConfig | dict, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        self.encoder = Encoder(c.src_vocab_size, c.embedding_dim, c.encoder_units,
                               c.encoder_layers, c.dropout, c.word_dropout, c.cell,
                               name="encoder")
        self.target_embedding = keras.layers.Embedding(c.tgt_vocab_size, c.embedding_dim,
                                                       name="target_embedding")
        self.bridge = keras.layers.Dense(c.decoder_layers * c.decoder_units, activation="tanh",
                                         name="bridge")
        cell = {"gru": keras.layers.GRUCell, "lstm": keras.layers.LSTMCell}[c.cell]
        self.decoder_rnns = [
            keras.layers.RNN(cell(c.decoder_units, name=f"cell_{index}"), return_sequences=True,
                             return_state=True, name=f"decoder_{c.cell}_{index}")
            for index in range(c.decoder_layers)
        ]
        self.attention = Attention(score=c.score, mode=c.attention_mode, units=c.attention_units,
                                   temperature=c.hard_temperature, name="attention")
        self.feed_dim = c.embedding_dim if c.tie_embeddings else c.decoder_units
        self.combine = keras.layers.Dense(self.feed_dim, activation="tanh", use_bias=False,
                                          name="combine")
        self.dropout = keras.layers.Dropout(c.dropout)
        self.drop_words = word_dropout_layer(c.word_dropout, sequence=True)
        self.drop_step_words = word_dropout_layer(c.word_dropout, sequence=False)
        if not c.tie_embeddings:
            self.output_layer = keras.layers.Dense(c.tgt_vocab_size, name="output")
        self._input_projections: tf.Tensor | None = None  # see tabulate_input_projections
        self._shifted_output: tf.Tensor | None = None  # see shift_output_logits

    def prepare_for_translation(self) -> list[str]:
        return [name for name, make in (("input projections", self.tabulate_input_projections),
                                        ("shifted output", self.shift_output_logits))
                if make()]

    def forget_translation_tables(self) -> list[str]:
        dropped = [name for name, had in (("input projections", self._input_projections),
                                          ("shifted output", self._shifted_output))
                   if had is not None]
        self._input_projections = self._shifted_output = None
        return dropped

    def tabulate_input_projections(self) -> bool:
        """For translating with fixed weights: the first decoder GRU's input projection of
        every target token, E[v] W + b [tgt_vocab, 3 * decoder_units] in the compute dtype,
        so that `decode_step` gathers a row instead of multiplying (about 16 % of a step's
        multiply-adds in the shipped models). Only a GRU decoder without input feeding
        takes its input from the embedding alone; returns whether the table was made. The
        table is a snapshot: a model that trains on must not use it (training never does)."""
        c = self.config
        if c.cell != "gru" or c.input_feeding or not self.built:
            return False
        cell = self.decoder_rnns[0].cell
        with tf.init_scope():
            embeddings = tf.cast(self.target_embedding.embeddings, self.compute_dtype)
            kernel, bias = (tf.cast(weight, self.compute_dtype)
                            for weight in (cell.kernel, cell.bias[0]))
            self._input_projections = tf.matmul(embeddings, kernel) + bias
        return True

    def shift_output_logits(self) -> bool:
        """For translating in bfloat16: an output matrix with two more columns, [W, b, -s]
        [tgt_vocab, feed_dim + 2] (W the tied embeddings or the output kernel, b its bias or
        zeros), so that `_output` computes logits - s inside the matmul, whose float32
        accumulator rounds to bfloat16 only at the end. Rounding is relative: a logit near
        11 is off by up to 0.03, one near 0 by far less, and the few near the row's maximum
        are the ones a search compares. s = `BFLOAT16_LOGIT_SHIFT`; the same shift for every
        token of a row leaves log-softmax, and so every search score, as it was. Only in
        bfloat16 (a float32 search stays bit for bit); returns whether the matrix was made."""
        if self.compute_dtype != "bfloat16" or not self.built:
            return False
        with tf.init_scope():
            if self.config.tie_embeddings:
                weights = self.target_embedding.embeddings  # [vocab, feed_dim]
                bias = tf.zeros([self.config.tgt_vocab_size], weights.dtype)
            else:
                weights = tf.transpose(self.output_layer.kernel)
                bias = self.output_layer.bias
            shift = tf.fill([self.config.tgt_vocab_size, 1], -BFLOAT16_LOGIT_SHIFT)
            self._shifted_output = tf.concat(  # b and -s apart: each is exact in bfloat16
                [tf.cast(weights, tf.bfloat16), tf.cast(bias, tf.bfloat16)[:, None],
                 tf.cast(shift, tf.bfloat16)], axis=-1)
        return True

    def _tabulated_gru_step(self, tokens, hidden) -> tuple[tf.Tensor, list]:
        """Keras's GRUCell step (reset gate after the matmul, as its default) for previous
        tokens [batch] and hidden [batch, units], its input projection looked up in the table
        of `tabulate_input_projections`: returns h [batch, units] and [h]."""
        cell = self.decoder_rnns[0].cell
        hidden = tf.cast(hidden, self.compute_dtype)
        x_z, x_r, x_h = tf.split(tf.gather(self._input_projections, tokens), 3, axis=-1)
        inner = tf.matmul(hidden, tf.cast(cell.recurrent_kernel, self.compute_dtype))
        inner += tf.cast(cell.bias[1], self.compute_dtype)
        recurrent_z, recurrent_r, recurrent_h = tf.split(inner, 3, axis=-1)
        update = tf.sigmoid(x_z + recurrent_z)
        candidate = tf.tanh(x_h + tf.sigmoid(x_r + recurrent_r) * recurrent_h)
        new = update * hidden + (1 - update) * candidate
        return new, [new]

    # ----------------------------------------------------------------- building blocks
    def encode(self, source, training=False, max_steps=None) -> tuple[Memory, State]:
        """Source ids [batch, ts] -> attention memory and the decoder's initial state.

        `max_steps` (the most decoder steps to come) is for models that keep a buffer per
        target position (`nmt.transformer`); the recurrent state has none and ignores it."""
        c = self.config
        states, final, mask = self.encoder(source, training=training)
        hidden = self.bridge(final)  # [batch, layers * units]
        batch = tf.shape(source)[0]
        state = {
            "hidden": tf.reshape(hidden, [batch, c.decoder_layers, c.decoder_units]),
            "feed": tf.zeros([batch, self.feed_dim], dtype=hidden.dtype),
        }
        if c.cell == "lstm":
            state["cell"] = state["hidden"]  # memory cells start as the hidden states (Joey NMT)
        memory = {"keys": self.attention.prepare_keys(states), "values": states, "mask": mask}
        return memory, state

    def decode_step(self, tokens, state: State, memory: Memory, training=False):
        """One decoder step.

        Args:
            tokens: previous target ids [batch]. state: as returned by `encode` or the
            previous step. memory: as returned by `encode` (tiled for beam search).
        Returns:
            logits [batch, vocab], the new state, attention weights [batch, ts].
        """
        inputs = self.drop_step_words(self.target_embedding(tokens), training=training)
        inputs = self.dropout(inputs, training=training)
        if self.config.input_feeding:
            inputs = tf.concat([inputs, state["feed"]], axis=-1)
        cell_states = []  # per layer: [h] (GRU) or [h, c] (LSTM)
        for index, rnn in enumerate(self.decoder_rnns):
            if index == 0 and self._input_projections is not None and not training:
                inputs, layer_states = self._tabulated_gru_step(tokens, state["hidden"][:, 0])
            else:
                inputs, layer_states = rnn.cell(inputs, self._layer_state(state, index),
                                                training=training)
            cell_states.append(layer_states)
            if index + 1 < len(self.decoder_rnns):
                inputs = self.dropout(inputs, training=training)
        context, weights = self.attention.attend(inputs[:, None, :], memory["keys"],
                                                 memory["values"], memory["mask"],
                                                 training=training)
        attentional, logits = self._output(inputs, context[:, 0], training)
        new_state = {"hidden": tf.stack([states[0] for states in cell_states], axis=1),
                     "feed": attentional}
        if "cell" in state:
            new_state["cell"] = tf.stack([states[1] for states in cell_states], axis=1)
        return logits, new_state, weights[:, 0]

    @staticmethod
    def _layer_state(state: State, index: int) -> list:
        """Decoder layer `index`'s recurrent state: [h] (GRU) or [h, c] (LSTM), [batch, units]."""
        if "cell" in state:
            return [state["hidden"][:, index], state["cell"][:, index]]
        return [state["hidden"][:, index]]

    def _output(self, hidden, context, training):
        """Luong eq. 5: h~ = tanh(Wc [h; c]); logits = Wo h~ (or E^T h~ when tied), less
        `BFLOAT16_LOGIT_SHIFT` once `shift_output_logits` has run."""
        attentional = self.combine(tf.concat([hidden, context], axis=-1))
        features = self.dropout(attentional, training=training)
        if self._shifted_output is not None and not training:  # logits - s
            ones = tf.ones_like(features[..., :2])
            logits = tf.matmul(tf.concat([features, ones], axis=-1), self._shifted_output,
                               transpose_b=True)
        elif self.config.tie_embeddings:
            embeddings = tf.cast(self.target_embedding.embeddings, features.dtype)
            logits = tf.matmul(features, embeddings, transpose_b=True)
        else:
            logits = self.output_layer(features)
        return attentional, logits

    # ------------------------------------------------------------------ teacher forcing
    def call(self, inputs, training=False):
        source, target_in = inputs
        memory, state = self.encode(source, training=training)
        if self.config.input_feeding:
            return self._decode_stepwise(target_in, state, memory, training)
        return self._decode_parallel(target_in, state, memory, training)

    def decoder_states(self, target_in, state: State, training=False) -> tf.Tensor:
        """The top decoder layer's states for a teacher-forced batch, without input feeding:
        target ids after BOS [batch, tt] and `encode`'s state -> [batch, tt, decoder_units],
        the queries of the attention."""
        states = self.drop_words(self.target_embedding(target_in), training=training)
        states = self.dropout(states, training=training)
        for index, rnn in enumerate(self.decoder_rnns):
            states, *_ = rnn(states, initial_state=self._layer_state(state, index),
                             training=training)
            if index + 1 < len(self.decoder_rnns):
                states = self.dropout(states, training=training)
        return states

    def _decode_parallel(self, target_in, state, memory, training):
        """All target positions at once: RNNs over the sequence, one batched attention."""
        states = self.decoder_states(target_in, state, training)
        context, weights = self.attention(states, memory["values"], mask=memory["mask"],
                                          training=training)
        _, logits = self._output(states, context, training)
        return logits, weights

    def _decode_stepwise(self, target_in, state, memory, training):
        """Input feeding: step through time with `decode_step` (tf.scan, graph-friendly)."""

        def step(carry, tokens):
            _, _, previous_state = carry
            logits, new_state, weights = self.decode_step(tokens, previous_state, memory,
                                                          training=training)
            return logits, weights, new_state

        batch, source_length = tf.shape(target_in)[0], tf.shape(memory["values"])[1]
        initial = (tf.zeros([batch, self.config.tgt_vocab_size], self.compute_dtype),
                   tf.zeros([batch, source_length]), state)  # attention weights are float32
        logits, weights, _ = tf.scan(step, tf.transpose(target_in), initializer=initial)
        return tf.transpose(logits, [1, 0, 2]), tf.transpose(weights, [1, 0, 2])

    def build(self, input_shape=None):
        """Create every weight by running a dummy batch (Keras calls this when loading)."""
        self.built = True  # set first: the dummy call below must not come back here
        c = self.config
        if not self.attention.built:  # `encode` prepares keys before the first attention call
            self.attention.build((None, None, c.decoder_units), (None, None, 2 * c.encoder_units))
        dummy = tf.constant([[BOS_ID, EOS_ID]], dtype=tf.int32)
        self.call((dummy, dummy), training=False)

def make_model(config: ModelConfig) -> TranslationModel:
    """The (unbuilt) model `config.architecture` names: `Seq2Seq` or a Transformer."""
    if config.architecture == "transformer":
        from nmt.transformer import Transformer  # local import: it builds on this module

        return Transformer(config)
    return Seq2Seq(config)


def build_model(config: ModelConfig) -> TranslationModel:
    """The model of `config` (`make_model`) with all weights created."""
    model = make_model(config)
    model.build()
    return model
