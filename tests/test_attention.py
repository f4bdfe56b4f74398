"""Tests for nmt.attention: every score against numpy, masking, hard mode, gradients, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from nmt.attention import SCORES, Attention, weight_statistics

BATCH, TQ, TS, DV = 2, 3, 5, 7
EQUAL_DIM_SCORES = ("dot", "scaled_dot", "cosine")  # compare q and k without a learned map
ALL_SCORES = ("dot", "scaled_dot", "general", "cosine", "additive")
MODES = ("soft", "hard")
WEIGHT_NAMES = {
    "dot": set(),
    "scaled_dot": set(),
    "general": {"general_kernel"},
    "cosine": {"cosine_scale"},
    "additive": {"additive_query_kernel", "additive_key_kernel", "additive_vector"},
}
# Batch row 0 is a full sentence; row 1 has two padding positions at the end.
MASK = np.array([[True] * TS, [True] * (TS - 2) + [False] * 2])


def dims(score):
    """(dq, dk): scores with a learned map get different query and key sizes."""
    return (4, 4) if score in EQUAL_DIM_SCORES else (6, 4)


def make_inputs(score, tq=TQ, seed=0):
    """Seeded query [BATCH, tq, dq], keys [BATCH, TS, dk], values [BATCH, TS, DV]."""
    rng = np.random.default_rng(seed)
    dq, dk = dims(score)
    query = rng.normal(scale=0.7, size=(BATCH, tq, dq)).astype("float32")
    keys = rng.normal(scale=0.7, size=(BATCH, TS, dk)).astype("float32")
    values = rng.normal(size=(BATCH, TS, DV)).astype("float32")
    return query, keys, values


def make_layer(score, mode="soft", **kwargs):
    """A built layer whose random weights are non-trivial (cosine scale moved off 10)."""
    layer = Attention(score=score, mode=mode, units=3 if score == "additive" else None,
                      **kwargs)
    query, keys, values = make_inputs(score)
    layer(query, keys, values)
    for variable in layer.weights:
        if variable.name == "cosine_scale":
            variable.assign(2.5)
    return layer


def layer_weights(layer):
    return {variable.name: variable.numpy().astype("float64") for variable in layer.weights}


# ------------------------------------------------------------------ numpy references
def reference_scores(score, weights, query, keys):
    """The paper formulas, written out in float64 numpy: [batch, tq, ts]."""
    query, keys = query.astype("float64"), keys.astype("float64")
    if score == "dot":
        return query @ keys.transpose(0, 2, 1)
    if score == "scaled_dot":
        return query @ keys.transpose(0, 2, 1) / np.sqrt(keys.shape[-1])
    if score == "general":  # q . (W k), W [dq, dk]
        return query @ weights["general_kernel"] @ keys.transpose(0, 2, 1)
    if score == "cosine":
        unit_q = query / np.linalg.norm(query, axis=-1, keepdims=True)
        unit_k = keys / np.linalg.norm(keys, axis=-1, keepdims=True)
        return weights["cosine_scale"] * unit_q @ unit_k.transpose(0, 2, 1)
    if score == "additive":  # v . tanh(W1 q + W2 k)
        projected_q = query @ weights["additive_query_kernel"]  # [batch, tq, units]
        projected_k = keys @ weights["additive_key_kernel"]  # [batch, ts, units]
        hidden = np.tanh(projected_q[:, :, None, :] + projected_k[:, None, :, :])
        return hidden @ weights["additive_vector"]
    raise KeyError(score)


def reference_attention(scores, values, mask=None):
    """Masked softmax over the last axis, then the weighted sum of values."""
    if mask is not None:
        scores = np.where(mask[:, None, :], scores, -np.inf)
    exp = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights = exp / exp.sum(axis=-1, keepdims=True)
    return weights @ values.astype("float64"), weights


# ----------------------------------------------------------------- scores and masking
def test_registry_holds_the_documented_scores():
    assert set(ALL_SCORES) <= set(SCORES)


@pytest.mark.parametrize("score", ALL_SCORES)
def test_weight_names_and_shapes(score):
    layer = make_layer(score)
    dq, dk = dims(score)
    shapes = {variable.name: tuple(variable.shape) for variable in layer.trainable_weights}
    assert set(shapes) == WEIGHT_NAMES[score]
    expected = {"general_kernel": (dq, dk), "cosine_scale": (), "additive_query_kernel": (dq, 3),
                "additive_key_kernel": (dk, 3), "additive_vector": (3,)}
    for name, shape in shapes.items():
        assert shape == expected[name]


@pytest.mark.parametrize("score", ALL_SCORES)
def test_scores_match_numpy_reference(score):
    layer = make_layer(score)
    query, keys, _ = make_inputs(score, seed=1)
    scores = layer.scorer(tf.constant(query), layer.prepare_keys(tf.constant(keys)))
    expected = reference_scores(score, layer_weights(layer), query, keys)
    np.testing.assert_allclose(scores.numpy(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("score", ALL_SCORES)
def test_full_pipeline_matches_numpy_reference(score, masked):
    layer = make_layer(score)
    query, keys, values = make_inputs(score, seed=2)
    mask = MASK if masked else None
    context, weights = layer(query, keys, values, mask=mask)
    assert context.shape == (BATCH, TQ, DV) and weights.shape == (BATCH, TQ, TS)
    scores = reference_scores(score, layer_weights(layer), query, keys)
    expected_context, expected_weights = reference_attention(scores, values, mask)
    np.testing.assert_allclose(weights.numpy(), expected_weights, atol=1e-5)
    np.testing.assert_allclose(context.numpy(), expected_context, atol=1e-5)


@pytest.mark.parametrize("score", ALL_SCORES)
def test_values_default_to_keys(score):
    layer = make_layer(score)
    query, keys, _ = make_inputs(score, seed=3)
    context, weights = layer(query, keys)
    np.testing.assert_allclose(context.numpy(), weights.numpy() @ keys, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tq", [1, TQ])
@pytest.mark.parametrize("score", ALL_SCORES)
def test_masked_positions_get_exactly_zero_weight(score, tq, mode):
    layer = make_layer(score, mode)
    query, keys, values = make_inputs(score, tq=tq, seed=4)
    context, weights = layer(query, keys, values, mask=MASK)
    weights = weights.numpy()
    assert weights.shape == (BATCH, tq, TS) and context.shape == (BATCH, tq, DV)
    assert np.all(weights[1, :, TS - 2:] == 0.0)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tq", [1, TQ])
@pytest.mark.parametrize("score", ALL_SCORES)
def test_all_but_one_masked_puts_all_weight_there(score, tq, mode):
    layer = make_layer(score, mode)
    query, keys, values = make_inputs(score, tq=tq, seed=5)
    mask = np.zeros((BATCH, TS), bool)
    mask[0, 2] = mask[1, 4] = True
    context, weights = layer(query, keys, values, mask=mask)
    expected = np.zeros((BATCH, tq, TS))
    expected[0, :, 2] = expected[1, :, 4] = 1.0
    np.testing.assert_array_equal(weights.numpy(), expected)
    np.testing.assert_allclose(context.numpy()[0], np.tile(values[0, 2], (tq, 1)), atol=1e-6)
    np.testing.assert_allclose(context.numpy()[1], np.tile(values[1, 4], (tq, 1)), atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("score", ["general", "additive"])
def test_fully_masked_row_gets_zero_weights(score, mode):
    """A sentence of only padding attends to nothing instead of averaging the padding."""
    layer = make_layer(score, mode)
    query, keys, values = make_inputs(score, seed=17)
    mask = MASK.copy()
    mask[1] = False
    for training in (False, True):
        context, weights = layer(query, keys, values, mask=mask, training=training)
        assert np.all(weights.numpy()[1] == 0.0) and np.all(context.numpy()[1] == 0.0)
        np.testing.assert_allclose(weights.numpy()[0].sum(axis=-1), 1.0, atol=1e-6)


def test_cosine_is_invariant_to_positive_scaling():
    layer = make_layer("cosine")
    query, keys, values = make_inputs("cosine", seed=6)
    _, weights = layer(query, keys, values, mask=MASK)
    _, scaled = layer(3.7 * query, 0.2 * keys, values, mask=MASK)
    np.testing.assert_allclose(scaled.numpy(), weights.numpy(), atol=1e-6)
    assert np.ptp(weights.numpy()[0], axis=-1).min() > 1e-3  # not trivially uniform


@pytest.mark.parametrize("score", ["dot", "scaled_dot", "cosine"])
def test_equal_dimension_scores_reject_different_sizes(score):
    with pytest.raises(ValueError, match="query size 6 and key size 4"):
        Attention(score=score)(np.zeros((1, 2, 6), "float32"), np.zeros((1, 3, 4), "float32"))


# ------------------------------------------------------------------------- hard mode
def hard_copy_of(soft_layer, score):
    """A hard-mode layer with the soft layer's parameters."""
    hard = Attention(score=score, mode="hard", units=soft_layer.units, seed=11)
    query, keys, values = make_inputs(score)
    hard(query, keys, values)
    hard.set_weights(soft_layer.get_weights())
    return hard


@pytest.mark.parametrize("score", ALL_SCORES)
def test_hard_inference_is_one_hot_at_the_soft_argmax(score):
    soft = make_layer(score)
    hard = hard_copy_of(soft, score)
    query, keys, values = make_inputs(score, seed=7)
    _, soft_weights = soft(query, keys, values, mask=MASK)
    context, weights = hard(query, keys, values, mask=MASK, training=False)
    expected = np.eye(TS)[soft_weights.numpy().argmax(axis=-1)]
    np.testing.assert_array_equal(weights.numpy(), expected)
    np.testing.assert_allclose(context.numpy(), expected @ values, atol=1e-6)


@pytest.mark.parametrize("score", ALL_SCORES)
def test_hard_training_is_one_hot_and_has_gradients(score):
    layer = make_layer(score, "hard", seed=5)
    query, keys, values = (tf.constant(array) for array in make_inputs(score, seed=8))
    projection = tf.constant(np.random.default_rng(9).normal(size=(BATCH, TQ, DV)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(query)
        context, weights = layer(query, keys, values, mask=MASK, training=True)
        loss = tf.reduce_sum(context * projection)
    weights = weights.numpy()
    one_hot = np.eye(TS)[weights.argmax(axis=-1)]
    np.testing.assert_allclose(weights, one_hot, atol=1e-6)
    assert np.all(weights[1, :, TS - 2:] == 0.0)
    np.testing.assert_allclose(context.numpy(), one_hot @ values.numpy(), atol=1e-5)
    gradient = tape.gradient(loss, query)
    assert gradient is not None and np.any(gradient.numpy() != 0.0)


def test_hard_training_samples_differ_from_the_argmax_sometimes():
    """Gumbel noise at temperature 1 must pick a non-argmax position now and then."""
    layer = make_layer("general", "hard", seed=3)
    rng = np.random.default_rng(10)
    query = rng.normal(scale=0.3, size=(BATCH, 50, 6)).astype("float32")
    keys = rng.normal(scale=0.3, size=(BATCH, TS, 4)).astype("float32")
    _, greedy = layer(query, keys, training=False)
    _, sampled = layer(query, keys, training=True)
    changed = np.mean(greedy.numpy().argmax(-1) != sampled.numpy().argmax(-1))
    assert 0.1 < changed < 0.95


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("score", ALL_SCORES)
def test_gradients_reach_every_trainable_variable(score, mode):
    layer = make_layer(score, mode, seed=4)
    query, keys, values = (tf.constant(array) for array in make_inputs(score, seed=11))
    projection = tf.constant(np.random.default_rng(12).normal(size=(BATCH, TQ, DV)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch([query, keys])
        context, _ = layer(query, keys, values, mask=MASK, training=True)
        loss = tf.reduce_sum(context * projection)
    sources = [query, keys, *layer.trainable_variables]
    gradients = tape.gradient(loss, sources)
    assert len(layer.trainable_variables) == len(WEIGHT_NAMES[score])
    for source, gradient in zip(sources, gradients, strict=True):
        name = getattr(source, "name", "input")
        assert gradient is not None, name
        assert np.any(tf.convert_to_tensor(gradient).numpy() != 0.0), name


# -------------------------------------------------------------- errors and round trips
def test_unknown_score_error_lists_every_score():
    with pytest.raises(ValueError, match="bogus") as error:
        Attention(score="bogus")
    for name in SCORES:
        assert repr(name) in str(error.value)


def test_docstrings_name_every_registered_score():
    import nmt.attention

    for text in (nmt.attention.__doc__, Attention.__doc__):
        assert "{scores}" not in text
        assert f"{', '.join(SCORES)}." in text


@pytest.mark.parametrize("with_values", [True, False])
@pytest.mark.parametrize("score", ALL_SCORES)
def test_compute_output_shape_matches_the_outputs(score, with_values):
    layer = make_layer(score)
    query, keys, values = make_inputs(score)
    inputs = (query, keys, values) if with_values else (query, keys)
    shapes = layer.compute_output_shape(*(x.shape for x in inputs))
    dv = DV if with_values else keys.shape[-1]
    assert shapes == ((BATCH, TQ, dv), (BATCH, TQ, TS))
    outputs = layer(*inputs, mask=MASK)
    assert [tuple(o.shape) for o in outputs] == list(shapes)
    # Unknown sizes stay unknown.
    assert layer.compute_output_shape((None, None, 6), (None, None, 4)) == (
        (None, None, 4), (None, None, None))


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_symbolic_outputs_have_the_eager_shapes_and_dtypes(policy):
    from nmt.distribute import dtype_policy

    with dtype_policy(policy):
        layer = Attention(score="additive", units=3)
    dq, dk = dims("additive")
    query, keys = keras.Input((TQ, dq)), keras.Input((TS, dk))
    values, mask = keras.Input((TS, DV)), keras.Input((TS,), dtype="bool")
    context, weights = layer(query, keys, values, mask=mask)
    assert (context.shape, weights.shape) == ((None, TQ, DV), (None, TQ, TS))
    eager = layer(*make_inputs("additive"), mask=MASK)
    assert context.dtype == eager[0].dtype.name == layer.compute_dtype
    assert weights.dtype == eager[1].dtype.name == "float32"


def test_unknown_mode_raises():
    with pytest.raises(ValueError, match="sparse") as error:
        Attention(score="dot", mode="sparse")
    assert "'soft'" in str(error.value) and "'hard'" in str(error.value)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("score", ALL_SCORES)
def test_config_round_trip_gives_identical_outputs(score, mode):
    layer = make_layer(score, mode, temperature=0.5, seed=7)
    config = layer.get_config()
    assert {key: config[key] for key in ("score", "mode", "units", "temperature", "seed")} == {
        "score": score, "mode": mode, "units": layer.units, "temperature": 0.5, "seed": 7}
    clone = Attention.from_config(config)
    query, keys, values = make_inputs(score, seed=13)
    clone(query, keys, values)
    clone.set_weights(layer.get_weights())
    for got, expected in zip(clone(query, keys, values, mask=MASK),
                             layer(query, keys, values, mask=MASK), strict=True):
        np.testing.assert_array_equal(got.numpy(), expected.numpy())


def functional_model(score, mode):
    dq, dk = dims(score)
    query = keras.Input((TQ, dq), name="query")
    keys = keras.Input((TS, dk), name="keys")
    values = keras.Input((TS, DV), name="values")
    mask = keras.Input((TS,), dtype="bool", name="mask")
    layer = Attention(score=score, mode=mode, units=3 if score == "additive" else None,
                      name="attention")
    context, weights = layer(query, keys, values, mask=mask)
    return keras.Model([query, keys, values, mask], [context, weights])


@pytest.mark.parametrize(("score", "mode"), [(score, "soft") for score in ALL_SCORES]
                         + [("general", "hard")])
def test_keras_file_round_trip_without_custom_objects(score, mode, tmp_path):
    keras.utils.set_random_seed(1)
    model = functional_model(score, mode)
    for variable in model.get_layer("attention").weights:
        if variable.name == "cosine_scale":
            variable.assign(2.5)  # a value the fresh layer would not have
    inputs = [*make_inputs(score, seed=14), MASK]
    expected = model(inputs, training=False)
    path = tmp_path / "attention.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored.get_layer("attention"), Attention)
    for got, want in zip(restored(inputs, training=False), expected, strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


# ----------------------------------------------------------------------- compilation
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("score", ALL_SCORES)
def test_jit_compiled_call_matches_eager(score, mode):
    layer = make_layer(score, mode, seed=2)
    query, keys, values = make_inputs(score, seed=15)

    @tf.function(jit_compile=True)
    def attend(query, keys, values, mask):
        return layer(query, keys, values, mask=mask, training=False)

    for got, expected in zip(attend(query, keys, values, MASK),
                             layer(query, keys, values, mask=MASK), strict=True):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5)


def test_jit_compiled_hard_training_is_one_hot():
    layer = make_layer("additive", "hard", seed=2)
    query, keys, values = make_inputs("additive", seed=16)

    @tf.function(jit_compile=True)
    def attend(query, keys, values, mask):
        return layer(query, keys, values, mask=mask, training=True)

    _, weights = attend(query, keys, values, MASK)
    weights = weights.numpy()
    np.testing.assert_allclose(weights, np.eye(TS)[weights.argmax(axis=-1)], atol=1e-6)
    assert np.all(weights[1, :, TS - 2:] == 0.0)


def test_weight_statistics_match_numpy_over_rows_of_several_sentences():
    rng = np.random.default_rng(5)
    matrices = [tf.nn.softmax(rng.normal(size=(tt, ts)) * 3, axis=-1).numpy()
                for tt, ts in ((4, 7), (1, 3), (6, 11))]
    matrices.append(np.zeros((0, 5)))  # an empty translation: no rows
    entropy, largest, rows = weight_statistics(matrices)
    everything = [-(m * np.log(m)).sum(axis=-1) for m in matrices[:3]]  # numpy reference
    assert rows == 11
    np.testing.assert_allclose(entropy, np.concatenate(everything).mean(), rtol=1e-6)
    np.testing.assert_allclose(largest, np.concatenate([m.max(-1) for m in matrices[:3]]).mean())


def test_weight_statistics_of_one_hot_uniform_and_no_rows():
    one_hot = np.eye(4)[[2, 0, 3]]
    uniform = np.full((2, 8), 1 / 8)
    assert weight_statistics([one_hot]) == (0.0, 1.0, 3)
    entropy, largest, _ = weight_statistics([uniform])
    np.testing.assert_allclose([entropy, largest], [np.log(8), 1 / 8])
    entropy, largest, rows = weight_statistics([np.zeros((0, 3))])
    assert rows == 0 and np.isnan(entropy) and np.isnan(largest)
