"""Word alignments from attention weights, written in Pharaoh format ("0-0 1-2").

The model attends over SentencePiece pieces; alignments are between words. A piece
starts a new word exactly where SentencePiece says so: when it begins with "▁"
(U+2581). A first piece without "▁" starts word 0, and any later piece without "▁"
(including punctuation such as ".") belongs to the word before it.

Special tokens ("<s>", "</s>", "<pad>") are only aligned if the caller passes them;
when passed, each one is a word of its own (it never joins the word before it, and
the piece after it starts a new word).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from nmt.errors import NmtError

logger = logging.getLogger(__name__)

WORD_START = "\u2581"
SPECIAL_PIECES = frozenset({"<s>", "</s>", "<pad>"})


def word_spans(pieces: Sequence[str]) -> list[int]:
    """Word index of every piece.

    Example: `["▁Ein", "▁Mann", "▁fähr", "t", "."]` gives `[0, 1, 2, 2, 2]`.

    Args:
        pieces: SentencePiece pieces of one sentence, `[pieces]`.

    Returns:
        `[pieces]` 0-based word indexes, non-decreasing, starting at 0.
    """
    words: list[int | None] = []
    word = -1
    previous_special = False
    pending_start = False  # a bare "▁" piece: the next piece starts a word
    for position, piece in enumerate(pieces):
        special = piece in SPECIAL_PIECES
        if piece == WORD_START:
            pending_start = True
            words.append(None)  # belongs to the word the next piece starts
            continue
        if (position == 0 or pending_start or piece.startswith(WORD_START) or special
                or previous_special):
            word += 1
        pending_start = False
        words.append(word)
        previous_special = special
    following = max(word, 0)  # bare pieces at the end stay with the last word
    for position in range(len(words) - 1, -1, -1):
        if words[position] is None:
            words[position] = following
        else:
            following = words[position]
    return words


def attention_matrix(
    weights: np.ndarray, source_tokens: Sequence[str], target_tokens: Sequence[str]
) -> np.ndarray:
    """`weights` as a float64 array `[target tokens, source tokens]`, checked.

    Raises:
        NmtError: the shape does not match the tokens, or a weight is NaN or infinite.
    """
    matrix = np.asarray(weights, dtype=np.float64)
    expected = (len(target_tokens), len(source_tokens))
    if matrix.shape != expected:
        raise NmtError(
            "Attention weights must have shape [target tokens, source tokens] = "
            f"{list(expected)}, got {list(matrix.shape)}"
        )
    if not np.all(np.isfinite(matrix)):
        raise NmtError("Attention weights contain NaN or infinite values")
    return matrix


def merge_subword_weights(
    weights: np.ndarray, source_pieces: Sequence[str], target_pieces: Sequence[str]
) -> np.ndarray:
    """Turn piece-level attention into word-level attention.

    Source pieces of a word are summed: the result is the attention mass the word
    received, and each row still sums to what it summed to before (1 for softmax or
    hard attention). Target pieces of a word are averaged: each piece's distribution
    is one vote on where the word comes from, and the mean is still a distribution.

    Args:
        weights: `[len(target_pieces), len(source_pieces)]` attention weights.
        source_pieces: source SentencePiece pieces.
        target_pieces: target SentencePiece pieces.

    Returns:
        `[target words, source words]` float64 weights.

    Raises:
        NmtError: `weights` does not have shape `[len(target_pieces), len(source_pieces)]`.
    """
    matrix = attention_matrix(weights, source_pieces, target_pieces)
    source_words = _membership(word_spans(source_pieces))  # [source pieces, source words]
    target_words = _membership(word_spans(target_pieces))  # [target pieces, target words]
    pieces_per_target_word = target_words.sum(axis=0)  # [target words], each >= 1
    summed = matrix @ source_words  # [target pieces, source words]
    return (target_words.T @ summed) / pieces_per_target_word[:, np.newaxis]


def align(
    weights: np.ndarray, source_pieces: Sequence[str], target_pieces: Sequence[str]
) -> list[tuple[int, int]]:
    """Align every target word to the source word it attends to most.

    Ties go to the earlier source word. An empty source or target gives no pairs.

    Args:
        weights: `[len(target_pieces), len(source_pieces)]` attention weights.
        source_pieces: source SentencePiece pieces.
        target_pieces: target SentencePiece pieces.

    Returns:
        Sorted 0-based `(source_word, target_word)` pairs, one per target word.
    """
    return _argmax_pairs(merge_subword_weights(weights, source_pieces, target_pieces))


def _argmax_pairs(merged: np.ndarray) -> list[tuple[int, int]]:
    """Sorted `(source_word, target_word)` pairs of a `[target words, source words]` matrix."""
    if merged.size == 0:
        return []
    best_source = np.argmax(merged, axis=1)  # [target words]
    return sorted((int(source), target) for target, source in enumerate(best_source))


def sentence_alignment(translation) -> tuple[list[tuple[int, int]], int, int]:
    """Word alignment of one `nmt.translator.Translation` without its end-of-sentence tokens.

    Returns:
        `(pairs, source_words, target_words)`: the `(source_word, target_word)` pairs of
        `align` and the number of source and target words (to number words over a line).
    """
    from nmt.tokenizer import EOS_PIECE  # the translation exists, so TensorFlow is loaded

    source = [i for i, piece in enumerate(translation.source_tokens) if piece != EOS_PIECE]
    target = [i for i, piece in enumerate(translation.target_tokens) if piece != EOS_PIECE]
    source_pieces = [translation.source_tokens[i] for i in source]
    target_pieces = [translation.target_tokens[i] for i in target]
    merged = merge_subword_weights(translation.attention[target][:, source], source_pieces,
                                   target_pieces)
    return _argmax_pairs(merged), merged.shape[1], merged.shape[0]


def to_pharaoh(pairs: Sequence[tuple[int, int]]) -> str:
    """Format `(source, target)` pairs as Pharaoh text, e.g. `"0-0 1-1 2-3"`.

    Returns the empty string for no pairs.
    """
    return " ".join(f"{source}-{target}" for source, target in pairs)


def _membership(words: list[int]) -> np.ndarray:
    """One-hot `[pieces, words]` matrix: entry (p, w) is 1 if piece p is in word w."""
    count = words[-1] + 1 if words else 0
    membership = np.zeros((len(words), count))
    membership[np.arange(len(words)), words] = 1.0
    return membership
