"""Tests for nmt.model and nmt.config: step function vs teacher forcing, padding, saving,
config validation, and a reversal task every score must learn."""

import functools
import json
import math
import re
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from nmt import precision
from nmt.config import Config, DataConfig, ModelConfig, TrainConfig
from nmt.errors import ConfigError
from nmt.losses import token_losses
from nmt.model import (
    BFLOAT16_LOGIT_SHIFT,
    BOS_ID,
    EOS_ID,
    PAD_ID,
    Seq2Seq,
    build_model,
    word_dropout_layer,
)
from tests.helpers import step_through

ALL_SCORES = ("dot", "scaled_dot", "general", "cosine", "additive")


def small_config(**overrides):
    """A model small enough to build in well under a second."""
    settings = dict(src_vocab_size=11, tgt_vocab_size=13, embedding_dim=8, encoder_units=6,
                    decoder_units=12, attention_units=5, score="general", dropout=0.0,
                    tie_embeddings=False)
    settings.update(overrides)
    return ModelConfig(**settings)


def small_model(seed=0, **overrides):
    keras.utils.set_random_seed(seed)
    return build_model(small_config(**overrides))


def toy_batch(seed=0):
    """Source [3, 6] with trailing padding in rows 1 and 2; target_in [3, 5] starting with BOS."""
    rng = np.random.default_rng(seed)
    source = rng.integers(4, 11, size=(3, 6)).astype("int32")
    source[0, 5] = EOS_ID
    source[1, 3], source[1, 4:] = EOS_ID, PAD_ID
    source[2, 1], source[2, 2:] = EOS_ID, PAD_ID
    target_in = rng.integers(4, 13, size=(3, 5)).astype("int32")
    target_in[:, 0] = BOS_ID
    return source, target_in


# ------------------------------------------------------------------ model behaviour
STEP_CASES = {
    "plain": {},
    "input-feeding": {"input_feeding": True},
    "multi-layer": {"encoder_layers": 2, "decoder_layers": 2},
    "multi-layer-input-feeding": {"encoder_layers": 2, "decoder_layers": 3,
                                  "input_feeding": True},
    "tied": {"tie_embeddings": True},
    "tied-input-feeding": {"tie_embeddings": True, "input_feeding": True,
                           "decoder_layers": 2},
    "additive": {"score": "additive"},
    "dot-input-feeding": {"score": "dot", "input_feeding": True},
    "cosine": {"score": "cosine"},
    "lstm": {"cell": "lstm"},
    "lstm-multi-layer-input-feeding": {"cell": "lstm", "encoder_layers": 2,
                                       "decoder_layers": 2, "input_feeding": True},
}


@pytest.mark.parametrize("overrides", STEP_CASES.values(), ids=STEP_CASES.keys())
def test_decode_step_reproduces_teacher_forcing(overrides):
    model = small_model(**overrides)
    source, target_in = toy_batch()
    logits, weights = model((source, target_in), training=False)
    assert logits.shape == (3, 5, 13) and weights.shape == (3, 5, 6)
    step_logits, step_weights = step_through(model, source, target_in)
    np.testing.assert_allclose(step_logits, np.asarray(logits), atol=1e-5)
    np.testing.assert_allclose(step_weights, np.asarray(weights), atol=1e-5)


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_jit_compiled_decode_step_matches_eager(mode):
    """Greedy and beam search run the step function inside tf.function with XLA."""
    model = small_model(input_feeding=True, attention_mode=mode, score="additive")
    source, target_in = toy_batch()
    memory, state = model.encode(source)
    step = tf.function(model.decode_step, jit_compile=True)
    for position in range(2):
        eager = model.decode_step(target_in[:, position], state, memory)
        compiled = step(tf.constant(target_in[:, position]), state, memory)
        for got, want in zip(tf.nest.flatten(compiled), tf.nest.flatten(eager), strict=True):
            np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)
        state = eager[1]


TABLE_CASES = {"plain": {}, "tied": {"tie_embeddings": True},
               "multi-layer": {"encoder_layers": 2, "decoder_layers": 2}}


@pytest.mark.parametrize("overrides", TABLE_CASES.values(), ids=TABLE_CASES.keys())
def test_tabulated_input_projections_give_the_keras_cells_step(overrides):
    model = small_model(**overrides)
    source, target_in = toy_batch()
    memory, state = model.encode(source)
    steps = [model.decode_step(target_in[:, 0], state, memory)]
    assert model.tabulate_input_projections()
    assert model._input_projections.shape == (13, 3 * 12)
    steps.append(model.decode_step(target_in[:, 0], state, memory))
    for keras_cell, table in zip(*(tf.nest.flatten(step) for step in steps), strict=True):
        np.testing.assert_allclose(table.numpy(), keras_cell.numpy(), atol=1e-6)
    assert model.forget_translation_tables() == ["input projections"]
    assert model._input_projections is None


@pytest.mark.parametrize("overrides", [{"input_feeding": True}, {"cell": "lstm"}],
                         ids=["input-feeding", "lstm"])
def test_no_table_where_the_first_layer_reads_more_than_the_embedding(overrides):
    model = small_model(**overrides)
    assert not model.tabulate_input_projections() and model._input_projections is None


@pytest.mark.parametrize("overrides", [{}, {"tie_embeddings": True}],
                         ids=["output-layer", "tied"])
def test_shifted_bfloat16_logits_are_the_plain_ones_less_the_shift(overrides):
    """Seq2Seq.shift_output_logits, with the output layer's bias or the tied embeddings."""
    full = small_model(**overrides)
    assert not full.shift_output_logits()  # float32 stays as it is
    half = precision.build_inference_model(full.config, "bfloat16")
    half.set_weights(full.get_weights())
    source, target_in = toy_batch()
    plain = tf.cast(half((source, target_in))[0], tf.float32).numpy()
    assert half.shift_output_logits()
    shifted = tf.cast(half((source, target_in))[0], tf.float32).numpy()
    # bfloat16 rounds a value near -11 to steps of 1/16
    np.testing.assert_allclose(shifted + BFLOAT16_LOGIT_SHIFT, plain, atol=2 ** -5)
    assert half.forget_translation_tables() == ["shifted output"]


def test_encode_and_decode_step_shapes():
    model = small_model(decoder_layers=2)
    source, target_in = toy_batch()
    memory, state = model.encode(source)
    assert memory["values"].shape == (3, 6, 12)
    assert state["hidden"].shape == (3, 2, 12)
    logits, new_state, weights = model.decode_step(target_in[:, 0], state, memory)
    assert logits.shape == (3, 13) and weights.shape == (3, 6)
    assert new_state["hidden"].shape == (3, 2, 12)


@pytest.mark.parametrize("tie_embeddings", [False, True], ids=["untied", "tied"])
def test_input_feeding_passes_the_attentional_state_on(tie_embeddings):
    model = small_model(input_feeding=True, tie_embeddings=tie_embeddings)
    source, target_in = toy_batch()
    memory, state = model.encode(source)
    _, state, _ = model.decode_step(target_in[:, 0], state, memory)
    assert state["feed"].shape == (3, 8 if tie_embeddings else 12)
    assert np.any(np.asarray(state["feed"]) != 0.0)
    fed, _, _ = model.decode_step(target_in[:, 1], state, memory)
    unfed, _, _ = model.decode_step(target_in[:, 1], {**state, "feed": 0 * state["feed"]},
                                    memory)
    assert np.abs(np.asarray(fed) - np.asarray(unfed)).max() > 1e-4


@pytest.mark.parametrize("mode", ["soft", "hard"])
@pytest.mark.parametrize("input_feeding", [False, True], ids=["parallel", "input-feeding"])
def test_padded_source_positions_get_zero_weight(input_feeding, mode):
    model = small_model(input_feeding=input_feeding, attention_mode=mode)
    source, target_in = toy_batch()
    for training in (False, True):
        _, weights = model((source, target_in), training=training)
        weights = np.asarray(weights)
        assert np.all(weights[1, :, 4:] == 0.0) and np.all(weights[2, :, 2:] == 0.0)
        np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("input_feeding", [False, True], ids=["parallel", "input-feeding"])
def test_padding_does_not_change_a_sentence(input_feeding):
    """A short sentence alone and padded inside a batch gives the same logits."""
    model = small_model(input_feeding=input_feeding, encoder_layers=2)
    source, target_in = toy_batch()
    batch_logits, batch_weights = model((source, target_in), training=False)
    alone_logits, alone_weights = model((source[2:, :2], target_in[2:]), training=False)
    np.testing.assert_allclose(np.asarray(alone_logits)[0], np.asarray(batch_logits)[2],
                               atol=1e-5)
    np.testing.assert_allclose(np.asarray(alone_weights)[0], np.asarray(batch_weights)[2, :, :2],
                               atol=1e-5)


def test_untrained_loss_is_about_log_vocabulary_size():
    vocab = 50
    model = small_model(src_vocab_size=vocab, tgt_vocab_size=vocab, embedding_dim=16,
                        encoder_units=16, decoder_units=32, attention_units=16)
    rng = np.random.default_rng(3)
    source = rng.integers(4, vocab, size=(16, 10)).astype("int32")
    target = rng.integers(4, vocab, size=(16, 11)).astype("int32")
    logits, _ = model((source, target[:, :-1]), training=False)
    sums = token_losses(logits, target[:, 1:], target[:, 1:] != PAD_ID, label_smoothing=0.0)
    loss = float(sums["nll"] / sums["tokens"])
    assert float(sums["loss"]) == pytest.approx(float(sums["nll"]), rel=1e-6)
    assert loss == pytest.approx(math.log(vocab), rel=0.1)


SAVE_CASES = {
    "general": {},
    "additive-feeding-tied-hard": {"score": "additive", "input_feeding": True,
                                   "tie_embeddings": True, "attention_mode": "hard",
                                   "decoder_layers": 2},
    "cosine": {"score": "cosine"},
    "word-dropout": {"word_dropout": 0.2, "dropout": 0.1},
    "lstm-two-layers": {"cell": "lstm", "encoder_layers": 2, "decoder_layers": 2},
}


@pytest.mark.parametrize("overrides", SAVE_CASES.values(), ids=SAVE_CASES.keys())
def test_seq2seq_keras_file_round_trip_without_custom_objects(overrides, tmp_path):
    model = small_model(seed=4, **overrides)
    source, target_in = toy_batch(seed=1)
    expected = model((source, target_in), training=False)
    path = tmp_path / "seq2seq.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, Seq2Seq)
    assert restored.config == model.config
    for got, want in zip(restored((source, target_in), training=False), expected, strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


# --------------------------------------------------------------------- word dropout
@pytest.mark.parametrize("sequence", [True, False])
def test_word_dropout_drops_whole_embedding_vectors(sequence):
    keras.utils.set_random_seed(3)
    layer = word_dropout_layer(0.3, sequence=sequence)
    shape = (40, 50, 16) if sequence else (2000, 16)
    embedded = tf.ones(shape)
    dropped = np.asarray(layer(embedded, training=True)).reshape(-1, 16)
    kept = dropped[:, 0] != 0
    np.testing.assert_allclose(dropped[kept], 1 / 0.7, rtol=1e-6)  # whole rows, rescaled
    np.testing.assert_array_equal(dropped[~kept], 0.0)
    assert 0.25 < 1 - kept.mean() < 0.35
    np.testing.assert_array_equal(np.asarray(layer(embedded, training=False)), embedded)


def test_word_dropout_changes_training_only_and_adds_no_weights():
    source, target_in = toy_batch(seed=2)
    plain = small_model(seed=5)
    model = small_model(seed=5, word_dropout=0.5, input_feeding=False)
    assert [tuple(w.shape) for w in model.weights] == [tuple(w.shape) for w in plain.weights]
    model.set_weights(plain.get_weights())
    for got, want in zip(model((source, target_in)), plain((source, target_in)), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)
    trained = [np.asarray(model((source, target_in), training=True)[0]) for _ in range(2)]
    assert not np.allclose(trained[0], trained[1])
    # decode_step (input feeding trains through it) drops step words too
    memory, state = model.encode(source)
    steps = [np.asarray(model.decode_step(target_in[:, 1], state, memory, training=True)[0])
             for _ in range(6)]
    assert any(not np.allclose(steps[0], other) for other in steps[1:])


def seeded_training_step(seed: int) -> list[np.ndarray]:
    """Weights after `seed_everything(seed)`, building a model with dropout, word dropout and
    hard (Gumbel) attention, and one SGD step on a toy batch."""
    from nmt.training import seed_everything

    seed_everything(seed)
    model = build_model(small_config(dropout=0.3, word_dropout=0.2, attention_mode="hard"))
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False)
    source, target_in = toy_batch()
    target_out = np.concatenate([target_in[:, 1:], np.full((3, 1), EOS_ID, "int32")], axis=1)
    model.fit((source, target_in), target_out, batch_size=3, epochs=1, shuffle=False,
              verbose=0)
    return model.get_weights()


def test_seed_everything_alone_fixes_the_initial_weights_and_the_noise():
    first = seeded_training_step(4)
    keras.random.uniform((2,))  # draws from (and creates) Keras's global seed generator,
    tf.random.uniform((2,))  # and from TensorFlow's global one: training must use neither
    second = seeded_training_step(4)
    for got, want in zip(second, first, strict=True):
        np.testing.assert_array_equal(got, want)
    other = seeded_training_step(5)
    assert any(not np.array_equal(a, b) for a, b in zip(other, first, strict=True))


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize("score", ["dot", "scaled_dot", "cosine"])
def test_equal_dimension_score_with_mismatched_units_raises(score):
    config = small_config(score=score, encoder_units=6, decoder_units=10)
    with pytest.raises(ConfigError) as error:
        config.validate()
    message = str(error.value)
    for part in ("model.score", score, "decoder_units=10", "encoder_units=6"):
        assert part in message
    with pytest.raises(ConfigError):
        build_model(config)


@pytest.mark.parametrize("score", ["general", "additive"])
def test_learned_map_scores_accept_mismatched_units(score):
    small_config(score=score, encoder_units=6, decoder_units=10).validate()


@pytest.mark.parametrize("data", [{"model": {"bogus_units": 3}}, {"bogus_units": 3},
                                  {"train": {"epochs": 3, "bogus_units": 3}}])
def test_from_dict_unknown_field_is_named(data):
    with pytest.raises(ConfigError, match="bogus_units"):
        Config.from_dict(data)


@pytest.mark.parametrize(("data", "field"), [
    ({"train": {"epochs": "ten"}}, "train.epochs"),
    ({"train": {"epochs": 2.5}}, "train.epochs"),
    ({"train": {"epochs": True}}, "train.epochs"),
    ({"model": {"input_feeding": "yes"}}, "model.input_feeding"),
    ({"model": {"dropout": "0.1"}}, "model.dropout"),
    ({"data": {"train_limit": "100"}}, "data.train_limit"),
    ({"train": {"bucket_boundaries": [12, "16"]}}, "train.bucket_boundaries"),
    ({"model": 3}, "model"),
])
def test_from_dict_wrong_type_is_named(data, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        Config.from_dict(data)


@pytest.mark.parametrize(("data", "field"), [
    ({"model": {"score": "bogus"}}, "model.score"),
    ({"model": {"attention_mode": "sparse"}}, "model.attention_mode"),
    ({"model": {"dropout": 1.0}}, "model.dropout"),
    ({"model": {"word_dropout": -0.1}}, "model.word_dropout"),
    ({"train": {"ema_decay": 1.5}}, "train.ema_decay"),
    ({"train": {"lr_schedule": "linear"}}, "train.lr_schedule"),
])
def test_from_dict_invalid_value_is_named(data, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        Config.from_dict(data)


def test_from_dict_accepts_ints_for_floats_and_keeps_defaults():
    config = Config.from_dict({"train": {"learning_rate": 1}, "model": {"score": "additive"}})
    assert config.train.learning_rate == 1.0 and isinstance(config.train.learning_rate, float)
    assert config.model.score == "additive"
    assert config.data == DataConfig() and config.model.decoder_units == 512


def test_config_json_round_trip(tmp_path):
    config = Config(
        model=small_config(score="cosine", input_feeding=True, hard_temperature=0.5),
        data=DataConfig(corpus="custom", train_src="a.de", train_tgt="a.en", train_limit=100),
        train=TrainConfig(epochs=3, time_budget=1.5, bucket_boundaries=[8, 16], seed=7),
    ).validate()
    path = config.save(tmp_path / "run" / "config.json")
    assert path.is_file()
    loaded = Config.load(path)
    assert loaded == config
    assert loaded.to_json() == config.to_json()
    model = Seq2Seq(loaded.model)
    assert model.config == config.model


def test_config_load_errors_name_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"train": {"epochs": "ten"}}', encoding="utf-8")
    with pytest.raises(ConfigError, match="config.json.*train.epochs"):
        Config.load(path)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Config.load(path)
    with pytest.raises(ConfigError, match="not found"):
        Config.load(tmp_path / "missing.json")


# ------------------------------------------------------------------ learning a task
REVERSE_MAX_LENGTH = 8  # digit sequences of 3..8 symbols (ids 4..13), then EOS
REVERSE_VOCAB = 14


def reversal_data(count, seed):
    """((source, target_in), target_out, lengths) for reversing digit sequences."""
    rng = np.random.default_rng(seed)
    width = REVERSE_MAX_LENGTH + 1
    source = np.full((count, width), PAD_ID, "int32")
    target_in = np.full((count, width), PAD_ID, "int32")
    target_out = np.full((count, width), PAD_ID, "int32")
    lengths = rng.integers(3, REVERSE_MAX_LENGTH + 1, size=count)
    for row, length in enumerate(lengths):
        digits = rng.integers(4, REVERSE_VOCAB, size=length)
        source[row, :length], source[row, length] = digits, EOS_ID
        target_in[row, 0], target_in[row, 1:length + 1] = BOS_ID, digits[::-1]
        target_out[row, :length], target_out[row, length] = digits[::-1], EOS_ID
    return (source, target_in), target_out, lengths


# (epochs, learning rate) per run, chosen from measurements: at 3e-3 every soft score but
# scaled_dot reaches 100% validation accuracy in 3 epochs; scaled_dot needs 6-10 epochs there
# (95-99%), so it gets 1e-2 and 5 epochs (99%+); hard attention reaches 99%+ in 4-5 epochs.
LEARNING_SCHEDULE = {("dot", "soft"): (3, 3e-3), ("scaled_dot", "soft"): (5, 1e-2),
                     ("general", "soft"): (3, 3e-3), ("cosine", "soft"): (3, 3e-3),
                     ("additive", "soft"): (3, 3e-3), ("general", "hard"): (5, 3e-3)}


@functools.cache
def train_reverser(score, mode):
    """Train a tiny model on reversal once per (score, mode); held-out accuracy + alignment."""
    keras.utils.set_random_seed(0)
    inputs, targets, _ = reversal_data(4000, seed=0)
    valid_inputs, valid_targets, valid_lengths = reversal_data(500, seed=1)
    config = ModelConfig(src_vocab_size=REVERSE_VOCAB, tgt_vocab_size=REVERSE_VOCAB,
                         embedding_dim=32, encoder_units=32, decoder_units=64,
                         attention_units=32, score=score, attention_mode=mode, dropout=0.0,
                         tie_embeddings=False)
    model = build_model(config)
    # XLA compilation costs ~10 s per model on 2 cores, more than the training itself;
    # the hard-mode run keeps jit_compile=True so the XLA training path is covered once.
    epochs, learning_rate = LEARNING_SCHEDULE[score, mode]
    model.compile(optimizer=keras.optimizers.Adam(learning_rate, global_clipnorm=1.0),
                  jit_compile=mode == "hard")
    start = time.perf_counter()
    model.fit(inputs, targets, batch_size=64, epochs=epochs, verbose=0)
    metrics = model.evaluate(valid_inputs, valid_targets, batch_size=250, verbose=0,
                             return_dict=True)
    _, weights = model(valid_inputs, training=False)
    predicted = np.asarray(weights).argmax(axis=-1)  # [n, tt]
    positions = np.arange(predicted.shape[1])
    real = positions[None, :] < valid_lengths[:, None]  # output positions before EOS
    mirrored = predicted == valid_lengths[:, None] - 1 - positions[None, :]
    result = {"accuracy": float(metrics["accuracy"]), "mirrored": float(mirrored[real].mean()),
              "seconds": time.perf_counter() - start}
    print(f"reversal {score}/{mode}: {result}")
    return result


def test_reversal_data_is_consistent():
    (source, target_in), target_out, lengths = reversal_data(20, seed=5)
    for row, length in enumerate(lengths):
        assert source[row, length] == EOS_ID and np.all(source[row, length + 1:] == PAD_ID)
        np.testing.assert_array_equal(target_out[row, :length], source[row, :length][::-1])
        np.testing.assert_array_equal(target_in[row, 1:length + 1], target_out[row, :length])
        assert target_in[row, 0] == BOS_ID and target_out[row, length] == EOS_ID


@pytest.mark.parametrize("score", ALL_SCORES)
def test_every_score_learns_to_reverse(score):
    assert train_reverser(score, "soft")["accuracy"] >= 0.95


SCALED_DOT_DIFFUSE = (
    "scaled_dot learns the task (99% accuracy) with diffuse attention: its argmax is on the "
    "mirrored source position for only 13-50% of outputs, mostly one to the right otherwise "
    "(5-30 epochs, lr 3e-3 and 1e-2, 32-128 units, seeds 0-2); with no learned map and "
    "tanh-bounded states its logits are capped at sqrt(d)")


@pytest.mark.parametrize("score", [
    *[score for score in ALL_SCORES if score != "scaled_dot"],
    pytest.param("scaled_dot", marks=pytest.mark.xfail(strict=True, reason=SCALED_DOT_DIFFUSE)),
])
def test_every_score_attends_to_the_mirrored_position(score):
    assert train_reverser(score, "soft")["mirrored"] >= 0.9


def test_hard_attention_learns_to_reverse():
    result = train_reverser("general", "hard")
    assert result["accuracy"] >= 0.9
    assert result["mirrored"] >= 0.9


# ------------------------------------------------------------------ LSTM cells, old configs
def test_lstm_state_carries_hidden_and_memory_cells():
    model = small_model(cell="lstm", decoder_layers=2)
    assert [rnn.name for rnn in model.encoder.rnns] == ["bilstm_0"]
    assert [rnn.name for rnn in model.decoder_rnns] == ["decoder_lstm_0", "decoder_lstm_1"]
    source, target_in = toy_batch()
    memory, state = model.encode(source)
    assert set(state) == {"hidden", "cell", "feed"}
    _, new_state, _ = model.decode_step(target_in[:, 0], state, memory)
    assert new_state["cell"].shape == new_state["hidden"].shape == (3, 2, 12)
    assert not np.allclose(np.asarray(new_state["cell"]), np.asarray(new_state["hidden"]))


def test_an_lstm_model_learns_to_reverse():
    keras.utils.set_random_seed(0)
    inputs, targets, _ = reversal_data(3000, seed=0)
    valid_inputs, valid_targets, _ = reversal_data(300, seed=1)
    model = build_model(ModelConfig(
        src_vocab_size=REVERSE_VOCAB, tgt_vocab_size=REVERSE_VOCAB, embedding_dim=32,
        encoder_units=32, decoder_units=64, score="general", dropout=0.0, cell="lstm"))
    model.compile(optimizer=keras.optimizers.Adam(3e-3, global_clipnorm=1.0))
    model.fit(inputs, targets, batch_size=64, epochs=3, verbose=0)
    metrics = model.evaluate(valid_inputs, valid_targets, batch_size=300, verbose=0,
                             return_dict=True)
    print(f"reversal lstm: {metrics}")
    assert metrics["accuracy"] >= 0.95


# config.json of a checkpoint written before model.architecture and model.cell existed
OLD_MODEL_CONFIG = {
    "src_vocab_size": 40, "tgt_vocab_size": 30, "embedding_dim": 8, "encoder_units": 6,
    "encoder_layers": 1, "decoder_units": 12, "decoder_layers": 1, "score": "dot",
    "attention_mode": "soft", "attention_units": 5, "hard_temperature": 1.0,
    "input_feeding": False, "tie_embeddings": True, "dropout": 0.2, "word_dropout": 0.0}


def test_an_old_config_json_loads_as_todays_recurrent_model(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model": OLD_MODEL_CONFIG}), encoding="utf-8")
    config = Config.load(path).model
    assert (config.architecture, config.cell) == ("rnn", "gru")
    model = build_model(config)
    assert type(model) is Seq2Seq
    assert [rnn.name for rnn in model.encoder.rnns] == ["bigru_0"]
    assert [rnn.name for rnn in model.decoder_rnns] == ["decoder_gru_0"]
    # the weights it holds are the ones it held: same variables, shapes and order (the
    # layout main had before issue 21; Keras numbers automatic names within a session)
    layout = [(re.sub(r"(forward_gru|backward_gru|gru_cell)_\d+", r"\1", v.path.split("/", 1)[1]),
               tuple(v.shape)) for v in model.weights]
    assert layout == OLD_WEIGHT_LAYOUT


OLD_WEIGHT_LAYOUT = [
    ("encoder/embedding/embeddings", (40, 8)),
    ("encoder/bigru_0/forward_gru/gru_cell/kernel", (8, 18)),
    ("encoder/bigru_0/forward_gru/gru_cell/recurrent_kernel", (6, 18)),
    ("encoder/bigru_0/forward_gru/gru_cell/bias", (2, 18)),
    ("encoder/bigru_0/backward_gru/gru_cell/kernel", (8, 18)),
    ("encoder/bigru_0/backward_gru/gru_cell/recurrent_kernel", (6, 18)),
    ("encoder/bigru_0/backward_gru/gru_cell/bias", (2, 18)),
    ("target_embedding/embeddings", (30, 8)),
    ("bridge/kernel", (12, 12)),
    ("bridge/bias", (12,)),
    ("decoder_gru_0/cell_0/kernel", (8, 36)),
    ("decoder_gru_0/cell_0/recurrent_kernel", (12, 36)),
    ("decoder_gru_0/cell_0/bias", (2, 36)),
    ("combine/kernel", (24, 8)),
]
