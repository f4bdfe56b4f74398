"""Tests for nmt.alignment: word spans, subword merging, Pharaoh output."""

import numpy as np
import pytest

from nmt.alignment import align, merge_subword_weights, to_pharaoh, word_spans
from nmt.errors import NmtError

SOURCE = ["▁Ein", "▁Mann", "▁fähr", "t", "▁Fahr", "rad", "."]  # words 0 1 2 2 3 3 3
TARGET = ["▁A", "▁man", "▁rid", "es", "▁a", "▁bi", "ke", "."]  # words 0 1 2 2 3 4 4 4
WEIGHTS = np.array(
    [
        [0.70, 0.10, 0.05, 0.05, 0.05, 0.025, 0.025],  # ▁A     -> Ein
        [0.10, 0.80, 0.05, 0.05, 0.00, 0.00, 0.00],  # ▁man   -> Mann
        [0.10, 0.10, 0.30, 0.30, 0.10, 0.05, 0.05],  # ▁rid   \ mean [.1 .25 .4 .25]
        [0.10, 0.40, 0.10, 0.10, 0.10, 0.10, 0.10],  # es     / -> fährt, though es -> Mann
        [0.40, 0.05, 0.05, 0.05, 0.15, 0.15, 0.15],  # ▁a: Ein .40 < Fahrrad .45 summed
        [0.05, 0.05, 0.10, 0.10, 0.30, 0.30, 0.10],  # ▁bi    \
        [0.05, 0.05, 0.10, 0.10, 0.20, 0.20, 0.30],  # ke      > -> Fahrrad
        [0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 1.00],  # .      /
    ]
)


def test_word_spans_follow_sentencepiece_boundaries():
    assert word_spans(SOURCE) == [0, 1, 2, 2, 3, 3, 3]
    assert word_spans(TARGET) == [0, 1, 2, 2, 3, 4, 4, 4]


def test_word_spans_first_piece_without_marker_starts_word_zero():
    assert word_spans(["Hallo", "▁Welt", "!"]) == [0, 1, 1]
    assert word_spans([]) == []


def test_word_spans_special_pieces_are_words_of_their_own():
    assert word_spans(["▁Hi", "</s>"]) == [0, 1]
    assert word_spans(["<s>", "Hi", "t", "</s>", "<pad>"]) == [0, 1, 1, 2, 3]


def test_merge_by_hand():
    merged = merge_subword_weights(WEIGHTS, SOURCE, TARGET)
    assert merged.shape == (5, 4)
    np.testing.assert_allclose(merged[2], [0.10, 0.25, 0.40, 0.25])
    np.testing.assert_allclose(merged[3], [0.40, 0.05, 0.10, 0.45])
    np.testing.assert_allclose(merged[4], [0.10 / 3, 0.10 / 3, 0.40 / 3, 2.40 / 3])


def test_merged_rows_still_sum_to_one():
    rng = np.random.default_rng(0)
    weights = rng.dirichlet(np.ones(len(SOURCE)), size=len(TARGET))
    merged = merge_subword_weights(weights, SOURCE, TARGET)
    np.testing.assert_allclose(merged.sum(axis=1), np.ones(5))


def test_align_by_hand():
    pairs = align(WEIGHTS, SOURCE, TARGET)
    assert pairs == [(0, 0), (1, 1), (2, 2), (3, 3), (3, 4)]
    assert to_pharaoh(pairs) == "0-0 1-1 2-2 3-3 3-4"


def test_diagonal_attention():
    pieces = ["▁a", "▁b", "▁c"]
    assert to_pharaoh(align(np.eye(3), pieces, pieces)) == "0-0 1-1 2-2"


def test_indexes_within_word_counts():
    rng = np.random.default_rng(1)
    source = ["▁x", "y", "▁z", "▁w", "v", "."]
    target = ["▁p", "▁q", "r", "s", "▁t"]
    for _ in range(20):
        weights = rng.dirichlet(np.ones(len(source)), size=len(target))
        pairs = align(weights, source, target)
        assert sorted(target_word for _, target_word in pairs) == [0, 1, 2]
        assert all(0 <= source_word < 3 for source_word, _ in pairs)
        assert pairs == sorted(pairs)


def test_empty_translation_gives_empty_alignment():
    assert align(np.zeros((0, 3)), ["▁a", "▁b", "c"], []) == []
    assert align(np.zeros((2, 0)), [], ["▁a", "▁b"]) == []
    assert merge_subword_weights(np.zeros((0, 3)), ["▁a", "▁b", "c"], []).shape == (0, 2)
    assert to_pharaoh([]) == ""


def test_shape_mismatch_names_expected_and_received():
    with pytest.raises(NmtError, match=r"\[8, 7\], got \[7, 8\]"):
        merge_subword_weights(WEIGHTS.T, SOURCE, TARGET)


def test_non_finite_weights_are_refused():
    weights = np.full((2, 2), 0.5)
    weights[1, 0] = np.nan
    with pytest.raises(NmtError, match="NaN or infinite"):
        align(weights, ["▁Ein", "▁Hund"], ["▁A", "▁dog"])
