"""Tests for bench/bench_alignment_layer.py: the agreement that chooses the alignment layer."""

import numpy as np

from bench.bench_alignment_layer import layer_agreements, word_weights


def test_agreement_counts_each_layer_average_and_head():
    reference = np.eye(3)[[0, 2, 1]]  # target word i comes from source word [0, 2, 1][i]
    agreeing, wrong = np.eye(3)[[0, 2, 1]], np.eye(3)[[1, 1, 1]]
    heads = np.stack([[agreeing, agreeing], [wrong, 0.6 * agreeing + 0.4 * wrong]])
    counts = layer_agreements(heads, reference)  # [layers, 1 + heads, 2]
    assert counts.shape == (2, 3, 2)
    np.testing.assert_array_equal(counts[..., 1], 3)
    np.testing.assert_array_equal(counts[0, :, 0], [3, 3, 3])
    # layer 1: head 0 agrees on word 2 only, head 1 (mostly right) everywhere, and their
    # average (0.3 right + 0.7 wrong) on word 2 only
    np.testing.assert_array_equal(counts[1, :, 0], [1, 1, 3])


def test_word_weights_merge_pieces_on_every_leading_axis():
    source, target = ["▁Ein", "▁Hund", "e", "."], ["▁A", "▁dog", "."]
    weights = np.random.default_rng(0).dirichlet(np.ones(4), size=(2, 3, 3))  # [2, 3, tt, ts]
    merged = word_weights(weights, source, target)
    assert merged.shape == (2, 3, 2, 2)
    np.testing.assert_allclose(merged[1, 2, 0], [weights[1, 2, 0, 0], weights[1, 2, 0, 1:].sum()])
    # target word 1 ("▁dog" ".") averages its pieces; source word 1 sums "▁Hund" "e" "."
    pieces = weights[0, 1, 1:]  # [2 target pieces, 4 source pieces]
    np.testing.assert_allclose(merged[0, 1, 1], [pieces[:, 0].mean(),
                                                 pieces[:, 1:].sum(axis=1).mean()])
