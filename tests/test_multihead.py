"""Tests for nmt.multihead: every score per head against numpy, masks (padding and causal),
hard mode, per-head weights, serialisation."""

import keras
import numpy as np
import pytest

from nmt.attention import SCORES
from nmt.multihead import MultiHeadAttention
from tests.test_attention import reference_scores

BATCH, TS, DQ, DK, HEADS, KEY_DIM = 2, 5, 6, 7, 3, 4
ALL_SCORES = tuple(SCORES)  # a score added to the registry is tested here too
# Row 0 sees every key; row 1 has two padding positions at the end.
KEY_MASK = np.array([[True] * TS, [True] * (TS - 2) + [False] * 2])


def make_inputs(tq, seed=0):
    """Seeded query [BATCH, tq, DQ], keys [BATCH, TS, DK], values [BATCH, TS, DK]."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(BATCH, tq, DQ)).astype("float32"),
            rng.normal(size=(BATCH, TS, DK)).astype("float32"),
            rng.normal(size=(BATCH, TS, DK)).astype("float32"))


def make_layer(score, mode="soft", tq=3):
    """A built layer; each head's cosine scale is moved off 10 to a value of its own."""
    keras.utils.set_random_seed(1)
    layer = MultiHeadAttention(HEADS, KEY_DIM, score=score, mode=mode, units=3)
    layer(*make_inputs(tq))
    for index, attention in enumerate(layer.attentions):
        for variable in attention.weights:
            if variable.name == "cosine_scale":
                variable.assign(1.5 + index)
    return layer


def masks(tq):
    """The masks each case runs with: none, padding [batch, ts], padding and causal
    [batch, tq, ts] (query i sees keys 0..i + TS - tq, so every row keeps at least one)."""
    causal = np.arange(TS)[None, :] <= np.arange(tq)[:, None] + TS - tq
    return {"none": None, "padding": KEY_MASK,
            "causal": causal[None] & KEY_MASK[:, None, :]}


def reference(layer, query, keys, values, mask, hard=False):
    """Vaswani eq. 4-5 in float64 numpy, each head scored with nmt.attention's formula."""
    def project(dense, x):
        kernel, bias = (np.asarray(w, "float64") for w in dense.get_weights())
        return np.einsum("btd,dhk->bthk", x, kernel) + bias

    q, k, v = (project(dense, x) for dense, x in ((layer.query_projection, query),
                                                   (layer.key_projection, keys),
                                                   (layer.value_projection, values)))
    contexts, all_weights = [], []
    for head, attention in enumerate(layer.attentions):
        head_weights = {w.name: np.asarray(w, "float64") for w in attention.weights}
        scores = reference_scores(attention.score, head_weights, q[:, :, head], k[:, :, head])
        keep = np.ones(scores.shape, bool) if mask is None else (
            np.broadcast_to(mask[:, None, :] if mask.ndim == 2 else mask, scores.shape))
        scores = np.where(keep, scores, -np.inf)
        if hard:
            weights = np.eye(TS)[scores.argmax(axis=-1)]
        else:
            weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
            weights /= weights.sum(axis=-1, keepdims=True)
        contexts.append(weights @ v[:, :, head])
        all_weights.append(weights)
    kernel, bias = (np.asarray(w, "float64") for w in layer.output_projection.get_weights())
    output = np.einsum("bthk,hkd->btd", np.stack(contexts, axis=2), kernel) + bias
    return output, np.stack(all_weights, axis=1)


@pytest.mark.parametrize("mask_name", ["none", "padding", "causal"])
@pytest.mark.parametrize("tq", [1, 4])
@pytest.mark.parametrize("score", ALL_SCORES)
def test_every_score_matches_numpy_reference(score, tq, mask_name):
    layer = make_layer(score, tq=tq)
    query, keys, values = make_inputs(tq, seed=2)
    mask = masks(tq)[mask_name]
    output, weights = layer(query, keys, values, mask=mask)
    want_output, want_weights = reference(layer, query, keys, values, mask)
    assert weights.shape == (BATCH, HEADS, tq, TS) and weights.dtype == "float32"
    np.testing.assert_allclose(np.asarray(weights), want_weights, atol=2e-5)
    np.testing.assert_allclose(np.asarray(output), want_output, atol=5e-5)
    if mask is not None:  # exact zeros where masked, whatever the score
        keep = np.broadcast_to(mask[:, None, None, :] if mask.ndim == 2 else mask[:, None],
                               weights.shape)
        assert np.all(np.asarray(weights)[~keep] == 0.0)


@pytest.mark.parametrize("tq", [1, 4])
@pytest.mark.parametrize("score", ALL_SCORES)
def test_hard_mode_picks_each_heads_argmax(score, tq):
    layer = make_layer(score, mode="hard", tq=tq)
    query, keys, values = make_inputs(tq, seed=3)
    mask = masks(tq)["causal"]
    output, weights = layer(query, keys, values, mask=mask, training=False)
    want_output, want_weights = reference(layer, query, keys, values, mask, hard=True)
    np.testing.assert_array_equal(np.asarray(weights), want_weights)
    np.testing.assert_allclose(np.asarray(output), want_output, atol=5e-5)


def test_causal_mask_is_exact_and_later_keys_change_nothing():
    """Query i's output is bit-identical whatever keys j > i hold."""
    tq = TS
    x = make_inputs(tq, seed=4)[0]  # [BATCH, TS, DQ]: self-attention
    layer = MultiHeadAttention(HEADS, KEY_DIM, score="scaled_dot")
    causal = np.tril(np.ones((tq, tq), bool))[None].repeat(BATCH, axis=0)
    output, weights = layer(x, x, mask=causal)
    changed = x.copy()
    changed[:, -1] += 1.0  # only the last position changes
    changed_output, _ = layer(changed, changed, mask=causal)
    assert np.all(np.asarray(weights)[:, :, ~causal[0]] == 0.0)
    np.testing.assert_array_equal(np.asarray(changed_output)[:, :-1],
                                  np.asarray(output)[:, :-1])


def test_heads_have_weights_of_their_own():
    layer = make_layer("general")
    kernels = [np.asarray(attention.weights[0]) for attention in layer.attentions]
    assert len(kernels) == HEADS and all(k.shape == (KEY_DIM, KEY_DIM) for k in kernels)
    assert not np.allclose(kernels[0], kernels[1])
    cosine = make_layer("cosine")
    scales = [float(a.weights[0].numpy()) for a in cosine.attentions]
    assert scales == [1.5, 2.5, 3.5]  # one learned temperature per head


@pytest.mark.parametrize("score", ["general", "cosine"])
def test_config_round_trip_gives_identical_outputs(score):
    layer = make_layer(score)
    query, keys, values = make_inputs(3, seed=5)
    clone = MultiHeadAttention.from_config(layer.get_config())
    clone(query, keys, values)
    clone.set_weights(layer.get_weights())
    for got, want in zip(clone(query, keys, values, mask=KEY_MASK),
                         layer(query, keys, values, mask=KEY_MASK), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="Unknown attention score 'nope'"):
        MultiHeadAttention(2, 4, score="nope")
    with pytest.raises(ValueError, match="heads and key_dim must be >= 1"):
        MultiHeadAttention(0, 4)


@pytest.mark.parametrize("score", ["scaled_dot", "additive"])
def test_keras_file_round_trip_in_a_functional_model(score, tmp_path):
    """Symbolic call (compute_output_spec), saving and loading with no custom_objects."""
    keras.utils.set_random_seed(2)
    query = keras.Input((None, DQ))
    keys = keras.Input((None, DK))
    output, weights = MultiHeadAttention(HEADS, KEY_DIM, score=score, units=3)(query, keys)
    assert tuple(weights.shape) == (None, HEADS, None, None) and weights.dtype == "float32"
    model = keras.Model([query, keys], [output, weights])
    inputs = make_inputs(4, seed=6)[:2]
    expected = model(list(inputs))
    model.save(tmp_path / "multihead.keras")
    restored = keras.saving.load_model(tmp_path / "multihead.keras")
    for got, want in zip(restored(list(inputs)), expected, strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
