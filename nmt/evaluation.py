"""Corpus BLEU and chrF through sacrebleu, with the signatures that make them comparable.

Scores use sacrebleu's defaults: detokenised text, case-sensitive, the 13a tokeniser
for BLEU, one reference per sentence. Report the signature with every score.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from sacrebleu.metrics import BLEU, CHRF

from nmt.errors import NmtError

logger = logging.getLogger(__name__)

SCORE_KEYS = ("bleu", "chrf", "bleu_signature", "chrf_signature")


def corpus_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float | str]:
    """Score detokenised translations against one reference each.

    Args:
        hypotheses: `[sentences]` system translations, detokenised.
        references: `[sentences]` reference translations, in the same order.

    Returns:
        `{"bleu": float, "chrf": float, "bleu_signature": str, "chrf_signature": str}`,
        scores on sacrebleu's 0..100 scale.

    Raises:
        NmtError: the two lists differ in length, or are empty.
    """
    if len(hypotheses) != len(references):
        raise NmtError(
            f"Cannot score {len(hypotheses)} hypotheses against {len(references)} references; "
            "expected one reference per hypothesis"
        )
    if not hypotheses:
        raise NmtError("Cannot score an empty corpus: no hypotheses and no references")
    hypotheses = [str(text) for text in hypotheses]
    references = [[str(text) for text in references]]  # one reference stream
    bleu = BLEU()
    chrf = CHRF()
    scores: dict[str, float | str] = {
        "bleu": float(bleu.corpus_score(hypotheses, references).score),
        "chrf": float(chrf.corpus_score(hypotheses, references).score),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }
    logger.debug("Scored %d sentences: %s", len(hypotheses), scores)
    return scores


def format_scores(scores: Mapping[str, float | str]) -> str:
    """Two lines for people: `BLEU = 36.12 (nrefs:1|case:mixed|...)` and `chrF = ...`.

    Raises:
        NmtError: `scores` lacks one of the keys `corpus_scores` returns.
    """
    missing = [key for key in SCORE_KEYS if key not in scores]
    if missing:
        raise NmtError(f"Scores are missing {', '.join(missing)}; expected {', '.join(SCORE_KEYS)}")
    return (
        f"BLEU = {float(scores['bleu']):.2f} ({scores['bleu_signature']})\n"
        f"chrF = {float(scores['chrf']):.2f} ({scores['chrf_signature']})"
    )
