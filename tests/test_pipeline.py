"""Tests of the tf.data input pipeline (`nmt.pipeline`) on real Multi30k sentences.

Every expectation is computed independently of the code under test: lengths with the
sentencepiece Python library, batch contents by stripping padding from what the dataset
yields, the padding share by counting PAD ids one batch at a time.
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import sentencepiece
import tensorflow as tf

from nmt import data as corpus_data
from nmt.pipeline import (
    Buckets,
    TokenizedCorpus,
    make_dataset,
    make_sampled_dataset,
    tokenize_corpus,
    training_stream,
)
from nmt.tokenizer import BOS_ID, EOS_ID, PAD_ID, SubwordTokenizer, train_sentencepiece

PAIRS = 600  # real training pairs the pipeline tests batch
MAX_LENGTH = 40
BOUNDARIES = [12, 16, 20, 26, 34]
BATCH_TOKENS = 400

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def text(multi30k_dir):
    """The first training pairs of Multi30k de-en, as read from the real mirror."""
    source, target = corpus_data.load_split("multi30k", "train", "de", "en",
                                            data_dir=multi30k_dir)
    return source[:PAIRS], target[:PAIRS]


@pytest.fixture(scope="module")
def tokenizer_paths(tmp_path_factory, multi30k_dir):
    """Sentencepiece models (1,000 pieces) learned from 2,000 training sentences per side."""
    source, target = corpus_data.load_split("multi30k", "train", "de", "en",
                                            data_dir=multi30k_dir)
    folder = tmp_path_factory.mktemp("pipeline_tokenizers")
    return (train_sentencepiece(source[:2000], folder / "source.model", 1000),
            train_sentencepiece(target[:2000], folder / "target.model", 1000))


@pytest.fixture(scope="module")
def tokenizers(tokenizer_paths):
    return tuple(SubwordTokenizer.load(path) for path in tokenizer_paths)


@pytest.fixture(scope="module")
def corpus(text, tokenizers) -> TokenizedCorpus:
    return tokenize_corpus(*text, *tokenizers, max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def buckets() -> Buckets:
    return Buckets.from_budget(BOUNDARIES, MAX_LENGTH, BATCH_TOKENS)


def epoch(dataset: tf.data.Dataset) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One pass over a dataset as numpy (source, target_in, target_out) batches."""
    return [(source.numpy(), target_in.numpy(), target_out.numpy())
            for (source, target_in), target_out in dataset]


def unpadded(row: np.ndarray) -> tuple[int, ...]:
    """A padded id row without its trailing PAD ids (sentencepiece never emits PAD)."""
    ids = row.tolist()
    while ids and ids[-1] == PAD_ID:
        ids.pop()
    return tuple(ids)


def normalised(sentence: str) -> str:
    """What detokenize(tokenize(s)) gives back: NFKC, single spaces, no edge spaces."""
    return re.sub(" +", " ", unicodedata.normalize("NFKC", sentence)).strip(" ")


def corpus_pairs(corpus: TokenizedCorpus) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    return [(tuple(s), tuple(t)) for s, t in zip(corpus.source.to_list(),
                                                 corpus.target.to_list(), strict=True)]


# ---------------------------------------------------------------------------- buckets
def test_from_budget_by_hand():
    buckets = Buckets.from_budget([12, 16, 64], max_length=32, batch_tokens=1000)
    assert buckets.lengths == [12, 16, 32]  # 64 capped at max_length, max_length added
    assert buckets.batch_sizes == [83, 62, 31]  # 1000 // length


def test_index_puts_each_length_in_the_smallest_bucket_that_fits():
    buckets = Buckets([4, 8, 12], [3, 2, 1])
    lengths = np.array([1, 4, 5, 8, 9, 12])
    np.testing.assert_array_equal(buckets.index(lengths), [0, 0, 1, 1, 2, 2])


def test_fixture_corpus_uses_several_buckets(corpus, buckets):
    # Guards the tests below: they only mean something if batches come from many buckets.
    counts = np.bincount(buckets.index(corpus.lengths), minlength=len(buckets.lengths))
    assert (counts > 0).sum() >= 4, counts
    assert any(count % size for count, size in zip(counts, buckets.batch_sizes, strict=True))


# ---------------------------------------------------------------------------- shapes
def test_training_batches_have_bucket_shapes_and_budget_batch_sizes(corpus, buckets):
    batches = epoch(make_dataset(corpus, buckets, shuffle=True, seed=3))
    assert batches
    shapes = set()
    for source, target_in, target_out in batches:
        assert source.shape == target_in.shape == target_out.shape
        size, length = source.shape
        assert length in buckets.lengths
        assert size == BATCH_TOKENS // length  # full batches only in training
        shapes.add(source.shape)
    assert len(shapes) <= len(buckets.lengths)


def test_each_row_is_padded_to_its_own_bucket(corpus, buckets):
    for source, target_in, _ in epoch(make_dataset(corpus, buckets, shuffle=False)):
        length = source.shape[1]
        position = buckets.lengths.index(length)
        smaller = buckets.lengths[position - 1] if position else 0
        needed = np.maximum((source != PAD_ID).sum(axis=1), (target_in != PAD_ID).sum(axis=1))
        assert np.all((needed > smaller) & (needed <= length)), (length, needed)


def test_evaluation_batches_keep_partial_batches(corpus, buckets):
    batches = epoch(make_dataset(corpus, buckets, shuffle=False))
    partial = collections.Counter()
    for source, _, _ in batches:
        size, length = source.shape
        budget_size = BATCH_TOKENS // length
        assert 1 <= size <= budget_size
        partial[length] += size < budget_size
    assert max(partial.values()) == 1  # at most one partial batch per bucket
    assert sum(source.shape[0] for source, _, _ in batches) == len(corpus)


# -------------------------------------------------------------------------- contents
def test_batch_rows_are_the_corpus_pairs(corpus, buckets):
    expected = collections.Counter(corpus_pairs(corpus))
    received = collections.Counter()
    for source, target_in, target_out in epoch(make_dataset(corpus, buckets, shuffle=False)):
        for row in range(source.shape[0]):
            src, t_in, t_out = unpadded(source[row]), unpadded(target_in[row]), unpadded(
                target_out[row])
            assert src[-1] == EOS_ID and EOS_ID not in src[:-1]
            assert t_in[0] == BOS_ID and t_out[-1] == EOS_ID
            assert t_in[1:] == t_out[:-1]  # target_in is target_out shifted by one
            received[(src, (BOS_ID, *t_out))] += 1
    assert received == expected


def rows_checked_against_corpus(batches, text, tokenizers) -> int:
    """Assert that every row of `batches` detokenises to a (source, target) pair of `text`;
    return how many rows were checked."""
    source_tokenizer, target_tokenizer = tokenizers
    pairs = {normalised(s): set() for s in text[0]}
    for s, t in zip(*text, strict=True):
        pairs[normalised(s)].add(normalised(t))
    checked = 0
    for source, _, target_out in batches:
        sources = source_tokenizer.detokenize(tf.constant(source)).numpy()
        targets = target_tokenizer.detokenize(tf.constant(target_out)).numpy()
        for s, t in zip(sources, targets, strict=True):
            assert t.decode("utf-8") in pairs[s.decode("utf-8")]
            checked += 1
    return checked


def test_shuffled_rows_decode_to_their_own_sentence_pair(text, corpus, buckets, tokenizers):
    batches = epoch(make_dataset(corpus, buckets, shuffle=True, seed=11))[:3]
    assert rows_checked_against_corpus(batches, text, tokenizers) >= 30


def rows(batches) -> list[tuple[int, ...]]:
    return [tuple(row) for source, _, _ in batches for row in source.tolist()]


def test_training_epochs_are_reshuffled_but_reproducible(corpus, buckets):
    first = epoch(make_dataset(corpus, buckets, shuffle=True, seed=5, epoch=0))
    second = epoch(make_dataset(corpus, buckets, shuffle=True, seed=5, epoch=1))
    again = epoch(make_dataset(corpus, buckets, shuffle=True, seed=5, epoch=0))
    other_seed = epoch(make_dataset(corpus, buckets, shuffle=True, seed=6, epoch=0))
    assert rows(first) != rows(second)  # a new order each epoch
    assert rows(first) == rows(again)  # the same seed gives the same order
    assert rows(first) != rows(other_seed)


GLOBAL_SEED_PROBE = """
import sys
import numpy as np
import tensorflow as tf
from nmt.pipeline import Buckets, TokenizedCorpus, make_dataset

if sys.argv[1] != "unset":
    tf.random.set_seed(int(sys.argv[1]))
rng = np.random.default_rng(0)
rows = [list(rng.integers(4, 50, size=rng.integers(2, 12))) + [2] for _ in range(300)]
corpus = TokenizedCorpus(tf.ragged.constant(rows), tf.ragged.constant([[1] + r for r in rows]))
buckets = Buckets.from_budget([4, 8], 16, 64)
for (source, _), _ in make_dataset(corpus, buckets, shuffle=True, seed=5):
    print(source.numpy().tolist())
"""


def test_shuffled_order_ignores_tensorflows_global_seed():
    # A program (or an earlier test) that sets TensorFlow's global seed must not change the
    # batches. In processes of their own: tf.random.set_seed also empties the kernel cache,
    # which would break the tokenizers of the tests that run after this one.
    orders = [subprocess.run([sys.executable, "-c", GLOBAL_SEED_PROBE, seed], check=True,
                             capture_output=True, text=True, cwd=REPO).stdout
              for seed in ("unset", "1", "12345")]
    assert orders[0].count("\n") > 10
    assert orders[0] == orders[1] == orders[2]


def test_training_stream_is_the_epochs_one_after_another(corpus, buckets):
    steps = int(make_dataset(corpus, buckets, shuffle=True).cardinality())
    stream = list(training_stream(corpus, buckets, seed=5).take(3 * steps))
    for number in range(3):
        expected = epoch(make_dataset(corpus, buckets, shuffle=True, seed=5, epoch=number))
        got = [(s.numpy(), t.numpy(), o.numpy())
               for (s, t), o in stream[number * steps:(number + 1) * steps]]
        assert rows(got) == rows(expected)
    # A run resumed at epoch 2 reads what the uninterrupted run reads from epoch 2 on.
    resumed = training_stream(corpus, buckets, seed=5, first_epoch=2).take(steps)
    assert rows([(s.numpy(), t.numpy(), o.numpy()) for (s, t), o in resumed]) == \
        rows([(s.numpy(), t.numpy(), o.numpy()) for (s, t), o in stream[2 * steps:]])


# ---------------------------------------------------------------------- subword sampling
def sampled_batches(text, tokenizers, buckets, count: int, alpha: float = 0.2):
    dataset = make_sampled_dataset(*text, *tokenizers, buckets, alpha, MAX_LENGTH, seed=3)
    return epoch(dataset.take(count))


def test_sampled_batches_have_bucket_shapes_and_well_formed_rows(text, tokenizers, buckets):
    shapes = set(zip(buckets.batch_sizes, buckets.lengths, strict=True))
    batches = sampled_batches(text, tokenizers, buckets, 40)
    for source, target_in, target_out in batches:
        assert source.shape == target_in.shape == target_out.shape
        assert source.shape in shapes
        for s, t_in, t_out in zip(source, target_in, target_out, strict=True):
            s, t_in, t_out = unpadded(s), unpadded(t_in), unpadded(t_out)
            assert s[-1] == EOS_ID and EOS_ID not in s[:-1]
            assert t_in[0] == BOS_ID and t_out[-1] == EOS_ID
            assert t_in[1:] == t_out[:-1]  # target_out is target_in shifted by one
    assert len({b[0].shape for b in batches}) >= 3  # several buckets in use


def test_sampled_rows_decode_to_their_own_sentence_pair(text, tokenizers, buckets):
    """Sampling changes the cuts, never the text: every row detokenises to a corpus pair."""
    batches = sampled_batches(text, tokenizers, buckets, 5)
    assert rows_checked_against_corpus(batches, text, tokenizers) >= 50


def test_passes_cut_the_same_sentence_differently(text, tokenizers, buckets):
    """Over several passes a sentence shows up with more than one segmentation, and the
    sampled cuts are finer on average than the single best one (small alpha)."""
    source_tokenizer, _ = tokenizers
    best = {normalised(s): source_tokenizer.encode(s) + [EOS_ID] for s in text[0]}
    cuts = collections.defaultdict(set)
    for source, _, _ in sampled_batches(text, tokenizers, buckets, 60, alpha=0.1):
        for row, sentence in zip(source, source_tokenizer.detokenize(tf.constant(source))
                                 .numpy(), strict=True):
            cuts[sentence.decode("utf-8")].add(unpadded(row))
    assert sum(len(c) > 1 for c in cuts.values()) >= 20
    sampled = np.mean([len(c) for cs in cuts.values() for c in cs])
    assert sampled > np.mean([len(best[s]) for s in cuts]) + 0.5


def test_sampled_pairs_over_max_length_are_skipped(text, tokenizers):
    """Finer cuts can push a pair over max_length; such pairs are left out of that pass."""
    short = Buckets.from_budget([8, 12], 16, 200)
    dataset = make_sampled_dataset(*text, *tokenizers, short, 0.1, 16, seed=1)
    for source, target_in, _ in epoch(dataset.take(30)):
        assert source.shape[1] <= 16 and target_in.shape[1] <= 16


def test_sampler_rejects_alpha_outside_its_range(tokenizers):
    with pytest.raises(ValueError, match="alpha"):
        tokenizers[0].sampler(0.0)


# --------------------------------------------------------------------------- figures
def test_padding_fraction_matches_a_count_over_one_epoch(corpus, buckets):
    real = padded = 0
    for source, _, target_out in epoch(make_dataset(corpus, buckets, shuffle=False,
                                                    drop_remainder=False)):
        real += int((source != PAD_ID).sum() + (target_out != PAD_ID).sum())
        padded += source.size + target_out.size
    fraction = buckets.padding_fraction(corpus.source.row_lengths().numpy(),
                                        corpus.target.row_lengths().numpy() - 1)
    assert 0.0 < fraction < 1.0
    assert fraction == pytest.approx(1.0 - real / padded, abs=1e-6)


@pytest.mark.parametrize("shuffle, drop_remainder", [(True, None), (False, None),
                                                      (False, True), (True, False)])
def test_cardinality_equals_the_batches_produced(corpus, buckets, shuffle, drop_remainder):
    dataset = make_dataset(corpus, buckets, shuffle=shuffle, drop_remainder=drop_remainder)
    assert int(dataset.cardinality()) == len(epoch(dataset))


def test_pairs_longer_than_the_largest_bucket_are_refused(text, tokenizers, buckets):
    unlimited = tokenize_corpus(*text, *tokenizers)
    assert unlimited.lengths.max() > buckets.lengths[-1]
    with pytest.raises(ValueError, match="max_length"):
        make_dataset(unlimited, buckets, shuffle=False)


# -------------------------------------------------------------------------- dropping
def test_long_pairs_are_dropped_and_counted(text, tokenizers, tokenizer_paths):
    source_lines, target_lines = text
    processors = [sentencepiece.SentencePieceProcessor(model_file=str(path))
                  for path in tokenizer_paths]
    source_ids = processors[0].encode(source_lines)
    target_ids = processors[1].encode(target_lines)
    # EOS on the source; BOS + ... + EOS on the target, of which the model sees length - 1.
    needed = np.array([max(len(s) + 1, len(t) + 1)
                       for s, t in zip(source_ids, target_ids, strict=True)])
    max_length = int(np.median(needed))
    assert (needed == max_length).any()  # the boundary case is in the corpus
    keep = needed <= max_length

    corpus = tokenize_corpus(source_lines, target_lines, *tokenizers, max_length=max_length)

    assert corpus.dropped == int((~keep).sum()) > 0
    assert len(corpus) == int(keep.sum())
    expected = [(tuple(s) + (EOS_ID,), (BOS_ID, *t, EOS_ID))
                for s, t, k in zip(source_ids, target_ids, keep, strict=True) if k]
    assert corpus_pairs(corpus) == expected  # kept pairs, in corpus order


def test_no_max_length_drops_nothing(text, tokenizers):
    corpus = tokenize_corpus(*text, *tokenizers)
    assert corpus.dropped == 0
    assert len(corpus) == PAIRS
