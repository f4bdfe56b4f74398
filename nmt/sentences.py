"""Sentence splitting: a line of several sentences is translated one sentence at a time.

The models learned from single sentences; given a paragraph in one line they tend to drop
whole sentences. `split_sentences` cuts a line with Philipp Koehn's Moses sentence splitter
(the `sentence-splitter` package: per-language lists of non-breaking prefixes such as
"Dr.", "z. B.", "usw.", "e.g.", numbers and quotes), and `join_sentences` puts the
translations back into one line. `bench/bench_split.py` compared it with pysbd and sentencex
on hand-split German and English lines and on Tatoeba (README, "Sentence splitting").
Pure Python (no TensorFlow).
"""

from __future__ import annotations

import functools
import logging
import unicodedata
from collections.abc import Iterator, Sequence

from sentence_splitter import SentenceSplitter, SentenceSplitterException

logger = logging.getLogger(__name__)

FALLBACK_LANGUAGE = "en"
# Unicode categories that carry no text: control (NUL, ESC...), format (zero-width space and
# joiners, BOM), and separators.
_INVISIBLE = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


def is_blank(text: str) -> bool:
    """True when `text` has nothing to translate: only white space, control characters
    (NUL bytes...) or invisible ones (zero-width space, BOM). Such a line is translated as
    an empty line instead of into a sentence the model invents."""
    return all(character.isspace() or unicodedata.category(character) in _INVISIBLE
               for character in text)


@functools.cache
def _splitter(language: str) -> SentenceSplitter:
    """The splitter for an ISO 639-1 code; English rules for a language it does not know."""
    try:
        return SentenceSplitter(language=language)
    except SentenceSplitterException:
        logger.warning("no sentence-splitting rules for language '%s'; using English rules",
                       language)
        return SentenceSplitter(language=FALLBACK_LANGUAGE)


def split_sentences(text: str, language: str) -> list[str]:
    """The sentences of one line of `language` text, stripped, in order.

    An empty or blank line (`is_blank`) gives `[""]` (one empty sentence), so every input
    line has at least one sentence and line counts are kept.
    """
    sentences = [s for s in _splitter(language).split(text) if not is_blank(s)]
    return sentences or [""]


def join_sentences(sentences: list[str]) -> str:
    """One output line from the translations of a line's sentences (space-separated)."""
    return " ".join(s.strip() for s in sentences if s.strip())


def split_lines(lines: Sequence[str], language: str, split: bool = True
                ) -> tuple[list[str], list[list[str]]]:
    """All sentences of `lines` in order, and each line's sentences (one per line when not
    `split`)."""
    per_line = [split_sentences(line, language) if split else [line] for line in lines]
    return [sentence for parts in per_line for sentence in parts], per_line


def translate_lines(translator, lines: Sequence[str], split: bool = True,
                    **search) -> Iterator[list]:
    """Translate lines of text, each cut into its sentences; yields, line by line and in
    order, the list of that line's `Translation`s (one per sentence).

    Every sentence of `lines` goes through `translator.translate_batches` in one stream, so
    the sentences of a paragraph share batches with everything else, and a line is handed
    out as soon as its last sentence is translated.

    Args:
        translator: an `nmt.translator.Translator` (its source language picks the rules).
        lines: input lines; a blank line gives one empty translation.
        split: False translates each line as one sentence.
        **search: `beam`, `alpha`, `max_length_ratio`, `batch_size`, `n_best`,
            `first_index` for `Translator.translate_batches`.
    """
    sentences, per_line = split_lines(lines, translator.config.data.src, split)
    translations = (translation for chunk in translator.translate_batches(sentences, **search)
                    for translation in chunk)
    for parts in per_line:
        yield [next(translations) for _ in parts]
