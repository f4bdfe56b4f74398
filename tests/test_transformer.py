"""Tests for nmt.transformer: the cached step against the full decoder, causal masking,
greedy and beam search, padding, saving and export, and a reversal task to learn."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from nmt.attention import SCORES
from nmt.config import Config, ModelConfig
from nmt.decoding import beam_search, greedy_search
from nmt.errors import ConfigError
from nmt.model import build_model, make_model
from nmt.tokenizer import BOS_ID, EOS_ID, PAD_ID
from nmt.transformer import Transformer, sinusoidal_positions
from tests.helpers import step_through
from tests.test_model import REVERSE_VOCAB, reversal_data, toy_batch


def transformer_config(**overrides):
    """A Transformer small enough to build in about a second."""
    settings = dict(src_vocab_size=11, tgt_vocab_size=13, architecture="transformer",
                    layers=2, model_dim=8, heads=2, ffn_dim=16, attention_units=5,
                    score="scaled_dot", dropout=0.0)
    settings.update(overrides)
    return ModelConfig(**settings)


def transformer(seed=0, **overrides):
    keras.utils.set_random_seed(seed)
    return build_model(transformer_config(**overrides))


STEP_CASES = {
    **{score: {"score": score} for score in SCORES},
    "hard": {"attention_mode": "hard"},
    "learned-tied-shared-one-layer": {"positions": "learned", "tie_embeddings": True,
                                      "share_embeddings": True, "tgt_vocab_size": 11,
                                      "layers": 1},
    "three-layers-four-heads": {"layers": 3, "heads": 4, "alignment_layer": 0},
}


@pytest.mark.parametrize("overrides", STEP_CASES.values(), ids=STEP_CASES.keys())
def test_cached_step_equals_the_full_decoder(overrides):
    model = transformer(**overrides)
    source, target_in = toy_batch()
    if model.config.tgt_vocab_size == 11:
        target_in = np.minimum(target_in, 10)
    logits, weights = model((source, target_in), training=False)
    # a cache larger than needed (as the search allocates it) changes nothing
    step_logits, step_weights = step_through(model, source, target_in, max_steps=9)
    np.testing.assert_allclose(step_logits, np.asarray(logits), atol=2e-5)
    np.testing.assert_allclose(step_weights, np.asarray(weights), atol=2e-6)


def test_a_step_does_not_recompute_the_prefix():
    """The state holds each layer's keys and values per position; a step writes one slot."""
    model = transformer()
    source, target_in = toy_batch()
    memory, state = model.encode(source, max_steps=6)
    assert state["keys"].shape == (3, 2, 2, 6, 4) and state["values"].shape == (3, 2, 2, 6, 4)
    _, first, _ = model.decode_step(target_in[:, 0], state, memory)
    _, second, _ = model.decode_step(target_in[:, 1], first, memory)
    np.testing.assert_array_equal(np.asarray(second["keys"])[:, :, :, 0],
                                  np.asarray(first["keys"])[:, :, :, 0])
    assert np.all(np.asarray(second["keys"])[:, :, :, 2:] == 0.0)
    np.testing.assert_array_equal(np.asarray(second["position"]), [2, 2, 2])


def test_causal_masking_is_exact():
    """Logits and attention of positions before j are bit-identical whatever token j is."""
    model = transformer()
    source, target_in = toy_batch()
    logits, weights = model((source, target_in), training=False)
    changed = target_in.copy()
    changed[:, 3] = 4 + (changed[:, 3] - 3) % 9
    changed_logits, changed_weights = model((source, changed), training=False)
    np.testing.assert_array_equal(np.asarray(changed_logits)[:, :3], np.asarray(logits)[:, :3])
    np.testing.assert_array_equal(np.asarray(changed_weights)[:, :3],
                                  np.asarray(weights)[:, :3])
    assert not np.allclose(np.asarray(changed_logits)[:, 3], np.asarray(logits)[:, 3])


def test_padded_source_positions_get_exactly_zero_weight_in_every_head():
    model = transformer(heads=4)
    source, target_in = toy_batch()
    heads = np.asarray(model.attention_heads(source, target_in))  # [b, layers, heads, tt, ts]
    assert heads.shape == (3, 2, 4, 5, 6)
    padded = source == PAD_ID
    assert np.all(heads.transpose(0, 4, 1, 2, 3)[padded] == 0.0)
    _, weights = model((source, target_in), training=False)
    np.testing.assert_allclose(np.asarray(weights), heads[:, 0].mean(axis=1), atol=1e-6)


def test_greedy_equals_beam_one_and_batch_equals_one_at_a_time():
    model = transformer(seed=3)
    source, _ = toy_batch(seed=2)
    greedy = greedy_search(model, tf.constant(source), 7)
    beam = beam_search(model, tf.constant(source), 7, beam_size=1)
    np.testing.assert_array_equal(np.asarray(beam["tokens"])[:, 0], np.asarray(greedy["tokens"]))
    np.testing.assert_allclose(np.asarray(beam["weights"])[:, 0], np.asarray(greedy["weights"]),
                               atol=1e-6)
    for row in range(len(source)):
        length = int(np.sum(source[row] != PAD_ID))
        alone = greedy_search(model, tf.constant(source[row:row + 1, :length]), 7)
        tokens = np.asarray(alone["tokens"])[0]
        np.testing.assert_array_equal(np.asarray(greedy["tokens"])[row, :len(tokens)], tokens)
        np.testing.assert_allclose(np.asarray(greedy["weights"])[row, :len(tokens), :length],
                                   np.asarray(alone["weights"])[0], atol=1e-5)
        assert np.all(np.asarray(greedy["weights"])[row, :, length:] == 0.0)


def test_beam_search_runs_in_a_graph_with_a_cache_per_hypothesis():
    model = transformer(seed=3)
    source, _ = toy_batch(seed=2)
    search = tf.function(lambda s: beam_search(model, s, tf.constant([6, 7, 8]), beam_size=3))
    result = search(tf.constant(source))
    assert result["tokens"].shape[:2] == (3, 3)
    scores = np.asarray(result["scores"])
    assert np.all(np.diff(scores, axis=1) <= 0)  # best first


@pytest.mark.parametrize("score", ["scaled_dot", "additive"])
def test_xla_compiled_decode_step_matches_eager(score):
    """Fixed shapes (a cache of max_steps slots): the step compiles with XLA."""
    model = transformer(score=score)
    source, target_in = toy_batch()
    memory, state = model.encode(source, max_steps=5)
    compiled = tf.function(model.decode_step, jit_compile=True)
    for position in range(3):
        logits, new_state, weights = model.decode_step(target_in[:, position], state, memory)
        xla_logits, xla_state, xla_weights = compiled(target_in[:, position], state, memory)
        np.testing.assert_allclose(np.asarray(xla_logits), np.asarray(logits), atol=1e-5)
        np.testing.assert_allclose(np.asarray(xla_weights), np.asarray(weights), atol=1e-6)
        assert xla_state["keys"].shape == new_state["keys"].shape
        state = new_state


def test_sinusoids_follow_the_paper():
    table = np.asarray(sinusoidal_positions(tf.range(4), 6))
    rates = 10000.0 ** (-np.arange(3) * 2 / 6)
    np.testing.assert_allclose(table[:, :3], np.sin(np.arange(4)[:, None] * rates), atol=1e-6)
    np.testing.assert_allclose(table[:, 3:], np.cos(np.arange(4)[:, None] * rates), atol=1e-6)


def test_untrained_loss_is_about_log_vocabulary_size():
    model = transformer(tgt_vocab_size=50)
    source, target_in = toy_batch()
    model.compile(optimizer="adam")
    metrics = model.evaluate((source, target_in), target_in, verbose=0, return_dict=True)
    assert metrics["loss"] == pytest.approx(np.log(50), rel=0.15)


def test_bfloat16_policy_runs_and_keeps_float32_weights():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = transformer()
        source, target_in = toy_batch()
        logits, weights = model((source, target_in), training=False)
        step_logits, step_weights = step_through(model, source, target_in)
    finally:
        keras.config.set_dtype_policy("float32")
    assert all(variable.dtype == "float32" for variable in model.weights)
    assert weights.dtype == "float32"
    np.testing.assert_allclose(step_logits, np.asarray(logits, "float32"), atol=0.1)


# ------------------------------------------------------------------------- saving
@pytest.mark.parametrize("overrides", [{}, {"score": "cosine", "positions": "learned",
                                            "tie_embeddings": True, "share_embeddings": True,
                                            "tgt_vocab_size": 11}])
def test_keras_file_round_trip_without_custom_objects(overrides, tmp_path):
    model = transformer(seed=4, **overrides)
    source, target_in = toy_batch(seed=1)
    target_in = np.minimum(target_in, model.config.tgt_vocab_size - 1)
    expected = model((source, target_in), training=False)
    model.save(tmp_path / "transformer.keras")
    restored = keras.saving.load_model(tmp_path / "transformer.keras")
    assert isinstance(restored, Transformer) and restored.config == model.config
    for got, want in zip(restored((source, target_in), training=False), expected, strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_config_json_and_weights_rebuild_the_model(tmp_path):
    """What a run directory holds (config.json + weights) gives the same model back."""
    model = transformer(seed=5, score="additive", share_embeddings=True, tgt_vocab_size=11)
    assert model.source_embedding is model.target_embedding
    assert len(model.weights) == len({id(variable) for variable in model.weights})
    config = Config(model=model.config)
    config.save(tmp_path / "config.json")
    model.save_weights(tmp_path / "model.weights.h5")
    loaded = Config.load(tmp_path / "config.json")
    assert loaded.model == model.config
    rebuilt = build_model(loaded.model)
    rebuilt.load_weights(tmp_path / "model.weights.h5")
    source, target_in = toy_batch(seed=1)
    target_in = np.minimum(target_in, 10)
    np.testing.assert_array_equal(np.asarray(rebuilt((source, target_in))[0]),
                                  np.asarray(model((source, target_in))[0]))


@pytest.mark.parametrize(("overrides", "fragment"), [
    ({"architecture": "transformers"}, "model.architecture: expected one of ['rnn', "
                                       "'transformer'], received 'transformers'"),
    ({"model_dim": 10, "heads": 4}, "model.model_dim: expected a multiple of model.heads=4"),
    ({"share_embeddings": True}, "model.share_embeddings needs equal vocabularies"),
    ({"positions": "rotary"}, "model.positions: expected one of ['sinusoidal', 'learned']"),
    ({"alignment_layer": 2}, "model.alignment_layer: expected None or a layer index in [0, 2)"),
    ({"heads": 0}, "model.heads: expected >= 1"),
    ({"cell": "lstm"}, "model.cell applies to architecture 'rnn' only; received 'lstm'"),
    ({"input_feeding": True}, "model.input_feeding applies to architecture 'rnn' only"),
])
def test_bad_transformer_settings_are_one_line_errors(overrides, fragment):
    with pytest.raises(ConfigError) as error:
        Config.from_dict({"model": {**transformer_config().__dict__, **overrides}})
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_equal_size_scores_need_no_rnn_size_match_in_a_transformer():
    """The RNN's check (decoder_units == 2 * encoder_units for dot scores) is not the
    Transformer's: every head compares vectors of one size."""
    config = transformer_config(score="dot", encoder_units=6, decoder_units=7)
    config.validate()
    assert isinstance(make_model(config), Transformer)


# ---------------------------------------------------------------- export and learning
SENTENCES = ["Ein Mann fährt Fahrrad.", "", "Zwei Hunde spielen im Schnee vor dem Haus."]


def tiny_translator(seed=6, **overrides):
    """An untrained tiny Transformer with the default shipped model's tokenizers."""
    from nmt.shipped import DEFAULT_MODEL, SHIPPED_DIR
    from nmt.tokenizer import SubwordTokenizer
    from nmt.translator import Translator

    # Seed first: keras.utils.set_random_seed drops the eager sentencepiece resources of
    # tokenizers loaded before it.
    keras.utils.set_random_seed(seed)
    shipped = SHIPPED_DIR / DEFAULT_MODEL
    source_tokenizer = SubwordTokenizer.load(shipped / "source.model")
    target_tokenizer = SubwordTokenizer.load(shipped / "target.model")
    config = Config.from_dict(json.loads((shipped / "config.json").read_text()))
    config.model = transformer_config(src_vocab_size=source_tokenizer.vocab_size,
                                      tgt_vocab_size=target_tokenizer.vocab_size, **overrides)
    return Translator(config, build_model(config.model), source_tokenizer, target_tokenizer,
                      name="tiny-transformer")


@pytest.mark.parametrize("beam", [1, 3])
def test_translations_carry_every_layer_and_head(beam):
    translator = tiny_translator(layers=3, heads=2)
    assert all(t.heads is None for t in translator.translate(SENTENCES, beam=beam))
    translations = translator.translate(SENTENCES, beam=beam, heads=True)
    assert translations[1].heads is None and translations[1].text == ""
    for translation in (translations[0], translations[2]):
        shape = (len(translation.target_tokens), len(translation.source_tokens))
        assert translation.heads.shape == (3, 2, *shape)
        # the default matrix is the penultimate layer's head-average, as the search gave it
        np.testing.assert_allclose(translation.heads[1].mean(axis=0), translation.attention,
                                   atol=1e-5)


def test_saved_model_export_equals_the_translator(tmp_path):
    from nmt.export import export_saved_model

    translator = tiny_translator(layers=1)
    sentences = SENTENCES
    # Translate and export before loading: a SavedModel loaded in this process takes over
    # the sentencepiece resources of the translator's tokenizers.
    expected = {beam: translator.translate(sentences, beam=beam, alpha=0.6) for beam in (1, 2)}
    paths = {beam: export_saved_model(translator, tmp_path / f"beam{beam}", beam=beam,
                                      alpha=0.6) for beam in (1, 2)}
    for beam, path in paths.items():
        served = tf.saved_model.load(str(path)).signatures["serving_default"](
            texts=tf.constant(sentences))
        for row, translation in enumerate(expected[beam]):
            assert served["translations"][row].numpy().decode() == translation.text
            length = len(translation.target_tokens)
            np.testing.assert_allclose(served["attention"][row, :length].numpy()[
                :, :len(translation.source_tokens)], translation.attention, atol=1e-5)


def test_a_tiny_transformer_learns_to_reverse():
    keras.utils.set_random_seed(0)
    inputs, targets, _ = reversal_data(3000, seed=0)
    valid_inputs, valid_targets, _ = reversal_data(300, seed=1)
    config = ModelConfig(src_vocab_size=REVERSE_VOCAB, tgt_vocab_size=REVERSE_VOCAB,
                         architecture="transformer", layers=1, model_dim=32, heads=2,
                         ffn_dim=64, score="scaled_dot", dropout=0.0)
    model = build_model(config)
    model.compile(optimizer=keras.optimizers.Adam(3e-3, global_clipnorm=1.0))
    model.fit(inputs, targets, batch_size=64, epochs=4, verbose=0)
    metrics = model.evaluate(valid_inputs, valid_targets, batch_size=300, verbose=0,
                             return_dict=True)
    print(f"reversal transformer: {metrics}")
    assert metrics["accuracy"] >= 0.95
    source = tf.constant(valid_inputs[0][:20])
    tokens = np.asarray(greedy_search(model, source, 10)["tokens"])
    want = valid_targets[:20]
    exact = np.mean([np.array_equal(tokens[row, :want.shape[1]], want[row])
                     for row in range(20)])
    print(f"greedy exact matches: {exact}")
    assert exact >= 0.8
    assert BOS_ID not in tokens and EOS_ID in tokens


# --------------------------------------------------------------------------- command line
def test_train_flags_set_the_architecture_fields():
    from nmt.cli import train as train_cli

    args = train_cli.build_parser().parse_args([
        "--architecture", "transformer", "--layers", "2", "--model-dim", "64", "--heads", "8",
        "--ffn-dim", "128", "--positions", "learned", "--share-embeddings",
        "--src-vocab-size", "500", "--tgt-vocab-size", "500", "--alignment-layer", "0"])
    model = train_cli.config_from_args(args).model
    assert (model.architecture, model.layers, model.model_dim, model.heads, model.ffn_dim,
            model.positions, model.share_embeddings, model.alignment_layer) == (
        "transformer", 2, 64, 8, 128, "learned", True, 0)
    args = train_cli.build_parser().parse_args(["--cell", "lstm"])
    assert train_cli.config_from_args(args).model.cell == "lstm"


@pytest.mark.parametrize("argv", [["--architecture", "cnn"], ["--cell", "rnn"],
                                  ["--positions", "rotary"]])
def test_bad_choices_are_refused_by_the_parser(argv, capsys):
    from nmt.cli import train as train_cli

    with pytest.raises(SystemExit) as exit_:
        train_cli.build_parser().parse_args(argv)
    assert exit_.value.code == 2
    assert f"invalid choice: '{argv[1]}'" in capsys.readouterr().err
