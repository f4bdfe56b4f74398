"""Tests for nmt.compiled_search and nmt.precision: the XLA-compiled search on padded shape
buckets gives what the eager float32 search gives, and bfloat16 stays within a documented
tolerance of it, on the shipped caption model (real sentences end at many lengths there; a
tiny model trained in the test session may say the same thing for every sentence)."""

import numpy as np
import pytest
import tensorflow as tf

from nmt import compiled_search, decoding, precision
from nmt.compiled_search import CompiledSearch
from nmt.data import read_lines
from nmt.model import BFLOAT16_LOGIT_SHIFT
from nmt.shipped import SHIPPED_DIR
from nmt.tokenizer import BOS_ID, EOS_ID, PAD_ID
from nmt.translator import Translator

# bfloat16 keeps 8 bits of mantissa: a logit near 10 is off by up to 0.03. Where that flips a
# near tie the two searches part; elsewhere bfloat16 must score its own tokens as float32
# does, within this many nats per token (a bound chosen, not a measured figure).
BFLOAT16_SCORE_TOLERANCE_PER_TOKEN = 0.02


@pytest.fixture(scope="module")
def sources(multi30k_dir) -> list[str]:
    """Real Multi30k validation sentences of many lengths (several width buckets)."""
    return read_lines(multi30k_dir / "val.de.gz")[:24]


def test_the_shipped_model_is_there():
    assert (SHIPPED_DIR / MODEL / "best.weights.h5").is_file()


MODEL = "multi30k-de-en"


@pytest.fixture(scope="module")
def translator() -> Translator:
    return Translator.load(MODEL)


@pytest.fixture(scope="module")
def bfloat16_translator() -> Translator:
    return Translator.load(MODEL, dtype="bfloat16")


def source_batch(translator: Translator, texts: list[str]) -> np.ndarray:
    ids, _ = translator.encode_sources(texts)
    batch = np.full((len(ids), max(map(len, ids))), PAD_ID, dtype=np.int32)
    for row, sentence in enumerate(ids):
        batch[row, :len(sentence)] = sentence
    return batch


def eager_reference(model, source: np.ndarray, beam: int, alpha: float) -> dict:
    """The float32 search run eagerly, op by op, with the translator's length limits."""
    limits = tf.constant(compiled_search.max_lengths(source, 2.0))
    if beam == 1:
        result = decoding.greedy_search(model, tf.constant(source), limits)
        result = {key: value.numpy()[:, None] for key, value in result.items()}
        result["log_probs"] = result["scores"]
        return result
    result = decoding.beam_search(model, tf.constant(source), limits, beam, alpha)
    return {key: value.numpy() for key, value in result.items()}


def teacher_forced_log_probs(model, source: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Sum of float32 log-probabilities of `tokens` [n, tt] (EOS then PAD) given source."""
    target_in = np.concatenate([np.full((len(tokens), 1), BOS_ID), tokens[:, :-1]], axis=1)
    logits, _ = model((tf.constant(source), tf.constant(target_in, tf.int32)), training=False)
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1).numpy()
    chosen = np.take_along_axis(log_probs, tokens[:, :, None].astype(np.int64), axis=2)[..., 0]
    return np.where(tokens != PAD_ID, chosen, 0.0).sum(axis=1)


# ---------------------------------------------------------------------------- shape buckets
def test_buckets_round_up_and_keep_what_is_beyond_the_last():
    assert compiled_search.bucket(1, (8, 16)) == 8
    assert compiled_search.bucket(8, (8, 16)) == 8
    assert compiled_search.bucket(9, (8, 16)) == 16
    assert compiled_search.bucket(17, (8, 16)) == 17
    assert compiled_search.batch_buckets(64) == (1, 4, 16, 64)
    assert compiled_search.batch_buckets(5) == (1, 4, 5)
    assert compiled_search.batch_buckets(1) == (1,)
    assert compiled_search.SOURCE_BUCKETS[-1] == 200  # MAX_SOURCE_TOKENS


def test_each_sentence_keeps_its_own_length_limit():
    source = np.array([[5, 6, 7, EOS_ID], [5, EOS_ID, PAD_ID, PAD_ID]], dtype=np.int32)
    np.testing.assert_array_equal(compiled_search.max_lengths(source, 2.0), [13, 9])
    np.testing.assert_array_equal(compiled_search.max_lengths(source, 0.5), [7, 6])


# ------------------------------------------------------------------------- compiled = eager
@pytest.mark.parametrize(("beam", "alpha"), [(1, 0.0), (5, 1.0)])
def test_compiled_search_gives_the_eager_float32_tokens(translator, sources, beam, alpha):
    source = source_batch(translator, sources[:23])  # 23 rows: padded to 64, width to 48
    expected = eager_reference(translator.model, source, beam, alpha)
    found = CompiledSearch(translator.model)(source, beam, alpha, 2.0, batch_size=64,
                                             eager=False)
    assert np.any(found["tokens"] == EOS_ID) and len(set(found["lengths"][:, 0])) > 1
    for key in ("tokens", "lengths"):
        np.testing.assert_array_equal(found[key], expected[key], err_msg=key)
    for key in ("scores", "log_probs"):
        np.testing.assert_allclose(found[key], expected[key], atol=1e-4, err_msg=key)
    np.testing.assert_allclose(found["weights"], expected["weights"], atol=1e-5)


def test_static_steps_change_nothing_but_the_output_width(translator, sources):
    source = source_batch(translator, sources[:3])
    limits = tf.constant(compiled_search.max_lengths(source, 2.0))
    growing = decoding.beam_search(translator.model, tf.constant(source), limits, 3, 0.6)
    fixed = decoding.beam_search(translator.model, tf.constant(source), limits, 3, 0.6,
                                 max_steps=80)
    steps = growing["tokens"].shape[-1]
    assert fixed["tokens"].shape[-1] == 80
    np.testing.assert_array_equal(fixed["tokens"][..., :steps], growing["tokens"])
    assert not np.any(fixed["tokens"][..., steps:]) and not np.any(fixed["weights"][..., steps:, :])
    np.testing.assert_allclose(fixed["weights"][..., :steps, :], growing["weights"], atol=1e-6)


def test_a_search_too_large_to_hold_runs_as_a_plain_graph(translator, sources, monkeypatch):
    # Only a --max-length-ratio far above the default asks for that much; pretend 2.0 does.
    monkeypatch.setattr(compiled_search, "MAX_COMPILED_ELEMENTS", 1000)
    search = CompiledSearch(translator.model)
    source = source_batch(translator, sources[:2])
    result = search(source, 1, 0.0, 2.0, batch_size=64, eager=False)
    assert list(search._functions) == [(1, 2.0, False)]
    np.testing.assert_array_equal(result["tokens"],
                                  eager_reference(translator.model, source, 1, 0.0)["tokens"])


@pytest.mark.parametrize("beam", [1, 5])
def test_a_small_first_call_runs_eagerly_and_later_ones_compiled(translator, sources, beam):
    """A one-off translation skips tracing; the next call of the search traces and compiles,
    with the same tokens and scores."""
    search = CompiledSearch(translator.model)
    source = source_batch(translator, sources[:2])
    first = search(source, beam, 1.0, 2.0, batch_size=64)
    assert search._functions == {}
    second = search(source, beam, 1.0, 2.0, batch_size=64)
    assert list(search._functions) == [(beam, 2.0, True)]
    for key in ("tokens", "lengths"):
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    np.testing.assert_allclose(first["scores"], second["scores"], atol=1e-4)
    np.testing.assert_allclose(first["weights"], second["weights"], atol=1e-5)
    large = source_batch(translator, sources[:17])  # more than EAGER_HYPOTHESES rows
    search(large, 1 if beam > 1 else 2, 1.0, 2.0, batch_size=64)
    assert len(search._functions) == 2


def test_warm_up_compiles_the_searches_a_server_uses(tmp_path):
    translator = Translator.load(MODEL)
    translator.warm_up([1, 5])
    assert sorted(translator._search._functions) == [(1, 2.0, True), (5, 2.0, True)]
    translator.translate(["Ein Hund."], beam=5)
    assert sorted(translator._search._functions) == [(1, 2.0, True), (5, 2.0, True)]


# ---------------------------------------------------------------------------------- bfloat16
def test_bfloat16_stores_the_weights_in_bfloat16_and_scores_in_float32(translator,
                                                                      bfloat16_translator):
    model = bfloat16_translator.model
    assert model.dtype_policy.compute_dtype == "bfloat16"
    assert all(variable.dtype == "bfloat16" for variable in model.weights)
    # The loaded weights are the float32 ones rounded to bfloat16 (8 bits of mantissa).
    for half, full in zip(model.weights, translator.model.weights, strict=True):
        full = full.numpy()
        np.testing.assert_allclose(half.numpy().astype(np.float32), full,
                                   rtol=2 ** -8, atol=1e-30, err_msg=half.path)
    result = bfloat16_translator.search(np.array([[40, 41, EOS_ID]], dtype=np.int32), beam=2)
    assert result["scores"].dtype == np.float32 and result["weights"].dtype == np.float32


def test_bfloat16_shifts_its_logits_towards_zero_where_rounding_is_finer(
        translator, bfloat16_translator, sources):
    """Seq2Seq.shift_output_logits: logits - BFLOAT16_LOGIT_SHIFT from one matmul, rounded to
    bfloat16 near zero, so the two leading logits of real decoder steps (the ones a search
    weighs) are nearer the exact product than the plain bfloat16 matmul's."""
    assert translator.model._shifted_output is None  # float32 stays as it was
    model = bfloat16_translator.model
    table = model._shifted_output
    assert table.dtype == tf.bfloat16 and table.shape == (model.config.tgt_vocab_size,
                                                          model.config.embedding_dim + 2)
    memory, state = model.encode(tf.constant(source_batch(translator, sources)))
    tokens, features = tf.fill([len(sources)], BOS_ID), []
    for _ in range(4):  # h~ of the first greedy steps: [sentences, embedding_dim] each
        logits, state, _ = model.decode_step(tokens, state, memory)
        tokens = tf.argmax(logits, axis=-1, output_type=tf.int32)
        features.append(state["feed"])
    features = tf.concat(features, axis=0)  # bfloat16
    embeddings = model.target_embedding.embeddings  # bfloat16, the tied output matrix
    exact = tf.matmul(tf.cast(features, tf.float32), tf.cast(embeddings, tf.float32),
                      transpose_b=True).numpy()
    plain = tf.matmul(features, embeddings, transpose_b=True)
    with_ones = tf.concat([features, tf.ones_like(features[:, :2])], axis=-1)
    shifted = tf.matmul(with_ones, table, transpose_b=True)
    np.testing.assert_array_equal(table[:, -2:].numpy().astype(np.float32),
                                  [[0.0, -BFLOAT16_LOGIT_SHIFT]] * len(table))  # tied: no bias
    # decode_step's logits are the shifted ones
    last_step = shifted[-len(sources):]
    np.testing.assert_allclose(tf.cast(logits, tf.float32), tf.cast(last_step, tf.float32),
                               atol=0.02)
    leading = np.argsort(-exact, axis=-1)[:, :2]  # [steps x sentences, 2]

    def leading_error(logits: tf.Tensor, offset: float = 0.0) -> float:
        values = tf.cast(logits, tf.float32).numpy() + offset
        return np.abs(np.take_along_axis(values - exact, leading, axis=-1)).mean()

    assert np.median(exact.max(axis=-1)) > 6  # the plain matmul rounds in steps of 1/32+
    # measured: 0.0026 against 0.0135 nats
    assert leading_error(shifted, BFLOAT16_LOGIT_SHIFT) < 0.4 * leading_error(plain)


@pytest.mark.parametrize("beam", [1, 5])
def test_bfloat16_search_stays_within_the_documented_tolerance(translator, bfloat16_translator,
                                                               sources, beam):
    source = source_batch(translator, sources)
    full = translator.search(source, beam=beam, alpha=1.0)
    half = bfloat16_translator.search(source, beam=beam, alpha=1.0)
    same = [np.array_equal(full["tokens"][row, 0, :full["lengths"][row, 0]],
                           half["tokens"][row, 0, :half["lengths"][row, 0]])
            for row in range(len(source))]
    assert np.mean(same) >= 0.75, f"{sum(same)} of {len(same)} translations kept"
    # bfloat16 scores its own best hypotheses as float32 does, within the tolerance.
    rescored = teacher_forced_log_probs(translator.model, source, half["tokens"][:, 0])
    tolerance = BFLOAT16_SCORE_TOLERANCE_PER_TOKEN * half["lengths"][:, 0]
    assert np.all(np.abs(half["log_probs"][:, 0] - rescored) <= tolerance)


def test_a_large_bfloat16_search_runs_as_the_plain_graph(bfloat16_translator, sources):
    """From BFLOAT16_GRAPH_HYPOTHESES on, oneDNN's bfloat16 graph; below, XLA."""
    search = CompiledSearch(bfloat16_translator.model)
    source = source_batch(bfloat16_translator, sources[:13])  # 13 x 5 = 65 hypotheses
    large = search(source, 5, 1.0, 2.0, batch_size=64, eager=False)
    search(source[:3], 5, 1.0, 2.0, batch_size=64, eager=False)  # 4 x 5 (padded rows)
    search(source, 1, 0.0, 2.0, batch_size=64, eager=False)  # 16 x 1
    assert sorted(search._functions) == [(1, 2.0, True), (5, 2.0, False), (5, 2.0, True)]
    assert large["tokens"].shape[:2] == (13, 5) and np.all(large["lengths"][:, 0] > 1)
    float32 = CompiledSearch(Translator.load(MODEL).model)
    float32(source, 5, 1.0, 2.0, batch_size=64, eager=False)
    assert list(float32._functions) == [(5, 2.0, True)]  # float32 stays compiled


def test_dtype_names_are_checked_and_auto_follows_the_cpu(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match=r"Expected one of \['float32', 'bfloat16', 'auto'\]"):
        precision.check_dtype("float16")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu avx2 avx512_bf16\n")
    assert precision.native_bfloat16(cpuinfo)
    cpuinfo.write_text("flags\t\t: fpu avx2\n")
    assert precision.native_bfloat16(cpuinfo) is False
    assert precision.native_bfloat16(tmp_path / "missing") is None
    for native, large in ((True, "bfloat16"), (False, None), (None, None)):
        monkeypatch.setattr(precision, "native_bfloat16", lambda native=native: native)
        assert precision.search_dtypes("auto") == ("float32", large)
        assert precision.search_dtypes("float32") == ("float32", None)
        assert precision.search_dtypes("bfloat16") == ("bfloat16", None)


@pytest.mark.parametrize("native", [True, False])
def test_auto_hands_large_searches_to_a_bfloat16_model_where_the_cpu_has_it(
        monkeypatch, translator, bfloat16_translator, sources, native):
    """--dtype auto: float32 (XLA) below BFLOAT16_GRAPH_HYPOTHESES, and from there on the
    same search as a bfloat16 translator's, on a bfloat16 model made at the first one."""
    monkeypatch.setattr(precision, "native_bfloat16", lambda: native)
    auto = Translator.load(MODEL, dtype="auto")
    assert auto.model.compute_dtype == "float32" and auto._search._large_search is None
    source = source_batch(translator, sources[:13])
    small = auto.search(source[:3], beam=5, alpha=1.0, batch_size=64)  # 4 x 5 padded rows
    np.testing.assert_array_equal(small["tokens"],
                                  translator.search(source[:3], beam=5, alpha=1.0)["tokens"])
    assert auto._search._large_search is None
    large = auto.search(source, beam=5, alpha=1.0, batch_size=64)  # 16 x 5
    reference = (bfloat16_translator if native else translator).search(source, beam=5,
                                                                       alpha=1.0)
    for key in ("tokens", "scores", "lengths"):
        np.testing.assert_array_equal(large[key], reference[key])
    if native:
        assert auto._search._large_search.model.compute_dtype == "bfloat16"
        assert list(auto._search._large_search._functions) == [(5, 2.0, False)]
    else:
        assert auto._search._large_search is None
