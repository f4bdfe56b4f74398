"""Tests for nmt.decoding and nmt.translator: greedy and beam search on trained tiny models.

Two models (fixtures of conftest.py): the shared `tiny_run` (3 epochs; its greedy
translations mostly run to the length limit) and `trained_run`, trained a little longer so
that greedy and beam hypotheses end with EOS at different lengths, which the padding, EOS
and length-penalty paths need.
Scores and attention weights are checked against a teacher-forced pass through
`model((source, target_in))` and beam search against a plain-Python reference.
"""

import logging
import math
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from nmt import decoding
from nmt.data import read_lines
from nmt.tokenizer import BOS_ID, EOS_ID, PAD_ID
from nmt.translator import MAX_SOURCE_TOKENS, SEARCHES_IN_FLIGHT, Translator
from tests.helpers import REPO

LONG_SENTENCE = " ".join(["Ein Mann mit einem roten Hut fährt Fahrrad ."] * 45)  # 405 words


@pytest.fixture(scope="module")
def validation_sources(multi30k_dir) -> list[str]:
    """The first 50 German sentences of the real Multi30k validation set."""
    return read_lines(multi30k_dir / "val.de.gz")[:50]


# Both models are trained before either is loaded: training reseeds TensorFlow, which
# invalidates every tokenizer loaded earlier (see test_translator_survives_reseeding).
@pytest.fixture(scope="module")
def translator(tiny_run, trained_run) -> Translator:
    return Translator.load(trained_run)


@pytest.fixture(scope="module")
def tiny_translator(tiny_run, trained_run) -> Translator:
    return Translator.load(tiny_run)


def pad(rows: list[list[int]]) -> np.ndarray:
    batch = np.full((len(rows), max(len(row) for row in rows)), PAD_ID, dtype=np.int32)
    for index, row in enumerate(rows):
        batch[index, :len(row)] = row
    return batch


def source_batch(translator: Translator, texts: list[str]) -> np.ndarray:
    ids, _ = translator.encode_sources(texts)
    return pad(ids)


def numpy_of(result: dict) -> dict[str, np.ndarray]:
    return {key: np.asarray(value) for key, value in result.items()}


def teacher_forced(model, source: np.ndarray, tokens: np.ndarray):
    """Rescore given outputs with teacher forcing.

    Args:
        source: [n, ts] ids. tokens: [n, tt] outputs (EOS, then PAD).
    Returns:
        sum of log-probabilities of the non-PAD tokens [n], attention weights [n, tt, ts].
    """
    target_in = np.concatenate([np.full((len(tokens), 1), BOS_ID), tokens[:, :-1]], axis=1)
    logits, weights = model((tf.constant(source), tf.constant(target_in, tf.int32)),
                            training=False)
    log_probs = tf.nn.log_softmax(logits, axis=-1).numpy()  # [n, tt, vocab]
    chosen = np.take_along_axis(log_probs, tokens[:, :, None].astype(np.int64), axis=2)[..., 0]
    return np.where(tokens != PAD_ID, chosen, 0.0).sum(axis=1), weights.numpy()


def reference_beam_search(model, source_ids, max_length, beam_size, alpha):
    """Textbook beam search for one sentence, in plain Python over `decode_step`.

    Every step extends each unfinished hypothesis by its `beam_size` best tokens, keeps the
    finished ones as they are, and keeps the `beam_size` best by log-prob / GNMT penalty.
    Returns (tokens without PAD, log-prob, length) tuples, best first.
    """
    def penalty(length):
        return ((5.0 + length) / 6.0) ** alpha

    memory, state = model.encode(tf.constant([source_ids], tf.int32))
    beam = [((), 0.0, False, state)]  # tokens, log-prob, finished, decoder state [1, ...]
    for _ in range(max_length):
        alive = [hypothesis for hypothesis in beam if not hypothesis[2]]
        if not alive:
            break
        states = tf.nest.map_structure(lambda *parts: tf.concat(parts, 0),
                                       *[hypothesis[3] for hypothesis in alive])
        count = len(alive)
        tiled = tf.nest.map_structure(lambda t: tf.repeat(t, count, axis=0), memory)  # noqa: B023
        previous = tf.constant([h[0][-1] if h[0] else BOS_ID for h in alive], tf.int32)
        logits, states, _ = model.decode_step(previous, states, tiled)
        log_probs = tf.nn.log_softmax(logits, axis=-1).numpy().astype(np.float64)
        candidates = [hypothesis for hypothesis in beam if hypothesis[2]]
        for row, (tokens, log_prob, _, _) in enumerate(alive):
            state_row = tf.nest.map_structure(lambda t, r=row: t[r:r + 1], states)
            for token in np.argsort(-log_probs[row])[:beam_size]:
                candidates.append((tokens + (int(token),), log_prob + log_probs[row, token],
                                   int(token) == EOS_ID, state_row))
        candidates.sort(key=lambda c: c[1] / penalty(len(c[0])), reverse=True)
        beam = candidates[:beam_size]
    return [(tokens, log_prob, len(tokens)) for tokens, log_prob, _, _ in beam]


# ----------------------------------------------------------------------------- greedy = beam 1
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
def test_greedy_equals_beam_search_of_size_one(translator, validation_sources, compiled):
    model = translator.model
    source = tf.constant(source_batch(translator, validation_sources[:12]))
    max_length = tf.constant(2 * source.shape[1] + 5)

    def greedy(source, max_length):
        return decoding.greedy_search(model, source, max_length)

    def beam(source, max_length):
        return decoding.beam_search(model, source, max_length, 1, 0.0)

    if compiled:  # as nmt.translator compiles them: any batch size, any length
        signature = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([], tf.int32)]
        greedy = tf.function(greedy, input_signature=signature)
        beam = tf.function(beam, input_signature=signature)
    expected, result = numpy_of(greedy(source, max_length)), numpy_of(beam(source, max_length))
    assert np.any(expected["tokens"] == EOS_ID)  # the model finishes sentences
    assert len(set(expected["lengths"].tolist())) > 1  # ... at different lengths
    np.testing.assert_array_equal(result["tokens"][:, 0], expected["tokens"])
    np.testing.assert_array_equal(result["lengths"][:, 0], expected["lengths"])
    np.testing.assert_allclose(result["log_probs"][:, 0], expected["scores"], atol=1e-5)
    np.testing.assert_allclose(result["scores"][:, 0], expected["scores"], atol=1e-5)
    np.testing.assert_allclose(result["weights"][:, 0], expected["weights"], atol=1e-6)


@pytest.mark.parametrize("beam_size", [1, 5])
def test_beam_search_traces_with_a_static_batch_shape(translator, beam_size):
    source = tf.constant([[40, 41, 42, EOS_ID], [43, 44, EOS_ID, PAD_ID]], tf.int32)
    compiled = tf.function(lambda source: decoding.beam_search(translator.model, source,
                                                               tf.constant(9), beam_size, 0.0))
    eager = decoding.beam_search(translator.model, source, tf.constant(9), beam_size, 0.0)
    np.testing.assert_array_equal(compiled(source)["tokens"], eager["tokens"])


# ----------------------------------------------------------------------- beam search correctness
@pytest.mark.parametrize("alpha", [0.0, 1.0, 3.0])  # 3: ranking during search
def test_beam_search_matches_reference_implementation(translator, validation_sources, alpha):
    texts = sorted(validation_sources, key=len)[:6]  # short: the reference is slow Python
    ids, _ = translator.encode_sources(texts)
    max_length = 2 * max(len(row) for row in ids) + 5
    result = numpy_of(decoding.beam_search(translator.model, tf.constant(pad(ids)),
                                           tf.constant(max_length), 5, alpha))
    for sentence, source_ids in enumerate(ids):
        reference = reference_beam_search(translator.model, source_ids, max_length, 5, alpha)
        lengths = result["lengths"][sentence]
        found = [tuple(result["tokens"][sentence, k, :lengths[k]].tolist()) for k in range(5)]
        assert len(set(found)) == 5, "the beam holds duplicate hypotheses"
        assert found[0] == reference[0][0]
        assert sorted(found) == sorted(tokens for tokens, _, _ in reference)
        np.testing.assert_allclose(result["log_probs"][sentence],
                                   [log_prob for _, log_prob, _ in reference], atol=1e-4)
        np.testing.assert_array_equal(lengths, [length for _, _, length in reference])


def test_beam_scores_at_least_greedy_on_tiny_run(tiny_translator, validation_sources):
    source = source_batch(tiny_translator, validation_sources)
    greedy = tiny_translator.search(source, beam=1)["log_probs"][:, 0]
    beam = tiny_translator.search(source, beam=5, alpha=0.0)["log_probs"][:, 0]
    assert len(beam) == 50
    assert np.all(beam >= greedy - 1e-4), np.flatnonzero(beam < greedy - 1e-4)


@pytest.mark.parametrize(("beam", "alpha"), [(1, 0.0), (5, 0.0), (5, 0.6)])
def test_scores_and_attention_belong_to_the_hypothesis(translator, validation_sources, beam,
                                                        alpha):
    source = source_batch(translator, validation_sources[:16])
    result = translator.search(source, beam=beam, alpha=alpha)
    batch, k, length = result["tokens"].shape
    tokens = result["tokens"].reshape(batch * k, length)
    log_probs, weights = teacher_forced(translator.model, np.repeat(source, k, axis=0), tokens)
    # float32 sums over up to ~200 tokens: 1e-4 absolute, or 1e-6 relative for long ones
    np.testing.assert_allclose(result["log_probs"].reshape(-1), log_probs, atol=1e-4, rtol=1e-6)
    found = result["weights"].reshape(batch * k, length, -1)
    for row, hypothesis_length in enumerate(result["lengths"].reshape(-1)):
        np.testing.assert_allclose(found[row, :hypothesis_length],
                                   weights[row, :hypothesis_length], atol=1e-5)
        assert not found[row, hypothesis_length:].any()  # nothing attended after EOS
    expected_scores = result["log_probs"] / ((5.0 + result["lengths"]) / 6.0) ** alpha
    np.testing.assert_allclose(result["scores"], expected_scores, rtol=1e-5)
    assert np.all(np.diff(result["scores"], axis=1) <= 0)  # best first


def test_best_tokens_are_the_top_of_a_float32_log_softmax():
    logits = np.random.default_rng(3).normal(size=(4, 50)).astype(np.float32) * 4
    logits[1, [7, 9, 30]] = logits[1].max() + 1  # a three-way tie: lower ids first
    scores, tokens = decoding.best_tokens(tf.constant(logits, tf.bfloat16), 3)
    rounded = tf.cast(tf.constant(logits, tf.bfloat16), tf.float32).numpy()
    shifted = rounded - rounded.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected = np.argsort(-log_probs, axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(tokens.numpy(), expected)
    np.testing.assert_array_equal(tokens.numpy()[1], [7, 9, 30])
    np.testing.assert_allclose(scores.numpy(), np.take_along_axis(log_probs, expected, 1),
                               rtol=1e-6, atol=1e-6)
    assert scores.dtype == tf.float32


def test_length_penalty_formula():
    lengths = tf.constant([1, 7, 19])
    np.testing.assert_allclose(decoding.length_penalty(lengths, 0.0).numpy(), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(decoding.length_penalty(lengths, 1.0).numpy(), [1.0, 2.0, 4.0])
    np.testing.assert_allclose(decoding.length_penalty(lengths, 0.5).numpy(),
                               [1.0, math.sqrt(2.0), 2.0], rtol=1e-6)


def test_large_length_penalty_chooses_longer_hypotheses(translator, validation_sources):
    texts = validation_sources[:20]
    plain = translator.translate(texts, beam=5, alpha=0.0)
    penalised = translator.translate(texts, beam=5, alpha=3.0)
    plain_mean = np.mean([len(t.target_tokens) for t in plain])
    penalised_mean = np.mean([len(t.target_tokens) for t in penalised])
    assert penalised_mean > plain_mean
    # alpha 0 ranks by log-probability: the longer choices have lower model scores
    assert np.mean([t.log_prob for t in penalised]) < np.mean([t.log_prob for t in plain])
    assert all(t.score == pytest.approx(t.log_prob, abs=1e-6) for t in plain)


# -------------------------------------------------------------------- batching and input order
def assert_same_translation(batched, single):
    assert batched.source == single.source
    assert batched.text == single.text
    assert batched.target_tokens == single.target_tokens
    assert batched.source_tokens == single.source_tokens
    assert batched.score == pytest.approx(single.score, abs=1e-4)
    assert batched.log_prob == pytest.approx(single.log_prob, abs=1e-4)
    np.testing.assert_allclose(batched.attention, single.attention, atol=1e-5)


@pytest.mark.parametrize("beam", [1, 5])
def test_batch_equals_one_sentence_at_a_time(translator, validation_sources, beam):
    # Longest first, then shortest: length sorting must reorder them, and batch_size 3
    # splits the twelve sentences into four batches in two chunks of 24 (= 3 * 8) at most.
    texts = sorted(validation_sources[:12], key=len, reverse=True)
    texts = texts[::2] + texts[1::2]
    batched = translator.translate(texts, beam=beam, batch_size=3)
    assert [t.source for t in batched] == texts  # back in input order
    for text, translation in zip(texts, batched, strict=True):
        assert_same_translation(translation, translator.translate([text], beam=beam)[0])


def test_chunks_keep_input_order(translator, validation_sources):
    texts = validation_sources[:20]
    chunks = list(translator.translate_batches(texts, beam=1, batch_size=2))  # chunks of 16
    assert [len(chunk) for chunk in chunks] == [16, 4]
    flat = [t for chunk in chunks for t in chunk]
    assert [t.source for t in flat] == texts
    for translation, expected in zip(flat, translator.translate(texts, beam=1), strict=True):
        assert translation.text == expected.text


def test_two_batches_are_searched_at_a_time(translator, validation_sources, monkeypatch):
    searching, most = [], []
    lock = threading.Lock()
    search = translator.search

    def counting_search(*args, **kwargs):
        with lock:
            searching.append(1)
            most.append(len(searching))
        time.sleep(0.2)  # long enough for the other worker to start its batch
        try:
            return search(*args, **kwargs)
        finally:
            with lock:
                searching.pop()

    expected = [t.text for t in translator.translate(validation_sources[:12], beam=1)]
    monkeypatch.setattr(translator, "search", counting_search)
    found = translator.translate(validation_sources[:12], beam=1, batch_size=3)
    assert max(most) == SEARCHES_IN_FLIGHT == 2 and len(most) == 4
    assert [t.text for t in found] == expected


def test_batch_equals_one_at_a_time_when_hypotheses_reach_max_length(tiny_translator):
    # A short --max-length-ratio makes the limit bind for any model: 0.2 * 13 + 5 tokens
    # cannot hold a translation of this sentence, whatever the model learnt.
    short, long = "Ein Mann mit einem roten Hut fährt Fahrrad.", LONG_SENTENCE[:400]
    alone = tiny_translator.translate([short], beam=1, max_length_ratio=0.2)[0]
    together = tiny_translator.translate([short, long], beam=1, max_length_ratio=0.2)[0]
    assert together.target_tokens == alone.target_tokens


# ------------------------------------------------------------------------------- long sources
def test_long_source_is_truncated_with_a_warning(tiny_translator, caplog):
    with caplog.at_level(logging.WARNING, logger="nmt.translator"):
        short, long = tiny_translator.translate(["Ein Mann.", LONG_SENTENCE], beam=1)
    assert not short.truncated
    assert long.truncated
    assert len(long.source_tokens) == MAX_SOURCE_TOKENS
    assert long.source_tokens[-1] == "</s>"
    assert long.attention.shape == (len(long.target_tokens), MAX_SOURCE_TOKENS)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"only the first {MAX_SOURCE_TOKENS - 1}" in warnings[0]


def test_truncation_warning_names_the_input_sentence(tiny_translator, caplog):
    texts = ["Ein Hund."] * 9 + [LONG_SENTENCE]  # batch_size 1: chunks of 8 sentences
    with caplog.at_level(logging.WARNING, logger="nmt.translator"):
        tiny_translator.translate(texts, beam=1, batch_size=1)
    assert "sentence 10 " in caplog.records[-1].getMessage()


# ------------------------------------------------------------------- a translator kept loaded
RESEED_SCRIPT = """
import sys
from nmt.training import seed_everything
from nmt.translator import Translator

translator = Translator.load(sys.argv[1])
before = translator.translate(["Ein Hund rennt."], beam=1)[0].text
seed_everything(0)  # what nmt.training.train does before training
after = translator.translate(["Ein Hund rennt."], beam=1)[0].text
sys.exit(0 if before == after else 1)
"""


def test_translator_survives_reseeding(tiny_run):
    # A separate process: reseeding here would break every translator this module holds.
    completed = subprocess.run([sys.executable, "-c", RESEED_SCRIPT, str(tiny_run)], cwd=REPO,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
