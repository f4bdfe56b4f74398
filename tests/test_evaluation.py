"""Tests for nmt.evaluation: sacrebleu corpus BLEU and chrF."""

import pytest
import sacrebleu

from nmt.errors import NmtError
from nmt.evaluation import corpus_scores, format_scores

HYPOTHESES = [
    "A man is riding a bicycle.",
    "Two dogs play in the snow.",
    "The woman reads a book in the park.",
]
REFERENCES = [
    "A man rides a bicycle.",
    "Two dogs are playing in the snow.",
    "A woman is reading a book in the park.",
]


def test_scores_equal_sacrebleu():
    scores = corpus_scores(HYPOTHESES, REFERENCES)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES]).score)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPOTHESES, [REFERENCES]).score)
    assert 0 < scores["bleu"] < 100
    assert 0 < scores["chrf"] < 100


def test_signatures_show_default_settings():
    scores = corpus_scores(HYPOTHESES, REFERENCES)
    assert "case:mixed" in scores["bleu_signature"]
    assert "tok:13a" in scores["bleu_signature"]
    assert "nrefs:1" in scores["chrf_signature"]


def test_perfect_match_scores_100():
    scores = corpus_scores(REFERENCES, REFERENCES)
    assert scores["bleu"] == pytest.approx(100.0)
    assert scores["chrf"] == pytest.approx(100.0)


def test_length_mismatch_names_both_counts():
    with pytest.raises(NmtError, match=r"3 hypotheses against 2 references"):
        corpus_scores(HYPOTHESES, REFERENCES[:2])


def test_empty_corpus_is_an_error():
    with pytest.raises(NmtError, match="empty"):
        corpus_scores([], [])


def test_format_scores():
    scores = corpus_scores(HYPOTHESES, REFERENCES)
    text = format_scores(scores)
    first, second = text.splitlines()
    assert first == f"BLEU = {scores['bleu']:.2f} ({scores['bleu_signature']})"
    assert second.startswith("chrF = ") and "nrefs:1" in second
    with pytest.raises(NmtError, match="chrf"):
        format_scores({"bleu": 1.0, "bleu_signature": "x"})
