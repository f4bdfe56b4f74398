#!/usr/bin/env python
"""Which sentence segmenter nmt uses: three candidates on German and English paragraphs.

    python bench/bench_split.py --tatoeba ../shared/corpora/tatoeba-deu-eng/deu-eng.zip

- hand-split lines (`bench/data/sentence-splits.tsv`: abbreviations, numbers, ordinals,
  dates, quotes): the share split exactly as written;
- Tatoeba pairs with sentence punctuation inside a line: the share whose English and German
  sides are cut into the same number of sentences (a translation keeps its sentences, so
  a disagreement is usually a segmenter's mistake on one side);
- speed, lines per second.

Writes bench/results/bench_split.{json,md}.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, write_results  # noqa: E402

GOLD = Path(__file__).resolve().parent / "data" / "sentence-splits.tsv"
INNER_PUNCTUATION = re.compile(r"[.!?]\S*\s+\S")
Splitter = Callable[[str, str], list[str]]


def candidates() -> dict[str, Splitter]:
    """name -> split(language, text) for every segmenter compared."""
    import pysbd
    import sentencex
    from sentence_splitter import SentenceSplitter

    pysbd_by_language = {lang: pysbd.Segmenter(language=lang, clean=False) for lang in ("de", "en")}
    moses_by_language = {lang: SentenceSplitter(language=lang) for lang in ("de", "en")}
    return {
        "pysbd": lambda lang, text: pysbd_by_language[lang].segment(text),
        "sentence-splitter (Koehn)": lambda lang, text: moses_by_language[lang].split(text),
        "sentencex": lambda lang, text: list(sentencex.segment(lang, text)),
    }


def read_gold(path: Path = GOLD) -> list[tuple[str, list[str]]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            language, text = line.split("\t")
            rows.append((language, [s.strip() for s in text.split("|||")]))
    return rows


def tatoeba_multi_sentence_pairs(zip_path: Path) -> list[tuple[str, str]]:
    with zipfile.ZipFile(zip_path) as archive:
        lines = archive.read("deu.txt").decode("utf-8").splitlines()
    pairs = [line.split("\t")[:2] for line in lines]
    return [(en, de) for en, de in pairs
            if INNER_PUNCTUATION.search(en) or INNER_PUNCTUATION.search(de)]


def measure(split: Splitter, gold, pairs) -> dict:
    def cut(lang: str, text: str) -> list[str]:
        return [s.strip() for s in split(lang, text) if s.strip()]

    exact = sum(cut(lang, " ".join(sentences)) == sentences for lang, sentences in gold)
    started = time.perf_counter()
    agree = sum(len(cut("en", en)) == len(cut("de", de)) for en, de in pairs)
    seconds = time.perf_counter() - started
    return {"gold_exact": exact / len(gold), "tatoeba_agree": agree / len(pairs),
            "lines_per_second": 2 * len(pairs) / seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tatoeba", required=True, help="path of Tatoeba's deu-eng.zip")
    parser.add_argument("--results-dir", default=str(RESULTS))
    args = parser.parse_args(argv)
    gold, pairs = read_gold(), tatoeba_multi_sentence_pairs(Path(args.tatoeba))
    runs, rows = [], []
    for name, split in candidates().items():
        result = measure(split, gold, pairs)
        runs.append({"segmenter": name, **result})
        rows.append([name, f"{100 * result['gold_exact']:.1f} %",
                     f"{100 * result['tatoeba_agree']:.1f} %", result["lines_per_second"]])
    _, md_path = write_results("bench_split", {
        "gold_lines": len(gold), "tatoeba_pairs": len(pairs), "runs": runs},
        ["segmenter", f"hand-split lines exact ({len(gold)})",
         f"Tatoeba sides agree ({len(pairs):,} pairs)", "lines/s"], rows, Path(args.results_dir))
    print(md_path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
